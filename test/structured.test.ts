/**
 * The engine's shared structured selection (src/prune/structured.ts): rounded keep counts,
 * per-block standardisation, global selection with a per-block minimum, removed fractions —
 * hand-computed cases.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError } from '../src/util/errors.ts';
import { globalKeepCount, removedFraction, roundedKeepCount, selectGlobal, standardize, standardizedGlobalKeep } from '../src/prune/structured.ts';

const close = (a: ArrayLike<number>, b: ArrayLike<number>, tol = 1e-9) => {
  assert.equal(a.length, b.length);
  for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i] - b[i]) <= tol, `index ${i}: ${a[i]} vs ${b[i]}`);
};

describe('shared structured selection (src/prune/structured.ts)', () => {
  it('roundTo rule of cfsp.md §5: nearest multiple, clamped to [roundTo, m]', () => {
    assert.equal(roundedKeepCount(172, 0.8), 138); // 137.6 → 138
    assert.equal(roundedKeepCount(172, 0.5), 86);
    assert.equal(roundedKeepCount(80, 0.5, 8), 40); // 8·⌊(40 + 4)/8⌋
    assert.equal(roundedKeepCount(80, 0.52, 8), 40); // 41.6 + 4 = 45.6 → 5 blocks of 8
    assert.equal(roundedKeepCount(80, 0.56, 8), 48); // 44.8 + 4 = 48.8 → 6 blocks
    assert.equal(roundedKeepCount(80, 0.01, 8), 8); // would round to 0: clamped up to roundTo
    assert.equal(roundedKeepCount(10, 0.0), 1); // never fewer than one
    assert.throws(() => roundedKeepCount(80, 0.5, 128), ConfigError);
  });

  it('standardize uses the unbiased std; a constant block gives zeros', () => {
    close(standardize([1, 2, 3]), [-1, 0, 1]);
    // mean 2.5, std √(5/3)
    const s = Math.sqrt(5 / 3);
    close(standardize([1, 2, 3, 4]), [-1.5 / s, -0.5 / s, 0.5 / s, 1.5 / s]);
    close(standardize([7, 7, 7]), [0, 0, 0]);
    assert.throws(() => standardize([1, NaN]));
  });

  it('one global threshold over standardised blocks gives different counts per block', () => {
    // A = [1,2,3,4] → z ≈ [−1.162, −0.387, 0.387, 1.162];
    // B = [10,11,12,40]: mean 18.25, std √(632.75/3) = 14.523 → z ≈ [−0.568, −0.499, −0.430, 1.498].
    // p = 0.625 keeps ⌊8·0.375⌋ = 3: B3, A3, A2. Raw scores would keep B's channels first.
    const sel = standardizedGlobalKeep([[1, 2, 3, 4], [10, 11, 12, 40]], 0.625);
    assert.deepEqual(sel.keep, [[2, 3], [3]]);
    assert.deepEqual(sel.guarded, []);
    // p = 0.5 keeps 4: after B3, A3, A2 comes A1 (−0.387 > −0.430 of B2).
    assert.deepEqual(standardizedGlobalKeep([[1, 2, 3, 4], [10, 11, 12, 40]], 0.5).keep, [[1, 2, 3], [3]]);
  });

  it('keep-at-least-one guard restores the best unit of an emptied block', () => {
    const sel = selectGlobal([[5, 6], [1, 2]], 1);
    assert.deepEqual(sel.keep, [[1], [1]]);
    assert.deepEqual(sel.guarded, [1]);
    assert.equal(sel.kept, 2);
    // Identical blocks at p = 0.9: ⌊6·0.1⌋ = 0 kept globally, each block keeps its best.
    const g = standardizedGlobalKeep([[1, 2, 3], [1, 2, 3]], 0.9);
    assert.deepEqual(g.keep, [[2], [2]]);
    assert.deepEqual(g.guarded, [0, 1]);
  });

  it('global keep count and removed fraction', () => {
    assert.equal(globalKeepCount(860, 0.2), 688); // 860·0.8 is 687.9999… in float64
    assert.equal(globalKeepCount(10, 0.25), 7); // int(7.5)
    assert.equal(removedFraction([10, 10], [5, 7]), 0.4);
  });
});

