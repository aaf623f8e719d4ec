/**
 * The linear-algebra interface the engine gives methods (`OperatorContext.linalg`): dense
 * matrices held by the active compute backend behind opaque handles, so a method's O(n³) work
 * (products, Gram matrices, Cholesky, triangular solves, inverses) runs on WebAssembly, tfjs-node
 * or WebGPU alike while the method itself imports no TensorFlow.js. The implementation is
 * `src/linalg/backend.ts`; this file holds only types, so methods may import it.
 *
 * Handles own backend memory: every `Matrix` a call returns must be given to `dispose` (or
 * created inside `scope`, which disposes everything made in it but the returned handles).
 * Arithmetic is float32. `numerics: 'float64'` asks the solvers for their host float64
 * reference kernels instead (`src/linalg/dense.ts`, `src/prune/obs.ts`): the tests' reference,
 * and a diagnosis switch (`numerics` of a prune request).
 */

/** float32: solvers on the backend (default); float64: the host float64 reference kernels. */
export type Numerics = 'float32' | 'float64';
export const NUMERICS = ['float32', 'float64'] as const;

/** A row-major `[rows, cols]` float32 matrix living on the backend. */
export interface Matrix {
  readonly rows: number;
  readonly cols: number;
}

export interface MatMulOptions {
  /** Multiply by aᵀ instead of a. */
  transposeA?: boolean;
  /** Multiply by bᵀ instead of b. */
  transposeB?: boolean;
}

export interface LinAlg {
  readonly numerics: Numerics;
  /** The backend's name (wasm, tensorflow, webgpu, cpu). */
  readonly backend: string;

  /** Copies row-major host values (rounded to float32) to the backend. */
  upload(data: ArrayLike<number>, rows: number, cols: number): Matrix;
  /** Row-major host copy. */
  read(a: Matrix): Float32Array;
  dispose(...a: Matrix[]): void;
  /** Runs f and disposes every matrix made inside it except those it returns. */
  scope<T extends Matrix | Matrix[] | void | number>(f: () => T): T;

  /** a·b (transposes are made explicit first where the backend's fast kernel is plain 2-D matMul). */
  matMul(a: Matrix, b: Matrix, o?: MatMulOptions): Matrix;
  /**
   * A new handle to b's values for use as the right operand of many products (an iterative
   * solver's fixed matrix): kept in the layout the backend multiplies fastest, prepared once
   * (on WebAssembly: column panels, each packed once by XNNPACK). Products give the same values
   * as with b; b stays the caller's. May hold up to twice b's memory until disposed.
   */
  resident(b: Matrix): Matrix;
  /** xᵀx of `[tokens, n]` x: the `[n, n]` Gram matrix. */
  gram(x: Matrix): Matrix;
  /** c − a·b (the solvers' trailing and lazy updates). */
  subMatMul(c: Matrix, a: Matrix, b: Matrix): Matrix;
  /** The `[rows, cols]` block at (row, col). */
  slice(a: Matrix, row: number, col: number, rows: number, cols: number): Matrix;
  transpose(a: Matrix): Matrix;
  /** [a b]: b's columns appended right of a's. */
  concatCols(a: Matrix, b: Matrix): Matrix;
  /** α·a + β·b. */
  axpby(alpha: number, a: Matrix, beta: number, b: Matrix): Matrix;
  /** Elementwise a ⊙ b (b a 0/1 mask: masking). */
  mul(a: Matrix, b: Matrix): Matrix;
  /** sign(a)·max(|a| − t, 0): the ℓ1 proximal step. */
  softThreshold(a: Matrix, t: number): Matrix;
  /** Σ a ⊙ b, accumulated in float64 on the host (objectives: the terms cancel). */
  dot(a: Matrix, b: Matrix): number;

  /** Lower L with A = LLᵀ (reads A's lower triangle), blocked; throws NotPositiveDefiniteError. */
  cholesky(a: Matrix): Matrix;
  /** L⁻¹ of A's Cholesky factor L (A = LLᵀ), blocked, without forming L. */
  inverseCholesky(a: Matrix): Matrix;
  /** L⁻¹·B for lower-triangular L: blocked forward substitution. */
  solveLower(l: Matrix, b: Matrix): Matrix;
  /** A⁻¹ of a symmetric positive definite A (= L⁻ᵀL⁻¹). */
  spdInverse(a: Matrix): Matrix;
  /** Upper U with A⁻¹ = UᵀU (SparseGPT's factor), without forming A⁻¹. */
  upperCholeskyOfInverse(a: Matrix): Matrix;
  /** Largest eigenvalue of a symmetric PSD matrix: power iteration from a seeded start (Rayleigh quotient, ≤ λ_max). */
  maxEigenvalueSym(a: Matrix, iters: number, seed?: number): number;
  /** Native host kernels that come with the backend's products (OpenBLAS under WebAssembly), if any. */
  readonly native?: NativeKernels;
}

/**
 * Host-memory kernels in native code, for solver loops too sequential for the backend. Each does
 * exactly what the TypeScript it replaces does (same float64 operations in the same order), so
 * results do not change with their presence, nor with the thread count.
 */
