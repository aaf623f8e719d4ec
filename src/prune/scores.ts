/**
 * Element scores shared by layer-wise methods (pure host numerics, no TensorFlow.js).
 */
import { maskForCut, pruneCount, validateSparsity, type Cut } from './masks.ts';
import type { NativeKernels } from '../linalg/linalg.ts';

/**
 * Wanda scores S_ij = |W_ij| · ‖X_j‖₂ of an `[rows, cols]` weight, given Σ over calibration
 * tokens of x_j² per input column (Sun et al., arXiv 2306.11695; baselines.md §2).
 */
export function wandaScores(weight: Float32Array, rows: number, cols: number, colSqSum: Float64Array): Float64Array {
  const norms = colSqSum.map(Math.sqrt);
  const s = new Float64Array(weight.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) s[r * cols + c] = Math.abs(weight[r * cols + c]) * norms[c];
  return s;
}

/**
 * The keep-mask of Wanda's scores under `cut`: `maskForCut(wandaScores(…))`. A per-row cut goes to
 * `native.maskRowsScaled` where the backend has it (each row's scores made in its thread, the same
 * float64 products: the same mask), which took a Wanda prune's scores off the main thread (0.3 of
 * its 3.8 s on two threads, 512×8 bench model); anything else, or a NaN score, as before.
 */
export function wandaMask(weight: Float32Array, rows: number, cols: number, colSqSum: Float64Array, cut: Cut,
  native?: Pick<NativeKernels, 'maskRows' | 'maskRowsScaled'>): Uint8Array {
  if (cut.kind === 'row' && native?.maskRowsScaled && weight.length === rows * cols && colSqSum.length === cols) {
    validateSparsity(cut.sparsity, 'sparsity');
    const k = pruneCount(cols, cut.sparsity);
    if (k > 0) {
      const mask = new Uint8Array(rows * cols);
      if (native.maskRowsScaled(weight, colSqSum.map(Math.sqrt), rows, cols, k, mask) < 0) return mask;
    }
  }
  return maskForCut(wandaScores(weight, rows, cols, colSqSum), rows, cols, cut, native);
}
