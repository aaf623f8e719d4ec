/**
 * CFSP's coarse-grained budget allocation (cfsp.md §4–§5): per-block keep ratios from the block
 * distances, and the kept channel count per block. Pure functions, float64 throughout.
 */
import { ConfigError } from '../../src/util/errors.ts';

export interface AllocationOptions {
  /** Sigmoid slope ("global control"), `--a` in the released code. */
  a: number;
  /** Reference token count: z uses the per-token mean scaled to this many tokens. */
  refTokens: number;
  /** Margin of the max clamp (1.05 in the released code). */
  clampMargin: number;
  /** Floor on every keep ratio (0 = off); must not exceed 1 − p. */
  minKeepRatio: number;
}

export interface Allocation {
  /** z_l = (d̄_l − mean d̄) · refTokens / 10⁴ (before the slope). */
  centred: number[];
  /** σ(a · z_l). */
  sigmoid: number[];
  /** Scores after the max clamp (= sigmoid when the clamp is inactive); feed the LoRA ranks. */
  scores: number[];
  clampActive: boolean;
  /** Keep ratios before the minimum-keep pass: (1 − p) · s_l / mean(s). */
  rawKeepRatios: number[];
  /** Final keep ratios (after the optional minimum-keep pass); mean = 1 − p. */
  keepRatios: number[];
}

const mean = (v: readonly number[]): number => v.reduce((s, x) => s + x, 0) / v.length;

/** Released code divides the summed distances by 10⁴; PruneLab scales the per-token mean instead. */
const RELEASED_DIVISOR = 1e4;

export function centredDistances(distances: readonly number[], refTokens: number): number[] {
  const m = mean(distances);
  return distances.map((d) => ((d - m) * refTokens) / RELEASED_DIVISOR);
}

export function sigmoidScores(centred: readonly number[], a: number): number[] {
  return centred.map((z) => 1 / (1 + Math.exp(-a * z)));
}

/**
 * If the largest score would keep ≥ 100 % ((max/mean)·(1 − p) ≥ 1), shrink every deviation from
 * the mean by κ so the largest keep ratio becomes (1 − p) + p / margin. The mean is unchanged.
 */
export function maxClamp(scores: readonly number[], p: number, margin: number): { scores: number[]; active: boolean } {
  const mu = mean(scores);
  const top = Math.max(...scores);
  const active = (top / mu) * (1 - p) >= 1;
  // With all scores equal (possible only at p = 0 here) there is nothing to shrink.
  if (!active || top <= mu) return { scores: [...scores], active };
  const kappa = (mu * (1 / (1 - p) - 1)) / (top - mu) / margin;
  return { scores: scores.map((s) => mu + kappa * (s - mu)), active: true };
}

/** ρ_l = (1 − p) · s_l / mean(s): the fraction of channels KEPT in block l. */
export function keepRatiosFromScores(scores: readonly number[], p: number): number[] {
  const mu = mean(scores);
  return scores.map((s) => ((1 - p) * s) / mu);
}

/**
 * Budget-preserving single pass (PruneLab addition): blocks below ρ_min are raised to ρ_min and
 * the deficit is taken from the others in proportion to their excess over ρ_min, so the mean is
 * kept and no block ends below ρ_min (requires mean ≥ ρ_min).
 */
export function applyMinKeepRatio(ratios: readonly number[], min: number): number[] {
  if (min <= 0) return [...ratios];
  let deficit = 0;
  let excess = 0;
  for (const r of ratios) {
    if (r < min) deficit += min - r;
    else excess += r - min;
  }
  if (deficit === 0) return [...ratios];
  const f = Math.max(0, 1 - deficit / excess);
  return ratios.map((r) => (r < min ? min : min + (r - min) * f));
}

export function allocateKeepRatios(distances: readonly number[], p: number, o: AllocationOptions): Allocation {
  if (distances.length === 0) throw new RangeError('cfsp: no blocks to allocate');
  if (distances.some((d) => !Number.isFinite(d))) throw new RangeError(`cfsp: non-finite block distance in [${distances.join(', ')}]`);
  if (!(p >= 0 && p < 1)) throw new RangeError(`cfsp: pruning ratio must be in [0, 1), got ${p}`);
  if (o.minKeepRatio > 1 - p + 1e-12) {
    throw new RangeError(`cfsp: minKeepRatio ${o.minKeepRatio} exceeds 1 − p = ${1 - p}; the mean keep ratio could not be met`);
  }
  const centred = centredDistances(distances, o.refTokens);
  const sigmoid = sigmoidScores(centred, o.a);
  const clamped = maxClamp(sigmoid, p, o.clampMargin);
  const rawKeepRatios = keepRatiosFromScores(clamped.scores, p);
  const keepRatios = applyMinKeepRatio(rawKeepRatios, o.minKeepRatio);
  return { centred, sigmoid, scores: clamped.scores, clampActive: clamped.active, rawKeepRatios, keepRatios };
}

/**
 * Kept channels of a block of width m: roundTo · ⌊(m·ρ + roundTo/2) / roundTo⌋ (nearest multiple),
 * clamped to [roundTo, m] — never the released `--cuda_friendly` "keep all" at m·ρ < 64. A block
 * narrower than roundTo has no valid count and is refused (as `src/prune/structured.ts` does).
 */
export function keptChannelCount(m: number, ratio: number, roundTo: number): number {
  if (!Number.isInteger(m) || m < 1) throw new RangeError(`cfsp: width must be a positive integer, got ${m}`);
  if (!Number.isInteger(roundTo) || roundTo < 1) throw new RangeError(`cfsp: roundTo must be a positive integer, got ${roundTo}`);
  if (roundTo > m) throw new ConfigError(`cfsp: roundTo ${roundTo} exceeds the FFN width ${m} of a block`);
  const k = roundTo * Math.floor((m * ratio + roundTo / 2) / roundTo);
  return Math.min(m, Math.max(roundTo, k));
}
