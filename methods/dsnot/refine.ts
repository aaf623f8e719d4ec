/**
 * DSnoT mask refinement (baselines.md §4; zyxxmu/DSnoT `lib/prune.py`, `prune_DSnoT`): starting
 * from an initial mask, swap (prune, regrow) pairs per output row to drive the row's expected
 * output error e_i = Σ_{j pruned} W_ij·μ_j towards zero. No weight update.
 *
 * DSnoT's aim is the reconstruction error ‖(W − Ŵ)X‖² of the operator; e_i is its proxy (the
 * mean part). PruneLab keeps a swap only when it also lowers the row's exact reconstruction
 * error δGδᵀ (δ = W − Ŵ, G = Σ xxᵀ), and proposes only swaps that move e towards zero, so the
 * result is never worse than the initial mask on that objective (README, items 3–5 and 11).
 *
 * The reference vectorises over rows but rows never interact (each row has its own error, lists
 * and sticky stop flag; the loop ends when every row stopped or after max_cycle_time cycles), so
 * this runs row by row.
 */
import { maskForCut, maskNM, maskPerRow, pruneCount, type Cut } from '../../src/prune/masks.ts';
import { PruneLabError } from '../../src/util/errors.ts';

export interface DsnotInputs {
  /** `[rows, cols]` row-major. */
  weight: Float32Array;
  rows: number;
  cols: number;
  /** Per input column: expected per-sequence sum of x_j (the reference's `sum_metric_row`). */
  mu: Float64Array;
  /** Per input column: variance of x_j. */
  variance: Float64Array;
  /** `[rows, cols]`: Wanda scores, which order the prune candidates (unstructured). */
  wanda: Float64Array;
  /** `[rows, cols]`: the initial-mask metric (Wanda, |W| or SparseGPT's w²/U_jj²). */
  initial: Float64Array;
  /** `[cols, cols]`: G = Σ over calibration tokens of x xᵀ (the exact objective's Gram matrix). */
  gram: Float64Array;
}

export interface DsnotParams {
  maxCycleTime: number;
  updateThreshold: number;
  powOfVarRegrowing: number;
  /** Also require sign(e_after) = sign(e_initial) (unstructured only; always on for N:M). */
  sameSign: boolean;
}

export interface DsnotResult {
  /** 1 = keep, 0 = pruned. */
  mask: Uint8Array;
  /** Accepted swaps, all rows. */
  swaps: number;
  /** Cycles the reference's shared loop would run (max over rows, ≤ maxCycleTime). */
  cycles: number;
  /** Σ_rows |e_i| before and after refinement. */
  absErrorBefore: number;
  absErrorAfter: number;
  /** Change of ‖(W − Ŵ)X‖² (in G's scale) by the accepted swaps: ≤ 0. */
  objectiveChange: number;
  /** Rows stopped because their next swap would not have lowered ‖(W − Ŵ)X‖². */
  objectiveStops: number;
}

/** Initial mask only (skipped operators): the cut on the initial metric. */
export function initialMask(inp: DsnotInputs, cut: Cut): Uint8Array {
  return maskForCut(inp.initial, inp.rows, inp.cols, cut);
}

/** DSnoT under `cut`: per-row unstructured (`dsnotUnstructured`) or N:M (`dsnotNM`). */
export function dsnotRefine(inp: DsnotInputs, cut: Cut, p: DsnotParams): DsnotResult {
  switch (cut.kind) {
    case 'row': return dsnotUnstructured(inp, cut.sparsity, p);
    case 'nm': return dsnotNM(inp, cut.n, cut.m, p);
    case 'matrix': throw new PruneLabError('dsnot: swaps keep each row\'s count, so the cut must be per row or N:M, not per matrix');
  }
}

