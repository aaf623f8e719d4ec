/**
 * The SparseGPT per-operator solver (baselines.md §3; IST-DASLab/sparsegpt `sparsegpt.py`,
 * `fasterprune`): a left-to-right OBS sweep over the columns of W with the upper Cholesky factor
 * U of the damped inverse Hessian (H⁻¹ = UᵀU), blocked with lazy updates of later columns.
 *
 * An engine primitive: the `sparsegpt` method, FISTAPruner's warm start and DSnoT's
 * SparseGPT-score initial mask use it. The factor depends only on H, so it is split out:
 * operators sharing an input (q, k, v; gate, up) compute it once.
 *
 * Two numerics (`LinAlg.numerics`), one sweep (`sweepBlock`):
 * - float32 (default; `obsFactor`, `obsSweep`, `obsPrune`): U is factored on the backend
 *   (src/linalg/backend.ts); the lazy batch updates are applied left-looking, each block's
 *   pending update Err[:, <i1]·U[<i1, i1:i2] being one backend matMul (the O(rows·cols²) part)
 *   subtracted on the host, where the block's mask and in-block OBS updates run in float64
 *   (O(rows·B²) per block, sequential over columns). Masks on stories260K are identical to
 *   float64's (test/linalg-numerics.test.ts). Where the backend has native host kernels
 *   (`LinAlg.native`: OpenBLAS), the same sweep runs in host memory (`obsSweepNative`).
 * - float64 (`hessianFactor`, `sparsegptSweep`, `sparsegptPrune`): everything on the host, the
 *   reference the tests compare with. In-block updates run row by row over a contiguous segment
 *   against rows of U's diagonal block (cache-resident); the lazy update
 *   W[:, i2:] −= Err·U[i1:i2, i2:] runs in column tiles so the tile of U stays in cache while
 *   all rows stream past it, skipping the zero errors of kept weights.
 */
import { upperCholeskyOfInverse } from '../linalg/dense.ts';
import { maskForCut, pruneCount, validateSparsity, type Cut } from './masks.ts';
import { ConfigError, PruneLabError } from '../util/errors.ts';
import type { LinAlg, Matrix, NativeKernels } from '../linalg/linalg.ts';

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
  const { h, dead, damp } = dampedHessian(H, cols, percdamp);
  const U = upperCholeskyOfInverse({ rows: cols, cols, data: h }).data;
  return { cols, U, dead, damp };
}

/** Steps 2–3 of §3 on a copy of H: dead inputs get H_jj = 1, then H += percdamp·mean(diag H)·I. */
function dampedHessian(H: Float64Array, cols: number, percdamp: number): { h: Float64Array; dead: Uint8Array; damp: number } {
  const { diag, dead, damp } = dampedDiagonal(H, cols, percdamp);
  const h = H.slice();
  for (let j = 0; j < cols; j++) h[j * cols + j] = diag[j]!;
  return { h, dead, damp };
}

/**
 * The diagonal of `dampedHessian` (its only changed entries), so the float32 path can round H
 * into its upload directly instead of holding a float64 copy of a cols² matrix too.
 */
