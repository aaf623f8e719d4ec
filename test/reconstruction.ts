/**
 * The layer-wise reconstruction error ‖(W − Ŵ)X‖²_F of an operator from the Gram matrix
 * G = XᵀX of its input, as a full quadratic form Σ_rows δGδᵀ with δ = W − Ŵ (row-major `[rows, cols]`).
 * Shared by the tests that order methods by it.
 */
export function reconstructionError(weight: ArrayLike<number>, pruned: ArrayLike<number>, rows: number, cols: number, G: ArrayLike<number>): number {
  let total = 0;
  const d = new Float64Array(cols);
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < cols; j++) d[j] = weight[r * cols + j]! - pruned[r * cols + j]!;
    for (let i = 0; i < cols; i++) {
      if (d[i] === 0) continue;
      let t = 0;
      for (let j = 0; j < cols; j++) t += G[i * cols + j]! * d[j]!;
      total += d[i]! * t;
    }
  }
  return total;
}

/** Ŵ = W where the mask keeps (1), 0 elsewhere. */
export function applyMask(weight: ArrayLike<number>, mask: Uint8Array): Float64Array {
  return Float64Array.from(mask, (keep, i) => (keep ? weight[i]! : 0));
}
