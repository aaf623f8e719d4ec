/**
 * How SparseGPT's float32 sweep (obs.ts obsSweepNative) splits over the native pool's threads: per
 * sweep of one random operator, wall ms in all, in the per-block native kernel (obsSweepBlock:
 * the pending update, the mask selection, the row sweeps) and in the left-looking update products,
 * for 1 and 2 threads alternating, for the block-wise ('matrix') and the per-row mask:
 *   node --import tsx bench/sparsegpt-sweep-threads.ts [rowsxcols=512x1408]
 */
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/index.ts';
import { noteWorkerThreads, openblasAddon, openblasUnavailable } from '../src/backend/openblas.ts';
import { backendLinAlg } from '../src/linalg/backend.ts';
import { obsFactor, obsSweep } from '../src/prune/obs.ts';

await initBackend('wasm', true);
const lib = openblasAddon();
const la = backendLinAlg();
if (!lib || !la.native) {
  console.log(`skipped: no native kernels (${openblasUnavailable()})`);
  process.exit(0);
}
const native = la.native;
const [rows, cols] = (process.argv[2] ?? '512x1408').split('x').map(Number) as [number, number];
const tokens = 2 * cols;
const X = tf.randomNormal([tokens, cols], 0, 1, 'float32', 1);
const H = Float64Array.from(tf.matMul(X, X, true, false).dataSync()).map((v) => (2 * v) / tokens);
const W = tf.randomNormal([rows, cols], 0, 1, 'float32', 2).dataSync() as Float32Array;
let blockMs = 0;
let productMs = 0;
const sweepBlock = native.obsSweepBlock;
const matMul = native.matMul;
native.obsSweepBlock = (...a) => {
  const t0 = performance.now();
  try {
    return sweepBlock(...a);
  } finally {
    blockMs += performance.now() - t0;
  }
};
native.matMul = (...a) => {
  const t0 = performance.now();
  matMul(...a);
  productMs += performance.now() - t0;
};
const reps = 5;
for (const kind of ['matrix', 'row'] as const) {
  for (const threads of [1, 2, 1, 2]) {
    lib.setThreads(threads);
    const f = obsFactor(la, H, cols, 0.01);
    blockMs = productMs = 0;
    const t0 = performance.now();
    for (let r = 0; r < reps; r++) obsSweep(la, W, rows, cols, f, { kind, sparsity: 0.5 });
    const ms = (x: number): string => (x / reps).toFixed(1);
    console.log(`${rows}x${cols} ${kind}, ${threads} thread(s): sweep ${ms(performance.now() - t0)} ms, block kernel ${ms(blockMs)}, update products ${ms(productMs)}`);
    f.dispose();
  }
}
noteWorkerThreads(0);
