/**
 * Per-backend layout choices of the model's kernels, in one small object the model's ops consult
 * (one code path, switched here). The first defaults were made for the WebAssembly backend's own
 * GEMM (XNNPACK), where a loop of plain 2-D matMuls beats one batched matMul and `transposeB`
 * runs ~10× slower; a GPU runs a batched matMul as one dispatch instead of one per (batch,
 * key/value head) group; with the wasm backend's products on OpenBLAS (src/backend/openblas.ts)
 * every product variant is equally fast, so the workarounds for XNNPACK only cost time there.
 *
 * Measured (bench-style, median of 5, attention alone; `npm run gpu-check` repeats it on a GPU):
 * on llvmpipe (software WebGPU) per-group 642 ms vs batched 1262 ms at B=1, T=256, 32 heads of
 * 128, and 34 vs 54 ms in favour of batched only at stories260K's tiny shape, so a software
 * adapter keeps per-group; a hardware adapter takes batched. The two agree bit for bit on WebGPU.
 * OpenBLAS: README "Where prefill time goes" (`bench/prefill-profile.ts`).
 */
import * as tf from '@tensorflow/tfjs';
import { wasmMatmulKernel } from './openblas.ts';
import { webgpuAdapter } from './webgpu.ts';

export interface ModelLayout {
  /** Attention as one batched matMul over (batch, key/value head) groups, not a loop of 2-D matMuls. */
  batchedAttention: boolean;
  /**
   * Batched attention reads keys `[Tk, hd]` through `transposeB` (no transposed copy), and bounds
   * its scores by running a few batch rows at a time (see `attention`).
   */
  keysByTransposeB: boolean;
  /** A wide tied head as `(embedding · xᵀ)ᵀ` (`headProduct`): XNNPACK streams a wide weight badly. */
  transposedHead: boolean;
  /** RoPE's pair swap as a product with a `[hd, hd]` permutation instead of a `reverse` (slow on wasm). */
  ropeByProduct: boolean;
  /** matMul gradients on explicit transposes (`withFastMatMulGradient`), not `transposeA/B` products. */
  explicitTransposeGradient: boolean;
}

let override: Partial<ModelLayout> | null = null;

/** The layout for the active backend (an override, set by benchmarks, wins). */
export function modelLayout(): ModelLayout {
  const backend = tf.getBackend();
  const adapter = backend === 'webgpu' ? webgpuAdapter() : null;
  const blas = backend === 'wasm' && wasmMatmulKernel() === 'openblas';
  const base: ModelLayout = blas
    ? { batchedAttention: true, keysByTransposeB: true, transposedHead: false, ropeByProduct: true, explicitTransposeGradient: false }
    : { batchedAttention: adapter !== null && !adapter.software, keysByTransposeB: false, transposedHead: true, ropeByProduct: false, explicitTransposeGradient: true };
  return override ? { ...base, ...override } : base;
}

/** Force layout choices (benchmarks and tests comparing them); null restores the per-backend defaults. */
export function setModelLayout(choice: Partial<ModelLayout> | null): void {
  override = choice;
}
