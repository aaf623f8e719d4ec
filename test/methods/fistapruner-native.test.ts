/**
 * FISTAPruner on the native kernels (native/fista-kernels.c, `LinAlg.native` under OpenBLAS):
 * the accepted step, the per-row cut, the error sums, the change from W and the Gram preparation
 * against hand-computed cases and against the TypeScript they replace (bit for bit, whole solves included), the host products against the backend's
 * (the same values, so the same solve), and results the same for 1, 2 and 3 threads. Skips where
 * the addon is not built.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { installWasmMatmul, noteWorkerThreads, openblasAddon, openblasUnavailable } from '../../src/backend/openblas.ts';
import { backendLinAlg } from '../../src/linalg/backend.ts';
import type { LinAlg, NativeKernels } from '../../src/linalg/linalg.ts';
import { cutMask, hardThreshold, solveOperator, type GramProblem, type SolveOptions } from '../../methods/fistapruner/fista.ts';
import { maskPerRow, type Cut } from '../../src/prune/masks.ts';
import { mulberry32 } from '../../src/util/random.ts';
import { setupBackend } from '../support.ts';

const skip = openblasAddon() === null ? openblasUnavailable() : false;

/** Token-major X `[N, n]` with a shared factor (correlated features), X* = X + noise, W `[m, n]`: the Gram problem. */
function problem(seed: number, N: number, n: number, m: number, noise = 0.05): GramProblem {
  const rng = mulberry32(seed);
  const g = () => Math.sqrt(-2 * Math.log(rng() + 1e-12)) * Math.cos(2 * Math.PI * rng());
  const X = new Float64Array(N * n), Xs = new Float64Array(N * n);
  for (let t = 0; t < N; t++) {
    const f = g();
    for (let j = 0; j < n; j++) {
      const scale = j % 7 === 0 ? 5 : 1;
      X[t * n + j] = (g() + 0.8 * f) * scale;
      Xs[t * n + j] = X[t * n + j]! + noise * g() * scale;
    }
  }
  // Statistics as the engine hands them: float32 values in Float64Arrays.
  const atb = (A: Float64Array, B: Float64Array) => {
    const out = new Float64Array(n * n);
    for (let t = 0; t < N; t++) for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) out[i * n + j]! += A[t * n + i]! * B[t * n + j]!;
    return out.map(Math.fround);
  };
  const weight = new Float32Array(m * n);
  for (let i = 0; i < weight.length; i++) weight[i] = g();
  return { rows: m, cols: n, weight, gram: atb(Xs, Xs), cross: atb(X, Xs), denseGram: atb(X, X) };
}

/** W₀ with every other entry of each row zeroed (the cut then changes it: round 1 computes its product). */
function start(p: GramProblem): Float64Array {
  return Float64Array.from(p.weight as Float32Array, (v, i) => (i % 2 ? v : 0));
}

const DEFAULTS: SolveOptions = {
  cut: { kind: 'row', sparsity: 0.5 }, itersPerRound: 12, maxRounds: 3, ratioThreshold: 0.3, tol: 1e-4, powerIters: 30,
  projectEveryIteration: false, warmStartCandidate: false, refit: false,
};

/** `la` with its native kernels reduced to those named (none: every product on the backend, every pass in TypeScript). */
function withKernels(la: LinAlg, keep: (keyof NativeKernels)[]): LinAlg {
  const n = la.native!;
  const native: NativeKernels = { obsSweepBlock: n.obsSweepBlock, matMul: n.matMul, matMulSymmetric: n.matMulSymmetric };
  for (const k of keep) Object.assign(native, { [k]: n[k] });
  return { ...la, native: keep.length === 0 ? undefined : native };
}

/** Everything a solve returns but its timing-free identity: bit for bit. */
function assertSameSolve(a: ReturnType<typeof solveOperator>, b: ReturnType<typeof solveOperator>, what: string): void {
  assert.deepEqual(a.mask, b.mask, `${what}: mask`);
  assert.deepEqual(a.weight, b.weight, `${what}: weight`);
  assert.deepEqual(a.rounds, b.rounds, `${what}: rounds (λ, errors, objective curves)`);
  assert.equal(a.eTotal, b.eTotal, `${what}: E_total`);
  assert.equal(a.L, b.L, `${what}: L`);
  assert.equal(a.best, b.best, `${what}: best`);
}

