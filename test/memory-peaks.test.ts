/**
 * Backend working sets that must not grow with the number of attention blocks or recursion steps
 * (on WebAssembly the heap keeps its high-water mark for the rest of the run): `tf.profile`'s
 * peak bytes (all live tensors: the bytes live before are taken off) of attention over many
 * (window, kv-head) blocks, in each layout, and of SparseGPT's factor.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/index.ts';
import { attention, causalMask } from '../src/model/ops.ts';
import { backendLinAlg } from '../src/linalg/backend.ts';
import { setModelLayout, type ModelLayout } from '../src/backend/layout.ts';
import { mulberry32 } from '../src/util/random.ts';

await initBackend('wasm', true);

function randomTensor(rows: number, cols: number, seed: number): tf.Tensor2D {
  const r = mulberry32(seed);
  return tf.tensor2d(Float32Array.from({ length: rows * cols }, () => r() - 0.5), [rows, cols]);
}

test('attention holds one block of scores at a time, not one per (window, kv head)', async () => {
  // 8 windows × 4 kv heads = 32 blocks, each with [g·T, T] scores of 2·128·128 floats (128 KiB).
  const B = 8, T = 128, H = 8, KV = 4, hd = 16, g = H / KV;
  const q = randomTensor(B * T, H * hd, 1);
  const k = randomTensor(B * T, KV * hd, 2);
  const v = randomTensor(B * T, KV * hd, 3);
  const mask = causalMask(T, T, 0, g);
  const blockScores = g * T * T * 4;
  const inputs = (q.size + k.size + v.size) * 4;
  // The per-group loop (XNNPACK's layout) and batched products taken 4 blocks' scores at a time
  // (OpenBLAS's layout, with its step made small here: by default a step is up to 16 MiB of scores).
  const layouts: [string, Partial<ModelLayout>][] = [
    ['per-group loop', { batchedAttention: false, keysByTransposeB: false }],
    ['batched, 4 blocks per step', { batchedAttention: true, keysByTransposeB: true, attentionStepBytes: 4 * blockScores }],
  ];
  for (const [name, layout] of layouts) {
    setModelLayout(layout);
    const before = tf.memory().numBytes;
    const info = await tf.profile(() => attention(q, k, v, { B, Tq: T, Tk: T, numHeads: H, numKvHeads: KV, headDim: hd, scale: 0.25 }, mask));
    setModelLayout(null);
    // The operands laid out by (window, kv head), the gathered blocks, the context and its concat
    // and transpose are at most 6 copies of the inputs; the scores, masked scores and softmax of
    // every block kept to the end add 3 × 32 blocks. Bound: less than one such set of all blocks.
    const peak = info.peakBytes - before;
    const n = B * KV;
    assert.ok(peak < 6 * inputs + n * blockScores, `${name}: peak ${peak} bytes (inputs ${inputs}, one block's scores ${blockScores})`);
    tf.dispose(info.result as tf.Tensor);
  }
  tf.dispose([q, k, v, mask]);
});

test('the backend factor of a 1024² Hessian peaks at a few copies of it, not one per recursion step', async () => {
  const n = 1024;
  const la = backendLinAlg('float32', 64);
  const x = randomTensor(2 * n, n, 4);
  const a = tf.tidy(() => tf.add(tf.matMul(x, x, true, false), tf.mul(tf.eye(n), n)) as tf.Tensor2D);
  const A = la.upload(a.dataSync() as Float32Array, n, n);
  const bytes = n * n * 4;
  let U: ReturnType<typeof la.upload> | null = null;
  const before = tf.memory().numBytes;
  const info = await tf.profile(() => { U = la.upperCholeskyOfInverse(A); });
  const peak = info.peakBytes - before;
  // Above A at the top level's last step: A reversed (1), X11, L21, X22, X21 (¼ each), the zero
  // block (¼), the two half-height rows of X (½ each) and X (1): 4¼ copies. With every step's
  // slices and products kept to the end, the recursion's levels added up to more than 11.
  assert.ok(peak <= 4.25 * bytes, `peak ${(peak / bytes).toFixed(2)} × n² floats above A`);
  la.dispose(A, U!);
  tf.dispose([x, a]);
});
