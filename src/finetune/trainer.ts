/**
 * Recovery fine-tuning: LoRA (or QA-LoRA) adapters trained with the causal-LM loss on token
 * windows of a text corpus, then merged into the base weights.
 *
 * - Data: the corpus is tokenised once and cut into non-overlapping windows of `seqLen` tokens
 *   (last partial window dropped). The *last* `heldOutFraction` of the windows is held out (a
 *   contiguous tail, so no held-out text is also trained on); training windows are visited in a
 *   seeded random order, reshuffled every epoch.
 * - Loss: mean next-token NLL over all tokens of one optimiser step (micro-batches of
 *   `microBatchSize` windows, `gradAccum` of them per step).
 * - Optimiser: AdamW as torch.optim.AdamW computes it (decoupled weight decay p ← p·(1 − lr·wd),
 *   bias-corrected moments), written with tf ops. Learning rate: linear warm-up over
 *   `warmupSteps` (step s ≤ W gets lr·s/W, steps counted from 1), then cosine decay to
 *   `lr·minLrRatio` at the last step. Gradients are clipped by global norm (`maxGradNorm`, 0 = off)
 *   as torch's clip_grad_norm_ does (factor max_norm/(norm + 1e-6), capped at 1).
 * - Base weights are frozen: only the adapter variables are passed to `tf.variableGrads`.
 * - Masks: see lora.ts — zeros of the base weights stay zero through training and merge.
 * - Checkpoints (`checkpointDir`, every `checkpointEvery` steps and at the end): adapter weights and
 *   AdamW moments (safetensors), step, RNG state, data cursor and the log so far (state.json).
 *   Each file is written to a temporary name, fsynced and renamed, state.json last, so a crash
 *   leaves the previous checkpoint intact. `resume: true` continues from it (from scratch when the
 *   folder holds none); a resumed run reproduces the uninterrupted run's losses exactly on the
 *   same backend, because every random draw (data order, dropout masks) comes from saved state.
 *   Resume expects the same base model as the original run (a fresh load): it is checked by a
 *   weight checksum.
 */
import fs from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import seedrandom from 'seedrandom';
import { z } from 'zod';
import type { CausalLM } from '../model/causal-lm.ts';
import type { LinearRole } from '../model/family.ts';
import { causalLmNllSum, trainingNllSum } from '../model/loss.ts';
import { withFastMatMulGradient } from '../model/matmul-grad.ts';
import { writeAtomic } from '../util/atomic.ts';
import type { Tokenizer } from '../tokenizer/types.ts';
import { readSafetensors, writeSafetensors } from '../io/safetensors.ts';
import type { NamedTensors } from '../model/tensor-data.ts';
import { CheckpointError, ConfigError, DataError } from '../util/errors.ts';
import { LoraSet, trainable } from './lora.ts';
import { resolveSchedule, type ResolvedSchedule, type ScheduleSpec } from './schedule.ts';
import type { GroupQuantized } from './quant.ts';

const ROLES = ['q', 'k', 'v', 'o', 'gate', 'up', 'down', 'fc1', 'fc2'] as const;

const scheduleSchema = z.union([
  z.literal('uniform'),
  z.literal('saap'),
  z.strictObject({ kind: z.literal('uniform') }),
  z.strictObject({
    kind: z.literal('cfsp'),
    scores: z.array(z.number().positive()).min(1),
    allocation: z.enum(['uniform', 'importance', 'inverse']).optional(),
    alphaPolicy: z.enum(['constant-scale', 'constant-alpha']).optional(),
  }),
  z.strictObject({
    kind: z.literal('saap'),
    quant: z.enum(['group', 'none', 'plain']).optional(),
    bits: z.number().int().min(2).max(8).optional(),
    groupSize: z.number().int().positive().optional(),
  }),
]);

/**
 * The serialisable recovery settings (what an experiment YAML's `recovery:` block holds).
 * Unknown keys are errors. Defaults follow LLM-Pruner's recipe (baselines.md §8.6) where it has
 * one: r 8, α 16, dropout 0.05, lr 1e-4, all linears of every layer.
 */
