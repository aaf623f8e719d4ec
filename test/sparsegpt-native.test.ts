/**
 * SparseGPT's native kernels under OpenBLAS (src/linalg/native.ts, native/openblas-kernels.c):
 * the LAPACK factor against the float64 host reference and the blocked XNNPACK path, its pivot
 * errors in the caller's order; the native sweep against the TypeScript sweep on the same factor
 * (identical masks, the same float64 operations) and against the float64 reference; results the
 * same for 1, 2 and 3 threads. Skips where the addon is not built.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { installWasmMatmul, noteWorkerThreads, openblasAddon, openblasUnavailable } from '../src/backend/openblas.ts';
import { backendLinAlg } from '../src/linalg/backend.ts';
import { NotPositiveDefiniteError, upperCholeskyOfInverse } from '../src/linalg/dense.ts';
import type { LinAlg } from '../src/linalg/linalg.ts';
import { obsFactor, obsSweep, sparsegptPrune, type SparseGptOptions } from '../src/prune/obs.ts';
import { setupBackend } from './support.ts';
import { mulberry32 } from '../src/util/random.ts';

const skip = openblasAddon() === null ? openblasUnavailable() : false;

/** Deterministic values in [-1, 1). */
function values(n: number, seed: number): Float64Array {
  const rng = mulberry32(seed);
  return Float64Array.from({ length: n }, () => rng() * 2 - 1);
}

/** XᵀX / tokens of `tokens` rows whose columns have scales spread over ~2 decades (as activations). */
function hessian(n: number, tokens: number, seed: number): Float64Array {
  const x = values(tokens * n, seed);
  for (let t = 0; t < tokens; t++) for (let j = 0; j < n; j++) x[t * n + j]! *= Math.exp(2 * Math.sin(j));
  const H = new Float64Array(n * n);
  for (let t = 0; t < tokens; t++) {
    for (let i = 0; i < n; i++) {
      const v = x[t * n + i]!;
      for (let j = 0; j < n; j++) H[i * n + j]! += v * x[t * n + j]!;
    }
  }
  return H.map((v) => v / tokens);
}

function relDiff(got: ArrayLike<number>, want: ArrayLike<number>): number {
  let d = 0, m = 0;
  for (let i = 0; i < want.length; i++) { d = Math.max(d, Math.abs(got[i]! - want[i]!)); m = Math.max(m, Math.abs(want[i]!)); }
  return d / m;
}

function factorOf(la: LinAlg, A: Float64Array, n: number): Float32Array {
  const a = la.upload(A, n, n);
  const u = la.upperCholeskyOfInverse(a);
  const out = la.read(u).slice();
  la.dispose(a, u);
  return out;
}

