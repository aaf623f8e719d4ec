/**
 * SparseGPT's factor alone (U upper with H⁻¹ = UᵀU, native/openblas-kernels.c
 * upperCholeskyOfInverse) on H = XᵀX + 0.01·n·I from 2n seeded normal rows, at 1 and 2 threads
 * alternating, two calls each, wall ms per call; and its error against the float64 reference
 * (src/linalg/dense.ts) where n ≤ 2048:
 *   node --import tsx bench/sparsegpt-factor.ts [n ...]      (default 512 1408 4096)
 * To time the single LAPACK call instead, build the addon with FACTOR_BLOCK above n.
 */
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/index.ts';
import { openblasAddon, openblasUnavailable } from '../src/backend/openblas.ts';
import { nativeUpperCholeskyOfInverse } from '../src/linalg/native.ts';
import { upperCholeskyOfInverse } from '../src/linalg/dense.ts';

await initBackend('wasm', true);
const lib = openblasAddon();
if (!lib) {
  console.log(`skipped: ${openblasUnavailable()}`);
  process.exit(0);
}
const sizes = process.argv.slice(2).map(Number);
for (const n of sizes.length > 0 ? sizes : [512, 1408, 4096]) {
  const x = tf.randomNormal([2 * n, n], 0, 1, 'float32', 3);
  const h = tf.tidy(() => tf.add(tf.matMul(x, x, true, false), tf.mul(tf.eye(n), n * 0.01)) as tf.Tensor2D);
  const times: string[] = [];
  let u: Float32Array | null = null;
  for (const t of [1, 2, 1, 2]) {
    lib.setThreads(t);
    const t0 = performance.now();
    const r = nativeUpperCholeskyOfInverse(h)!;
    times.push(`${t} thr ${(performance.now() - t0).toFixed(0)} ms`);
    u ??= r.dataSync() as Float32Array;
    r.dispose();
  }
  let error = '';
  if (n <= 2048) {
    const want = upperCholeskyOfInverse({ rows: n, cols: n, data: Float64Array.from(h.dataSync()) }).data;
    let num = 0, den = 0;
    for (let i = 0; i < want.length; i++) { num += (u![i]! - want[i]!) ** 2; den += want[i]! ** 2; }
    error = `; relative Frobenius error against float64 ${Math.sqrt(num / den).toExponential(2)}`;
  }
  console.log(`n = ${n}: ${times.join(', ')}${error}`);
  x.dispose();
  h.dispose();
}