export const finetuneConfigSchema = z.strictObject({
  schedule: scheduleSchema.default('uniform'),
  /** r̄: the rank (uniform) or mean rank (cfsp). */
  rank: z.number().int().positive().default(8),
  alpha: z.number().positive().default(16),
  dropout: z.number().min(0).lt(1).default(0.05),
  /** Linear roles to adapt; default all linears of the family. */
  targets: z.array(z.enum(ROLES)).min(1).optional(),
  /** Layers to adapt; default all. */
  layers: z.array(z.number().int().nonnegative()).optional(),
  steps: z.number().int().positive(),
  lr: z.number().positive().default(1e-4),
  weightDecay: z.number().min(0).default(0),
  beta1: z.number().min(0).lt(1).default(0.9),
  beta2: z.number().min(0).lt(1).default(0.999),
  eps: z.number().positive().default(1e-8),
  /** Default: min(100, 10 % of steps). */
  warmupSteps: z.number().int().nonnegative().optional(),
  minLrRatio: z.number().min(0).max(1).default(0),
  seqLen: z.number().int().min(2).default(128),
  microBatchSize: z.number().int().positive().default(4),
  gradAccum: z.number().int().positive().default(1),
  maxGradNorm: z.number().min(0).default(1),
  heldOutFraction: z.number().gt(0).lt(1).default(0.1),
  /** Cap on held-out windows scored (cost control); default all. */
  maxHeldOutWindows: z.number().int().positive().optional(),
  seed: z.number().int().default(0),
  preserveMasks: z.boolean().default(true),
  /** Fold adapters into the base weights at the end (default true). */
  merge: z.boolean().default(true),
  checkpointDir: z.string().min(1).optional(),
  checkpointEvery: z.number().int().positive().optional(),
  resume: z.boolean().default(false),
  /** Stop this call once this global step is done (checkpoint written, nothing merged). */
  stopAfterStep: z.number().int().positive().optional(),
});

export type FinetuneConfig = z.input<typeof finetuneConfigSchema>;
type ResolvedConfig = z.output<typeof finetuneConfigSchema>;

/** Training text: token ids, or text (one string, or documents each encoded with BOS). */
export type FinetuneData =
  | { tokens: ArrayLike<number> }
  | { text: string | readonly string[]; tokenizer: Tokenizer; addBos?: boolean };

export interface TrainLogEntry {
  step: number;
  loss: number;
  lr: number;
  gradNorm: number;
}

export interface FinetuneProgress extends TrainLogEntry {
  steps: number;
}

export interface FinetuneOptions extends FinetuneConfig {
  data: FinetuneData;
  onProgress?: (p: FinetuneProgress) => void;
}

export interface FinetuneResult {
  /** False when `stopAfterStep` ended the call early (adapters discarded, nothing merged). */
  completed: boolean;
  /** Global steps done. */
  step: number;
  resumedFromStep: number | null;
  /** Every step so far, restored entries included after a resume. */
  log: TrainLogEntry[];
  /**
   * Mean held-out token NLL: `before` on the model as given, `start` with adapters attached at
   * the starting point (the fake-quantised base for SAAP), `after` on the returned model
   * (merged, or with adapters attached when `merge` is false; null when not completed).
   */
  heldOut: { before: number; start: number; after: number | null; tokens: number; windows: number };
  trainWindows: number;
  schedule: ResolvedSchedule;
  trainableParams: number;
  /** QA-LoRA form after merge: the quantised weights (updated β) by `<layer>.<role>`. */
  quantized: Map<string, GroupQuantized> | null;
  /** With `merge: false`: the adapters, attached (evaluation mode); the caller disposes them. */
  adapters: LoraSet | null;
}

export function parseFinetuneConfig(raw: unknown): ResolvedConfig {
  const r = finetuneConfigSchema.safeParse(raw);
  if (!r.success) {
    const msg = r.error.issues.map((i) => `${i.path.length ? i.path.join('.') : '(recovery)'}: ${i.message}`).join('; ');
    throw new ConfigError(`invalid recovery options: ${msg}`);
  }
  return r.data;
}

/** Learning rate of optimiser step `step` (1-based): linear warm-up, then cosine to lr·minLrRatio. */
export function lrAt(step: number, c: { lr: number; steps: number; warmupSteps: number; minLrRatio: number }): number {
  const { lr, steps, warmupSteps: W } = c;
  if (W > 0 && step <= W) return (lr * step) / W;
  const span = Math.max(1, steps - W);
  const progress = Math.min(1, (step - W) / span);
  const min = lr * c.minLrRatio;
  return min + (lr - min) * 0.5 * (1 + Math.cos(Math.PI * progress));
}