describe('SparseGPT on the native kernels (OpenBLAS)', { skip }, () => {
  before(async () => {
    await setupBackend();
    installWasmMatmul('auto');
  });
  after(() => installWasmMatmul('auto'));

  it('are offered exactly when the products run on OpenBLAS', () => {
    assert.ok(backendLinAlg().native);
    installWasmMatmul('xnnpack');
    try {
      assert.equal(backendLinAlg().native, undefined);
    } finally {
      installWasmMatmul('auto');
    }
  });

  it('the LAPACK factor U (A⁻¹ = UᵀU) is the float64 reference and the blocked XNNPACK path within float32 rounding', () => {
    const n = 333; // > LEAF: the native path; odd, so the in-place reversal has a middle element
    const A = hessian(n, 2 * n, 1);
    for (let j = 0; j < n; j++) A[j * n + j]! += 0.01;
    const want = upperCholeskyOfInverse({ rows: n, cols: n, data: A }).data;
    const got = factorOf(backendLinAlg(), A, n);
    for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) assert.equal(got[i * n + j], 0, `U[${i}, ${j}] below the diagonal`);
    assert.ok(relDiff(got, want) < 1e-4, `native: ${relDiff(got, want)}`);
    installWasmMatmul('xnnpack');
    let blocked: Float32Array;
    try {
      blocked = factorOf(backendLinAlg(), A, n);
    } finally {
      installWasmMatmul('auto');
    }
    assert.ok(relDiff(blocked, want) < 1e-4, `blocked: ${relDiff(blocked, want)}`);
  });

  it('a matrix that is not positive definite names its pivot in the caller’s order (≤ 0 and NaN)', () => {
    const n = 200;
    for (const [at, v] of [[150, -1], [20, 0], [77, NaN]] as const) {
      const A = new Float64Array(n * n);
      for (let j = 0; j < n; j++) A[j * n + j] = 1;
      A[at * n + at] = v;
      const la = backendLinAlg();
      const a = la.upload(A, n, n);
      assert.throws(() => la.upperCholeskyOfInverse(a),
        (e: unknown) => e instanceof NotPositiveDefiniteError && e.pivot === at && Object.is(e.value, v === 0 ? 0 : v), `pivot ${at} = ${v}`);
      la.dispose(a);
    }
  });

  it('a larger factor (n = 700): the float64 reference within float32 rounding, bit-identical for 1, 2 and 3 threads, pivots named', () => {
    const lib = openblasAddon()!;
    const n = 700;
    const A = hessian(n, 2 * n, 6);
    for (let j = 0; j < n; j++) A[j * n + j]! += 0.01;
    const want = upperCholeskyOfInverse({ rows: n, cols: n, data: A }).data;
    const got: Float32Array[] = [];
    try {
      for (const t of [1, 2, 3]) {
        lib.setThreads(t);
        got.push(factorOf(backendLinAlg(), A, n));
      }
      const la = backendLinAlg();
      // Pivots early, midway and late in the factorisation (which runs in reversed order).
      for (const [at, v] of [[650, -1], [400, 0], [30, NaN]] as const) {
        const B = new Float64Array(n * n);
        for (let j = 0; j < n; j++) B[j * n + j] = 1;
        B[at * n + at] = v;
        const b = la.upload(B, n, n);
        assert.throws(() => la.upperCholeskyOfInverse(b),
          (e: unknown) => e instanceof NotPositiveDefiniteError && e.pivot === at && Object.is(e.value, v === 0 ? 0 : v), `pivot ${at} = ${v}`);
        la.dispose(b);
      }
    } finally {
      noteWorkerThreads(0);
    }
    for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) assert.equal(got[0]![i * n + j], 0, `U[${i}, ${j}] below the diagonal`);
    assert.ok(relDiff(got[0]!, want) < 1e-4, `native: ${relDiff(got[0]!, want)}`);
    assert.deepEqual(got[1], got[0], '2 threads');
    assert.deepEqual(got[2], got[0], '3 threads');
  });

  const rows = 96, cols = 264; // a ragged last block with blocksize 64
  const H = hessian(cols, 400, 2);
  const W = Float32Array.from(values(rows * cols, 3));
  const cuts: [string, SparseGptOptions][] = [
    ['50 % per block', { kind: 'matrix', sparsity: 0.5, blocksize: 64 }],
    ['50 % per row', { kind: 'row', sparsity: 0.5, blocksize: 64 }],
    ['2:4', { kind: 'nm', n: 2, m: 4, blocksize: 64 }],
  ];
  for (const [name, opts] of cuts) {
    it(`the native sweep (${name}) is the TypeScript sweep on the same factor, and the float64 reference within float32 rounding`, () => {
      const la = backendLinAlg();
      assert.ok(la.native);
      const f = obsFactor(la, H, cols, 0.01);
      try {
        const nat = obsSweep(la, W, rows, cols, f, opts);
        const ts = obsSweep({ ...la, native: undefined }, W, rows, cols, f, opts);
        assert.deepEqual(nat.mask, ts.mask);
        // Only the lazy updates' products differ (the host product with Errᵀ against the backend's with Err).
        assert.ok(relDiff(nat.weight, ts.weight) < 1e-6, `weights: ${relDiff(nat.weight, ts.weight)}`);
        assert.ok(Math.abs(nat.loss - ts.loss) <= 1e-6 * ts.loss, `loss ${nat.loss} vs ${ts.loss}`);
        const ref = sparsegptPrune(W, rows, cols, H, opts);
        const differ = ref.mask.reduce((s, m, i) => s + (m === nat.mask[i] ? 0 : 1), 0);
        assert.ok(differ <= rows * cols * 1e-3, `${differ} mask entries differ from the float64 reference`);
        assert.ok(Math.abs(nat.loss - ref.loss) <= 1e-3 * ref.loss, `loss ${nat.loss} vs float64 ${ref.loss}`);
        let sparse = 0;
        for (let i = 0; i < nat.mask.length; i++) {
          if (!nat.mask[i]) { sparse++; assert.equal(nat.weight[i], 0); }
        }
        assert.equal(sparse, rows * cols / 2);
      } finally {
        f.dispose();
      }
    });
  }

  // The block-wise cut runs as a radix select over the pool (native/openblas-kernels.c block_cut):
  // ties at the threshold must fall in index order as masks.ts breaks them. Quantized weights put
  // the threshold inside a run of equal scores; 70 % zeros make it 0 (every bit of the scores
  // equal among the candidates). 200 rows × 64 columns a block: more than its few-candidates bound.
  it('the block-wise cut with tied scores: the TypeScript sweep\'s mask, for 1, 2 and 3 threads', () => {
    const lib = openblasAddon()!;
    const r = 200, c = 264;
    const Hq = hessian(c, 300, 6);
    const rng = mulberry32(8);
    const quantized = Float32Array.from({ length: r * c }, () => Math.round((rng() * 2 - 1) * 4) / 4);
    const zeros = Float32Array.from({ length: r * c }, () => (rng() < 0.7 ? 0 : rng() * 2 - 1));
    try {
      for (const [name, w] of [['quantized', quantized], ['70 % zeros', zeros]] as const) {
        for (const sparsity of [0.5, 0.3, 0.8]) {
          const opts: SparseGptOptions = { kind: 'matrix', sparsity, blocksize: 64 };
          const masks: Uint8Array[] = [];
          for (const t of [1, 2, 3]) {
            lib.setThreads(t);
            const la = backendLinAlg();
            const f = obsFactor(la, Hq, c, 0.01);
            try {
              masks.push(obsSweep(la, w, r, c, f, opts).mask);
              if (t === 1) assert.deepEqual(masks[0], obsSweep({ ...la, native: undefined }, w, r, c, f, opts).mask, `${name} at ${sparsity}: TypeScript`);
            } finally {
              f.dispose();
            }
          }
          assert.deepEqual(masks[1], masks[0], `${name} at ${sparsity}: 2 threads`);
          assert.deepEqual(masks[2], masks[0], `${name} at ${sparsity}: 3 threads`);
        }
      }
    } finally {
      noteWorkerThreads(0);
    }
  });

  it('factor and sweep are bit-identical for 1, 2 and 3 threads', () => {
    const lib = openblasAddon()!;
    const n = 300;
    const Hb = hessian(n, 400, 4);
    // 512 rows × 64² per block reaches the kernels' threading threshold (2²¹ multiply-adds).
    const Wb = Float32Array.from(values(512 * n, 5));
    const results: { weight: Float32Array; mask: Uint8Array; loss: number }[] = [];
    try {
      for (const t of [1, 2, 3]) {
        lib.setThreads(t);
        const la = backendLinAlg();
        const f = obsFactor(la, Hb, n, 0.01);
        try {
          results.push(obsSweep(la, Wb, 512, n, f, { kind: 'matrix', sparsity: 0.5, blocksize: 64 }));
        } finally {
          f.dispose();
        }
      }
    } finally {
      noteWorkerThreads(0); // back to the default count
    }
    for (const r of results.slice(1)) {
      assert.deepEqual(r.weight, results[0]!.weight);
      assert.deepEqual(r.mask, results[0]!.mask);
      assert.equal(r.loss, results[0]!.loss);
    }
  });
});
