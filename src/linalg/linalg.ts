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
}
