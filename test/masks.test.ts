import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError, PruneLabError } from '../src/util/errors.ts';
import {
  applyMask,
  bottomKIndices,
  countZeros,
  maskNM,
  maskPerMatrix,
  maskPerRow,
  parsePattern,
  pruneCount,
  topKIndices,
  validateSparsity,
} from '../src/prune/masks.ts';

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296;
  };
}

/** Scores with heavy ties (values 0..levels−1) or continuous ones (levels = 0). */
function randomScores(len: number, seed: number, levels = 0): Float32Array {
  const r = rng(seed);
  const s = new Float32Array(len);
  for (let i = 0; i < len; i++) s[i] = levels > 0 ? Math.floor(r() * levels) : r();
  return s;
}

/** Reference: stable argsort by (score, index), prune the first k of each group. */
function referenceMask(scores: ArrayLike<number>, groups: number, size: number, k: number): Uint8Array {
  const mask = new Uint8Array(groups * size).fill(1);
  for (let g = 0; g < groups; g++) {
    const idx = Array.from({ length: size }, (_, j) => g * size + j);
    idx.sort((a, b) => scores[a]! - scores[b]! || a - b);
    for (let t = 0; t < k; t++) mask[idx[t]!] = 0;
  }
  return mask;
}

test('maskPerRow: exactly half of every row at 50 %, and the pruned ones are the smallest', () => {
  const rows = 8;
  const cols = 10;
  const s = randomScores(rows * cols, 1);
  const mask = maskPerRow(s, rows, cols, 0.5);
  for (let r = 0; r < rows; r++) {
    let zeros = 0;
    let maxPruned = -Infinity;
    let minKept = Infinity;
    for (let j = 0; j < cols; j++) {
      const v = s[r * cols + j]!;
      if (mask[r * cols + j] === 0) {
        zeros++;
        maxPruned = Math.max(maxPruned, v);
      } else minKept = Math.min(minKept, v);
    }
    assert.equal(zeros, 5, `row ${r}`);
    assert.ok(maxPruned <= minKept, `row ${r}: pruned ${maxPruned} > kept ${minKept}`);
  }
});

test('maskPerRow: ties broken by lower column index first (hand-built)', () => {
  const s = [
    3, 1, 1, 1, 2, 0, // prune 0 (col 5), then the 1s at cols 1, 2
    7, 7, 7, 7, 7, 7, // all equal: cols 0, 1, 2
    0, -0, 0, -0, 5, 5, // −0 and 0 are equal: cols 0, 1, 2
  ];
  assert.deepEqual(Array.from(maskPerRow(s, 3, 6, 0.5)), [
    1, 0, 0, 1, 1, 0,
    0, 0, 0, 1, 1, 1,
    0, 0, 0, 1, 1, 1,
  ]);
  // floor(0.55 · 6) = 3 as well; floor(0.3 · 6) = 1.
  assert.equal(countZeros(maskPerRow(s, 3, 6, 0.55)), 9);
  assert.deepEqual(Array.from(maskPerRow(s, 3, 6, 0.3)).slice(0, 6), [1, 1, 1, 1, 1, 0]);
  assert.equal(countZeros(maskPerRow(s, 3, 6, 0)), 0);
});

