/**
 * FLAP's fluctuation metrics on the input features of an output projection (`o` or `down`),
 * from streamed per-feature sums, and its bias compensation. CASIA-IVA-Lab/FLAP @ 3bb57db
 * lib/prune.py (`metrics`), lib/layerwrapper.py (`BiasGPT`).
 */
import type { TapStats } from '../../src/prune/method.ts';

export type FlapMetric = 'IFV' | 'WIFV' | 'WIFN';

/** Row-major `[rows, cols]` weight, HF orientation (`[out, in]`). */
export interface HostWeight { data: Float32Array; rows: number; cols: number }

/** Mean of each input feature over all calibration tokens. */
export function featureMean(st: TapStats): Float64Array {
  if (!st.colSum) throw new Error('flap: colSum statistics missing');
  return st.colSum.map((s) => s / st.tokens);
}

/**
 * Variance of each input feature over all calibration tokens: Σx²/N − (Σx/N)², clamped at 0
 * (float rounding can make a constant feature's value slightly negative).
 */
export function featureVariance(st: TapStats): Float64Array {
  if (!st.colSum || !st.colSqSum) throw new Error('flap: colSum/colSqSum statistics missing');
  const n = st.tokens;
  return st.colSqSum.map((q, j) => Math.max(0, q / n - (st.colSum![j] / n) ** 2));
}

/**
 * Per input feature j of weight W (`[out, in]`):
 * IFV  = Var_t(x_j);
 * WIFV = Var_t(x_j) · Σ_i W_ij²;
 * WIFN = mean_i |W_ij| · √(Σ_t x_tj² / N).
 */
export function flapFeatureMetric(metric: FlapMetric, w: HostWeight, st: TapStats): Float64Array {
  const { data, rows, cols } = w;
  if (st.inDim !== cols) throw new Error(`flap: statistics cover ${st.inDim} features, weight has ${cols} inputs`);
  if (metric === 'WIFN') {
    if (!st.colSqSum) throw new Error('flap: colSqSum statistics missing');
    const s = new Float64Array(cols);
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) s[c] += Math.abs(data[r * cols + c]);
    return s.map((v, c) => (v / rows) * Math.sqrt(st.colSqSum![c] / st.tokens));
  }
  const variance = featureVariance(st);
  if (metric === 'IFV') return variance;
  const sq = new Float64Array(cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) sq[c] += data[r * cols + c] ** 2;
  return variance.map((v, c) => v * sq[c]);
}

/**
 * FLAP's compensation for removed input features P: Δb_i = Σ_{j∈P} W_ij · mean_t(x_tj), so the
 * layer's output keeps the removed features' mean contribution.
 */
export function biasCompensation(w: HostWeight, mean: ArrayLike<number>, removed: readonly number[]): Float32Array {
  const delta = new Float64Array(w.rows);
  for (let r = 0; r < w.rows; r++) {
    let s = 0;
    for (const j of removed) s += w.data[r * w.cols + j] * mean[j]!;
    delta[r] = s;
  }
  return Float32Array.from(delta);
}
