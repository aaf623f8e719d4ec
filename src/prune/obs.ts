/**
 * The SparseGPT per-operator solver (baselines.md §3; IST-DASLab/sparsegpt `sparsegpt.py`,
 * `fasterprune`): a left-to-right OBS sweep over the columns of W with the upper Cholesky factor
 * U of the damped inverse Hessian (H⁻¹ = UᵀU), blocked with lazy updates of later columns.
 *
 * An engine primitive, pure and host-only: the `sparsegpt` method, FISTAPruner's warm start and
 * DSnoT's SparseGPT-score initial mask use it. The factor depends only on H, so `hessianFactor`
 * is split out: operators sharing an input (q, k, v; gate, up) compute it once.
 *
 * Layout: W is row-major `[rows, cols]` (HF `[out, in]`), copied to float64 for the sweep. Given
 * the mask of a block, rows are independent inside it, so the in-block OBS updates run row by
 * row over a contiguous row segment against rows of U's diagonal block (cache-resident); the
 * lazy update W[:, i2:] −= Err·U[i1:i2, i2:] runs in column tiles so the tile of U stays in
 * cache while all rows stream past it, skipping the zero errors of kept weights.
 */
import { upperCholeskyOfInverse } from '../linalg/dense.ts';
import { maskForCut, validateSparsity, type Cut } from './masks.ts';
import { ConfigError, PruneLabError } from '../util/errors.ts';

/** U (upper, row-major `[cols, cols]`, H⁻¹ = UᵀU) and the dead inputs (H_jj = 0) of one tap. */
export interface HessianFactor {
  cols: number;
  U: Float64Array;
  dead: Uint8Array;
  /** percdamp · mean(diag H) after the dead-input fix, as added to the diagonal. */
  damp: number;
}

/**
 * The cut, and sweep settings. An unstructured cut is applied inside each sweep block: `matrix`
 * prunes ⌊s·rows·width⌋ of the block (the reference), `row` ⌊s·width⌋ of each row's part of it.
 * N:M picks each M-group when the sweep reaches it, on the updated weights.
 */
export type SparseGptOptions = Cut & {
  /** Sweep block width, also the unstructured mask-selection block (reference 128). */
  blocksize?: number;
  /** Dampening as a fraction of the mean Hessian diagonal (reference 0.01). */
  percdamp?: number;
};

export interface SparseGptResult {
  /** Updated weights, pruned entries exactly 0, `[rows, cols]`. */
  weight: Float32Array;
  /** 1 = keep, 0 = pruned. */
  mask: Uint8Array;
  /**
   * Σ over rows and columns of (w − q)² / U_ii² / 2 (the reference's `Losses`). It equals
   * ½·Σ_rows δ H_damped δᵀ with δ the total weight change, in the scale of the H given.
   */
  loss: number;
}

/**
 * Steps 2–4 of §3 on a copy of H (`[cols, cols]` row-major, symmetric PSD, any positive scale):
 * dead inputs get H_jj = 1, then H += percdamp·mean(diag H)·I, then U = upper Cholesky of H⁻¹.
 */
export function hessianFactor(H: Float64Array, cols: number, percdamp = 0.01): HessianFactor {
  if (H.length !== cols * cols) throw new PruneLabError(`sparsegpt: Hessian has ${H.length} entries, expected ${cols}×${cols}`);
  if (!(percdamp >= 0) || !Number.isFinite(percdamp)) throw new ConfigError(`sparsegpt: percdamp must be a finite number ≥ 0, got ${percdamp}`);
  const h = H.slice();
  const dead = new Uint8Array(cols);
  let trace = 0;
  for (let j = 0; j < cols; j++) {
    const d = j * cols + j;
    if (h[d] === 0) {
      dead[j] = 1;
      h[d] = 1;
    }
    trace += h[d]!;
  }
  const damp = cols > 0 ? (percdamp * trace) / cols : 0;
  for (let j = 0; j < cols; j++) h[j * cols + j]! += damp;
  const U = upperCholeskyOfInverse({ rows: cols, cols, data: h }).data;
  return { cols, U, dead, damp };
}

/**
 * SparseGPT's saliency w_ij² / U_jj² of the given weights, without any OBS update; dead inputs
 * score 0 (the sweep zeroes them).
 */
