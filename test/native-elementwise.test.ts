/**
 * src/backend/native-elementwise.ts (native/elementwise-kernels.c): Add / Sub / Multiply in every
 * layout the model uses, Square and Rsqrt equal the wasm backend's own kernels bit for bit
 * (special values included); Sigmoid, Exp and Softmax are within 2 ulp of a float64 reference
 * (Softmax closer than the wasm kernel), Mean within 1; every kernel gives the same bits on 1, 2
 * and 3 threads and with AVX-512, AVX2 and SSE2; other dtypes, broadcasts and axes reach the wasm kernel. Skips where the addon
 * is not built.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { installWasmMatmul, openblasAddon, openblasUnavailable } from '../src/backend/openblas.ts';
import { installNativeElementwise, nativeElementwiseInstalled, uninstallNativeElementwise, type ElementwiseAddon } from '../src/backend/native-elementwise.ts';
import { columnSquareSums } from '../src/prune/stats.ts';
import { setupBackend } from './support.ts';
import { mulberry32 } from '../src/util/random.ts';

const lib = openblasAddon() as (ElementwiseAddon & { setThreads(n: number): void }) | null;
const skip = process.env.PRUNELAB_TEST_BACKEND && process.env.PRUNELAB_TEST_BACKEND !== 'wasm' ? 'wasm only'
  : !lib ? openblasUnavailable() : typeof lib.ewBinary !== 'function' ? 'the addon predates the elementwise kernels: npm run build-native' : false;

/** Values in [-scale, scale), with some special values mixed in when `specials`. */
function values(n: number, seed: number, scale = 1, specials = false): Float32Array {
  const rng = mulberry32(seed);
  const v = Float32Array.from({ length: n }, () => (rng() * 2 - 1) * scale);
  if (specials) {
    const odd = [0, -0, NaN, Infinity, -Infinity, 1e-40, -1e-40, 3.4e38, -3.4e38, 1e-30, 88.5, -88.5, 100, -100, -1e9];
    for (let i = 0; i < odd.length && i * 7 < n; i++) v[i * 7] = odd[i]!;
  }
  return v;
}

const t = (shape: number[], seed: number, scale = 1, specials = false): tf.Tensor => tf.tensor(values(tf.util.sizeFromShape(shape), seed, scale, specials), shape);

const bits = (x: tf.Tensor): Buffer => Buffer.from((x.dataSync() as Float32Array).slice().buffer);

/** `f` on the wasm backend's own kernels and on the native ones: shapes, dtypes and bits equal. */
function assertSameAsWasm(f: () => tf.Tensor, what: string): void {
  uninstallNativeElementwise();
  let ref: tf.Tensor;
  try {
    ref = tf.tidy(f);
  } finally {
    installNativeElementwise(lib!);
  }
  const got = tf.tidy(f);
  assert.deepEqual(got.shape, ref.shape, what);
  assert.equal(got.dtype, ref.dtype, what);
  assert.ok(bits(got).equals(bits(ref)), `${what}: values differ from the wasm kernel`);
  tf.dispose([ref, got]);
}

/** Distance in float32 steps between a and the float32 rounding of the exact value r (0 for two NaNs). */
function ulps(a: number, r: number): number {
  const e = Math.fround(r);
  if (Number.isNaN(a) || Number.isNaN(e)) return Number.isNaN(a) && Number.isNaN(e) ? 0 : Infinity;
  if (a === e) return 0;
  const key = (x: number) => {
    const i = new Int32Array(new Float32Array([x]).buffer)[0]!;
    return i < 0 ? -(i & 0x7fffffff) : i;
  };
  return Math.abs(key(a) - key(e));
}

function maxUlps(got: ArrayLike<number>, ref: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < got.length; i++) m = Math.max(m, ulps(got[i]!, ref[i]!));
  return m;
}

