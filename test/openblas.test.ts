/**
 * The wasm backend's matrix products on OpenBLAS (src/backend/openblas.ts) against a float64
 * host product and against the backend's own XNNPACK kernel: every transpose, batched and
 * broadcast operands, empty shapes, gradients, a whole model; results the same for any thread
 * count. Skips (saying why) where the addon is not built; with PRUNELAB_REQUIRE_OPENBLAS=1 (set
 * by .ci/run once libopenblas-dev is in) it fails instead.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { installWasmMatmul, MATMUL_ENV, noteWorkerThreads, openblasAddon, openblasUnavailable, wasmMatmulKernel } from '../src/backend/openblas.ts';
import { buildSyntheticLlama } from './synthetic-model.ts';
import { HAVE_SHARED, logitsOf, NO_SHARED_REASON, setupBackend, shared, STORIES_BIN } from './support.ts';
import { runCli } from './cli-support.ts';
import { mulberry32 } from '../src/util/random.ts';

const REQUIRED = process.env.PRUNELAB_REQUIRE_OPENBLAS === '1';
const built = openblasAddon() !== null;
const skip = built ? false : `${openblasUnavailable()}`;

it('the OpenBLAS kernels are built where CI installed OpenBLAS', { skip: REQUIRED ? false : 'PRUNELAB_REQUIRE_OPENBLAS is not set (.ci/run sets it)' }, () => {
  assert.ok(built, openblasUnavailable());
});

/** Deterministic values in [-1, 1). */
function values(n: number, seed: number): Float32Array {
  const rng = mulberry32(seed);
  return Float32Array.from({ length: n }, () => rng() * 2 - 1);
}

/** op(A)·op(B) in float64 on the host, for rank-3 operands with batch 1 broadcast. */
function reference(a: Float32Array, aShape: number[], ta: boolean, b: Float32Array, bShape: number[], tb: boolean): Float64Array {
  const [ba, ra, ca] = aShape as [number, number, number];
  const [bb, rb, cb] = bShape as [number, number, number];
  const m = ta ? ca : ra, k = ta ? ra : ca, n = tb ? rb : cb;
  const batch = Math.max(ba, bb);
  const out = new Float64Array(batch * m * n);
  for (let t = 0; t < batch; t++) {
    const ao = (ba === 1 ? 0 : t) * ra * ca, bo = (bb === 1 ? 0 : t) * rb * cb;
    for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) {
      let s = 0;
      for (let p = 0; p < k; p++) s += a[ao + (ta ? p * ca + i : i * ca + p)]! * b[bo + (tb ? j * cb + p : p * cb + j)]!;
      out[(t * m + i) * n + j] = s;
    }
  }
  return out;
}

function withKernel<T>(kernel: 'openblas' | 'xnnpack', f: () => T): T {
  const before = process.env[MATMUL_ENV];
  installWasmMatmul(kernel);
  try {
    return f();
  } finally {
    installWasmMatmul(before === 'xnnpack' ? 'xnnpack' : 'auto');
  }
}

