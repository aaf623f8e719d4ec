/**
 * Exact mask selection shared by every pruning method. Scores are row-major (rows = output
 * units, cols = input features); a mask is a Uint8Array of the same length, 1 = keep, 0 = pruned.
 *
 * Ties are always broken by index: among equal scores the lower (column / flat) index is pruned
 * first, so a mask is a pure function of the scores, independent of sort implementation details.
 *
 * Selection is hand-written (ml-matrix has no selection or argsort): a k-th smallest value is
 * found by a branch-free three-way quickselect on a float64 copy (`kthSmallest`), then one pass
 * prunes everything below it and, in index order, just enough entries equal to it. That is O(n)
 * and needs no index array or comparator sort. Measured on 4096 × 4096 scores (shared 2-core
 * machine), with the earlier in-place quickselect: maskPerRow 0.6–0.8 s, maskPerMatrix 0.65–1.0 s,
 * maskNM 2:4 0.3–0.5 s; a native Float64Array sort per row alone takes 1.5–1.8 s and a comparator
 * argsort per row 4–10 s. The branch-free selection, same data (uniform float32 scores, 50 %), CPU
 * seconds on 2026-12-02: maskPerRow 0.24–0.31 s (in-place quickselect 0.51–0.53 s in the same
 * runs), maskPerMatrix 0.32–0.41 s (0.51–0.53 s).
 */
import { ConfigError, PruneLabError } from '../util/errors.ts';
import type { NativeKernels } from '../linalg/linalg.ts';

export type SparsityPattern = { kind: 'unstructured' } | { kind: 'nm'; n: number; m: number };

/** Comparison group of an unstructured cut: each output row, or the whole matrix. */
export type UnstructuredScope = 'row' | 'matrix';

/**
 * The target of one mask: prune ⌊s·n⌋ entries per output row or per matrix, or n of every m
 * consecutive inputs of each row. Every method states its mask target this way (`cutOf`).
 */
export type Cut = { kind: UnstructuredScope; sparsity: number } | { kind: 'nm'; n: number; m: number };

/** The engine's target as a Cut; an unstructured target is compared within `scope`. */
export function cutOf(target: { sparsity: number; pattern: SparsityPattern }, scope: UnstructuredScope): Cut {
  const p = target.pattern;
  return p.kind === 'nm' ? { kind: 'nm', n: p.n, m: p.m } : { kind: scope, sparsity: target.sparsity };
}

/** The same cut with an unstructured one compared within `scope` instead (N:M unchanged). */
export function withScope(cut: Cut, scope: UnstructuredScope): Cut {
  return cut.kind === 'nm' ? cut : { kind: scope, sparsity: cut.sparsity };
}

/**
 * Keep-mask of the lowest scores under `cut` (`maskPerRow`, `maskPerMatrix` or `maskNM`). With
 * `native` (a method's `ctx.linalg.native`) a per-row cut of Float64Array scores runs in its
 * `maskRows` (native/row-masks.c: the same mask, rows split over every core); a NaN is then
 * reported by `maskPerRow`, in its words.
 */
export function maskForCut(scores: ArrayLike<number>, rows: number, cols: number, cut: Cut, native?: Pick<NativeKernels, 'maskRows'>): Uint8Array {
  switch (cut.kind) {
    case 'row': return nativeMaskPerRow(scores, rows, cols, cut.sparsity, native) ?? maskPerRow(scores, rows, cols, cut.sparsity);
    case 'matrix': return maskPerMatrix(scores, rows, cols, cut.sparsity);
    case 'nm': return maskNM(scores, rows, cols, cut.n, cut.m);
  }
}

/** Parses 'unstructured' or 'N:M' (e.g. '2:4'), with 0 < N < M. */
export function parsePattern(s: string): SparsityPattern {
  const t = s.trim();
  if (t === 'unstructured') return { kind: 'unstructured' };
  const m = /^(\d+)\s*:\s*(\d+)$/.exec(t);
  if (!m) throw new ConfigError(`sparsity pattern must be 'unstructured' or 'N:M' such as '2:4', got '${s}'`);
  const n = Number(m[1]);
  const mm = Number(m[2]);
  checkNM(n, mm);
  return { kind: 'nm', n, m: mm };
}

