/**
 * Small shared pieces of structured (FFN-channel / head-group) selection, used by the structured
 * baselines (Magnitude-SP, Wanda-SP, FLAP, LLM-Pruner) and available to CFSP/SAAP:
 * - `roundedKeepCount`: the kept-count rounding rule of cfsp.md §5;
 * - `standardize` + `selectGlobal`: per-block z-scores and one global threshold over blocks,
 *   with a keep-at-least-`minPerBlock` guard (baselines.md §9, unknown 4);
 * - `keepFromScores` / `removedFraction`: per-block top-k and removed-fraction bookkeeping.
 * Index conventions: every returned keep list is ascending; ties are broken by index (lower
 * block, then lower unit index, counts as larger), so results do not depend on sort details.
 */
import { ConfigError } from '../util/errors.ts';
import { topKIndices } from './masks.ts';

/**
 * Units kept out of `m` at keep ratio ρ with granularity `roundTo` (cfsp.md §5):
 * k = roundTo · ⌊(m·ρ + roundTo/2) / roundTo⌋, clamped to [roundTo, m]. roundTo = 1 is
 * round-to-nearest. A `roundTo` larger than `m` cannot keep a valid count and is refused.
 */
export function roundedKeepCount(m: number, keepRatio: number, roundTo = 1): number {
  if (!Number.isInteger(m) || m < 1) throw new ConfigError(`unit count must be a positive integer, got ${m}`);
  if (!Number.isInteger(roundTo) || roundTo < 1) throw new ConfigError(`roundTo must be a positive integer, got ${roundTo}`);
  if (!(keepRatio >= 0 && keepRatio <= 1)) throw new ConfigError(`keep ratio must lie in [0, 1], got ${keepRatio}`);
  if (roundTo > m) throw new ConfigError(`roundTo ${roundTo} exceeds the ${m} units of a block`);
  const k = roundTo * Math.floor((m * keepRatio + roundTo / 2) / roundTo);
  return Math.min(m, Math.max(roundTo, k));
}

/**
 * z = (s − mean) / std with the unbiased (n − 1) standard deviation, as `torch.std` in the
 * reference code. A block whose scores are all equal (std 0) gets z = 0 everywhere rather than
 * NaN. NaN or infinite scores are refused.
 */
export function standardize(scores: ArrayLike<number>): Float64Array {
  const n = scores.length;
  let mean = 0;
  for (let i = 0; i < n; i++) {
    const s = scores[i]!;
    if (!Number.isFinite(s)) throw new Error(`standardize: score ${i} is ${s}`);
    mean += s;
  }
  mean /= n;
  let ss = 0;
  for (let i = 0; i < n; i++) ss += (scores[i]! - mean) ** 2;
  const std = n > 1 ? Math.sqrt(ss / (n - 1)) : 0;
  const z = new Float64Array(n);
  if (std > 0) for (let i = 0; i < n; i++) z[i] = (scores[i]! - mean) / std;
  return z;
}

/** Indices of the k highest scores of a block, ascending (ties: lower index kept). */
export function keepFromScores(scores: ArrayLike<number>, k: number): number[] {
  return topKIndices(scores, k);
}

export interface GlobalSelection {
  /** Per block, the kept unit indices (ascending). */
  keep: number[][];
  /** Blocks that the global threshold would have emptied (or left below the minimum). */
  guarded: number[];
  /** Units kept in total (after the guard). */
  kept: number;
}

/**
 * Keep the `keepTotal` highest scores over all blocks (one global threshold), then make sure
 * every block keeps at least `minPerBlock` units by adding back its best ones. The guard adds
 * units, so `kept` can exceed `keepTotal` by the units it restored.
 */
export function selectGlobal(blocks: readonly ArrayLike<number>[], keepTotal: number, minPerBlock = 1): GlobalSelection {
  const total = blocks.reduce((a, b) => a + b.length, 0);
  if (!Number.isInteger(keepTotal) || keepTotal < 0 || keepTotal > total) {
    throw new Error(`selectGlobal: cannot keep ${keepTotal} of ${total} units`);
  }
  const flat = new Float64Array(total);
  let o = 0;
  for (const b of blocks) for (let i = 0; i < b.length; i++) flat[o++] = b[i]!;
  const chosen = topKIndices(flat, keepTotal);
  const keep: number[][] = blocks.map(() => []);
  const offsets: number[] = [];
  o = 0;
  for (const b of blocks) { offsets.push(o); o += b.length; }
  let bi = 0;
  for (const f of chosen) {
    while (bi + 1 < blocks.length && f >= offsets[bi + 1]) bi++;
    keep[bi].push(f - offsets[bi]);
  }
  const guarded: number[] = [];
  blocks.forEach((b, i) => {
    const need = Math.min(minPerBlock, b.length);
    if (keep[i].length >= need) return;
    guarded.push(i);
    const have = new Set(keep[i]);
    // The block's best units not yet kept, best first (ties: lower index).
    const order = Array.from({ length: b.length }, (_, u) => u).sort((x, y) => (b[y]! - b[x]!) || x - y);
    for (const u of order) {
      if (keep[i].length >= need) break;
      if (!have.has(u)) keep[i].push(u);
    }
    keep[i].sort((x, y) => x - y);
  });
  return { keep, guarded, kept: keep.reduce((a, k) => a + k.length, 0) };
}

/**
 * Units kept by a global "(1 − p) fraction" rule: ⌊N · (1 − p)⌋, as the reference code's
 * `int(N * (1 - ratio))` (a tiny epsilon absorbs float error such as 860 · 0.8 = 687.999…).
 */
export function globalKeepCount(total: number, sparsity: number): number {
  return Math.min(total, Math.floor(total * (1 - sparsity) + 1e-9));
}

/**
 * The Wanda-SP / FLAP rule (CFSP repository): standardise each block's scores, then keep the
 * ⌊N·(1 − p)⌋ highest z-scores over all N units of all blocks, at least `minPerBlock` per block.
 */
export function standardizedGlobalKeep(blockScores: readonly ArrayLike<number>[], sparsity: number, minPerBlock = 1): GlobalSelection {
  const z = blockScores.map((s) => standardize(s));
  const total = z.reduce((a, b) => a + b.length, 0);
  return selectGlobal(z, globalKeepCount(total, sparsity), minPerBlock);
}

/** 1 − Σ after / Σ before. */
export function removedFraction(before: readonly number[], after: readonly number[]): number {
  const b = before.reduce((a, x) => a + x, 0);
  const a = after.reduce((s, x) => s + x, 0);
  return b === 0 ? 0 : 1 - a / b;
}
