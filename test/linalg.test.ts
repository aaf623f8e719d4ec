import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  type Mat,
  NotPositiveDefiniteError,
  cholesky,
  choleskyInverse,
  fromRows,
  identity,
  inverseFromCholesky,
  lowerTriangularInverse,
  matmul,
  matvec,
  maxAbsDiff,
  maxEigenvalueSym,
  toRows,
  transpose,
  upperCholeskyOfInverse,
  zeros,
} from '../src/linalg/dense.ts';

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296 - 0.5;
  };
}

function randomMat(rows: number, cols: number, seed: number): Mat {
  const r = rng(seed);
  const M = zeros(rows, cols);
  for (let i = 0; i < M.data.length; i++) M.data[i] = r();
  return M;
}

/** X·Xᵀ/p + δI: symmetric positive definite, moderately conditioned. */
function randomSPD(n: number, seed: number): Mat {
  const p = n + 3;
  const X = randomMat(n, p, seed);
  const H = matmul(X, transpose(X));
  for (let i = 0; i < n; i++) H.data[i * n + i] += 0.05;
  return H;
}

/** Plain triple loop, the reference the optimised matmul is checked against. */
function naiveMatmul(A: Mat, B: Mat): Mat {
  const C = zeros(A.rows, B.cols);
  for (let i = 0; i < A.rows; i++)
    for (let j = 0; j < B.cols; j++) {
      let s = 0;
      for (let k = 0; k < A.cols; k++) s += A.data[i * A.cols + k]! * B.data[k * B.cols + j]!;
      C.data[i * B.cols + j] = s;
    }
  return C;
}

function assertClose(actual: Mat, expected: Mat, tol: number, what: string): void {
  assert.equal(actual.rows, expected.rows, `${what}: rows`);
  assert.equal(actual.cols, expected.cols, `${what}: cols`);
  const d = maxAbsDiff(actual, expected);
  assert.ok(d <= tol, `${what}: max |diff| ${d} > ${tol}\nactual ${JSON.stringify(toRows(actual))}`);
}

const SIZES = [1, 2, 3, 4, 5, 8, 17, 64];

test('cholesky of a hand-worked 3×3', () => {
  // 4 = 2²; 12 = 6·2; 37 = 6² + 1²; −16 = −8·2; −43 = −8·6 + 5·1; 98 = 64 + 25 + 3².
  const A = fromRows([
    [4, 12, -16],
    [12, 37, -43],
    [-16, -43, 98],
  ]);
  assertClose(cholesky(A), fromRows([[2, 0, 0], [6, 1, 0], [-8, 5, 3]]), 1e-12, 'L');
});

test('cholesky reads only the lower triangle (fp32 Gram matrices are not exactly symmetric)', () => {
  const A = fromRows([
    [4, 12.000001, -16],
    [12, 37, -43.5],
    [-16, -43, 98],
  ]);
  assertClose(cholesky(A), fromRows([[2, 0, 0], [6, 1, 0], [-8, 5, 3]]), 1e-12, 'L');
});

test('choleskyInverse of a hand-worked 2×2', () => {
  // [[4,2],[2,3]]⁻¹ = (1/8)·[[3,−2],[−2,4]].
  const A = fromRows([[4, 2], [2, 3]]);
  assertClose(choleskyInverse(A), fromRows([[0.375, -0.25], [-0.25, 0.5]]), 1e-15, 'A⁻¹');
});

test('upperCholeskyOfInverse of a hand-worked 2×2', () => {
  // H⁻¹ = [[3/8, −1/4], [−1/4, 1/2]] = UᵀU with U = [[a, b], [0, c]]:
  // a = √(3/8), b = −(1/4)/a, c = √(1/2 − b²) = √(1/3).
  const a = Math.sqrt(3 / 8);
  const b = -0.25 / a;
  const U = upperCholeskyOfInverse(fromRows([[4, 2], [2, 3]]));
  assertClose(U, fromRows([[a, b], [0, Math.sqrt(1 / 3)]]), 1e-15, 'U');
});