/** Unstructured DSnoT: every row keeps exactly ⌊s·cols⌋ pruned entries. */
export function dsnotUnstructured(inp: DsnotInputs, sparsity: number, p: DsnotParams): DsnotResult {
  const { rows, cols } = inp;
  check(inp);
  const mask = maskPerRow(inp.initial, rows, cols, sparsity);
  const k = pruneCount(cols, sparsity);
  const res = emptyResult(mask);
  const D = new Float64Array(cols);
  const ratio = new Float64Array(cols);
  const pruned: number[] = [];
  const kept: number[] = [];
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    let e = rowSetup(inp, r, D, ratio, p.powOfVarRegrowing);
    pruned.length = 0;
    kept.length = 0;
    for (let j = 0; j < cols; j++) {
      if (mask[o + j]) {
        kept.push(j);
      } else {
        pruned.push(j);
        e += D[j]!;
      }
    }
    res.absErrorBefore += Math.abs(e);
    if (k === 0 || k === cols || p.maxCycleTime < 1) {
      res.absErrorAfter += Math.abs(e);
      continue;
    }
    // Regrow candidates: pruned entries by ascending D/var^γ (stable).
    const regrow = pruned.slice().sort((a, b) => ratio[a]! - ratio[b]! || a - b);
    // Prune candidates: kept entries by ascending Wanda score (stable), then negatives in that
    // order, zeros, positives reversed (`return_reorder_indice`).
    const byWanda = kept.slice().sort((a, b) => inp.wanda[o + a]! - inp.wanda[o + b]! || a - b);
    const prune = [
      ...byWanda.filter((j) => D[j]! < 0),
      ...byWanda.filter((j) => D[j] === 0),
      ...byWanda.filter((j) => D[j]! > 0).reverse(),
    ];
    const eInit = e;
    let gLo = 0, gHi = regrow.length - 1, pLo = 0, pHi = prune.length - 1;
    let cyc = 0;
    while (cyc < p.maxCycleTime) {
      cyc++;
      if (!(Math.abs(e) > p.updateThreshold)) break;
      // e > 0: regrow the largest D/var (end), prune the lowest-Wanda negative D (start); e < 0
      // mirrored. Only candidates that move e towards 0 (README item 3).
      if (gLo > gHi || pLo > pHi) break;
      const g = e > 0 ? regrow[gHi--]! : regrow[gLo++]!;
      const q = e > 0 ? prune[pLo++]! : prune[pHi--]!;
      if (!(Math.sign(D[g]!) === Math.sign(e) && Math.sign(D[q]!) === -Math.sign(e))) break;
      const after = e + D[q]! - D[g]!;
      if (p.sameSign && Math.sign(after) !== Math.sign(eInit)) break;
      const change = swapChange(inp, mask, o, q, g);
      if (!(change < 0)) {
        res.objectiveStops++;
        break;
      }
      mask[o + q] = 0;
      mask[o + g] = 1;
      e = after;
      res.swaps++;
      res.objectiveChange += change;
    }
    res.cycles = Math.max(res.cycles, cyc);
    res.absErrorAfter += Math.abs(e);
  }
  return res;
}

/**
 * N:M DSnoT: the regrown entry's M-block gives up its kept entry with the lowest initial metric
 * (entries swapped out earlier are no longer candidates), so every block keeps N pruned. The
 * same-sign check is always on, as in the reference.
 */
export function dsnotNM(inp: DsnotInputs, n: number, m: number, p: DsnotParams): DsnotResult {
  const { rows, cols } = inp;
  check(inp);
  const mask = maskNM(inp.initial, rows, cols, n, m);
  const res = emptyResult(mask);
  const D = new Float64Array(cols);
  const ratio = new Float64Array(cols);
  const avail = new Uint8Array(cols);
  const pruned: number[] = [];
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    let e = rowSetup(inp, r, D, ratio, p.powOfVarRegrowing);
    pruned.length = 0;
    for (let j = 0; j < cols; j++) {
      avail[j] = mask[o + j]!;
      if (!mask[o + j]) {
        pruned.push(j);
        e += D[j]!;
      }
    }
    res.absErrorBefore += Math.abs(e);
    const regrow = pruned.sort((a, b) => ratio[a]! - ratio[b]! || a - b);
    const eInit = e;
    let gLo = 0, gHi = regrow.length - 1;
    let cyc = 0;
    while (cyc < p.maxCycleTime && gLo <= gHi) {
      cyc++;
      if (!(Math.abs(e) > p.updateThreshold)) break;
      const g = e > 0 ? regrow[gHi--]! : regrow[gLo++]!;
      if (Math.sign(D[g]!) !== Math.sign(e)) break; // regrowing it would move e away from 0
      const b0 = g - (g % m);
      let q = -1;
      for (let j = b0; j < b0 + m; j++) {
        if (avail[j] && (q < 0 || inp.initial[o + j]! < inp.initial[o + q]!)) q = j;
      }
      if (q < 0) break; // every kept entry of this block was already swapped out
      avail[q] = 0;
      const after = e + D[q]! - D[g]!;
      if (Math.sign(after) !== Math.sign(eInit)) break;
      const change = swapChange(inp, mask, o, q, g);
      if (!(change < 0)) {
        res.objectiveStops++;
        break;
      }
      mask[o + q] = 0;
      mask[o + g] = 1;
      e = after;
      res.swaps++;
      res.objectiveChange += change;
    }
    res.cycles = Math.max(res.cycles, cyc);
    res.absErrorAfter += Math.abs(e);
  }
  return res;
}

