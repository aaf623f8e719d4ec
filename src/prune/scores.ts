/**
 * Element scores shared by layer-wise methods (pure host numerics, no TensorFlow.js).
 */

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
