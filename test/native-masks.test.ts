/**
 * The native per-row mask selection (native/row-masks.c `maskRows`, offered as
 * `LinAlg.native.maskRows` under OpenBLAS) against masks.ts `maskPerRow`, which it replaces in
 * `maskForCut`: the same mask on scores with ties, zeros, negative values and infinities, at every
 * sparsity, for 1, 2 and 3 threads (rows split over the pool), and a NaN worded by maskPerRow.
 * The masked copy and zero count (`maskedCopy`, `countZeros`) against masks.ts `maskedCopy` and
 * hand-counted zeros. Wanda's scores and per-row cut in one (`maskRowsScaled`, through scores.ts
 * `wandaMask`) against maskPerRow of `wandaScores`. Skips where the addon is not built.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { installWasmMatmul, noteWorkerThreads, openblasAddon, openblasUnavailable } from '../src/backend/openblas.ts';
import { backendLinAlg } from '../src/linalg/backend.ts';
import { maskForCut, maskPerRow, maskedCopy } from '../src/prune/masks.ts';
import { wandaMask, wandaScores } from '../src/prune/scores.ts';
import { mulberry32 } from '../src/util/random.ts';
import { setupBackend } from './support.ts';

const skip = openblasAddon() === null ? openblasUnavailable() : false;

describe('native per-row masks (OpenBLAS addon)', { skip }, () => {
  before(async () => {
    await setupBackend();
    installWasmMatmul('auto');
  });
  after(() => noteWorkerThreads(0));

  it('hand-computed: the k smallest of each row, ties pruned lower index first', () => {
    const maskRows = backendLinAlg().native!.maskRows!;
    const scores = new Float64Array([3, -1, 2, -1, 0, /* row 2 */ 5, 5, 5, 1, 5]);
    const mask = new Uint8Array(10);
    assert.equal(maskRows(scores, 2, 5, 2, mask), -1);
    // Row 1: the two −1s; row 2: 1, then the first 5.
    assert.deepEqual([...mask], [1, 0, 1, 0, 1, 0, 1, 1, 0, 1]);
    scores[7] = NaN;
    assert.equal(maskRows(scores, 2, 5, 2, mask), 7);
  });

  it('equals maskPerRow on any scores, for 1, 2 and 3 threads; NaN worded by maskPerRow', () => {
    const lib = openblasAddon()!;
    const native = backendLinAlg().native!;
    const rng = mulberry32(11);
    // 203 columns: 80 rows per pool task, so 300 rows are four tasks.
    const rows = 300, cols = 203;
    const pick = () => {
      const u = rng();
      return u < 0.2 ? 0 : u < 0.25 ? -Infinity : u < 0.3 ? Infinity : Math.round((rng() * 2 - 1) * 40) / 8;
    };
    const scores = Float64Array.from({ length: rows * cols }, pick);
    // A row of one value, and a row already cut (its zeros fill k).
    for (let j = 0; j < cols; j++) scores[7 * cols + j] = 2.5;
    for (let j = 0; j < cols; j++) scores[8 * cols + j] = j % 2 ? 0 : 1 + j;
    for (const threads of [1, 2, 3]) {
      lib.setThreads(threads);
      for (const sparsity of [0.004, 0.2, 0.5, 0.7, 0.996]) {
        const cut = { kind: 'row' as const, sparsity };
        assert.deepEqual(maskForCut(scores, rows, cols, cut, native), maskPerRow(scores, rows, cols, sparsity), `${threads} threads, sparsity ${sparsity}`);
      }
    }
    noteWorkerThreads(0);
    const bad = scores.slice();
    bad[250 * cols + 9] = NaN;
    assert.throws(() => maskForCut(bad, rows, cols, { kind: 'row', sparsity: 0.5 }, native), /maskPerRow: score at flat index 50759 is NaN/);
  });

  it("Wanda's per-row mask made row by row (maskRowsScaled) equals maskPerRow of wandaScores, for 1, 2 and 3 threads; a NaN falls back", () => {
    const native = backendLinAlg().native!;
    assert.ok(native.maskRowsScaled, 'the addon offers maskRowsScaled');
    const lib = openblasAddon()!;
    const rng = mulberry32(17);
    const rows = 300, cols = 203;
    // Weights on a coarse grid (ties in |W|, ±0, a sign pair) and column sums with zeros and repeats (ties in the scores).
    const weight = Float32Array.from({ length: rows * cols }, () => (rng() < 0.1 ? (rng() < 0.5 ? 0 : -0) : Math.round((rng() * 2 - 1) * 24) / 8));
    const colSqSum = Float64Array.from({ length: cols }, (_, j) => (j % 17 === 0 ? 0 : j % 5 === 0 ? 4 : rng() * 9));
    // Hand case: row [3, −1, 2, 0.5] with norms [1, 3, 1, 2] scores [3, 3, 2, 1]: k = 2 prunes 1, then 2.
    const hand = new Uint8Array(4);
    assert.equal(native.maskRowsScaled!(new Float32Array([3, -1, 2, 0.5]), new Float64Array([1, 3, 1, 2]), 1, 4, 2, hand), -1);
    assert.deepEqual([...hand], [1, 1, 0, 0]);
    for (const threads of [1, 2, 3]) {
      lib.setThreads(threads);
      for (const sparsity of [0.004, 0.5, 0.996]) {
        const want = maskPerRow(wandaScores(weight, rows, cols, colSqSum), rows, cols, sparsity);
        assert.deepEqual(wandaMask(weight, rows, cols, colSqSum, { kind: 'row', sparsity }, native), want, `${threads} threads, sparsity ${sparsity}`);
      }
    }
    noteWorkerThreads(0);
    // An infinite norm times a zero weight is a NaN score: the kernel says where, and wandaMask words it as maskPerRow does.
    const inf = colSqSum.slice();
    inf[9] = Infinity;
    const w0 = weight.slice();
    w0[250 * cols + 9] = 0;
    assert.equal(native.maskRowsScaled!(w0, inf.map(Math.sqrt), rows, cols, 100, new Uint8Array(rows * cols)) >= 0, true);
    assert.throws(() => wandaMask(w0, rows, cols, inf, { kind: 'row', sparsity: 0.5 }, native), /maskPerRow: score at flat index \d+ is NaN/);
  });

  it('masked copy and zero count: hand-computed, then equal to the TypeScript copy on every thread count', () => {
    const native = backendLinAlg().native!;
    const lib = openblasAddon()!;
    // A kept −0 stays −0 and counts as a zero; a pruned NaN or −5 becomes +0; a kept NaN stays.
    const w = new Float32Array([1.5, -0, -5, NaN, NaN, 0, 2, -3]);
    const mask = new Uint8Array([1, 1, 0, 0, 1, 1, 255, 0]);
    const out = new Float32Array(8).fill(9);
    assert.equal(native.maskedCopy!(w, mask, out), 5);
    assert.deepEqual([...out].map((x) => Object.is(x, -0) ? '-0' : String(x)), ['1.5', '-0', '0', '0', 'NaN', '0', '2', '0']);
    assert.ok(Object.is(out[2], 0) && Object.is(out[3], 0));
    assert.equal(native.countZeros!(w), 2);
    // Beyond 64 pool tasks of 65,536 entries (the kernel's per-task counts then go to the heap), an odd tail.
    const rng = mulberry32(5);
    const n = 65 * 65536 + 77;
    const big = Float32Array.from({ length: n }, () => (rng() < 0.3 ? 0 : rng() < 0.05 ? -0 : rng() - 0.5));
    const m = Uint8Array.from({ length: n }, () => (rng() < 0.5 ? 0 : 1));
    let hand = 0;
    for (let i = 0; i < n; i++) if (big[i] === 0) hand++;
    const ref = new Float32Array(n);
    const refZeros = maskedCopy(big, m, ref);
    for (const threads of [1, 2, 3]) {
      lib.setThreads(threads);
      const got = new Float32Array(n);
      assert.equal(native.maskedCopy!(big, m, got), refZeros, `${threads} threads`);
      assert.deepEqual(new Int32Array(got.buffer), new Int32Array(ref.buffer), `${threads} threads: the same bits`);
      assert.equal(native.countZeros!(big), hand, `${threads} threads`);
    }
    noteWorkerThreads(0);
    assert.throws(() => native.maskedCopy!(big, m.subarray(1), new Float32Array(n)), /shorter than the weights/);
    assert.throws(() => native.countZeros!(new Float64Array(3) as unknown as Float32Array), /must be a Float32Array/);
  });
});