function emptyResult(mask: Uint8Array): DsnotResult {
  return { mask, swaps: 0, cycles: 0, absErrorBefore: 0, absErrorAfter: 0, objectiveChange: 0, objectiveStops: 0 };
}

/**
 * Change of the row's ‖δX‖² = δGδᵀ (δ = W − Ŵ, non-zero on pruned entries) when kept entry q is
 * pruned and pruned entry g regrown: δ gains W_q at q and loses W_g at g, so the change is
 * 2(W_q·(δG)_q − W_g·(δG)_g) + W_q²G_qq + W_g²G_gg − 2·W_q·W_g·G_qg, with δ before the swap.
 */
function swapChange(inp: DsnotInputs, mask: Uint8Array, o: number, q: number, g: number): number {
  const { weight: W, gram: G, cols } = inp;
  const gq = q * cols;
  const gg = g * cols;
  let vq = 0;
  let vg = 0;
  for (let j = 0; j < cols; j++) {
    if (mask[o + j]) continue;
    const w = W[o + j]!;
    vq += w * G[gq + j]!;
    vg += w * G[gg + j]!;
  }
  const wq = W[o + q]!;
  const wg = W[o + g]!;
  const cross = 0.5 * (G[gq + g]! + G[gg + q]!); // G is symmetric up to fp32 accumulation
  return 2 * (wq * vq - wg * vg) + wq * wq * G[gq + q]! + wg * wg * G[gg + g]! - 2 * wq * wg * cross;
}

/** Fills D_j = W_rj·μ_j and the regrowing key D_j / var_j^γ of row r; returns 0 (e's start). */
function rowSetup(inp: DsnotInputs, r: number, D: Float64Array, ratio: Float64Array, gamma: number): number {
  const o = r * inp.cols;
  for (let j = 0; j < inp.cols; j++) {
    const d = inp.weight[o + j]! * inp.mu[j]!;
    D[j] = d;
    // γ = 0 disables the division (the reference's `if args.pow_of_var_regrowing`). A zero
    // variance gives ±∞ (kept: such a column is constant, its mean error is certain) or, with
    // D = 0, NaN, ranked as 0.
    const q = gamma ? d / Math.pow(inp.variance[j]!, gamma) : d;
    ratio[j] = q === q ? q : 0;
  }
  return 0;
}

function check(inp: DsnotInputs): void {
  const n = inp.rows * inp.cols;
  if (inp.weight.length !== n || inp.wanda.length !== n || inp.initial.length !== n) {
    throw new PruneLabError(`dsnot: weight/score arrays do not match ${inp.rows}×${inp.cols}`);
  }
  if (inp.mu.length !== inp.cols || inp.variance.length !== inp.cols) {
    throw new PruneLabError(`dsnot: column statistics have ${inp.mu.length}/${inp.variance.length} entries, expected ${inp.cols}`);
  }
  if (inp.gram.length !== inp.cols * inp.cols) {
    throw new PruneLabError(`dsnot: Gram matrix has ${inp.gram.length} entries, expected ${inp.cols}×${inp.cols}`);
  }
}