export function obsSaliency(weight: Float32Array, rows: number, cols: number, f: HessianFactor): Float64Array {
  if (weight.length !== rows * cols) throw new PruneLabError(`sparsegpt: ${weight.length} weights for a ${rows}×${cols} matrix`);
  if (f.cols !== cols) throw new PruneLabError(`sparsegpt: factor is for ${f.cols} inputs, the weight has ${cols}`);
  const s = new Float64Array(rows * cols);
  for (let j = 0; j < cols; j++) {
    const d = f.U[j * cols + j]!;
    const inv = f.dead[j] ? 0 : 1 / (d * d);
    for (let r = 0; r < rows; r++) {
      const w = weight[r * cols + j]!;
      s[r * cols + j] = w * w * inv;
    }
  }
  return s;
}

/** Prunes one operator: `hessianFactor` then `sparsegptSweep`. */
export function sparsegptPrune(W: Float32Array, rows: number, cols: number, H: Float64Array, opts: SparseGptOptions): SparseGptResult {
  return sparsegptSweep(W, rows, cols, hessianFactor(H, cols, opts.percdamp ?? 0.01), opts);
}

/** Step 5 of §3 with a precomputed factor. W is not modified. */
export function sparsegptSweep(W: Float32Array, rows: number, cols: number, f: HessianFactor, opts: SparseGptOptions): SparseGptResult {
  if (W.length !== rows * cols) throw new PruneLabError(`sparsegpt: ${W.length} weights for a ${rows}×${cols} matrix`);
  if (f.cols !== cols) throw new PruneLabError(`sparsegpt: factor is for ${f.cols} inputs, the weight has ${cols}`);
  const B = opts.blocksize ?? 128;
  if (!Number.isInteger(B) || B < 1) throw new ConfigError(`sparsegpt: blocksize must be a positive integer, got ${B}`);
  if (opts.kind === 'nm') {
    const nm = opts;
    if (!Number.isInteger(nm.n) || !Number.isInteger(nm.m) || !(nm.n > 0 && nm.n < nm.m)) {
      throw new ConfigError(`sparsegpt: N:M needs integers 0 < N < M, got ${nm.n}:${nm.m}`);
    }
    if (cols % nm.m !== 0) throw new ConfigError(`sparsegpt: ${nm.n}:${nm.m} needs the input width to be a multiple of ${nm.m}, got ${cols}`);
    // The reference starts an M-group at in-block offsets i with i mod M = 0; groups must not
    // straddle blocks.
    if (B % nm.m !== 0 && B < cols) throw new ConfigError(`sparsegpt: blocksize ${B} must be a multiple of M = ${nm.m}`);
  } else {
    validateSparsity(opts.sparsity, 'sparsity');
  }
  const nm = opts.kind === 'nm' ? { n: opts.n, m: opts.m } : null;
  const U = f.U;
  const w = new Float64Array(rows * cols);
  for (let i = 0; i < w.length; i++) w[i] = W[i]!;
  for (let j = 0; j < cols; j++) if (f.dead[j]) for (let r = 0; r < rows; r++) w[r * cols + j] = 0;
  const invD2 = new Float64Array(cols); // 1 / U_jj²: the score weight
  for (let j = 0; j < cols; j++) {
    const d = U[j * cols + j]!;
    invD2[j] = 1 / (d * d);
  }
  const mask = new Uint8Array(rows * cols).fill(1);
  const err = new Float64Array(rows * B);
  // Per row, the block offsets with non-zero error (only pruned weights have one).
  const nzIdx = new Int32Array(rows * B);
  const nzCnt = new Int32Array(rows);
  let loss = 0;
  for (let i1 = 0; i1 < cols; i1 += B) {
    const i2 = Math.min(i1 + B, cols);
    const count = i2 - i1;
    if (opts.kind !== 'nm') selectBlockMask(w, rows, cols, i1, count, invD2, opts, mask);
    for (let r = 0; r < rows; r++) {
      const o = r * cols;
      let nz = 0;
      for (let i = i1; i < i2; i++) {
        if (nm && (i - i1) % nm.m === 0) selectNM(w, o, i, nm.n, nm.m, invD2, mask);
        if (mask[o + i]) continue; // q = w: zero error, nothing to propagate
        const wi = w[o + i]!;
        const ui = i * cols;
        const e = wi / U[ui + i]!;
        loss += (e * e) / 2;
        err[r * B + (i - i1)] = e;
        nzIdx[r * B + nz++] = i - i1;
        w[o + i] = 0;
        if (e !== 0) for (let j = i + 1; j < i2; j++) w[o + j]! -= e * U[ui + j]!;
      }
      nzCnt[r] = nz;
    }
    if (i2 < cols) lazyUpdate(w, rows, cols, i1, i2, U, err, nzIdx, nzCnt, B);
  }
  const weight = new Float32Array(rows * cols);
  for (let i = 0; i < weight.length; i++) weight[i] = mask[i] ? w[i]! : 0;
  return { weight, mask, loss };
}