describe('native elementwise kernels on the wasm backend', { skip }, () => {
  before(async () => {
    await setupBackend();
    installWasmMatmul('auto');
    assert.ok(nativeElementwiseInstalled(), 'installed with the OpenBLAS products');
  });
  after(() => {
    lib?.setThreads(2);
    installNativeElementwise(lib!);
  });

  // Sizes below and above the pool's threshold (2^15 elements), rows not a multiple of 16.
  const N = 300, D = 577;

  it('Add, Sub, Multiply: bit-identical to the wasm kernels in the layouts the model uses', () => {
    const before = tf.memory();
    const x = t([N, D], 1, 4, true), y = t([N, D], 2, 4, true), row = t([D], 3, 2, true), col = t([N, 1], 4, 2, true);
    const s = tf.scalar(0.37), small = t([5, 7], 5, 1, true), small2 = t([5, 7], 6);
    const scores = t([6, 4, 50], 7, 10), mask = t([4, 50], 8, 1e9);
    const x3 = t([1, 40, 96], 9), tab = t([40, 96], 10), x3b = t([3, 40, 96], 11);
    for (const [name, op] of [['add', tf.add], ['sub', tf.sub], ['mul', tf.mul]] as const) {
      assertSameAsWasm(() => op(x, y), `${name}: same shape`);
      assertSameAsWasm(() => op(small, small2), `${name}: same shape, small (inline)`);
      assertSameAsWasm(() => op(x, s), `${name}: a scalar on the right`);
      assertSameAsWasm(() => op(s, x), `${name}: a scalar on the left`);
      assertSameAsWasm(() => op(x, 1e-5), `${name}: a number`);
      assertSameAsWasm(() => op(x, row), `${name}: a row over rows`);
      assertSameAsWasm(() => op(row, x), `${name}: a row over rows, on the left`);
      assertSameAsWasm(() => op(x, col), `${name}: a value per row`);
      assertSameAsWasm(() => op(col, x), `${name}: a value per row, on the left`);
      assertSameAsWasm(() => op(scores, mask), `${name}: a mask over heads`);
      assertSameAsWasm(() => op(x3, tab), `${name}: RoPE tables over a batch of 1`);
      assertSameAsWasm(() => op(x3b, tab), `${name}: RoPE tables over a batch of 3`);
      assertSameAsWasm(() => op(tf.reshape(col, [N, 1, 1]), tf.reshape(x, [N, 1, D])), `${name}: a value per row, rank 3`);
    }
    tf.dispose([x, y, row, col, s, small, small2, scores, mask, x3, tab, x3b]);
    assert.equal(tf.memory().numTensors, before.numTensors);
  });

  it('Sum over leading or trailing axes and Transpose: bit-identical to the wasm kernels', () => {
    const before = tf.memory();
    const x = t([N, D], 12, 4, true), x3 = t([6, 50, 70], 13), small = t([5, 7], 14), x5 = t([2, 9, 3, 4, 8], 15), wide = t([3, 1000], 16);
    const cases: [string, () => tf.Tensor][] = [
      ['sum over rows (column sums)', () => tf.sum(x, 0)], ['sum over the last axis', () => tf.sum(x, 1)], ['sum of everything', () => tf.sum(x)],
      ['sum over two leading axes', () => tf.sum(x3, [0, 1])], ['sum over two trailing axes, kept dims', () => tf.sum(x3, [1, 2], true)],
      ['column sums, small (inline)', () => tf.sum(small, 0)], ['column sums of a wide matrix (several blocks)', () => tf.sum(wide, 0)],
      ['Wanda\'s ‖X_j‖²', () => tf.sum(tf.square(x), 0)],
      ['transpose 2-D', () => tf.transpose(x)], ['transpose 2-D, small', () => tf.transpose(small)], ['transpose the last two of 3-D', () => tf.transpose(x3, [0, 2, 1])],
      ['attention\'s [0, 2, 3, 1, 4]', () => tf.transpose(x5, [0, 2, 3, 1, 4])], ['attention\'s [0, 3, 1, 2, 4]', () => tf.transpose(x5, [0, 3, 1, 2, 4])],
      ['[1, 0, 2]', () => tf.transpose(x3, [1, 0, 2])],
    ];
    for (const [what, f] of cases) assertSameAsWasm(f, what);
    tf.dispose([x, x3, small, x5, wide]);
    assert.equal(tf.memory().numTensors, before.numTensors);
  });

  it('Square and Rsqrt: bit-identical to the wasm kernels, special values included', () => {
    const x = t([N, D], 12, 100, true), small = t([3, 5], 13, 1, true);
    for (const v of [x, small]) {
      assertSameAsWasm(() => tf.square(v), 'square');
      assertSameAsWasm(() => tf.rsqrt(v), 'rsqrt (negatives: NaN)');
      assertSameAsWasm(() => tf.rsqrt(tf.abs(v)), 'rsqrt');
    }
    tf.dispose([x, small]);
  });

  it('Sigmoid and Exp: within 2 ulp of float64 over the whole range (0 under 2^-126); NaN and the infinities as Math', () => {
    const n = 200_000;
    const x = new Float32Array(n);
    const rng = mulberry32(21);
    for (let i = 0; i < n; i++) x[i] = (rng() * 2 - 1) * (i % 4 === 0 ? 110 : i % 4 === 1 ? 20 : 1);
    x.set([0, -0, NaN, Infinity, -Infinity, 88.72, 88.73, -87.3, -103.9, -104.1, 1e-30, -1e-30], 0);
    const xt = tf.tensor1d(x);
    const sig = tf.sigmoid(xt), ex = tf.exp(xt);
    const sigRef = Array.from(x, (v) => 1 / (1 + Math.exp(-v))), expRef = Array.from(x, (v) => Math.exp(v));
    const sigGot = sig.dataSync(), expGot = ex.dataSync();
    // Below x = -87.33 (float32) results are 0: e^x there is under 1.1830e-38, just above 2^-126.
    const FLUSH = Math.exp(Math.fround(-87.33));
    const normal = (r: number) => Math.abs(r) >= FLUSH || r === 0 || !Number.isFinite(r);
    const sigU = maxUlps(sigGot.filter((_, i) => normal(sigRef[i]!)), sigRef.filter(normal));
    const expU = maxUlps(expGot.filter((_, i) => normal(expRef[i]!)), expRef.filter(normal));
    assert.ok(sigU <= 2, `sigmoid: ${sigU} ulp`);
    assert.ok(expU <= 2, `exp: ${expU} ulp`);
    // Results under 2^-126 are flushed to 0 (a subnormal costs a microcode assist), as XNNPACK's exp does.
    for (let i = 0; i < n; i++) {
      if (expRef[i]! < 2 ** -126) assert.equal(expGot[i], 0, `exp(${x[i]}) under 2^-126`);
      if (sigRef[i]! < 2 ** -126) assert.equal(sigGot[i], 0, `sigmoid(${x[i]}) under 2^-126`);
      if (expGot[i] === 0) assert.ok(expRef[i]! < FLUSH, `exp(${x[i]}) flushed at ${expRef[i]}`);
      if (sigGot[i] === 0) assert.ok(sigRef[i]! < FLUSH, `sigmoid(${x[i]}) flushed at ${sigRef[i]}`);
    }
    tf.dispose([xt, sig, ex]);
  });

  it('Softmax over the last axis: within 2 ulp of float64 and closer than the wasm kernel (masked entries exactly 0); Mean: within 1 ulp', () => {
    for (const [rows, cols, scale] of [[64, 577, 8], [7, 3, 1], [40, 49152, 12], [300, 16, 30]] as const) {
      const x = values(rows * cols, rows + cols, scale);
      for (let r = 0; r < rows; r += 3) x.fill(-1e9, r * cols + Math.floor(cols / 2), (r + 1) * cols); // causal-style masks
      const xt = tf.tensor2d(x, [rows, cols]);
      const sm = tf.softmax(xt).dataSync(), mean = tf.mean(xt, -1).dataSync();
      uninstallNativeElementwise();
      const wasmSm = tf.tidy(() => tf.softmax(xt).dataSync());
      installNativeElementwise(lib!);
      // x - max rounds to float32 in any float32 softmax (an error of up to 2^-24 |x - max| in the
      // exponent): the exact reference is that of the rounded differences; the float64 one of x is the wasm kernel's yardstick.
      const exact = new Float64Array(rows * cols), exactOfX = new Float64Array(rows * cols), meanRef = new Float64Array(rows);
      for (let r = 0; r < rows; r++) {
        const row = x.subarray(r * cols, (r + 1) * cols);
        const m = Math.max(...row);
        let sum = 0, sumX = 0, plain = 0;
        for (let j = 0; j < cols; j++) { sum += Math.exp(Math.fround(row[j]! - m)); sumX += Math.exp(row[j]! - m); plain += row[j]!; }
        for (let j = 0; j < cols; j++) {
          exact[r * cols + j] = Math.exp(Math.fround(row[j]! - m)) / sum;
          exactOfX[r * cols + j] = Math.exp(row[j]! - m) / sumX;
        }
        meanRef[r] = plain / cols;
      }
      const u = maxUlps(sm, exact), uX = maxUlps(sm, exactOfX), wasmX = maxUlps(wasmSm, exactOfX);
      assert.ok(u <= 2, `softmax ${rows}x${cols}: ${u} ulp`);
      assert.ok(uX <= wasmX, `softmax ${rows}x${cols}: ${uX} ulp from the float64 softmax of x, the wasm kernel ${wasmX}`);
      assert.ok(maxUlps(mean, meanRef) <= 1, `mean ${rows}x${cols}: ${maxUlps(mean, meanRef)} ulp`);
      for (let i = 0; i < x.length; i++) if (x[i] === -1e9) assert.equal(sm[i], 0);
      xt.dispose();
    }
    // keepDims, rank 3, and a row with a NaN (all NaN, as the wasm kernel) or an infinity.
    const x3 = t([2, 3, 20], 30);
    assert.deepEqual(tf.mean(x3, 2, true).shape, [2, 3, 1]);
    assert.deepEqual(tf.mean(x3, -1).shape, [2, 3]);
    const odd = tf.tensor2d([[1, NaN, 2], [1, Infinity, 2], [-Infinity, 0, 1], [-Infinity, -Infinity, -Infinity]]);
    const got = tf.softmax(odd).dataSync();
    uninstallNativeElementwise();
    const ref = tf.tidy(() => tf.softmax(odd).dataSync());
    installNativeElementwise(lib!);
    assert.deepEqual(Array.from(got, Number.isNaN), Array.from(ref, Number.isNaN), 'softmax: NaN where the wasm kernel has NaN');
    assert.ok(maxUlps(got, ref) <= 2, 'softmax of a row with -Infinity');
    tf.dispose([x3, odd]);
  });

  it('every kernel gives the same bits on 1, 2 and 3 threads and with every vector width', () => {
    const x = t([N, D], 40, 6, true), y = t([N, D], 41, 6), row = t([D], 42), col = t([N, 1], 43);
    const logits = t([N, D], 44, 20);
    // Column sums split their columns by the thread count (a share per thread): the sums must not move.
    const wide = t([300, 1411], 45, 6);
    const run = () => tf.tidy(() => [tf.add(x, y), tf.sub(x, row), tf.mul(x, col), tf.mul(x, 0.5), tf.square(x), tf.rsqrt(tf.abs(x)),
      tf.sigmoid(x), tf.exp(x), tf.softmax(logits), tf.mean(logits, -1, true), tf.sum(wide, 0), columnSquareSums(wide as tf.Tensor2D)].map((r) => bits(r)));
    try {
      lib!.setThreads(1);
      const one = run();
      for (const n of [2, 3]) {
        lib!.setThreads(n);
        run().forEach((b, i) => assert.ok(b.equals(one[i]!), `kernel ${i}: ${n} threads differ from 1`));
      }
      // And every vector width this CPU has gives the same bits (no fused multiply-adds, fixed lanes).
      const best = lib!.ewSimd();
      for (const w of ['avx512f', 'avx2', 'sse2']) {
        if (lib!.ewSimd(w) !== w) continue;
        run().forEach((b, i) => assert.ok(b.equals(one[i]!), `kernel ${i}: ${w} differs from ${best}`));
      }
      assert.equal(lib!.ewSimd(''), best, 'back to the widest');
    } finally {
      lib!.setThreads(2);
      lib!.ewSimd('');
    }
    tf.dispose([x, y, row, col, logits, wide]);
  });

  it('other dtypes, broadcasts and axes go to the wasm kernel', () => {
    const calls = { binary: 0, unary: 0, rows: 0 };
    const counting: ElementwiseAddon = {
      ewBinary: (...a) => { calls.binary++; lib!.ewBinary(...a); },
      ewUnary: (...a) => { calls.unary++; lib!.ewUnary(...a); },
      ewRows: (...a) => { calls.rows++; lib!.ewRows(...a); },
      ewSimd: () => lib!.ewSimd(),
      ewSum: (...a) => { calls.rows++; lib!.ewSum(...a); },
      ewTranspose: (...a) => { calls.rows++; lib!.ewTranspose(...a); },
    };
    uninstallNativeElementwise();
    installNativeElementwise(counting);
    try {
      const i = tf.tensor2d([[1, 2], [3, 4]], [2, 2], 'int32');
      const a = t([2, 1, 3], 50), b = t([2, 4, 3], 51), c = t([4, 1], 52), d = t([1, 5], 53), x = t([6, 8], 54);
      const cases: [string, () => tf.Tensor][] = [
        ['int32 add', () => tf.add(i, i)], ['int32 mul', () => tf.mul(i, tf.scalar(3, 'int32'))], ['int32 square', () => tf.square(i)],
        ['int32 mean', () => tf.mean(i, -1)],
        ['a middle axis broadcast', () => tf.add(a, b)], ['both broadcast', () => tf.mul(c, d)],
        ['mean over axis 0', () => tf.mean(x, 0)], ['mean over every axis', () => tf.mean(x)], ['mean over two axes', () => tf.mean(b, [1, 2])],
        ['int32 sum', () => tf.sum(i, 0)], ['sum over a middle axis', () => tf.sum(b, 1)], ['transpose moving the last axis', () => tf.transpose(b, [2, 0, 1])],
      ];
      for (const [what, f] of cases) {
        const seen = { ...calls };
        assertSameAsWasmWith(counting, f, what);
        assert.deepEqual(calls, seen, `${what}: reached the native kernels`);
      }
      const seen = calls.binary;
      tf.tidy(() => tf.add(x, x));
      assert.equal(calls.binary, seen + 1, 'a same-shape add reaches the native kernel');
      tf.dispose([i, a, b, c, d, x]);
    } finally {
      uninstallNativeElementwise();
      installNativeElementwise(lib!);
    }
  });

  it('--matmul xnnpack keeps the wasm kernels; switching back installs the native ones again', () => {
    const x = t([40, 33], 70);
    const ref = tf.tidy(() => bits(tf.sigmoid(x)));
    try {
      installWasmMatmul('xnnpack');
      assert.equal(nativeElementwiseInstalled(), false);
      uninstallNativeElementwise(); // a no-op: already the wasm kernels
      const plain = tf.tidy(() => bits(tf.sigmoid(x)));
      installNativeElementwise(lib!);
      const native = tf.tidy(() => bits(tf.sigmoid(x)));
      uninstallNativeElementwise();
      assert.ok(!plain.equals(native), 'the xnnpack choice ran the wasm sigmoid (whose last bits differ)');
    } finally {
      installWasmMatmul('auto');
    }
    assert.ok(nativeElementwiseInstalled());
    assert.ok(tf.tidy(() => bits(tf.sigmoid(x))).equals(ref));
    x.dispose();
  });

  it('gradients through the native kernels equal those through the wasm kernels', () => {
    const x = t([33, 65], 60, 3), w = t([65], 61);
    const f = () => {
      const g = tf.grads((a: tf.Tensor, b: tf.Tensor) => {
        const ms = tf.mean(tf.square(a), -1, true);
        const n = tf.mul(tf.mul(a, tf.rsqrt(tf.add(ms, 1e-5))), b);
        return tf.sum(tf.mul(tf.softmax(tf.mul(n, tf.sigmoid(n))), tf.exp(tf.sub(n, 1))));
      })([x, w]);
      return tf.concat([g[0]!.flatten(), g[1]!.flatten()]);
    };
    // The softmax's and mean's last bits differ from the wasm kernels': compare to within float32 noise.
    uninstallNativeElementwise();
    const ref = tf.tidy(f);
    installNativeElementwise(lib!);
    const got = tf.tidy(f);
    const r = ref.dataSync(), g = got.dataSync();
    let scale = 0, diff = 0;
    for (let k = 0; k < r.length; k++) { scale = Math.max(scale, Math.abs(r[k]!)); diff = Math.max(diff, Math.abs(r[k]! - g[k]!)); }
    assert.ok(diff <= 1e-5 * scale, `gradients differ by ${diff} (scale ${scale})`);
    tf.dispose([x, w, ref, got]);
  });
});

/** assertSameAsWasm with another addon object installed for the native side. */
function assertSameAsWasmWith(addon: ElementwiseAddon, f: () => tf.Tensor, what: string): void {
  uninstallNativeElementwise();
  let ref: tf.Tensor;
  try {
    ref = tf.tidy(f);
  } finally {
    installNativeElementwise(addon);
  }
  const got = tf.tidy(f);
  assert.deepEqual(got.shape, ref.shape, what);
  assert.ok(Buffer.from(got.dataSync().slice().buffer).equals(Buffer.from(ref.dataSync().slice().buffer)), `${what}: values differ`);
  tf.dispose([ref, got]);
}