export function tokenize(data: FinetuneData): number[] {
  if ('tokens' in data) return Array.from(data.tokens);
  const docs = typeof data.text === 'string' ? [data.text] : data.text;
  const addBos = data.addBos ?? true;
  const out: number[] = [];
  for (const d of docs) if (d.length > 0) out.push(...data.tokenizer.encode(d, { addBos }));
  return out;
}

/** Non-overlapping windows of `seqLen` tokens; the last `fraction` (at least one) is held out. */
export function splitWindows(tokens: readonly number[], seqLen: number, fraction: number): { train: number[][]; heldOut: number[][] } {
  const n = Math.floor(tokens.length / seqLen);
  const windows = Array.from({ length: n }, (_, i) => tokens.slice(i * seqLen, (i + 1) * seqLen));
  const held = Math.max(1, Math.round(n * fraction));
  if (n - held < 1) {
    throw new DataError(`corpus too small: ${tokens.length} tokens give ${n} windows of ${seqLen}, ` +
      `need at least one training and one held-out window (lower seqLen or heldOutFraction, or give more text)`);
  }
  return { train: windows.slice(0, n - held), heldOut: windows.slice(n - held) };
}


/** Mean next-token NLL of `model` (with whatever hook it has) over `windows`. */
export function heldOutLoss(model: CausalLM, windows: readonly number[][], batchSize: number): { loss: number; tokens: number } {
  let sum = 0;
  let tokens = 0;
  for (let i = 0; i < windows.length; i += batchSize) {
    const batch = windows.slice(i, i + batchSize);
    const logits = model.forward(batch);
    const r = causalLmNllSum(logits, batch);
    sum += r.sum.dataSync()[0];
    tokens += r.count;
    logits.dispose();
    r.sum.dispose();
  }
  return { loss: sum / tokens, tokens };
}

export interface AdamWOptions {
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

/**
 * AdamW as torch.optim.AdamW computes it, for a fixed list of variables:
 * p ← p·(1 − lr·wd) − (lr/bc1)·m / (√v/√bc2 + ε), bc_i = 1 − β_i^t.
 */
export class AdamW {
  readonly m: tf.Variable<tf.Rank.R2>[];
  readonly v: tf.Variable<tf.Rank.R2>[];
  /** Updates done so far (t of the bias corrections). */
  t = 0;

  constructor(readonly params: readonly tf.Variable[], readonly opts: AdamWOptions) {
    this.m = params.map((p) => trainable(tf.zerosLike(p as tf.Tensor2D), false));
    this.v = params.map((p) => trainable(tf.zerosLike(p as tf.Tensor2D), false));
  }

  /** One update with gradients in `params` order, each scaled by `gradScale` (clipping). */
  step(grads: readonly tf.Tensor[], lr: number, gradScale = 1): void {
    const { beta1, beta2, eps, weightDecay } = this.opts;
    this.t += 1;
    const bc1 = 1 - beta1 ** this.t;
    const bc2 = 1 - beta2 ** this.t;
    tf.tidy(() => {
      this.params.forEach((p, i) => {
        const g = gradScale !== 1 ? tf.mul(grads[i], gradScale) : grads[i];
        this.m[i].assign(tf.add(tf.mul(this.m[i], beta1), tf.mul(g, 1 - beta1)) as tf.Tensor2D);
        this.v[i].assign(tf.add(tf.mul(this.v[i], beta2), tf.mul(tf.square(g), 1 - beta2)) as tf.Tensor2D);
        const denom = tf.add(tf.div(tf.sqrt(this.v[i]), Math.sqrt(bc2)), eps);
        const decayed = weightDecay > 0 ? tf.mul(p, 1 - lr * weightDecay) : p;
        p.assign(tf.sub(decayed, tf.mul(tf.div(this.m[i], denom), lr / bc1)));
      });
    });
  }

  /** Moments by name (`adam.m.<i>`, `adam.v.<i>`), for checkpoints. */
  toNamedTensors(out: NamedTensors = new Map()): NamedTensors {
    this.params.forEach((_, i) => {
      out.set(`adam.m.${i}`, { shape: this.m[i].shape.slice(), data: Float32Array.from(this.m[i].dataSync()) });
      out.set(`adam.v.${i}`, { shape: this.v[i].shape.slice(), data: Float32Array.from(this.v[i].dataSync()) });
    });
    return out;
  }

