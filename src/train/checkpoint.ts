/**
 * Resumable training checkpoints, for pretraining and LoRA recovery alike: one folder holding
 * `state.json` (step, data cursor, logs, a fingerprint of the settings and data, …) and the
 * tensors file it names (`state-<step>.safetensors`: weights and optimiser moments).
 *
 * Each file is written atomically (util/atomic.ts), the tensors first and state.json last, and
 * the previous tensors file is deleted only once the new state.json no longer references it, so
 * a crash at any point leaves a complete checkpoint. Resuming checks the fingerprint: a
 * checkpoint made with other settings or data is refused, naming what differs.
 */
import fs from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { readSafetensors, writeSafetensors } from '../io/safetensors.ts';
import type { HostTensor, NamedTensors } from '../model/tensor-data.ts';
import { removeStaleTemps, writeAtomic } from '../util/atomic.ts';
import { CheckpointError, ConfigError } from '../util/errors.ts';

export const STATE_FILE = 'state.json';

/** Which trainer a checkpoint belongs to. */
export interface CheckpointKind {
  /** Recorded in state.json and in the tensors file's header. */
  format: string;
  /** Names the state in errors, e.g. 'pretraining'. */
  label: string;
}

/** What every trainer's state holds; the rest (cursor, logs, RNG state) is the trainer's. */
export interface TrainingState {
  step: number;
  fingerprint: Record<string, unknown>;
}

interface Header {
  version: 1;
  format?: string;
  tensors: string;
}

export interface Checkpoint<S extends TrainingState> {
  state: S;
  tensors: NamedTensors;
  /** state.json's path, for errors. */
  file: string;
}

/** The checkpoint settings every trainer takes. */
export interface CheckpointSettings {
  checkpointDir?: string;
  /** Save every this many steps (and always at the last step of a call). */
  checkpointEvery?: number;
  /** Continue from the checkpoint in `checkpointDir` (from scratch when it holds none). */
  resume: boolean;
}

export function checkCheckpointSettings(c: CheckpointSettings): void {
  if ((c.checkpointEvery !== undefined || c.resume) && !c.checkpointDir) throw new ConfigError('checkpointEvery / resume need checkpointDir');
}

/** Whether step `step` saves: every `every` steps, and the last step of this call (`stopAt`). */
export function checkpointDue(step: number, every: number | undefined, stopAt: number): boolean {
  return (every !== undefined && step % every === 0) || step === stopAt;
}

/** True when `dir` holds a training checkpoint. */
export function hasCheckpoint(dir: string): boolean {
  return fs.existsSync(path.join(dir, STATE_FILE));
}

export function saveCheckpoint<S extends TrainingState>(dir: string, kind: CheckpointKind, state: S, tensors: NamedTensors): void {
  fs.mkdirSync(dir, { recursive: true });
  // Leftovers of a save that crashed half-way (a checkpoint folder has one writer).
  removeStaleTemps(dir);
  const tensorsName = `state-${state.step}.safetensors`;
  writeAtomic(path.join(dir, tensorsName), (tmp) => writeSafetensors(tmp, tensors, 'F32', { format: kind.format }));
  const full: Header & S = { version: 1, format: kind.format, ...state, tensors: tensorsName };
  writeAtomic(path.join(dir, STATE_FILE), (tmp) => fs.writeFileSync(tmp, JSON.stringify(full)));
  // Only now is the previous tensors file unreferenced.
  for (const f of fs.readdirSync(dir)) {
    if (/^state-\d+\.safetensors$/.test(f) && f !== tensorsName) fs.rmSync(path.join(dir, f), { force: true });
  }
}

/** The checkpoint in `dir`, or null when there is none. */
export function readCheckpoint<S extends TrainingState>(dir: string, kind: CheckpointKind): Checkpoint<S> | null {
  const file = path.join(dir, STATE_FILE);
  if (!fs.existsSync(file)) return null;
  let state: Header & S;
  try {
    state = JSON.parse(fs.readFileSync(file, 'utf8')) as Header & S;
  } catch (e) {
    throw new CheckpointError(`unreadable ${kind.label} state: ${(e as Error).message}`, file);
  }
  // Recovery checkpoints written before the format was recorded have none.
  if (state.version !== 1 || typeof state.tensors !== 'string' || (state.format !== undefined && state.format !== kind.format)) {
    throw new CheckpointError(`not a PruneLab ${kind.label} state (version 1)`, file);
  }
  return { state, tensors: readSafetensors(path.join(dir, state.tensors)), file };
}

/**
 * Refuse to resume from a checkpoint whose fingerprint differs from `now`. Keys in `approx` hold
 * number arrays compared with a relative tolerance of 1e-5 (float checksums), reported with the
 * given explanation; every other key must be equal as JSON.
 */
export function assertSameFingerprint(saved: Record<string, unknown>, now: Record<string, unknown>, file: string,
  approx: Readonly<Record<string, string>> = {}): void {
  const bad: string[] = [];
  for (const k of new Set([...Object.keys(saved), ...Object.keys(now)])) {
    if (k in approx) {
      if (!closeNumbers(saved[k], now[k])) bad.push(approx[k]);
    } else if (JSON.stringify(saved[k]) !== JSON.stringify(now[k])) {
      bad.push(`${k} (checkpoint ${JSON.stringify(saved[k])}, now ${JSON.stringify(now[k])})`);
    }
  }
  if (bad.length) throw new ConfigError(`cannot resume: the checkpoint was made with different settings or data: ${bad.join('; ')}`, file);
}

function closeNumbers(a: unknown, b: unknown): boolean {
  if (!Array.isArray(a) || !Array.isArray(b) || a.length !== b.length) return false;
  return a.every((x: number, i) => Math.abs(x - (b[i] as number)) <= 1e-5 * Math.max(1, Math.abs(x)));
}

/**
 * The checkpoint to continue from: null unless `resume` is set and `dir` holds one; refused
 * (ConfigError) when its fingerprint differs from `fingerprint` (see `assertSameFingerprint`).
 */
export function checkpointToResume<S extends TrainingState>(dir: string | undefined, resume: boolean, kind: CheckpointKind,
  fingerprint: Record<string, unknown>, approx: Readonly<Record<string, string>> = {}): Checkpoint<S> | null {
  const ckpt = resume && dir ? readCheckpoint<S>(dir, kind) : null;
  if (ckpt) assertSameFingerprint(ckpt.state.fingerprint, fingerprint, ckpt.file, approx);
  return ckpt;
}

/** A host copy of `t` (the copy stays valid when `t` is later updated or disposed). */
export function hostCopy(t: tf.Tensor): HostTensor {
  return { shape: t.shape.slice(), data: Float32Array.from(t.dataSync() as Float32Array) };
}

/** Set `target` to checkpoint tensor `name` (its shape must match); `what` names it in errors. */
export function restoreVariable(target: tf.Variable, tensors: NamedTensors, name: string, what: string, source: string): void {
  const h = tensors.get(name);
  if (!h) throw new CheckpointError(`missing ${what} '${name}'`, source);
  if (h.shape.length !== target.shape.length || h.shape.some((d, i) => d !== target.shape[i])) {
    throw new CheckpointError(`${what} '${name}' has shape [${h.shape}], expected [${target.shape}]`, source);
  }
  const fresh = tf.tensor(h.data, h.shape);
  target.assign(fresh);
  fresh.dispose();
}