describe('FISTAPruner on the native kernels (OpenBLAS)', { skip }, () => {
  before(async () => {
    await setupBackend();
    installWasmMatmul('auto');
  });
  after(() => noteWorkerThreads(0));

  it('the accepted step, hand-computed on one row of three', () => {
    const step = backendLinAlg().native!.fistaAcceptStep!;
    const Z = new Float64Array([1, -2, 0.5]), W = new Float64Array([0.5, -1, 0.5]);
    const PZ = new Float32Array([2, -4, 1]), P = new Float32Array([1, -2, 0]);
    const B = new Float32Array([0.5, 0, 0.25]), Wd = new Float32Array([1, -1, 0]);
    const next = new Float64Array(3), D32 = new Float32Array(3), sums = new Float64Array(4);
    step(Z, PZ, W, P, B, Wd, next, D32, sums, 1, 3, 0.5, 0.25, 0.1);
    // v = z + β(z − w) − step·(pz + β(pz − p) − b): 0.75, −1.25, 0.1875; soft-thresholded by 0.1.
    const close = (a: number, b: number, what: string) => assert.ok(Math.abs(a - b) < 1e-12, `${what}: ${a} vs ${b}`);
    [0.65, -1.15, 0.0875].forEach((v, i) => close(next[i]!, v, `next[${i}]`));
    [0.65 - 1, -1.15 + 1, 0.0875].forEach((v, i) => close(D32[i]!, Math.fround(v), `D32[${i}]`));
    // Σ (z − w_d)(½pz − b) = 0 + 2 + 0.125; ‖Z − W‖² = 0.25 + 1 + 0; ‖W‖² = 0.25 + 1 + 0.25; ‖next‖₁.
    assert.equal(sums[0], 2.125);
    assert.equal(sums[1], 1.25);
    assert.equal(sums[2], 1.5);
    close(sums[3]!, 1.8875, 'l1');
  });

  it('the error sums, the change and the Gram preparation, hand-computed', () => {
    const k = backendLinAlg().native!;
    // Two rows of two: X, PX, W_d, B; WK, PK for the rounding sum.
    const X = new Float64Array([1, 2, -1, 0.5]), PX = new Float32Array([4, 2, -2, 1]);
    const Wd = new Float32Array([0.5, 2, 0, 0.5]), B = new Float32Array([1, 0, -0.5, 3]);
    const WK = new Float64Array([1.5, 2, -1, 0]), PK = new Float32Array([3, 2, -2, 0]);
    const sums = new Float64Array(2);
    k.fistaErrors!(X, PX, Wd, B, WK, PK, sums, 2, 2);
    // Σ (x − w_d)(½px − b) = 0.5·1 + 0 + (−1)(−0.5) + 0 = 1; Σ (x − wk)(px − pk) = −0.5 + 0 + 0 + 0.5 = 0.
    assert.deepEqual([...sums], [1, 0]);
    k.fistaErrors!(X, PX, Wd, B, null, null, sums, 2, 2);
    assert.deepEqual([...sums], [1, 0]);
    const D32 = new Float32Array(4);
    k.fistaChange!(new Float64Array([1, 2, -1, 0.1]), Wd, D32, 2, 2);
    assert.deepEqual([...D32], [0.5, 0, -1, Math.fround(0.1 - Math.fround(0.5))]);
    // G = [[1, 2], [4, 3]] → symmetrised [[1, 3], [3, 3]]; C = [[1, 1], [1, 1]]; H_d = [[2, 0], [0, 2]].
    const G32 = new Float32Array(4), CmG = new Float32Array(4), M = new Float32Array(4);
    const nz = k.fistaPrepareGram!(new Float64Array([1, 2, 4, 3]), new Float64Array([1, 1, 1, 1]), new Float64Array([2, 0, 0, 2]), 2, G32, CmG, M);
    assert.equal(nz, 1);
    assert.deepEqual([...G32], [1, 3, 3, 3]);
    assert.deepEqual([...CmG], [0, -2, -2, -2]);
    // G − 2C + H_d: 1 − 2 + 2, 3 − 2 + 0, 3 − 2 + 0, 3 − 2 + 2.
    assert.deepEqual([...M], [1, 1, 1, 3]);
    // X* = X (C = G = H_d): both differences vanish.
    const g = new Float64Array([2, 1, 1, 2]);
    assert.equal(k.fistaPrepareGram!(g, g, g, 2, G32, CmG, M), 0);
  });

  it('the per-row cut, hand-computed: the k smallest |w|, ties pruned lower index first', () => {
    const cut = backendLinAlg().native!.fistaCutRows!;
    const W = new Float64Array([0.5, -0.1, 0.1, 0, 2, /* row 2 */ 3, -3, 3, 1, -1]);
    const mask = new Uint8Array(10);
    const out = new Float64Array(10);
    assert.equal(cut(W, 2, 5, 2, mask, out), -1);
    // Row 1: 0 (index 3), then −0.1 before 0.1; row 2: the two 1s.
    assert.deepEqual([...mask], [1, 0, 1, 0, 1, 1, 1, 1, 0, 0]);
    assert.deepEqual([...out], [0.5, 0, 0.1, 0, 2, 3, -3, 3, 0, 0]);
    assert.ok(Object.is(out[1], 0) && Object.is(out[9], 0), 'pruned entries are +0');
    // In place (out = W), k = 4. Row 2: 1, 1, then two of the three 3s in index order (3, −3).
    const Wc = W.slice();
    assert.equal(cut(Wc, 2, 5, 4, mask, Wc), -1);
    assert.deepEqual([...mask.subarray(5)], [0, 0, 1, 0, 0]);
    assert.deepEqual([...Wc], [0, 0, 0, 0, 2, 0, 0, 3, 0, 0]);
    W[7] = NaN;
    assert.equal(cut(W, 2, 5, 2, mask, out), 7);
  });

  it('the per-row cut equals masks.ts maskPerRow on |W| (ties, runs of zeros, every sparsity), H(W) the TypeScript one; NaN worded by masks.ts', () => {
    const la = backendLinAlg();
    const rng = mulberry32(5);
    const rows = 37, cols = 203;
    // Few distinct values (many ties) and zeros, as a FISTA iterate has.
    const W = Float64Array.from({ length: rows * cols }, () => (rng() < 0.3 ? 0 : Math.round((rng() * 2 - 1) * 20) / 8));
    for (const sparsity of [0.01, 0.2, 0.5, 0.7, 0.99]) {
      const cut: Cut = { kind: 'row', sparsity };
      assert.deepEqual(cutMask(W, rows, cols, cut, la.native), maskPerRow(W.map(Math.abs), rows, cols, sparsity), `sparsity ${sparsity}`);
    }
    const dense = Float64Array.from({ length: rows * cols }, () => rng() * 2 - 1);
    assert.deepEqual(cutMask(dense, rows, cols, { kind: 'row', sparsity: 0.5 }, la.native), maskPerRow(dense.map(Math.abs), rows, cols, 0.5));
    const h = hardThreshold(dense, rows, cols, { kind: 'row', sparsity: 0.5 }, la.native);
    assert.deepEqual(h, hardThreshold(dense, rows, cols, { kind: 'row', sparsity: 0.5 }));
    dense[3 * cols + 7] = NaN;
    assert.throws(() => cutMask(dense, rows, cols, { kind: 'row', sparsity: 0.5 }, la.native), /maskPerRow: score at flat index 616 is NaN/);
  });

  // The native solves also reuse their [rows, cols] arrays (fista.ts Workspace, only with host products):
  // an array handed out with stale values and not wholly written would show here as a difference.
  it('whole solves: native step and cut = TypeScript, host products = backend products, bit for bit', () => {
    const la = backendLinAlg();
    const cases: [string, GramProblem, Partial<SolveOptions>][] = [
      ['corrected, row cut', problem(1, 96, 40, 24), {}],
      ['X* = X', problem(2, 96, 40, 24, 0), {}],
      ['2:4', problem(3, 96, 40, 24), { cut: { kind: 'nm', n: 2, m: 4 } }],
      ['matrix cut, refit', problem(4, 96, 40, 24), { cut: { kind: 'matrix', sparsity: 0.5 }, refit: true }],
      ['monotone, projected, warm-start candidate', problem(5, 96, 40, 24), { monotone: true, projectEveryIteration: true, warmStartCandidate: true }],
      // 299 columns: two chunks of the native step, the second with a tail of 3 entries after its lanes.
      ['299 columns', problem(7, 320, 299, 12), {}],
    ];
    for (const [what, p, o] of cases) {
      const opts = { ...DEFAULTS, ...o };
      const native = solveOperator(p, start(p), opts, la);
      assertSameSolve(native, solveOperator(p, start(p), opts, withKernels(la, [])), `${what}: native vs backend products, TypeScript passes`);
      assertSameSolve(native, solveOperator(p, start(p), opts, withKernels(la, ['fistaCutRows'])), `${what}: native vs TypeScript step`);
      assertSameSolve(native, solveOperator(p, start(p), opts, withKernels(la, ['fistaAcceptStep'])), `${what}: native vs TypeScript cut`);
      assertSameSolve(native, solveOperator(p, start(p), opts, withKernels(la, ['fistaAcceptStep', 'fistaCutRows'])),
        `${what}: native vs TypeScript preparation, changes and error sums`);
      assert.ok(native.rounds.every((r) => r.iterations > 0), `${what}: FISTA ran`);
    }
  });

  it('1 thread = 2 = 3 threads = the TypeScript passes, bit for bit (products, steps and cuts split over the pool)', () => {
    const lib = openblasAddon()!;
    // 288 columns: 56 rows per task of the step and the cut, so 160 rows are three tasks.
    const p = problem(6, 300, 288, 160);
    const runs = [1, 2, 3].map((t) => {
      lib.setThreads(t);
      return solveOperator(p, start(p), DEFAULTS, backendLinAlg());
    });
    lib.setThreads(2);
    const typescript = solveOperator(p, start(p), DEFAULTS, withKernels(backendLinAlg(), []));
    noteWorkerThreads(0);
    assertSameSolve(runs[0]!, runs[1]!, '1 vs 2 threads');
    assertSameSolve(runs[0]!, runs[2]!, '1 vs 3 threads');
    assertSameSolve(runs[0]!, typescript, 'native vs TypeScript passes');
  });
});