test('maskPerRow and maskPerMatrix agree with a stable argsort on tied and untied data', () => {
  for (const [rows, cols, levels, sp] of [
    [5, 1000, 6, 0.5], // quickselect path with long runs of equal values
    [7, 333, 0, 0.7],
    [3, 15, 3, 0.4], // short rows: the small-range path
    [2, 4096, 2, 0.9],
    [4, 257, 0, 0.01],
  ] as const) {
    const s = randomScores(rows * cols, rows * cols + levels, levels);
    assert.deepEqual(maskPerRow(s, rows, cols, sp), referenceMask(s, rows, cols, pruneCount(cols, sp)), `row ${rows}×${cols}`);
    assert.deepEqual(
      maskPerMatrix(s, rows, cols, sp),
      referenceMask(s, 1, rows * cols, pruneCount(rows * cols, sp)),
      `matrix ${rows}×${cols}`,
    );
  }
  // Rows already cut (the row minimum held by k or more entries: the shortcut without selection),
  // with negative scores in one row so the minimum is not always 0.
  const rows = 4, cols = 300, k = pruneCount(cols, 0.5);
  const s = randomScores(rows * cols, 17, 0);
  for (let r = 0; r < rows; r++) {
    const zeros = r === 0 ? k : r === 1 ? k + 7 : r === 2 ? k - 1 : k;
    for (let j = 0; j < zeros; j++) s[r * cols + ((j * 37 + r) % cols)] = r === 3 ? -1 : 0;
  }
  assert.deepEqual(maskPerRow(s, rows, cols, 0.5), referenceMask(s, rows, cols, k), 'rows already cut');
});

test('maskPerMatrix: prunes floor(s·m·n) entries, ties by flat index', () => {
  const s = randomScores(7 * 9, 5);
  assert.equal(countZeros(maskPerMatrix(s, 7, 9, 0.3)), 18); // floor(18.9)
  assert.equal(countZeros(maskPerMatrix(s, 7, 9, 0.5)), 31); // floor(31.5)
  // Not per row: one row holds all the small scores.
  const t = [0, 0, 0, 0, 5, 6, 7, 8];
  assert.deepEqual(Array.from(maskPerMatrix(t, 2, 4, 0.5)), [0, 0, 0, 0, 1, 1, 1, 1]);
  assert.deepEqual(Array.from(maskPerMatrix([2, 2, 2, 2, 2, 2], 2, 3, 0.5)), [0, 0, 0, 1, 1, 1]);
});

test('pruneCount follows the reference int(total * s)', () => {
  assert.equal(pruneCount(4096, 0.5), 2048);
  assert.equal(pruneCount(10, 0.55), 5);
  assert.equal(pruneCount(100, 0.29), 28); // 0.29 · 100 = 28.999999999999996 in float64, as in Python
  assert.equal(pruneCount(7, 0), 0);
});

test('maskNM 2:4: exactly 2 zeros in every 4 consecutive inputs, the two smallest', () => {
  const rows = 6;
  const cols = 16;
  const s = randomScores(rows * cols, 9, 4);
  const mask = maskNM(s, rows, cols, 2, 4);
  for (let b = 0; b < rows * cols; b += 4) {
    const blk = Array.from(mask.subarray(b, b + 4));
    assert.equal(blk.filter((x) => x === 0).length, 2, `block at ${b}`);
  }
  assert.deepEqual(mask, referenceMask(s, (rows * cols) / 4, 4, 2));
  // 4:8 and 1:4 counts.
  assert.equal(countZeros(maskNM(s, rows, cols, 4, 8)), (rows * cols) / 2);
  assert.equal(countZeros(maskNM(s, rows, cols, 1, 4)), (rows * cols) / 4);
});

test('maskNM: ties broken by lower column index within each block (hand-built)', () => {
  const s = [1, 1, 1, 1, 5, 0, 5, 0, 2, 1, 1, 3];
  assert.deepEqual(Array.from(maskNM(s, 1, 12, 2, 4)), [0, 0, 1, 1, 1, 0, 1, 0, 1, 0, 0, 1]);
  // Blocks do not cross rows: 2 rows × 4 columns.
  assert.deepEqual(Array.from(maskNM([9, 8, 7, 6, 1, 2, 3, 4], 2, 4, 2, 4)), [1, 1, 0, 0, 0, 0, 1, 1]);
});

test('maskNM: ConfigError when the width is not a multiple of M, or N, M invalid', () => {
  assert.throws(
    () => maskNM(new Float32Array(12), 2, 6, 2, 4),
    (e: unknown) => e instanceof ConfigError && /2:4/.test(e.message) && /cols = 6/.test(e.message),
  );
  assert.throws(() => maskNM(new Float32Array(8), 2, 4, 4, 4), ConfigError);
  assert.throws(() => maskNM(new Float32Array(8), 2, 4, 0, 4), ConfigError);
  assert.throws(() => maskNM(new Float32Array(8), 2, 4, 1.5, 4), ConfigError);
});

