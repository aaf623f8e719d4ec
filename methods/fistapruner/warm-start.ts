/**
 * Warm starts W₀ (fistapruner.md §6), all computed from the operator's own Gram matrix G = X*ᵀX*
 * (a PruneLab choice; the paper does not say how its warm-start weights were obtained).
 */
import { maskForCut, withScope, type Cut } from '../../src/prune/masks.ts';
import { wandaMask } from '../../src/prune/scores.ts';
import { sparsegptPrune } from '../../src/prune/obs.ts';
import type { NativeKernels } from '../../src/linalg/linalg.ts';

export const WARM_STARTS = ['wanda', 'sparsegpt', 'dense', 'magnitude'] as const;
export type WarmStart = (typeof WARM_STARTS)[number];

export interface WarmStartInput {
  weight: Float32Array;
  rows: number;
  cols: number;
  /** G = X*ᵀX* `[cols, cols]`. */
  gram: Float64Array;
  cut: Cut;
  /** The backend's native kernels (`ctx.linalg.native`): the per-row mask selection there. */
  native?: Pick<NativeKernels, 'maskRows' | 'maskRowsScaled'>;
}

function masked(w: ArrayLike<number>, mask: Uint8Array): Float64Array {
  const out = new Float64Array(w.length);
  for (let i = 0; i < w.length; i++) if (mask[i]) out[i] = w[i]!;
  return out;
}

/** Wanda: |W_ij|·‖X*_j‖ with ‖X*_j‖ = √G_jj, per output row (N:M per row and block). */
export function wandaWarmStart(x: WarmStartInput): Float64Array {
  const { weight, rows, cols, gram, cut, native } = x;
  const colSqSum = new Float64Array(cols);
  for (let c = 0; c < cols; c++) colSqSum[c] = Math.max(0, gram[c * cols + c]!);
  return masked(weight, wandaMask(weight, rows, cols, colSqSum, withScope(cut, 'row'), native));
}

/** Magnitude, with the same comparison group as the final cut (row, matrix or N:M). */
export function magnitudeWarmStart(x: WarmStartInput): Float64Array {
  const { weight, rows, cols, cut, native } = x;
  return masked(weight, maskForCut(Float64Array.from(weight, Math.abs), rows, cols, cut, native));
}

/**
 * SparseGPT (OBS updates) with Hessian H ∝ G, reference blocksize 128 and percdamp 0.01; an
 * unstructured cut is compared per sweep block over all rows, as in the reference.
 */
export function sparsegptWarmStart(x: WarmStartInput): Float64Array {
  const r = sparsegptPrune(x.weight, x.rows, x.cols, x.gram, withScope(x.cut, 'matrix'));
  return masked(r.weight, r.mask);
}

export function warmStartWeights(kind: WarmStart, x: WarmStartInput): Float64Array {
  switch (kind) {
    case 'wanda': return wandaWarmStart(x);
    case 'magnitude': return magnitudeWarmStart(x);
    case 'dense': return Float64Array.from(x.weight);
    case 'sparsegpt': return sparsegptWarmStart(x);
  }
}
