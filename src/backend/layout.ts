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
  /**
   * That path's bound on one step's scores: (batch, kv head) groups are taken together up to this
   * many bytes of scores (the WebAssembly heap never shrinks: B·H·Tq·Tk scores at once were 1 GB
   * for 8 × 512 tokens of 32 heads). The SmolLM-135M shape at 512 tokens (9.4 MB) is one step.
   */
  attentionStepBytes: number;
  /** A wide tied head as `(embedding · xᵀ)ᵀ` (`headProduct`): XNNPACK streams a wide weight badly. */
  transposedHead: boolean;
  /** RoPE's pair swap as a product with a `[hd, hd]` permutation instead of a `reverse` (slow on wasm). */
  ropeByProduct: boolean;
  /**
   * Products with a transposed operand on an explicit transpose, not `transposeA/B` (matMul
   * gradients under `withFastMatMulGradient`, src/linalg/backend.ts): XNNPACK's transposeB runs
   * 10–20× slower; under OpenBLAS the copy only costs (2048²: 194 CPU-ms with transposeB, 259
   * with the transpose).
   */
  explicitTransposes: boolean;
  /**
   * Wide right operands multiplied in column panels (src/linalg/backend.ts): XNNPACK streams a
   * wide packed operand out of cache; under OpenBLAS the slices and the concat only cost (2048²:
   * 195 CPU-ms whole, 331 in panels of 256).
   */
  columnPanels: boolean;
}

const ATTENTION_STEP_BYTES = 16 * 2 ** 20;

let override: Partial<ModelLayout> | null = null;

/** The layout for the active backend (an override, set by benchmarks, wins). */
export function modelLayout(): ModelLayout {
  const backend = tf.getBackend();
  const adapter = backend === 'webgpu' ? webgpuAdapter() : null;
  const blas = backend === 'wasm' && wasmMatmulKernel() === 'openblas';
  const base: ModelLayout = blas
    ? { batchedAttention: true, keysByTransposeB: true, attentionStepBytes: ATTENTION_STEP_BYTES, transposedHead: false, ropeByProduct: true, explicitTransposes: false, columnPanels: false }
    : {
      batchedAttention: adapter !== null && !adapter.software, keysByTransposeB: false, attentionStepBytes: ATTENTION_STEP_BYTES, transposedHead: true, ropeByProduct: false,
      explicitTransposes: true, columnPanels: backend === 'wasm',
    };
  return override ? { ...base, ...override } : base;
}

/** Force layout choices (benchmarks and tests comparing them); null restores the per-backend defaults. */
export function setModelLayout(choice: Partial<ModelLayout> | null): void {
  override = choice;
}