describe('OpenBLAS matrix products on the wasm backend', { skip }, () => {
  before(async () => {
    await setupBackend();
  });
  after(() => installWasmMatmul('auto'));

  it('is what the wasm backend runs by default where built', () => {
    assert.equal(wasmMatmulKernel(), 'openblas');
  });

  const cases: { name: string; a: number[]; b: number[]; ta: boolean; tb: boolean }[] = [
    { name: 'plain 2-D over several tiles', a: [1, 300, 70], b: [1, 70, 530], ta: false, tb: false },
    { name: 'transposeB', a: [1, 33, 64], b: [1, 257, 64], ta: false, tb: true },
    { name: 'transposeA', a: [1, 64, 290], b: [1, 64, 17], ta: true, tb: false },
    { name: 'both transposed', a: [1, 40, 260], b: [1, 300, 40], ta: true, tb: true },
    { name: 'batched', a: [5, 12, 16], b: [5, 16, 9], ta: false, tb: false },
    { name: 'left operand broadcast over the batch', a: [1, 7, 16], b: [4, 16, 270], ta: false, tb: false },
    { name: 'right operand broadcast, transposed', a: [3, 260, 16], b: [1, 9, 16], ta: false, tb: true },
    { name: 'one row (decoding)', a: [1, 1, 576], b: [1, 576, 300], ta: false, tb: false },
  ];
  for (const c of cases) {
    it(`${c.name}: float64 reference within float32 rounding, XNNPACK within 1e-5`, () => {
      const av = values(c.a.reduce((x, y) => x * y), 1), bv = values(c.b.reduce((x, y) => x * y), 2);
      const want = reference(av, c.a, c.ta, bv, c.b, c.tb);
      const product = (kernel: 'openblas' | 'xnnpack'): Float32Array => withKernel(kernel, () => tf.tidy(() => {
        const a = c.a[0] === 1 && c.b[0] === 1 ? tf.tensor2d(av, [c.a[1]!, c.a[2]!]) : tf.tensor3d(av, c.a as [number, number, number]);
        const b = c.a[0] === 1 && c.b[0] === 1 ? tf.tensor2d(bv, [c.b[1]!, c.b[2]!]) : tf.tensor3d(bv, c.b as [number, number, number]);
        return tf.matMul(a, b, c.ta, c.tb).dataSync() as Float32Array;
      }));
      const got = product('openblas'), xnn = product('xnnpack');
      assert.equal(got.length, want.length);
      const k = c.ta ? c.a[1]! : c.a[2]!;
      for (let i = 0; i < want.length; i++) {
        // |each term| < 1, so k terms round to within k·2^-23 of the float64 sum.
        assert.ok(Math.abs(got[i]! - want[i]!) <= k * 2 ** -23, `entry ${i}: ${got[i]} vs ${want[i]}`);
        assert.ok(Math.abs(got[i]! - xnn[i]!) <= 1e-5 * Math.max(1, Math.abs(want[i]!)), `entry ${i}: ${got[i]} vs XNNPACK ${xnn[i]}`);
      }
    });
  }

  it('a rank-4 product (attention heads) has the rank-4 shape and the reference values', () => {
    const av = values(2 * 3 * 5 * 8, 3), bv = values(2 * 3 * 8 * 4, 4);
    const got = tf.tidy(() => tf.matMul(tf.tensor4d(av, [2, 3, 5, 8]), tf.tensor4d(bv, [2, 3, 8, 4])));
    assert.deepEqual(got.shape, [2, 3, 5, 4]);
    const want = reference(av, [6, 5, 8], false, bv, [6, 8, 4], false);
    const g = got.dataSync();
    got.dispose();
    for (let i = 0; i < want.length; i++) assert.ok(Math.abs(g[i]! - want[i]!) <= 8 * 2 ** -23);
  });

  it('a partial broadcast ([2,1] with [1,3] batches) is left to the wasm kernel and still right', () => {
    const av = values(2 * 1 * 4 * 6, 5), bv = values(1 * 3 * 6 * 2, 6);
    const got = tf.tidy(() => tf.matMul(tf.tensor4d(av, [2, 1, 4, 6]), tf.tensor4d(bv, [1, 3, 6, 2])));
    assert.deepEqual(got.shape, [2, 3, 4, 2]);
    const g = got.dataSync();
    got.dispose();
    for (let x = 0; x < 2; x++) for (let y = 0; y < 3; y++) {
      const want = reference(av.subarray(x * 24, x * 24 + 24), [1, 4, 6], false, bv.subarray(y * 12, y * 12 + 12), [1, 6, 2], false);
      for (let i = 0; i < 8; i++) assert.ok(Math.abs(g[(x * 3 + y) * 8 + i]! - want[i]!) <= 6 * 2 ** -23);
    }
  });

  it('empty operands: k = 0 gives zeros, m = 0 an empty result', () => {
    const z = tf.matMul(tf.zeros([3, 0]), tf.zeros([0, 4]));
    assert.deepEqual(Array.from(z.dataSync()), new Array(12).fill(0));
    const e = tf.matMul(tf.zeros([0, 5]), tf.ones([5, 4]));
    assert.deepEqual(e.shape, [0, 4]);
    tf.dispose([z, e]);
  });

  it('gradients of a product match XNNPACK within 1e-5', () => {
    const av = values(64 * 48, 7), bv = values(48 * 300, 8);
    const grads = (kernel: 'openblas' | 'xnnpack'): Float32Array[] => withKernel(kernel, () => tf.tidy(() => {
      const g = tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.square(tf.matMul(a, b))));
      return g([tf.tensor2d(av, [64, 48]), tf.tensor2d(bv, [48, 300])]).map((t) => t.dataSync() as Float32Array);
    }));
    const o = grads('openblas'), x = grads('xnnpack');
    for (let t = 0; t < 2; t++) {
      const scale = Math.max(...Array.from(x[t]!, Math.abs));
      for (let i = 0; i < x[t]!.length; i++) assert.ok(Math.abs(o[t]![i]! - x[t]![i]!) <= 1e-5 * scale);
    }
  });

  it('the addon refuses an operand outside the buffer instead of reading past it', () => {
    const buf = new ArrayBuffer(4 * 100);
    const lib = openblasAddon()!;
    // 5×5 · 5×5 needs 25 + 25 + 25 floats: fits 100; a C offset of 80 does not.
    lib.gemm(buf, 1, 5, 5, 5, 0, 0, 0, 25, 0, 0, 50);
    assert.throws(() => lib.gemm(buf, 1, 5, 5, 5, 0, 0, 0, 25, 0, 0, 80), RangeError);
    assert.throws(() => lib.gemm(buf, 2, 5, 5, 5, 0, 25, 0, 25, 60, 0, 50), RangeError);
    assert.throws(() => lib.gemm(buf, 1, -1, 5, 5, 0, 0, 0, 25, 0, 0, 50), RangeError);
  });

  it('results are bit-identical for 1, 2 and 3 threads (tiles fixed by the shape, or wide tiles where they give the same values)', () => {
    const av = values(700 * 300, 9), bv = values(300 * 900, 10);
    const run = (): Float32Array => tf.tidy(() => tf.matMul(tf.tensor2d(av, [700, 300]), tf.tensor2d(bv, [300, 900])).dataSync() as Float32Array);
    const lib = openblasAddon()!;
    const results: Float32Array[] = [];
    for (const n of [1, 2, 3]) {
      lib.setThreads(n);
      results.push(run());
    }
    noteWorkerThreads(0); // back to the default count
    assert.deepEqual(results[1], results[0]);
    assert.deepEqual(results[2], results[0]);
  });

  // The statistics' Grams (src/prune/stats.ts) read X through transposeA under OpenBLAS instead of an
  // explicit transpose: the packing reads X transposed into the same packed panels, so every entry
  // must be the explicit transpose's product bit for bit (calibration-sized and odd shapes, X·X and X·Y).
  it('XᵀY through transposeA equals the product of the explicit transpose bit for bit, for 1, 2 and 3 threads', () => {
    const lib = openblasAddon()!;
    for (const [t, c, d] of [[4096, 512, 512], [1000, 1408, 1408], [4096, 512, 1408], [333, 77, 77], [129, 700, 300]] as const) {
      const x = tf.tensor2d(values(t * c, t + c), [t, c]), y = c === d ? x : tf.tensor2d(values(t * d, t + d), [t, d]);
      lib.setThreads(1);
      // Values read outside tidy (a typed array returned from tidy is walked entry by entry).
      const read = (f: () => tf.Tensor): Float32Array => { const r = tf.tidy(f); const v = r.dataSync() as Float32Array; r.dispose(); return v; };
      const explicit = read(() => tf.matMul(tf.transpose(x), y));
      for (const n of [1, 2, 3]) {
        lib.setThreads(n);
        const direct = read(() => tf.matMul(x, y, true, false));
        const at = explicit.findIndex((v, i) => !Object.is(v, direct[i]));
        assert.equal(at, -1, `${t}x${c} by ${t}x${d}, ${n} threads: entry ${at}`);
      }
      tf.dispose(c === d ? [x] : [x, y]);
    }
    noteWorkerThreads(0);
  });

  // FISTAPruner's products with G: the symmetric operand read transposed where a tile is large
  // (cheaper packing), which must not change an entry; 512 x 1408 and 1408 x 512 have only large
  // tiles, 160 x 288 and 24 x 40 only small ones (plain).
  it('a symmetric right operand (hostGemm transB 2) gives the plain product bit for bit, for 1, 2 and 3 threads', () => {
    const lib = openblasAddon()!;
    for (const [m, n] of [[512, 1408], [1408, 512], [160, 288], [24, 40]] as const) {
      const a = values(m * n, m);
      const s = new Float32Array(n * n);
      const v = values(n * n, n);
      for (let i = 0; i < n; i++) for (let j = 0; j <= i; j++) s[i * n + j] = s[j * n + i] = v[i * n + j]!;
      const plain = new Float32Array(m * n);
      lib.setThreads(1);
      lib.hostGemm(a, s, plain, m, n, n, 0, 0);
      for (const t of [1, 2, 3]) {
        lib.setThreads(t);
        const sym = new Float32Array(m * n);
        lib.hostGemm(a, s, sym, m, n, n, 0, 2);
        assert.ok(plain.every((x, i) => Object.is(x, sym[i])), `${m}x${n}, ${t} threads`);
      }
    }
    noteWorkerThreads(0);
    assert.throws(() => lib.hostGemm(new Float32Array(6), new Float32Array(12), new Float32Array(8), 2, 4, 3, 0, 2), /must be square/);
  });

  // Wide tiles (one per thread where every tile is large: native/openblas-kernels.c) must give the
  // shape-fixed cut's values bit for bit, whatever the thread count and transposes. Shapes: the
  // solvers' (FISTAPruner's products with G, a Gram XᵀX), odd sides, one or few rows, seeded random
  // ones; some are too small for wide tiles (the fixed cut either way).
  // Only on the OpenBLAS cores where the addon turns them on (WIDE_TILE_CORES): elsewhere the claim
  // is not made and does not hold (Zen's kernels: 32,230 of 32,347 tilings in
  // bench/native/tiles-vs-whole.c `bits` differ from the whole call), and wide tiles stay off.
  const described = openblasAddon()?.setWideTiles ? openblasAddon()!.describe() : null;
  const wideSkip = !described ? 'the addon predates wide tiles: npm run build-native'
    : !described.wideTiles ? `wide tiles are off on this OpenBLAS core (${described.config}): only the shape-fixed cut runs here`
    : false;
  it('wide tiles give the shape-fixed tiles\' values bit for bit, for 1 to 4 threads and every transpose', { skip: wideSkip }, () => {
    const lib = openblasAddon()!;
    const rng = mulberry32(77);
    const shapes: [number, number, number][] = [[512, 1408, 1408], [1408, 512, 512], [512, 512, 512], [256, 512, 512], [512, 1024, 512],
      [700, 300, 900], [1000, 333, 777], [130, 2000, 190], [2048, 96, 640], [3, 4000, 3000], [160, 288, 288]];
    for (let i = 0; i < 8; i++) shapes.push([1 + Math.floor(rng() * 1500), 1 + Math.floor(rng() * 1500), 1 + Math.floor(rng() * 1500)]);
    const was = lib.setWideTiles!(true);
    try {
      for (const [m, k, n] of shapes) {
        const a = values(m * k, m + k), b = values(k * n, n + 1);
        for (const [ta, tb] of [[0, 0], [1, 0], [0, 1], [1, 1]] as const) {
          lib.setWideTiles!(false);
          lib.setThreads(1);
          const fixed = new Float32Array(m * n);
          lib.hostGemm(a, b, fixed, m, n, k, ta, tb);
          lib.setWideTiles!(true);
          for (const t of [1, 2, 3, 4]) {
            lib.setThreads(t);
            const wide = new Float32Array(m * n);
            lib.hostGemm(a, b, wide, m, n, k, ta, tb);
            const at = fixed.findIndex((x, j) => !Object.is(x, wide[j]));
            assert.equal(at, -1, `${m}x${k}x${n} transA ${ta} transB ${tb}, ${t} threads: entry ${at} ${fixed[at]} vs ${wide[at]}`);
          }
        }
      }
    } finally {
      lib.setWideTiles!(was);
      noteWorkerThreads(0);
    }
  });

  it("a synthetic LLaMA's logits on OpenBLAS are XNNPACK's within float32 rounding", () => {
    const model = buildSyntheticLlama({ hidden: 64, layers: 2, heads: 4, kvHeads: 2, ffn: 160, vocab: 300, seed: 3 });
    const ids = [Array.from({ length: 40 }, (_, i) => (i * 37) % 300)];
    try {
      const o = withKernel('openblas', () => logitsOf(model, ids));
      const x = withKernel('xnnpack', () => logitsOf(model, ids));
      const scale = Math.max(1, ...Array.from(x, Math.abs));
      for (let i = 0; i < x.length; i++) assert.ok(Math.abs(o[i]! - x[i]!) <= 1e-5 * scale, `logit ${i}: ${o[i]} vs ${x[i]}`);
    } finally {
      model.dispose();
    }
  });
});