/** Throws ConfigError unless s is a finite number with 0 ≤ s < 1. `what` names the option. */
export function validateSparsity(s: number, what: string): void {
  if (typeof s !== 'number' || !Number.isFinite(s) || s < 0 || s >= 1) {
    throw new ConfigError(`${what} must be a finite number with 0 <= ${what} < 1, got ${String(s)}`);
  }
}

/**
 * Number of entries to prune out of `total` at sparsity s: floor(total · s), computed exactly
 * as the reference code's `int(total * s)` (float64 product, truncated), so counts match it.
 */
export function pruneCount(total: number, s: number): number {
  return Math.floor(total * s);
}

/** `maskPerRow` by `native.maskRows` where it applies; null where it does not (no kernel, other arrays, k = 0) or a score is NaN. */
function nativeMaskPerRow(scores: ArrayLike<number>, rows: number, cols: number, sparsity: number, native?: Pick<NativeKernels, 'maskRows'>): Uint8Array | null {
  if (!native?.maskRows || !(scores instanceof Float64Array)) return null;
  checkShape(scores, rows, cols, 'maskPerRow');
  validateSparsity(sparsity, 'sparsity');
  const k = pruneCount(cols, sparsity);
  if (k === 0) return null;
  const mask = new Uint8Array(rows * cols);
  return native.maskRows(scores, rows, cols, k, mask) < 0 ? mask : null;
}

/** Per output row, prune exactly floor(s · cols) entries with the smallest score. */
export function maskPerRow(scores: ArrayLike<number>, rows: number, cols: number, sparsity: number): Uint8Array {
  checkShape(scores, rows, cols, 'maskPerRow');
  validateSparsity(sparsity, 'sparsity');
  const k = pruneCount(cols, sparsity);
  const mask = new Uint8Array(rows * cols).fill(1);
  if (k === 0) return mask;
  const scratch = new Float64Array(cols);
  const spare: [Float64Array, Float64Array] = [new Float64Array(cols), new Float64Array(cols)];
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    // The copy also finds the row's minimum and how often it occurs: when at least k entries
    // share it (a row already cut, e.g. a masked warm start), it is the k-th smallest value.
    let min = Infinity;
    let atMin = 0;
    for (let j = 0; j < cols; j++) {
      const v = scores[o + j]!;
      scratch[j] = v;
      if (v < min) { min = v; atMin = 0; }
      if (v === min) atMin++;
    }
    checkNoNaN(scratch, 'maskPerRow', o);
    const t = atMin >= k ? min : kthSmallest(scratch, k - 1, spare);
    pruneBelow(scores, o, cols, t, k, mask);
  }
  return mask;
}

/** Prune exactly floor(s · rows · cols) smallest scores of the whole matrix. */
export function maskPerMatrix(scores: ArrayLike<number>, rows: number, cols: number, sparsity: number): Uint8Array {
  checkShape(scores, rows, cols, 'maskPerMatrix');
  validateSparsity(sparsity, 'sparsity');
  const total = rows * cols;
  const k = pruneCount(total, sparsity);
  const mask = new Uint8Array(total).fill(1);
  if (k === 0) return mask;
  const scratch = Float64Array.from(scores as ArrayLike<number>);
  checkNoNaN(scratch, 'maskPerMatrix', 0);
  const t = kthSmallest(scratch, k - 1);
  pruneBelow(scores, 0, total, t, k, mask);
  return mask;
}