  loadNamedTensors(tensors: NamedTensors, t: number, source: string): void {
    this.params.forEach((_, i) => {
      for (const [kind, arr] of [['m', this.m], ['v', this.v]] as const) {
        const h = tensors.get(`adam.${kind}.${i}`);
        const target = arr[i];
        if (!h || h.data.length !== target.size) throw new CheckpointError(`missing or misshapen optimiser moment adam.${kind}.${i}`, source);
        const fresh = tf.tensor2d(h.data, [target.shape[0], target.shape[1]]);
        target.assign(fresh);
        fresh.dispose();
      }
    });
    this.t = t;
  }

  dispose(): void {
    tf.dispose([...this.m, ...this.v]);
  }
}

type AleaState = seedrandom.State.Alea;

interface Cursor {
  epoch: number;
  pos: number;
}

/** Seeded order of training windows: a fresh permutation per epoch, derived from (seed, epoch). */
class DataOrder {
  private perm: number[] = [];
  private permEpoch = -1;
  constructor(private readonly n: number, private readonly seed: number, public cursor: Cursor) {}

  private permutation(epoch: number): number[] {
    if (this.permEpoch !== epoch) {
      const rng = seedrandom.alea(`${this.seed}:order:${epoch}`);
      const p = Array.from({ length: this.n }, (_, i) => i);
      for (let i = p.length - 1; i > 0; i--) {
        const j = Math.floor(rng() * (i + 1));
        [p[i], p[j]] = [p[j], p[i]];
      }
      this.perm = p;
      this.permEpoch = epoch;
    }
    return this.perm;
  }

