/**
 * The native per-row mask selection (native/row-masks.c `maskRows`, offered as
 * `LinAlg.native.maskRows` under OpenBLAS) against masks.ts `maskPerRow`, which it replaces in
 * `maskForCut`: the same mask on scores with ties, zeros, negative values and infinities, at every
 * sparsity, for 1, 2 and 3 threads (rows split over the pool), and a NaN worded by maskPerRow.
 * Skips where the addon is not built.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { installWasmMatmul, noteWorkerThreads, openblasAddon, openblasUnavailable } from '../src/backend/openblas.ts';
import { backendLinAlg } from '../src/linalg/backend.ts';
import { maskForCut, maskPerRow } from '../src/prune/masks.ts';
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
});