/** In each row, in every block of m consecutive input columns, prune the n smallest scores. */
export function maskNM(scores: ArrayLike<number>, rows: number, cols: number, n: number, m: number): Uint8Array {
  checkShape(scores, rows, cols, 'maskNM');
  checkNM(n, m);
  if (cols % m !== 0) {
    throw new ConfigError(`N:M pattern ${n}:${m} needs the input width to be a multiple of ${m}, got cols = ${cols}`);
  }
  const mask = new Uint8Array(rows * cols).fill(1);
  // Blocks are tiny (m is 4 or 8 in practice): n passes of "first strict minimum among kept
  // entries" is O(n·m) per block, allocation-free, and stable by construction.
  for (let b = 0; b < rows * cols; b += m) {
    for (let p = 0; p < n; p++) {
      let best = -1;
      let bestV = Infinity;
      for (let j = b; j < b + m; j++) {
        if (mask[j] === 0) continue;
        const v = scores[j]!;
        if (v !== v) throw nanError('maskNM', j);
        if (best < 0 || v < bestV) {
          best = j;
          bestV = v;
        }
      }
      mask[best] = 0;
    }
  }
  return mask;
}

/** Indices of the k largest scores (ties: lower index first), sorted ascending. */
export function topKIndices(scores: ArrayLike<number>, k: number): number[] {
  checkK(scores, k, 'topKIndices');
  if (k === 0) return [];
  // Largest k of s = smallest k of −s, with the same index tie-break.
  const neg = new Float64Array(scores.length);
  for (let i = 0; i < neg.length; i++) neg[i] = -scores[i]!;
  return bottomKOf(neg, k, 'topKIndices');
}

/** Indices of the k smallest scores (ties: lower index first), sorted ascending. */
export function bottomKIndices(scores: ArrayLike<number>, k: number): number[] {
  checkK(scores, k, 'bottomKIndices');
  if (k === 0) return [];
  return bottomKOf(Float64Array.from(scores as ArrayLike<number>), k, 'bottomKIndices');
}

/** Number of pruned (0) entries. */
export function countZeros(mask: Uint8Array): number {
  let z = 0;
  for (let i = 0; i < mask.length; i++) if (mask[i] === 0) z++;
  return z;
}

/** Zeroes, in place, the weights whose mask entry is 0; returns `weights`. */
export function applyMask<T extends Float32Array | Float64Array>(weights: T, mask: Uint8Array): T {
  if (weights.length !== mask.length) {
    throw new PruneLabError(`applyMask: ${weights.length} weights but ${mask.length} mask entries`);
  }
  for (let i = 0; i < mask.length; i++) if (mask[i] === 0) weights[i] = 0;
  return weights;
}

/**
 * out = w where mask ≠ 0, else +0; returns the zeros (±0) of out. `NativeKernels.maskedCopy` does
 * the same on the addon's threads. On the bits, without a branch (a mask's branch mispredicts on
 * every other entry; measured 2× faster): a kept weight copied as it is, a pruned one +0.
 */
export function maskedCopy(w: Float32Array, mask: Uint8Array, out: Float32Array): number {
  const wBits = new Int32Array(w.buffer, w.byteOffset, w.length);
  const outBits = new Int32Array(out.buffer, out.byteOffset, out.length);
  let zeros = 0;
  for (let i = 0; i < wBits.length; i++) {
    const b = wBits[i]! & -Number(mask[i] !== 0);
    outBits[i] = b;
    zeros += Number((b & 0x7fffffff) === 0);
  }
  return zeros;
}

// ---------------------------------------------------------------------------------------------
// Internals

/**
 * Marks as pruned, within scores[o, o+len), every entry < t and then the first (in index order)
 * entries equal to t until exactly k are pruned. t must be the k-th smallest value of the range.
 */
function pruneBelow(scores: ArrayLike<number>, o: number, len: number, t: number, k: number, mask: Uint8Array): void {
  let below = 0;
  // Counted without a branch (half the entries are below t: a branch mispredicts).
  for (let j = o; j < o + len; j++) below += Number(scores[j]! < t);
  let ties = k - below;
  // Branch-free as well: an entry is pruned when below t, or equal to t while ties remain.
  for (let j = o; j < o + len; j++) {
    const v = scores[j]!;
    const tie = Number(v === t) & Number(ties > 0);
    mask[j] = 1 - (Number(v < t) | tie);
    ties -= tie;
  }
}