test('sparsity validation: ConfigError on 1.0, −0.1, NaN, Infinity; 0 and 0.999 accepted', () => {
  for (const bad of [1, 1.0, -0.1, NaN, Infinity, 2]) {
    assert.throws(() => validateSparsity(bad, 'sparsity'), ConfigError, `value ${bad}`);
    assert.throws(() => maskPerRow(new Float32Array(4), 2, 2, bad), ConfigError);
    assert.throws(() => maskPerMatrix(new Float32Array(4), 2, 2, bad), ConfigError);
  }
  assert.throws(() => validateSparsity(1, 'attnSparsity'), /attnSparsity/);
  for (const ok of [0, 0.5, 0.999]) validateSparsity(ok, 'sparsity');
});

test('parsePattern', () => {
  assert.deepEqual(parsePattern('unstructured'), { kind: 'unstructured' });
  assert.deepEqual(parsePattern('2:4'), { kind: 'nm', n: 2, m: 4 });
  assert.deepEqual(parsePattern(' 4:8 '), { kind: 'nm', n: 4, m: 8 });
  for (const bad of ['4:2', '2:2', '0:4', 'abc', '2/4', '', '2:4:8', '1.5:4', '-1:4', 'Unstructured ish']) {
    assert.throws(() => parsePattern(bad), ConfigError, `'${bad}'`);
  }
});

test('topKIndices / bottomKIndices: ties by ascending index, result sorted ascending', () => {
  assert.deepEqual(topKIndices([5, 1, 5, 3, 5], 2), [0, 2]);
  assert.deepEqual(topKIndices([3, 9, 1], 2), [0, 1]);
  assert.deepEqual(bottomKIndices([2, 1, 1, 0, 1], 2), [1, 3]);
  assert.deepEqual(bottomKIndices([2, 1, 1, 0, 1], 3), [1, 2, 3]);
  assert.deepEqual(topKIndices([1, 2, 3], 0), []);
  assert.deepEqual(bottomKIndices([1, 2, 3], 3), [0, 1, 2]);
  assert.deepEqual(topKIndices(new Float64Array([-Infinity, Infinity, 0]), 1), [1]);
  assert.throws(() => topKIndices([1, 2], 3), ConfigError);
  assert.throws(() => bottomKIndices([1, 2], -1), ConfigError);
  // Against a stable reference on tied data long enough for quickselect.
  const s = randomScores(500, 77, 5);
  const ref = Array.from({ length: 500 }, (_, i) => i)
    .sort((a, b) => s[b]! - s[a]! || a - b)
    .slice(0, 123)
    .sort((a, b) => a - b);
  assert.deepEqual(topKIndices(s, 123), ref);
});

test('NaN scores are an error, not a silent choice', () => {
  assert.throws(() => maskPerRow([1, NaN, 2, 3], 1, 4, 0.5), PruneLabError);
  assert.throws(() => maskPerMatrix([1, 2, NaN, 3], 2, 2, 0.5), /flat index 2/);
  assert.throws(() => maskNM([1, NaN, 2, 3], 1, 4, 2, 4), PruneLabError);
  assert.throws(() => topKIndices([NaN, 1], 1), PruneLabError);
  assert.throws(() => maskPerRow([1, 2, 3], 2, 2, 0.5), /3 scores/);
});

test('countZeros and applyMask', () => {
  const mask = new Uint8Array([1, 0, 1, 0, 0]);
  assert.equal(countZeros(mask), 3);
  const w = new Float32Array([1, 2, 3, 4, 5]);
  assert.equal(applyMask(w, mask), w);
  assert.deepEqual(Array.from(w), [1, 0, 3, 0, 0]);
  assert.throws(() => applyMask(new Float64Array(2), mask), PruneLabError);
});
