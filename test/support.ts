/**
 * Shared test plumbing: where ../shared/data is, and backend start-up.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';
import { initBackend, type BackendChoice } from '../src/backend/index.ts';
import type { CausalLM } from '../src/model/causal-lm.ts';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** The shared data folder (`PRUNELAB_SHARED_DATA` or ../shared/data beside the repo). */
export const SHARED_DATA = process.env.PRUNELAB_SHARED_DATA ?? path.resolve(REPO_ROOT, '../shared/data');
export const HAVE_SHARED = fs.existsSync(SHARED_DATA);
/** Reason given by tests that skip without the shared data. */
export const NO_SHARED_REASON = `shared data not found at ${SHARED_DATA} (set PRUNELAB_SHARED_DATA): this test needs the real checkpoints/text there`;

export function shared(...parts: string[]): string {
  return path.join(SHARED_DATA, ...parts);
}

export const STORIES_BIN = path.join(SHARED_DATA, 'models/stories260K/stories260K.bin');
export const STORIES_TOK = path.join(SHARED_DATA, 'models/stories260K/tok512.bin');

/** Tests run on the default WebAssembly backend unless PRUNELAB_TEST_BACKEND says otherwise. */
export async function setupBackend(): Promise<void> {
  await initBackend((process.env.PRUNELAB_TEST_BACKEND as BackendChoice | undefined) ?? 'wasm', true);
}

export function tmpDir(prefix: string): string {
  return fs.mkdtempSync(path.join(fs.realpathSync(process.env.TMPDIR ?? '/tmp'), `prunelab-${prefix}-`));
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length mismatch ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** Host copy of the logits of `ids` (the device tensor is disposed). */
export function logitsOf(model: CausalLM, ids: number[][]): Float32Array {
  const l = model.forward(ids);
  const d = Float32Array.from(l.dataSync());
  l.dispose();
  return d;
}

/**
 * Whole-model logits of two computations that agree up to fp32 rounding (e.g. LoRA merged vs
 * unmerged): rounding alone moves stories260K's logits (|logit| up to ≈18.5) by ≈3e-5 whatever
 * the adapter's size, so the bound is 1e-5 relative to the largest logit.
 */
export function assertLogitsClose(a: Float32Array, b: Float32Array): void {
  const scale = Math.max(1, ...Array.from(a, Math.abs));
  const diff = maxAbsDiff(a, b);
  assert.ok(diff <= 1e-5 * scale, `max |Δlogit| ${diff} > 1e-5 × ${scale}`);
}