/** Stable bottom-k of `a` (consumed as scratch): indices ascending. */
function bottomKOf(a: Float64Array, k: number, what: string): number[] {
  checkNoNaN(a, what, 0);
  const vals = a.slice();
  const t = kthSmallest(vals, k - 1);
  let ties = k;
  for (let i = 0; i < a.length; i++) if (a[i]! < t) ties--;
  const out: number[] = [];
  for (let i = 0; i < a.length; i++) {
    const v = a[i]!;
    if (v < t || (v === t && ties-- > 0)) out.push(i);
  }
  return out;
}

/**
 * The value of rank k (0-based) in ascending order; consumes `a` (and `spare`, two scratch arrays
 * at least as long, allocated when not given). Three-way quickselect, out of place and without a
 * data-dependent branch: each round copies the range's values below the pivot (median of three)
 * into one buffer and those above it into another, both unconditionally, advancing each count by
 * the comparison, and continues in the side that holds rank k (or returns the pivot, when k falls
 * among the values equal to it, so runs of equal values, common with already-pruned weights
 * scoring 0, end the search at once). The branching in-place partition mispredicted on about half
 * the entries: maskPerRow on 512 × 1408 |W| went from 22–26 to 9–10 ns per entry with this and
 * `pruneBelow` branch-free (node 20, shared 2-core machine). After 64 rounds the rest is sorted
 * natively, bounding the worst case at O(n log n). The value is the same as any exact selection's.
 */
function kthSmallest(a: Float64Array, k: number, spare?: [Float64Array, Float64Array]): number {
  const bufs = [a, spare?.[0] ?? new Float64Array(a.length), spare?.[1] ?? new Float64Array(a.length)];
  let s = 0;
  let len = a.length;
  for (let round = 0; ; round++) {
    const src = bufs[s]!;
    if (len <= 16 || round > 64) return src.subarray(0, len).sort()[k]!;
    // Median of the first, middle and last values as pivot.
    const x0 = src[0]!, y0 = src[len >>> 1]!, z = src[len - 1]!;
    const x = x0 > y0 ? y0 : x0;
    let y = x0 > y0 ? x0 : y0;
    if (y > z) y = z;
    const pivot = x > y ? x : y;
    const li = (s + 1) % 3;
    const mi = (s + 2) % 3;
    const less = bufs[li]!;
    const more = bufs[mi]!;
    let nl = 0;
    let nm = 0;
    for (let i = 0; i < len; i++) {
      const v = src[i]!;
      less[nl] = v;
      more[nm] = v;
      nl += Number(v < pivot);
      nm += Number(v > pivot);
    }
    if (k < nl) {
      s = li;
      len = nl;
    } else if (k < len - nm) {
      return pivot;
    } else {
      k -= len - nm;
      s = mi;
      len = nm;
    }
  }
}

function checkNM(n: number, m: number): void {
  if (!Number.isInteger(n) || !Number.isInteger(m) || !(n > 0 && n < m)) {
    throw new ConfigError(`N:M pattern needs integers with 0 < N < M, got N = ${n}, M = ${m}`);
  }
}

function checkShape(scores: ArrayLike<number>, rows: number, cols: number, what: string): void {
  if (!Number.isInteger(rows) || !Number.isInteger(cols) || rows < 0 || cols < 0) {
    throw new PruneLabError(`${what}: bad shape ${rows}×${cols}`);
  }
  if (scores.length !== rows * cols) {
    throw new PruneLabError(`${what}: ${scores.length} scores for a ${rows}×${cols} matrix`);
  }
}

function checkK(scores: ArrayLike<number>, k: number, what: string): void {
  if (!Number.isInteger(k) || k < 0 || k > scores.length) {
    throw new ConfigError(`${what}: k must be an integer in [0, ${scores.length}], got ${k}`);
  }
}

function checkNoNaN(a: Float64Array, what: string, offset: number): void {
  for (let i = 0; i < a.length; i++) if (a[i] !== a[i]) throw nanError(what, offset + i);
}

function nanError(what: string, index: number): PruneLabError {
  return new PruneLabError(`${what}: score at flat index ${index} is NaN (NaN weights or activations upstream?)`);
}
