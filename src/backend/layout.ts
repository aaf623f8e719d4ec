/**
 * Per-backend layout choices of the model's kernels, in one small object the model's ops consult
 * (one code path, switched here). The defaults were made for the WebAssembly backend, where a
 * loop of plain 2-D matMuls beats one batched matMul; a GPU runs a batched matMul as one
 * dispatch instead of one per (batch, key/value head) group.
 *
 * Measured (bench-style, median of 5, attention alone; `npm run gpu-check` repeats it on a GPU):
 * on llvmpipe (software WebGPU) per-group 642 ms vs batched 1262 ms at B=1, T=256, 32 heads of
 * 128, and 34 vs 54 ms in favour of batched only at stories260K's tiny shape, so a software
 * adapter keeps per-group; a hardware adapter takes batched. The two agree bit for bit on WebGPU.
 */
import * as tf from '@tensorflow/tfjs';
import { webgpuAdapter } from './webgpu.ts';

export interface ModelLayout {
  /** Attention as one batched matMul over (batch, key/value head) groups, not a loop of 2-D matMuls. */
  batchedAttention: boolean;
}

let override: Partial<ModelLayout> | null = null;

/** The layout for the active backend (an override, set by benchmarks, wins). */
export function modelLayout(): ModelLayout {
  const adapter = tf.getBackend() === 'webgpu' ? webgpuAdapter() : null;
  return { batchedAttention: adapter !== null && !adapter.software, ...override };
}

/** Force layout choices (benchmarks comparing them); null restores the per-backend defaults. */
export function setModelLayout(choice: Partial<ModelLayout> | null): void {
  override = choice;
}