export interface NativeKernels {
  /**
   * One block [i1, i1 + count) of SparseGPT's float32 sweep (`obsSweepNative` in
   * src/prune/obs.ts, whose arrays these are): the block of w0 (`[rows, cols]`) less its pending
   * update `upd` (`[rows, count]`, unused at i1 = 0) into `wb`; the cut on wb²·invD2 (cut 1: the
   * k smallest of the block, 2: of each row, 0: N:M groups picked during the sweep); then each
   * row's OBS sweep against U's diagonal block `U` (`[count, count]`), filling err / nzIdx /
   * nzCnt (row stride B) and `errT` (`[cols, rows]`), and writing kept weights to `weight`.
   * Returns −1, or a NaN score's index: block-local for cuts 1 and 2, flat for N:M.
   */
  obsSweepBlock(w0: Float32Array, upd: Float32Array, U: Float32Array, invD2: Float64Array, mask: Uint8Array, weight: Float32Array,
    errT: Float32Array, wb: Float64Array, err: Float64Array, nzIdx: Int32Array, nzCnt: Int32Array,
    rows: number, count: number, cols: number, i1: number, B: number, cut: 0 | 1 | 2, k: number, nmN: number, nmM: number): number;
  /**
   * c = op(a)·op(b) on host arrays (row-major `[m, k]` / `[k, n]` before the transposes, c
   * `[m, n]`) by the backend's own product kernel, so with its values and thread-count independence.
   */
  matMul(a: Float32Array, b: Float32Array, c: Float32Array, m: number, n: number, k: number, transA: boolean, transB: boolean): void;
  /**
   * c = a·s for a symmetric `[n, n]` s (a `[m, n]`): the values of `matMul(a, s, c, m, n, n, false,
   * false)`, bit for bit, with s packed the cheaper way where a tile is large (native/openblas-kernels.c
   * SYMMETRIC_MIN_MACS). Only s's symmetry is assumed, not checked.
   */
  matMulSymmetric(a: Float32Array, s: Float32Array, c: Float32Array, m: number, n: number): void;
  /**
   * FISTAPruner's accepted step (`acceptStep` in methods/fistapruner/fista.ts, the same float64
   * operations in the same order, rows split over threads): from Z, W (float64) and
   * PZ = (Z − W_d)·G, P = (W − W_d)·G, B, W_d (float32), all `[rows, cols]`, writes
   * next = prox(Y − ∇f(Y)/L) at Y = Z + β(Z − W), D32 = next − W_d (float32) and
   * sums = [Σ (Z − W_d)(½PZ − B), ‖Z − W‖², ‖W‖², ‖next‖₁], each summed per row and then over
   * rows in row order. Absent from an addon built before it.
   */
  fistaAcceptStep?(Z: Float64Array, PZ: Float32Array, W: Float64Array, P: Float32Array, B: Float32Array, Wd: Float32Array,
    next: Float64Array, D32: Float32Array, sums: Float64Array, rows: number, cols: number, beta: number, step: number, thr: number): void;
  /**
   * The keep-mask (1 = keep) of the k smallest |W| in each row of `[rows, cols]` W, ties pruned
   * lower index first: `maskPerRow` (src/prune/masks.ts) on |W|, for 0 < k ≤ cols; and `out`
   * (may be W) = W with the pruned entries +0. Returns −1, or the flat index of the first NaN
   * (mask and out are then incomplete). Absent from an addon built before it.
   */
  fistaCutRows?(W: Float64Array, rows: number, cols: number, k: number, mask: Uint8Array, out: Float64Array): number;
  /** FISTAPruner's change from the dense weight: D32 = X − W_d rounded to float32 (`[rows, cols]`, rows split over threads). */
  fistaChange?(X: Float64Array, Wd: Float32Array, D32: Float32Array, rows: number, cols: number): void;
  /**
   * FISTAPruner's error sums (`errorSums` in methods/fistapruner/fista.ts, the same float64
   * operations, each summed per row and then over rows in row order): sums =
   * [Σ (X − W_d)(½PX − B), Σ (X − WK)(PX − PK)], the second 0 when WK and PK are null.
   */
  fistaErrors?(X: Float64Array, PX: Float32Array, Wd: Float32Array, B: Float32Array, WK: Float64Array | null, PK: Float32Array | null,
    sums: Float64Array, rows: number, cols: number): void;
  /**
   * FISTAPruner's Gram preparation (`prepare` in methods/fistapruner/fista.ts): from `[n, n]`
   * G, C and H_d (float64 arrays, as the engine's statistics come), the symmetrised G, C − G and G − 2C + H_d, each formed in float64 and
   * stored as float32; returns 1 when either difference has a nonzero entry, else 0.
   */
  fistaPrepareGram?(gram: Float64Array, cross: Float64Array, denseGram: Float64Array, n: number,
    G32: Float32Array, CminusG: Float32Array, M: Float32Array): number;
  /**
   * The keep-mask (1 = keep) of the k smallest scores in each row of `[rows, cols]` scores, ties
   * pruned lower index first: `maskPerRow` (src/prune/masks.ts), for 0 < k ≤ cols, rows split over
   * threads. Returns −1, or the flat index of the first NaN (the mask is then incomplete). Absent
   * from an addon built before it.
   */
  maskRows?(scores: Float64Array, rows: number, cols: number, k: number, mask: Uint8Array): number;
  /**
   * `maskRows` of the scores |W_ij| · scale_j (Wanda's, with scale the input norms), each a
   * float64 product as `wandaScores` makes it, made row by row in the threads: no `[rows, cols]`
   * scores array. Returns as `maskRows`. Absent from an addon built before it.
   */
  maskRowsScaled?(weight: Float32Array, scale: Float64Array, rows: number, cols: number, k: number, mask: Uint8Array): number;
  /**
   * out = w where mask ≠ 0, else +0 (w's bits: a kept −0 stays −0), over w's length, split over
   * threads; returns how many entries of out are ±0. Absent from an addon built before it.
   */
  maskedCopy?(w: Float32Array, mask: Uint8Array, out: Float32Array): number;
  /** How many entries of x are ±0, split over threads. Absent from an addon built before it. */
  countZeros?(x: Float32Array): number;
}