function dampedDiagonal(H: Float64Array, cols: number, percdamp: number): { diag: Float64Array; dead: Uint8Array; damp: number } {
  if (H.length !== cols * cols) throw new PruneLabError(`sparsegpt: Hessian has ${H.length} entries, expected ${cols}×${cols}`);
  if (!(percdamp >= 0) || !Number.isFinite(percdamp)) throw new ConfigError(`sparsegpt: percdamp must be a finite number ≥ 0, got ${percdamp}`);
  const diag = new Float64Array(cols);
  const dead = new Uint8Array(cols);
  let trace = 0;
  for (let j = 0; j < cols; j++) {
    diag[j] = H[j * cols + j]!;
    if (diag[j] === 0) {
      dead[j] = 1;
      diag[j] = 1;
    }
    trace += diag[j]!;
  }
  const damp = cols > 0 ? (percdamp * trace) / cols : 0;
  for (let j = 0; j < cols; j++) diag[j]! += damp;
  return { diag, dead, damp };
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

/** Block width and N:M pattern of a sweep, after checking the shapes and the cut. */
function sweepSettings(W: Float32Array, rows: number, cols: number, fcols: number, opts: SparseGptOptions): { B: number; nm: NM | null } {
  if (W.length !== rows * cols) throw new PruneLabError(`sparsegpt: ${W.length} weights for a ${rows}×${cols} matrix`);
  if (fcols !== cols) throw new PruneLabError(`sparsegpt: factor is for ${fcols} inputs, the weight has ${cols}`);
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
  return { B, nm: opts.kind === 'nm' ? { n: opts.n, m: opts.m } : null };
}

interface NM { n: number; m: number }

/** Where one sweep block lives: element (r, c) of block columns [i1, i1 + count) is `w[r·stride + col0 + c]`. */
interface BlockView { w: Float64Array; stride: number; col0: number }

/** Per-row error buffers of one block: `err[r·B + c]`, the offsets with an error `nzIdx[r·B + t]`, t < `nzCnt[r]`. */
interface BlockErrors { err: Float64Array; nzIdx: Int32Array; nzCnt: Int32Array; B: number }

function blockErrors(rows: number, B: number): BlockErrors {
  return { err: new Float64Array(rows * B), nzIdx: new Int32Array(rows * B), nzCnt: new Int32Array(rows), B };
}

/**
 * The in-block part of step 5 (host, float64): selects the block's mask, then per row the OBS
 * updates of later columns inside the block, from U's diagonal block (`U[u0 + c·uStride + c']`
 * is U[i1 + c, i1 + c']). Fills `e` with the errors the lazy update propagates; returns `loss`
 * plus this block's share (accumulated in sweep order, so the sum is the reference's).
 */
function sweepBlock(v: BlockView, rows: number, cols: number, i1: number, count: number, U: ArrayLike<number>, u0: number, uStride: number,
  invD2: Float64Array, opts: SparseGptOptions, nm: NM | null, mask: Uint8Array, e: BlockErrors, loss: number): number {
  if (opts.kind !== 'nm') selectBlockMask(v, rows, cols, i1, count, invD2, opts, mask);
  const { w } = v;
  for (let r = 0; r < rows; r++) {
    const o = r * v.stride + v.col0;
    const mo = r * cols + i1;
    let nz = 0;
    for (let c = 0; c < count; c++) {
      if (nm && c % nm.m === 0) selectNM(w, o + c, mo + c, nm.n, nm.m, invD2, i1 + c, mask);
      if (mask[mo + c]) continue; // q = w: zero error, nothing to propagate
      const wi = w[o + c]!;
      const ui = u0 + c * uStride;
      const err = wi / U[ui + c]!;
      loss += (err * err) / 2;
      e.err[r * e.B + c] = err;
      e.nzIdx[r * e.B + nz++] = c;
      w[o + c] = 0;
      if (err !== 0) for (let j = c + 1; j < count; j++) w[o + j]! -= err * U[ui + j]!;
    }
    e.nzCnt[r] = nz;
  }
  return loss;
}

/** Step 5 of §3 with a precomputed factor, all on the host in float64 (the reference). W is not modified. */
export function sparsegptSweep(W: Float32Array, rows: number, cols: number, f: HessianFactor, opts: SparseGptOptions): SparseGptResult {
  const { B, nm } = sweepSettings(W, rows, cols, f.cols, opts);
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
  const e = blockErrors(rows, B);
  let loss = 0;
  for (let i1 = 0; i1 < cols; i1 += B) {
    const i2 = Math.min(i1 + B, cols);
    loss = sweepBlock({ w, stride: cols, col0: i1 }, rows, cols, i1, i2 - i1, U, i1 * cols + i1, cols, invD2, opts, nm, mask, e, loss);
    if (i2 < cols) lazyUpdate(w, rows, cols, i1, i2, U, e.err, e.nzIdx, e.nzCnt, B);
  }
  const weight = new Float32Array(rows * cols);
  for (let i = 0; i < weight.length; i++) weight[i] = mask[i] ? w[i]! : 0;
  return { weight, mask, loss };
}

/** Unstructured: the cut on w²/U_jj² of the block [i1, i1+count) (rows × count). */
function selectBlockMask(v: BlockView, rows: number, cols: number, i1: number, count: number, invD2: Float64Array,
  cut: Cut, mask: Uint8Array): void {
  const scores = new Float64Array(rows * count);
  for (let r = 0; r < rows; r++) {
    const o = r * v.stride + v.col0;
    for (let c = 0; c < count; c++) {
      const x = v.w[o + c]!;
      scores[r * count + c] = x * x * invD2[i1 + c]!;
    }
  }
  const bm = maskForCut(scores, rows, count, cut);
  for (let r = 0; r < rows; r++) mask.set(bm.subarray(r * count, (r + 1) * count), r * cols + i1);
}

/**
 * N:M: among the m columns from global column j0 (weights at w[wo…], mask at mask[mo…]) prune
 * the n lowest current w²/U_jj² (ties: lower index).
 */
function selectNM(w: Float64Array, wo: number, mo: number, n: number, m: number, invD2: Float64Array, j0: number, mask: Uint8Array): void {
  for (let p = 0; p < n; p++) {
    let best = -1;
    let bestV = Infinity;
    for (let t = 0; t < m; t++) {
      if (mask[mo + t] === 0) continue;
      const v = w[wo + t]! * w[wo + t]! * invD2[j0 + t]!;
      if (v !== v) throw new PruneLabError(`sparsegpt: NaN weight at flat index ${mo + t} (NaN weights or activations upstream?)`);
      if (best < 0 || v < bestV) {
        best = t;
        bestV = v;
      }
    }
    mask[mo + best] = 0;
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

// ---------------------------------------------------------------------------------------------
// On the solvers' numerics (`LinAlg`): what methods call.

/**
 * H's factor on `la`'s numerics: `float32` keeps U on the backend (blocked factorisation,
 * matMul updates), `float64` is the host reference above. `dispose` frees the backend copy.
 */
export interface ObsFactor {
  cols: number;
  dead: Uint8Array;
  damp: number;
  /** U_jj. */
  diag: Float64Array;
  /** The host float64 factor (numerics float64). */
  host?: HessianFactor;
  /** U on the backend (numerics float32). */
  U?: Matrix;
  /**
   * U on the host instead (numerics float32 where the backend has native kernels, `LinAlg.native`:
   * the sweep works in host memory, and the sweep on the backend reads U to the host anyway).
   */
  Uh?: Float32Array;
  dispose(): void;
}

/** Steps 2–4 of §3 (as `hessianFactor`) on `la`'s numerics. */
export function obsFactor(la: LinAlg, H: Float64Array, cols: number, percdamp = 0.01): ObsFactor {
  if (la.numerics === 'float64') {
    const host = hessianFactor(H, cols, percdamp);
    const diag = new Float64Array(cols);
    for (let j = 0; j < cols; j++) diag[j] = host.U[j * cols + j]!;
    return { cols, dead: host.dead, damp: host.damp, diag, host, dispose: () => {} };
  }
  const { diag: hd, dead, damp } = dampedDiagonal(H, cols, percdamp);
  // H rounded to float32 with the damped diagonal: what uploading the float64 damped copy gave.
  const h32 = new Float32Array(H);
  for (let j = 0; j < cols; j++) h32[j * cols + j] = hd[j]!;
  const Hm = la.upload(h32, cols, cols);
  let U: Matrix;
  try {
    U = la.upperCholeskyOfInverse(Hm);
  } finally {
    la.dispose(Hm);
  }
  const diag = new Float64Array(cols);
  // One read of U for its diagonal: on WebAssembly a slice reads its whole input to the host
  // anyway (16 block-row slices of a 4096² U read 1 GB).
  const u = la.read(U);
  for (let j = 0; j < cols; j++) diag[j] = u[j * cols + j]!;
  if (la.native) {
    la.dispose(U);
    return { cols, dead, damp, diag, Uh: u, dispose: () => {} };
  }
  return { cols, dead, damp, diag, U, dispose: () => la.dispose(U) };
}

/** `obsSaliency` from an `ObsFactor`: w²/U_jj², dead inputs 0. */
export function obsFactorSaliency(weight: Float32Array, rows: number, cols: number, f: ObsFactor): Float64Array {
  if (f.host) return obsSaliency(weight, rows, cols, f.host);
  if (weight.length !== rows * cols) throw new PruneLabError(`sparsegpt: ${weight.length} weights for a ${rows}×${cols} matrix`);
  if (f.cols !== cols) throw new PruneLabError(`sparsegpt: factor is for ${f.cols} inputs, the weight has ${cols}`);
  const s = new Float64Array(rows * cols);
  for (let j = 0; j < cols; j++) {
    const d = f.diag[j]!;
    const inv = f.dead[j] ? 0 : 1 / (d * d);
    for (let r = 0; r < rows; r++) {
      const w = weight[r * cols + j]!;
      s[r * cols + j] = w * w * inv;
    }
  }
  return s;
}

/**
 * Step 5 of §3 on `la`'s numerics. float32: U and the errors of swept columns stay on the
 * backend; the lazy updates reach block [i1, i2) as one matMul, then its mask and in-block OBS
 * updates run on the host in float64 (O(rows·B²) per block, sequential over columns).
 */
export function obsSweep(la: LinAlg, W: Float32Array, rows: number, cols: number, f: ObsFactor, opts: SparseGptOptions): SparseGptResult {
  if (f.host) return sparsegptSweep(W, rows, cols, f.host, opts);
  if (!f.U && !f.Uh) throw new PruneLabError('sparsegpt: the factor was made for another numerics');
  const { B, nm } = sweepSettings(W, rows, cols, f.cols, opts);
  const w0 = W.slice();
  for (let j = 0; j < cols; j++) if (f.dead[j]) for (let r = 0; r < rows; r++) w0[r * cols + j] = 0;
  const invD2 = new Float64Array(cols);
  for (let j = 0; j < cols; j++) invD2[j] = 1 / (f.diag[j]! * f.diag[j]!);
  if (la.native) return obsSweepNative(la.native, f.Uh ?? la.read(f.U!), w0, rows, cols, B, nm, invD2, opts);
  const mask = new Uint8Array(rows * cols).fill(1);
  const weight = new Float32Array(rows * cols);
  const e = blockErrors(rows, B);
  let loss = 0;
  // Left-looking: block [i1, i2)'s pending lazy update is Err[:, <i1]·U[<i1, i1:i2], one plain
  // matMul whose [rows, count] result lands in the block's own layout; Err grows by columns on the
  // backend. U is read to the host once: its blocks go up from there (a column slice on the
  // WebAssembly backend costs as much as the block's product). W never goes to the backend.
  const Uh = f.Uh ?? la.read(f.U!);
  const blockOfU = (r0: number, r1: number, c0: number, c1: number): Float32Array => {
    const out = new Float32Array((r1 - r0) * (c1 - c0));
    for (let r = r0; r < r1; r++) out.set(Uh.subarray(r * cols + c0, r * cols + c1), (r - r0) * (c1 - c0));
    return out;
  };
  let E: Matrix | null = null;
  try {
    for (let i1 = 0; i1 < cols; i1 += B) {
      const i2 = Math.min(i1 + B, cols);
      const count = i2 - i1;
      const wb = new Float64Array(rows * count);
      for (let r = 0; r < rows; r++) for (let c = 0; c < count; c++) wb[r * count + c] = w0[r * cols + i1 + c]!;
      if (E) {
        const upd = la.scope(() => la.matMul(E!, la.upload(blockOfU(0, i1, i1, i2), i1, count)));
        const u = la.read(upd);
        la.dispose(upd);
        for (let i = 0; i < wb.length; i++) wb[i]! -= u[i]!;
      }
      const Ub = blockOfU(i1, i2, i1, i2);
      loss = sweepBlock({ w: wb, stride: count, col0: 0 }, rows, cols, i1, count, Ub, 0, count, invD2, opts, nm, mask, e, loss);
      for (let r = 0; r < rows; r++) {
        for (let c = 0; c < count; c++) if (mask[r * cols + i1 + c]) weight[r * cols + i1 + c] = wb[r * count + c]!;
      }
      if (i2 === cols) break;
      const err = new Float32Array(rows * count);
      for (let r = 0; r < rows; r++) {
        for (let t = 0; t < e.nzCnt[r]!; t++) {
          const c = e.nzIdx[r * B + t]!;
          err[r * count + c] = e.err[r * B + c]!;
        }
      }
      const blk = la.upload(err, rows, count);
      const grown: Matrix = E ? la.scope(() => la.concatCols(E!, blk)) : blk;
      if (E) la.dispose(E, blk);
      E = grown;
    }
  } finally {
    if (E) la.dispose(E);
  }
  return { weight, mask, loss };
}

/**
 * `obsSweep` (float32) where the backend has native host kernels (OpenBLAS): the same
 * left-looking sweep, in host memory, each block's mask and in-block updates in one native call
 * (the operations of `selectBlockMask` and `sweepBlock`, in their order). Errᵀ is kept
 * `[cols, rows]`, so Err[:, <i1] is its first i1·rows entries and block [i1, i2)'s pending
 * update Err[:, <i1]·U[<i1, i1:i2] is one product on contiguous arrays: no growing
 * concatenation, uploads or reads per block.
 */
function obsSweepNative(k: NativeKernels, Uh: Float32Array, w0: Float32Array, rows: number, cols: number, B: number, nm: NM | null,
  invD2: Float64Array, opts: SparseGptOptions): SparseGptResult {
  const mask = new Uint8Array(rows * cols).fill(1);
  const weight = new Float32Array(rows * cols);
  const e = blockErrors(rows, B);
  const errT = new Float32Array(cols * rows);
  const width = Math.min(B, cols);
  const ub = new Float32Array(cols * width); // U[<i1, i1:i2]
  const upd = new Float32Array(rows * width);
  const wb = new Float64Array(rows * width);
  let loss = 0;
  for (let i1 = 0; i1 < cols; i1 += B) {
    const i2 = Math.min(i1 + B, cols);
    const count = i2 - i1;
    if (i1 > 0) {
      for (let j = 0; j < i1; j++) ub.set(Uh.subarray(j * cols + i1, j * cols + i2), j * count);
      k.matMul(errT.subarray(0, i1 * rows), ub.subarray(0, i1 * count), upd.subarray(0, rows * count), rows, count, i1, true, false);
    }
    const Ub = new Float32Array(count * count);
    for (let c = 0; c < count; c++) Ub.set(Uh.subarray((i1 + c) * cols + i1, (i1 + c) * cols + i2), c * count);
    const cut = opts.kind === 'nm' ? 0 : opts.kind === 'matrix' ? 1 : 2;
    const kPrune = opts.kind === 'nm' ? 0 : pruneCount(opts.kind === 'matrix' ? rows * count : count, opts.sparsity);
    const nan = k.obsSweepBlock(w0, upd, Ub, invD2, mask, weight, errT, wb, e.err, e.nzIdx, e.nzCnt,
      rows, count, cols, i1, B, cut, kPrune, nm?.n ?? 0, nm?.m ?? 0);
    if (nan >= 0) {
      throw new PruneLabError(cut === 0
        ? `sparsegpt: NaN weight at flat index ${nan} (NaN weights or activations upstream?)`
        : `${cut === 1 ? 'maskPerMatrix' : 'maskPerRow'}: score at flat index ${nan} is NaN (NaN weights or activations upstream?)`);
    }
    // The loss in sweepBlock's order (row by row, columns ascending), so the same sum.
    for (let r = 0; r < rows; r++) {
      for (let t = 0; t < e.nzCnt[r]!; t++) {
        const err = e.err[r * B + e.nzIdx[r * B + t]!]!;
        loss += (err * err) / 2;
      }
    }
  }
  return { weight, mask, loss };
}

/** Prunes one operator on `la`'s numerics: `obsFactor` then `obsSweep`. */
export function obsPrune(la: LinAlg, W: Float32Array, rows: number, cols: number, H: Float64Array, opts: SparseGptOptions): SparseGptResult {
  const f = obsFactor(la, H, cols, opts.percdamp ?? 0.01);
  try {
    return obsSweep(la, W, rows, cols, f, opts);
  } finally {
    f.dispose();
  }
}