describe('--matmul on the command line', { skip: HAVE_SHARED ? false : NO_SHARED_REASON }, () => {
  const args = ['eval', 'ppl', '--model', STORIES_BIN, '--text', shared('text/tinystories-sample.txt'), '--seqlen', '64', '--max-windows', '2', '--threads', '1', '--json'];

  it('the result records the kernel; xnnpack and openblas agree within float32 rounding', { skip }, () => {
    const x = runCli([...args, '--matmul', 'xnnpack']);
    const o = runCli([...args, '--matmul', 'openblas']);
    assert.equal(x.status, 0, x.stderr);
    assert.equal(o.status, 0, o.stderr);
    assert.equal(x.json!.matmul, 'xnnpack');
    assert.equal(o.json!.matmul, 'openblas');
    assert.ok(Math.abs(Number(o.json!.ppl) - Number(x.json!.ppl)) <= 1e-5 * Number(x.json!.ppl));
  });

  it('a bad PRUNELAB_MATMUL is refused with the valid choices, exit 2', () => {
    const r = runCli(args, 60_000, ['env', 'PRUNELAB_MATMUL=mkl']);
    assert.equal(r.status, 2, r.stderr);
    assert.match(String(r.json!.error), /PRUNELAB_MATMUL=mkl is not a matmul choice; valid: auto, openblas, xnnpack/);
  });
});