test('matmul and transpose: hand-worked and against a triple loop on ragged shapes', () => {
  assertClose(
    matmul(fromRows([[1, 2], [3, 4]]), fromRows([[5, 6], [7, 8]])),
    fromRows([[19, 22], [43, 50]]),
    0,
    '2×2',
  );
  assert.deepEqual(toRows(transpose(fromRows([[1, 2, 3], [4, 5, 6]]))), [[1, 4], [2, 5], [3, 6]]);
  // Shapes that hit every remainder path of the 4×2 register blocking.
  for (const [m, n, p] of [[1, 1, 1], [3, 5, 7], [4, 2, 3], [5, 3, 2], [7, 9, 4], [9, 1, 6], [33, 40, 35]] as const) {
    const A = randomMat(m, n, m * 100 + n);
    const B = randomMat(n, p, p * 7 + 1);
    assertClose(matmul(A, B), naiveMatmul(A, B), 1e-12, `${m}×${n}·${n}×${p}`);
  }
  const T = randomMat(37, 70, 3);
  assertClose(transpose(transpose(T)), T, 0, 'transpose twice');
  assert.equal(transpose(T).data[5 * 37 + 2], T.data[2 * 70 + 5]);
  assert.throws(() => matmul(zeros(2, 3), zeros(2, 3)), /does not conform/);
});

test('cholesky: L lower triangular, positive diagonal, L·Lᵀ = A on random SPD matrices', () => {
  for (const n of SIZES) {
    const A = randomSPD(n, n);
    const L = cholesky(A);
    for (let i = 0; i < n; i++) {
      assert.ok(L.data[i * n + i]! > 0, `L_${i}${i} > 0`);
      for (let j = i + 1; j < n; j++) assert.equal(L.data[i * n + j], 0, `L_${i}${j} above the diagonal`);
    }
    assertClose(matmul(L, transpose(L)), A, 1e-12, `L·Lᵀ n=${n}`);
  }
});

test('inverses: A·A⁻¹ = I, L·L⁻¹ = I, inverseFromCholesky = choleskyInverse', () => {
  for (const n of SIZES) {
    const A = randomSPD(n, 1000 + n);
    const Ai = choleskyInverse(A);
    assertClose(matmul(A, Ai), identity(n), 1e-9, `A·A⁻¹ n=${n}`);
    assertClose(transpose(Ai), Ai, 0, `A⁻¹ symmetric n=${n}`);
    const L = cholesky(A);
    const Li = lowerTriangularInverse(L);
    assertClose(matmul(L, Li), identity(n), 1e-10, `L·L⁻¹ n=${n}`);
    for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) assert.equal(Li.data[i * n + j], 0);
    assertClose(inverseFromCholesky(L), Ai, 0, `inverseFromCholesky n=${n}`);
  }
});

test('upperCholeskyOfInverse: upper triangular, UᵀU = H⁻¹, equals the torch route chol(H⁻¹)ᵀ', () => {
  for (const n of SIZES) {
    const H = randomSPD(n, 2000 + n);
    const U = upperCholeskyOfInverse(H);
    for (let i = 0; i < n; i++) {
      assert.ok(U.data[i * n + i]! > 0, `U_${i}${i} > 0`);
      for (let j = 0; j < i; j++) assert.equal(U.data[i * n + j], 0, `U_${i}${j} below the diagonal`);
    }
    const Hi = choleskyInverse(H);
    const scale = Math.max(...Hi.data.map(Math.abs));
    assertClose(matmul(transpose(U), U), Hi, 1e-11 * scale, `UᵀU n=${n}`);
    // torch.linalg.cholesky(H⁻¹, upper=True) is the transpose of the lower factor of H⁻¹.
    assertClose(U, transpose(cholesky(Hi)), 1e-9 * Math.sqrt(scale), `vs torch route n=${n}`);
  }
});

