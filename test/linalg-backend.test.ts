/**
 * The backend linear algebra (src/linalg/backend.ts): hand-computed small cases for Cholesky,
 * triangular solve, inverse and SparseGPT's factor, with leaves of one column so every product of
 * the block recursion runs on the backend; larger random cases against the float64 host kernels.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/index.ts';
import { backendLinAlg } from '../src/linalg/backend.ts';
import { NotPositiveDefiniteError, cholesky, choleskyInverse, lowerTriangularInverse, maxEigenvalueSym, upperCholeskyOfInverse } from '../src/linalg/dense.ts';
import type { LinAlg, Matrix } from '../src/linalg/linalg.ts';

await initBackend('wasm', true);

const A3 = [4, 2, 2, 2, 5, 3, 2, 3, 6];
// By hand: L = [2 0 0; 1 2 0; 1 1 2], L⁻¹ = [.5 0 0; −.25 .5 0; −.125 −.25 .5], A⁻¹ = L⁻ᵀL⁻¹.
const L3 = [2, 0, 0, 1, 2, 0, 1, 1, 2];
const X3 = [0.5, 0, 0, -0.25, 0.5, 0, -0.125, -0.25, 0.5];
const INV3 = [0.328125, -0.09375, -0.0625, -0.09375, 0.3125, -0.125, -0.0625, -0.125, 0.25];

function close(got: ArrayLike<number>, want: ArrayLike<number>, tol: number, what: string): void {
  assert.equal(got.length, want.length, what);
  for (let i = 0; i < want.length; i++) {
    assert.ok(Math.abs(got[i]! - want[i]!) <= tol * Math.max(1, Math.abs(want[i]!)), `${what}[${i}]: ${got[i]} vs ${want[i]}`);
  }
}

function take(la: LinAlg, m: Matrix): Float32Array {
  const v = la.read(m).slice();
  la.dispose(m);
  return v;
}

for (const leaf of [1, 2, 128]) {
  test(`hand-computed 3×3 (leaf ${leaf}): Cholesky, L⁻¹, inverse, triangular solve, SparseGPT factor`, () => {
    const la = backendLinAlg('float32', leaf);
    const A = la.upload(A3, 3, 3);
    close(take(la, la.cholesky(A)), L3, 1e-6, 'L');
    close(take(la, la.inverseCholesky(A)), X3, 1e-6, 'L⁻¹');
    close(take(la, la.spdInverse(A)), INV3, 1e-6, 'A⁻¹');
    const L = la.upload(L3, 3, 3);
    const B = la.upload([2, 4, 5, 6, 9, 9], 3, 2);
    // L·[1 2; 2 2; 3 1.5] = [2 4; 5 6; 9 7]... by hand for column 2: x0 = 2, x1 = (6 − 2)/2 = 2, x2 = (9 − 2 − 2)/2 = 2.5.
    close(take(la, la.solveLower(L, B)), [1, 2, 2, 2, 3, 2.5], 1e-6, 'L⁻¹B');
    // U upper with UᵀU = A⁻¹ (unique with a positive diagonal).
    const U = take(la, la.upperCholeskyOfInverse(A));
    for (let i = 0; i < 3; i++) {
      assert.ok(U[i * 3 + i]! > 0);
      for (let j = 0; j < i; j++) assert.equal(U[i * 3 + j], 0, `U[${i},${j}]`);
    }
    const UtU = new Float64Array(9);
    for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) for (let k = 0; k < 3; k++) UtU[i * 3 + j]! += U[k * 3 + i]! * U[k * 3 + j]!;
    close(UtU, INV3, 1e-6, 'UᵀU');
    la.dispose(A, L, B);
  });
}

test('products: plain, transposed, Gram, c − a·b, by hand', () => {
  const la = backendLinAlg();
  const a = la.upload([1, 2, 3, 4, 5, 6], 2, 3);
  const b = la.upload([1, 0, 0, 1, 1, 1], 3, 2);
  close(take(la, la.matMul(a, b)), [4, 5, 10, 11], 0, 'ab');
  close(take(la, la.matMul(a, a, { transposeB: true })), [14, 32, 32, 77], 0, 'abᵀ');
  close(take(la, la.matMul(a, a, { transposeA: true })), [17, 22, 27, 22, 29, 36, 27, 36, 45], 0, 'aᵀa');
  close(take(la, la.gram(a)), [17, 22, 27, 22, 29, 36, 27, 36, 45], 0, 'gram');
  const c = la.upload([10, 10, 10, 10], 2, 2);
  close(take(la, la.subMatMul(c, a, b)), [6, 5, 0, -1], 0, 'c − ab');
  close(take(la, la.softThreshold(a, 2.5)), [0, 0, 0.5, 1.5, 2.5, 3.5], 0, 'soft threshold');
  assert.equal(la.dot(a, a), 91);
  la.dispose(a, b, c);
});

test('resident right operand: the same products as the matrix itself (panelled on wasm when wide), its own memory', () => {
  const la = backendLinAlg();
  for (const n of [3, 600]) {
    const a = la.upload(Float32Array.from({ length: 5 * n }, (_, i) => ((i * 37) % 11) - 5), 5, n);
    const b = la.upload(Float32Array.from({ length: n * n }, (_, i) => ((i * 13) % 7) / 3 - 1), n, n);
    const before = tf.memory().numTensors;
    const r = la.resident(b);
    assert.deepEqual(take(la, la.matMul(a, r)), take(la, la.matMul(a, b)), `${n}: a·resident(b) = a·b`);
    assert.deepEqual(take(la, la.matMul(a, r, { transposeB: true })), take(la, la.matMul(a, b, { transposeB: true })), `${n}: a·resident(b)ᵀ`);
    la.dispose(r);
    assert.equal(tf.memory().numTensors, before, `${n}: disposing the resident frees all it held`);
    assert.equal(take(la, la.matMul(a, b)).length, 5 * n, `${n}: b stays valid`);
    la.dispose(a, b);
  }
});

test('a non-positive-definite matrix names its pivot in the caller’s order', () => {
  const la = backendLinAlg('float32', 1);
  const A = la.upload([4, 2, 0, 2, 1, 0, 0, 0, 1], 3, 3); // pivot 1: 1 − 1 = 0
  assert.throws(() => la.cholesky(A), (e: unknown) => e instanceof NotPositiveDefiniteError && e.pivot === 1);
  la.dispose(A);
});

function randomSpd(n: number, seed: number): Float64Array {
  let s = seed >>> 0;
  const r = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296 - 0.5);
  const X = new Float64Array(2 * n * n).map(r);
  const A = new Float64Array(n * n);
  for (let t = 0; t < 2 * n; t++) for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) A[i * n + j]! += X[t * n + i]! * X[t * n + j]!;
  for (let i = 0; i < n; i++) A[i * n + i]! += 0.1 * n;
  return A;
}

test('300×300 (three levels of blocks): float32 backend against the float64 host kernels', () => {
  const n = 300;
  const A = randomSpd(n, 7);
  const la = backendLinAlg('float32', 64);
  const a = la.upload(A, n, n);
  const host = { rows: n, cols: n, data: A };
  const rel = (got: Float32Array, want: Float64Array) => {
    let d = 0, m = 0;
    for (let i = 0; i < want.length; i++) { d = Math.max(d, Math.abs(got[i]! - want[i]!)); m = Math.max(m, Math.abs(want[i]!)); }
    return d / m;
  };
  assert.ok(rel(take(la, la.cholesky(a)), cholesky(host).data) < 1e-5);
  assert.ok(rel(take(la, la.inverseCholesky(a)), lowerTriangularInverse(cholesky(host)).data) < 1e-5);
  assert.ok(rel(take(la, la.spdInverse(a)), choleskyInverse(host).data) < 1e-5);
  assert.ok(rel(take(la, la.upperCholeskyOfInverse(a)), upperCholeskyOfInverse(host).data) < 1e-5);
  const lb = la.maxEigenvalueSym(a, 30);
  const lh = maxEigenvalueSym(host, 30);
  assert.ok(Math.abs(lb - lh) / lh < 1e-5, `${lb} vs ${lh}`);
  la.dispose(a);
});

test('timing (printed, not asserted): transposeB against an explicit transpose on this backend', () => {
  const n = 512;
  const a = tf.randomNormal([n, n]);
  const b = tf.randomNormal([n, n]);
  const time = (f: () => tf.Tensor) => { f().dispose(); const t0 = performance.now(); for (let i = 0; i < 2; i++) f().dataSync(); return (performance.now() - t0) / 2; };
  const plain = time(() => tf.matMul(a, b));
  const tB = time(() => tf.matMul(a, b, false, true));
  const explicit = time(() => tf.tidy(() => tf.matMul(a, tf.transpose(b))));
  console.log(`# ${tf.getBackend()} ${n}³: plain ${plain.toFixed(1)} ms, transposeB ${tB.toFixed(1)} ms, transpose + plain ${explicit.toFixed(1)} ms`);
  tf.dispose([a, b]);
});
