/**
 * src/backend/wasm-copies.ts: row gathers and contiguous slices as heap copies give what the
 * wasm backend's own GatherV2 and Slice kernels give, bit for bit, in the forms they take and in
 * the forms they hand to the wasm kernels (another axis, strided slices),
 * report out-of-range indices as the wasm kernel does, and leave no tensors or bytes behind.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { setupBackend } from './support.ts';
import { installWasmCopies, uninstallWasmCopies } from '../src/backend/wasm-copies.ts';
import { mulberry32 } from '../src/util/random.ts';

function random(shape: number[], seed: number, dtype: 'float32' | 'int32' = 'float32'): tf.Tensor {
  const r = mulberry32(seed);
  const n = shape.reduce((a, b) => a * b, 1);
  return dtype === 'int32'
    ? tf.tensor(Int32Array.from({ length: n }, () => Math.floor(r() * 2e9) - 1e9), shape, 'int32')
    : tf.tensor(Float32Array.from({ length: n }, () => r() * 2 - 1), shape, 'float32');
}

/** `f` with the wasm backend's own kernels and with the copies: shapes, dtypes and bits equal. */
function assertSame(f: () => tf.Tensor, what: string): void {
  uninstallWasmCopies();
  let ref: tf.Tensor;
  try {
    ref = tf.tidy(f);
  } finally {
    installWasmCopies();
  }
  const got = tf.tidy(f);
  assert.deepEqual(got.shape, ref.shape, what);
  assert.equal(got.dtype, ref.dtype, what);
  const [a, b] = [ref, got].map((t) => Buffer.from((t.dataSync() as Float32Array | Int32Array).buffer.slice(0)));
  assert.ok(a!.equals(b!), `${what}: values differ`);
  tf.dispose([ref, got]);
}

describe('wasm gathers and slices as heap copies', { skip: process.env.PRUNELAB_TEST_BACKEND && process.env.PRUNELAB_TEST_BACKEND !== 'wasm' ? 'wasm only' : false }, () => {
  before(async () => {
    await setupBackend();
    installWasmCopies();
  });
  after(installWasmCopies);

  it('gather equals the wasm kernel: rows of 1-, 2- and 3-D tensors, repeated and 2-D indices, int32, another axis', () => {
    const before = tf.memory();
    const x2 = random([50, 7], 1), x3 = random([9, 4, 5], 2), x1 = random([30], 3), xi = random([20, 3], 4, 'int32');
    const idx = tf.tensor1d([3, 0, 49, 3, 17], 'int32'), idx2 = tf.tensor2d([[1, 2], [8, 0], [4, 4]], [3, 2], 'int32');
    const none = tf.tensor1d([], 'int32');
    assertSame(() => tf.gather(x2, idx), 'rows of a matrix');
    assertSame(() => tf.gather(x3, idx2), 'blocks of a 3-D tensor by 2-D indices');
    assertSame(() => tf.gather(x1, tf.tensor1d([29, 0, 7, 7], 'int32')), 'entries of a vector');
    assertSame(() => tf.gather(xi, tf.tensor1d([19, 0, 5], 'int32')), 'int32 rows');
    assertSame(() => tf.gather(x2, none), 'no indices');
    assertSame(() => tf.gather(x3, tf.tensor1d([3, 1], 'int32'), 1), 'axis 1 (the wasm kernel)');
    tf.dispose([x2, x3, x1, xi, idx, idx2, none]);
    assert.equal(tf.memory().numTensors, before.numTensors);
    assert.equal(tf.memory().numBytes, before.numBytes);
  });

  it('an index out of range is reported as by the wasm kernel, with nothing left behind', () => {
    const x = random([5, 3], 5), bad = tf.tensor1d([1, 5], 'int32'), neg = tf.tensor1d([-1], 'int32');
    const before = tf.memory();
    assert.throws(() => tf.gather(x, bad), /GatherV2: the index value 5 is not in \[0, 4\]/);
    assert.throws(() => tf.gather(x, neg), /GatherV2: the index value -1 is not in \[0, 4\]/);
    assert.equal(tf.memory().numTensors, before.numTensors);
    assert.equal(tf.memory().numBytes, before.numBytes);
    tf.dispose([x, bad, neg]);
  });

  it('slice equals the wasm kernel: contiguous slices (rows, a leading block, a vector piece, size -1), blocks of columns (a run per row), short runs, int32', () => {
    const before = tf.memory();
    const x2 = random([40, 6], 6), x3 = random([8, 5, 4], 7), x1 = random([25], 8), xi = random([10, 4], 9, 'int32');
    assertSame(() => tf.slice(x2, [7, 0], [12, 6]), 'rows of a matrix');
    assertSame(() => tf.slice(x3, [2, 0, 0], [3, -1, -1]), 'a leading block of a 3-D tensor');
    assertSame(() => tf.slice(x3, [4, 2, 0], [1, 2, 4]), 'rows inside one leading entry');
    assertSame(() => tf.slice(x1, [5], [11]), 'a piece of a vector');
    assertSame(() => tf.slice(x2, [3, 0], [0, 6]), 'no rows');
    assertSame(() => tf.slice(x2, [3, 1], [5, 4]), 'columns, runs of 4 (the wasm kernel)');
    assertSame(() => tf.slice(x3, [1, 1, 0], [3, 2, 4]), 'strided 3-D, runs of 8 (the wasm kernel)');
    const w2 = random([30, 40], 11), w3 = random([6, 5, 32], 12), w3b = random([4, 6, 20], 13);
    assertSame(() => tf.slice(w2, [2, 5], [10, 20]), 'a block of columns: one run per row');
    assertSame(() => tf.slice(w2, [0, 0], [30, 17]), 'leading columns of every row');
    assertSame(() => tf.slice(w3, [1, 1, 0], [3, 2, 32]), 'rows inside each of 3 leading entries');
    assertSame(() => tf.slice(w3b, [1, 2, 3], [2, 3, 17]), 'runs over two outer axes');
    tf.dispose([w2, w3, w3b]);
    assertSame(() => tf.slice(xi, [2, 0], [5, 4]), 'int32 rows');
    tf.dispose([x2, x3, x1, xi]);
    assert.equal(tf.memory().numTensors, before.numTensors);
    assert.equal(tf.memory().numBytes, before.numBytes);
  });

  it('slice keeps its gradient under the tape', () => {
    const x = random([6, 3], 10);
    const g = tf.grad((t: tf.Tensor) => tf.sum(tf.mul(tf.slice(t, [2, 0], [3, 3]), 2)))(x);
    const expect = Array.from({ length: 18 }, (_, i) => (i >= 6 && i < 15 ? 2 : 0));
    assert.deepEqual(Array.from(g.dataSync()), expect);
    tf.dispose([x, g]);
  });
});