test('non positive definite matrices: error names the pivot', () => {
  // Pivot 0 fine (1), pivot 1: 1 − 2² = −3.
  assert.throws(
    () => cholesky(fromRows([[1, 2], [2, 1]])),
    (e: unknown) => e instanceof NotPositiveDefiniteError && e.pivot === 1 && e.value === -3 && /pivot 1 of 2/.test(e.message),
  );
  // Odd order, failure at the last pivot: 1, 1, then 1 − 1 − 1 = −1.
  assert.throws(
    () => cholesky(fromRows([[1, 0, 1], [0, 1, 1], [1, 1, 1]])),
    (e: unknown) => e instanceof NotPositiveDefiniteError && e.pivot === 2 && e.value === -1,
  );
  assert.throws(() => cholesky(fromRows([[-1]])), (e: unknown) => e instanceof NotPositiveDefiniteError && e.pivot === 0);
  // Semi-definite (a zero pivot) is rejected too, and so is NaN.
  assert.throws(() => cholesky(fromRows([[1, 1], [1, 1]])), NotPositiveDefiniteError);
  assert.throws(() => cholesky(fromRows([[1, NaN], [NaN, 1]])), NotPositiveDefiniteError);
  assert.throws(() => choleskyInverse(fromRows([[0, 0], [0, 0]])), NotPositiveDefiniteError);
  // Reverse-order factorisation inside upperCholeskyOfInverse reports an index of H.
  assert.throws(
    () => upperCholeskyOfInverse(fromRows([[1, 0, 0], [0, 2, 0], [0, 0, -5]])),
    (e: unknown) => e instanceof NotPositiveDefiniteError && e.pivot === 2,
  );
  assert.throws(() => cholesky(zeros(2, 3)), /square/);
});

test('maxEigenvalueSym: hand-worked cases', () => {
  assert.ok(Math.abs(maxEigenvalueSym(fromRows([[3, 0], [0, 1]]), 50, 0) - 3) < 1e-12);
  // [[2,1],[1,2]]: eigenvalues 3 and 1.
  assert.ok(Math.abs(maxEigenvalueSym(fromRows([[2, 1], [1, 2]]), 50, 1) - 3) < 1e-12);
  // Tridiagonal (2, −1): eigenvalues 2 − √2, 2, 2 + √2.
  const T = fromRows([[2, -1, 0], [-1, 2, -1], [0, -1, 2]]);
  assert.ok(Math.abs(maxEigenvalueSym(T, 100, 7) - (2 + Math.SQRT2)) < 1e-10);
  assert.equal(maxEigenvalueSym(zeros(4, 4), 10, 0), 0);
});

test('maxEigenvalueSym: known spectrum through a Householder rotation; deterministic per seed', () => {
  const n = 12;
  const eig = [5, 2, 1.5, 1, 0.5, 0.25, 0.1, 0, 0, 0.01, 0.3, 0.7];
  const v = randomMat(n, 1, 42).data;
  const vv = v.reduce((s, x) => s + x * x, 0);
  // Q = I − 2vvᵀ/‖v‖² is orthogonal and symmetric; A = Q·diag(eig)·Q.
  const Q = identity(n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) Q.data[i * n + j]! -= (2 * v[i]! * v[j]!) / vv;
  const D = zeros(n, n);
  eig.forEach((e, i) => (D.data[i * n + i] = e));
  const A = matmul(matmul(Q, D), Q);
  const lam = maxEigenvalueSym(A, 200, 3);
  assert.ok(Math.abs(lam - 5) < 1e-9, `λ_max ${lam}`);
  // The Rayleigh quotient of a PSD matrix never exceeds λ_max.
  assert.ok(maxEigenvalueSym(A, 3, 3) <= 5 + 1e-12);
  assert.equal(maxEigenvalueSym(A, 5, 11), maxEigenvalueSym(A, 5, 11));
  // A·v for the returned direction is not needed by callers, but matvec must agree with matmul.
  const x = randomMat(n, 1, 9);
  assert.deepEqual(Array.from(matvec(A, x.data)), Array.from(naiveMatmul(A, x).data));
});