/** Unstructured: the cut on w²/U_jj² of the block [i1, i1+count) (rows × count). */
function selectBlockMask(w: Float64Array, rows: number, cols: number, i1: number, count: number, invD2: Float64Array,
  cut: Cut, mask: Uint8Array): void {
  const scores = new Float64Array(rows * count);
  for (let r = 0; r < rows; r++) {
    const o = r * cols + i1;
    for (let c = 0; c < count; c++) {
      const v = w[o + c]!;
      scores[r * count + c] = v * v * invD2[i1 + c]!;
    }
  }
  const bm = maskForCut(scores, rows, count, cut);
  for (let r = 0; r < rows; r++) mask.set(bm.subarray(r * count, (r + 1) * count), r * cols + i1);
}

/** N:M: in row offset o, among columns i … i+m−1 prune the n lowest current w²/U_jj² (ties: lower index). */
function selectNM(w: Float64Array, o: number, i: number, n: number, m: number, invD2: Float64Array, mask: Uint8Array): void {
  for (let p = 0; p < n; p++) {
    let best = -1;
    let bestV = Infinity;
    for (let j = i; j < i + m; j++) {
      if (mask[o + j] === 0) continue;
      const v = w[o + j]! * w[o + j]! * invD2[j]!;
      if (v !== v) throw new PruneLabError(`sparsegpt: NaN weight at flat index ${o + j} (NaN weights or activations upstream?)`);
      if (best < 0 || v < bestV) {
        best = j;
        bestV = v;
      }
    }
    mask[o + best] = 0;
  }
}

/**
 * W[:, i2:] −= Err · U[i1:i2, i2:], over column tiles of U (kept in cache while every row
 * passes), four error terms per pass over a row segment.
 */
function lazyUpdate(w: Float64Array, rows: number, cols: number, i1: number, i2: number, U: Float64Array,
  err: Float64Array, nzIdx: Int32Array, nzCnt: Int32Array, B: number): void {
  const TILE = 256;
  for (let j0 = i2; j0 < cols; j0 += TILE) {
    const j1 = Math.min(j0 + TILE, cols);
    for (let r = 0; r < rows; r++) {
      const o = r * cols;
      const base = r * B;
      const cnt = nzCnt[r]!;
      let t = 0;
      for (; t + 3 < cnt; t += 4) {
        const k0 = nzIdx[base + t]!, k1 = nzIdx[base + t + 1]!, k2 = nzIdx[base + t + 2]!, k3 = nzIdx[base + t + 3]!;
        const e0 = err[base + k0]!, e1 = err[base + k1]!, e2 = err[base + k2]!, e3 = err[base + k3]!;
        const u0 = (i1 + k0) * cols, u1 = (i1 + k1) * cols, u2 = (i1 + k2) * cols, u3 = (i1 + k3) * cols;
        for (let j = j0; j < j1; j++) {
          w[o + j]! -= e0 * U[u0 + j]! + e1 * U[u1 + j]! + e2 * U[u2 + j]! + e3 * U[u3 + j]!;
        }
      }
      for (; t < cnt; t++) {
        const k = nzIdx[base + t]!;
        const e = err[base + k]!;
        const u = (i1 + k) * cols;
        for (let j = j0; j < j1; j++) w[o + j]! -= e * U[u + j]!;
      }
    }
  }
}