  next(count: number): number[] {
    const out: number[] = [];
    while (out.length < count) {
      if (this.cursor.pos >= this.n) this.cursor = { epoch: this.cursor.epoch + 1, pos: 0 };
      out.push(this.permutation(this.cursor.epoch)[this.cursor.pos]);
      this.cursor = { ...this.cursor, pos: this.cursor.pos + 1 };
    }
    return out;
  }
}

interface CheckpointState {
  version: 1;
  step: number;
  rng: AleaState;
  cursor: Cursor;
  log: TrainLogEntry[];
  fingerprint: Record<string, unknown>;
  tensors: string;
}

const STATE_FILE = 'state.json';

function saveCheckpoint(dir: string, state: Omit<CheckpointState, 'tensors' | 'version'>, tensors: NamedTensors): void {
  fs.mkdirSync(dir, { recursive: true });
  // Leftovers of a save that crashed half-way.
  for (const f of fs.readdirSync(dir)) if (/\.tmp-\d+$/.test(f)) fs.rmSync(path.join(dir, f), { force: true });
  const tensorsName = `state-${state.step}.safetensors`;
  writeAtomic(path.join(dir, tensorsName), (tmp) => writeSafetensors(tmp, tensors, 'F32', { format: 'prunelab-lora-trainer' }));
  const full: CheckpointState = { version: 1, ...state, tensors: tensorsName };
  writeAtomic(path.join(dir, STATE_FILE), (tmp) => fs.writeFileSync(tmp, JSON.stringify(full)));
  // Only now is the previous tensors file unreferenced.
  for (const f of fs.readdirSync(dir)) {
    if (/^state-\d+\.safetensors$/.test(f) && f !== tensorsName) fs.rmSync(path.join(dir, f), { force: true });
  }
}

function readCheckpoint(dir: string): { state: CheckpointState; tensors: NamedTensors } | null {
  const file = path.join(dir, STATE_FILE);
  if (!fs.existsSync(file)) return null;
  let state: CheckpointState;
  try {
    state = JSON.parse(fs.readFileSync(file, 'utf8')) as CheckpointState;
  } catch (e) {
    throw new CheckpointError(`unreadable trainer state: ${(e as Error).message}`, file);
  }
  if (state.version !== 1 || typeof state.tensors !== 'string') throw new CheckpointError('not a PruneLab trainer state (version 1)', file);
  return { state, tensors: readSafetensors(path.join(dir, state.tensors)) };
}

/** Per-linear Σ|w| of the targeted base weights: detects resuming onto a different model. */
function weightChecksum(model: CausalLM, ranks: readonly number[], targets: readonly LinearRole[]): number[] {
  const out: number[] = [];
  ranks.forEach((r, layer) => {
    if (r === 0) return;
    for (const role of targets) {
      const s = tf.tidy(() => tf.sum(tf.abs(model.linearParams(layer, role).weight)));
      out.push(s.dataSync()[0]);
      s.dispose();
    }
  });
  return out;
}

function fnv1a(tokens: readonly number[]): string {
  let h = 0x811c9dc5;
  for (const t of tokens) {
    h ^= t & 0xffff;
    h = Math.imul(h, 0x01000193) >>> 0;
    h ^= t >>> 16;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16);
}

function compareFingerprints(saved: Record<string, unknown>, now: Record<string, unknown>, file: string): void {
  const bad: string[] = [];
  for (const k of new Set([...Object.keys(saved), ...Object.keys(now)])) {
    if (k === 'weights') continue;
    if (JSON.stringify(saved[k]) !== JSON.stringify(now[k])) bad.push(`${k} (checkpoint ${JSON.stringify(saved[k])}, now ${JSON.stringify(now[k])})`);
  }
  const a = saved['weights'] as number[] | undefined;
  const b = now['weights'] as number[];
  if (!a || a.length !== b.length || a.some((x, i) => Math.abs(x - b[i]) > 1e-5 * Math.max(1, Math.abs(x)))) {
    bad.push('base weights (resume needs the same, unmodified base model as the original run)');
  }
  if (bad.length) throw new ConfigError(`cannot resume: the checkpoint was made with different settings: ${bad.join('; ')}`, file);
}

/**
 * Fine-tune `model` in place with LoRA adapters per `options.schedule` and (by default) merge
 * them into its weights. The model's previous `linearHook` is restored at the end.
 */
export function finetune(model: CausalLM, options: FinetuneOptions): FinetuneResult {
  // Attention, output head and RoPE products train through the fast explicit-transpose gradient.
  return withFastMatMulGradient(() => finetuneImpl(model, options));
}

function finetuneImpl(model: CausalLM, options: FinetuneOptions): FinetuneResult {
  const { data, onProgress, ...raw } = options;
  const cfg = parseFinetuneConfig(raw);
  const warmupSteps = cfg.warmupSteps ?? Math.min(100, Math.floor(cfg.steps * 0.1));
  if ((cfg.checkpointEvery !== undefined || cfg.resume) && !cfg.checkpointDir) {
    throw new ConfigError('checkpointEvery / resume need checkpointDir');
  }
  const schedule = resolveSchedule(cfg.schedule as ScheduleSpec, {
    rank: cfg.rank, alpha: cfg.alpha, numLayers: model.numLayers, layers: cfg.layers,
  });
  const targets: LinearRole[] = cfg.targets ?? model.spec.linears.map((l) => l.role);

  const tokens = tokenize(data);
  const vocab = model.config.vocabSize;
  const badTok = tokens.find((t) => !Number.isInteger(t) || t < 0 || t >= vocab);
  if (badTok !== undefined) throw new DataError(`token id ${badTok} is outside the model's vocabulary 0..${vocab - 1}`);
  const { train, heldOut: heldAll } = splitWindows(tokens, cfg.seqLen, cfg.heldOutFraction);
  const heldOut = cfg.maxHeldOutWindows ? heldAll.slice(0, cfg.maxHeldOutWindows) : heldAll;
  const evalBatch = cfg.microBatchSize;

  const fingerprint: Record<string, unknown> = {
    family: model.config.family, numLayers: model.numLayers, schedule: schedule, targets,
    dropout: cfg.dropout, steps: cfg.steps, lr: cfg.lr, weightDecay: cfg.weightDecay,
    betas: [cfg.beta1, cfg.beta2], eps: cfg.eps, warmupSteps, minLrRatio: cfg.minLrRatio,
    seqLen: cfg.seqLen, microBatchSize: cfg.microBatchSize, gradAccum: cfg.gradAccum,
    maxGradNorm: cfg.maxGradNorm, heldOutFraction: cfg.heldOutFraction, seed: cfg.seed,
    preserveMasks: cfg.preserveMasks, tokens: `${tokens.length}:${fnv1a(tokens)}`,
    weights: weightChecksum(model, schedule.ranks, targets),
  };
  const ckpt = cfg.resume && cfg.checkpointDir ? readCheckpoint(cfg.checkpointDir) : null;
  if (ckpt) compareFingerprints(ckpt.state.fingerprint, fingerprint, path.join(cfg.checkpointDir as string, STATE_FILE));

  const savedHook = model.linearHook;
  const before = heldOutLoss(model, heldOut, evalBatch);

  const set = LoraSet.create(model, {
    ranks: schedule.ranks, alphas: schedule.alphas, dropout: cfg.dropout, targets,
    quant: schedule.quant, preserveMasks: cfg.preserveMasks, seed: cfg.seed,
  });
  const vars = set.variables();
  const adam = new AdamW(vars, { beta1: cfg.beta1, beta2: cfg.beta2, eps: cfg.eps, weightDecay: cfg.weightDecay });
  let keepAdapters = false;

  try {
    set.attach(model, { training: false });
    const start = heldOutLoss(model, heldOut, evalBatch).loss;

    let step = 0;
    let log: TrainLogEntry[] = [];
    let rng = seedrandom.alea(`${cfg.seed}:train`, { state: true });
    const order = new DataOrder(train.length, cfg.seed, { epoch: 0, pos: 0 });
    let resumedFromStep: number | null = null;
    if (ckpt) {
      set.loadNamedTensors(ckpt.tensors, cfg.checkpointDir as string);
      adam.loadNamedTensors(ckpt.tensors, ckpt.state.step, cfg.checkpointDir as string);
      step = ckpt.state.step;
      log = ckpt.state.log.slice();
      rng = seedrandom.alea('', { state: ckpt.state.rng });
      order.cursor = { ...ckpt.state.cursor };
      resumedFromStep = step;
    }

    const save = () => {
      if (!cfg.checkpointDir) return;
      const t = adam.toNamedTensors(set.toNamedTensors());
      saveCheckpoint(cfg.checkpointDir, { step, rng: rng.state(), cursor: order.cursor, log, fingerprint }, t);
    };

    const stopAt = Math.min(cfg.steps, cfg.stopAfterStep ?? cfg.steps);
    set.setMode({ training: true });
    while (step < stopAt) {
      step += 1;
      const lr = lrAt(step, { lr: cfg.lr, steps: cfg.steps, warmupSteps, minLrRatio: cfg.minLrRatio });
      let grads: tf.Tensor[] | null = null;
      let loss = 0;
      for (let k = 0; k < cfg.gradAccum; k++) {
        const batch = order.next(cfg.microBatchSize).map((i) => train[i]);
        set.dropoutSeed = rng.int32();
        const { value, grads: g } = tf.variableGrads(() => {
          const logits = model.forward(batch);
          const { sum, count } = trainingNllSum(logits, batch);
          return tf.div(sum, count * cfg.gradAccum) as tf.Scalar;
        }, vars);
        loss += value.dataSync()[0];
        value.dispose();
        const gl = vars.map((vv) => g[vv.name]);
        if (grads === null) {
          grads = gl;
        } else {
          const prev: tf.Tensor[] = grads;
          grads = prev.map((p, i) => tf.add(p, gl[i]));
          tf.dispose([...prev, ...gl]);
        }
      }
      const gList = grads as tf.Tensor[];
      const normT = tf.tidy(() => tf.sqrt(tf.addN(gList.map((g) => tf.sum(tf.square(g))))));
      const gradNorm = normT.dataSync()[0];
      normT.dispose();
      const clip = cfg.maxGradNorm > 0 ? Math.min(1, cfg.maxGradNorm / (gradNorm + 1e-6)) : 1;
      adam.step(gList, lr, clip);
      tf.dispose(gList);
      const entry: TrainLogEntry = { step, loss, lr, gradNorm };
      log.push(entry);
      onProgress?.({ ...entry, steps: cfg.steps });
      if ((cfg.checkpointEvery && step % cfg.checkpointEvery === 0) || step === stopAt) save();
    }
    set.setMode({ training: false });

    const base = {
      step, resumedFromStep, log, trainWindows: train.length, schedule,
      trainableParams: set.numTrainableParams,
    };
    const heldInfo = { before: before.loss, start, tokens: before.tokens, windows: heldOut.length };
    if (step < cfg.steps) {
      return { ...base, completed: false, heldOut: { ...heldInfo, after: null }, quantized: null, adapters: null };
    }
    let quantized: Map<string, GroupQuantized> | null = null;
    if (cfg.merge) {
      const q = set.merge(model);
      quantized = schedule.quant ? q : null;
    } else {
      keepAdapters = true;
    }
    const after = heldOutLoss(model, heldOut, evalBatch).loss;
    return {
      ...base, completed: true, heldOut: { ...heldInfo, after }, quantized,
      adapters: keepAdapters ? set : null,
    };
  } finally {
    adam.dispose();
    if (!keepAdapters) {
      set.dispose();
      model.linearHook = savedHook;
    }
  }
}
