/**
 * SAAP's layer selection and per-layer ratios (saap.md §5): fluctuation indicator
 * φ = std/mean of the fused group scores per (layer, module type), effective importance
 * ν = μ/(1+φ), ν̃ = ν / mean over layers of the type, importance-ranked exclusion, and ratios
 * r = min(rMax, c/ν̃) with one c for both types, found by bisection on the parameter budget.
 */
import { bottomKIndices, topKIndices } from '../../src/prune/masks.ts';
import { ConfigError } from '../../src/util/errors.ts';

export type ModuleType = 'attn' | 'mlp';
export const MODULE_TYPES: readonly ModuleType[] = ['attn', 'mlp'];

export interface Fluctuation {
  mu: number;
  /** Population standard deviation of the fused scores. */
  sd: number;
  phi: number;
  nu: number;
}

export function fluctuationOf(scores: ArrayLike<number>, mode: 'cv' | 'none'): Fluctuation {
  const n = scores.length;
  let s = 0;
  for (let i = 0; i < n; i++) s += scores[i];
  const mu = n ? s / n : 0;
  let v = 0;
  for (let i = 0; i < n; i++) v += (scores[i] - mu) ** 2;
  const sd = n ? Math.sqrt(v / n) : 0;
  const phi = mu === 0 ? 0 : sd / mu; // guard §5.7
  return { mu, sd, phi, nu: mode === 'cv' ? mu / (1 + phi) : mu };
}

/** ν̃_l = ν_l / mean_l' ν_l' (all zero when the mean is zero). */
export function normalisedImportance(nu: readonly number[]): number[] {
  const m = nu.reduce((a, b) => a + b, 0) / (nu.length || 1);
  return nu.map((x) => (m > 0 ? x / m : 0));
}

/** LLM-Pruner leaves 6 of 32 layers unpruned; scaled to other depths. */
export function defaultExcludeCount(numLayers: number): number {
  return Math.round((6 * numLayers) / 32);
}

/** The `count` layers with the largest ν̃ (ties: lower layer first), ascending. */
export function rankedExclusion(nuTilde: readonly number[], count: number): number[] {
  return topKIndices(nuTilde, Math.min(count, nuTilde.length));
}

/** LLM-Pruner's fixed range: the first `first` and last `last` layers are not pruned. */
export function fixedExclusion(numLayers: number, first: number, last: number): number[] {
  return Array.from({ length: numLayers }, (_, l) => l).filter((l) => l < first || l >= numLayers - last);
}

/** One (layer, module type) as the allocator sees it. */
export interface AllocUnit {
  layer: number;
  type: ModuleType;
  /** Number of groups (KV groups or FFN channels). */
  groups: number;
  /** Parameters removed with one group. */
  groupParams: number;
  nuTilde: number;
  excluded: boolean;
}

export function unitRatio(u: AllocUnit, c: number, rMax: number): number {
  if (u.excluded) return 0;
  if (!(u.nuTilde > 0)) return rMax; // guard §5.7
  return Math.min(rMax, c / u.nuTilde);
}

/** Groups removed at ratio r: round(r·n), at least one group kept (§5.5). */
export function unitRemoval(u: AllocUnit, r: number): number {
  return Math.max(0, Math.min(u.groups - 1, Math.round(r * u.groups)));
}

export function continuousRemoved(units: readonly AllocUnit[], c: number, rMax: number): number {
  return units.reduce((a, u) => a + unitRatio(u, c, rMax) * u.groups * u.groupParams, 0);
}

export function roundedRemoved(units: readonly AllocUnit[], c: number, rMax: number): number {
  return units.reduce((a, u) => a + unitRemoval(u, unitRatio(u, c, rMax)) * u.groupParams, 0);
}

/** Smallest c in [0, cMax] with f(c) ≥ target for a non-decreasing f: returns the bracket. */
export function bisect(f: (c: number) => number, target: number, cMax: number, iterations = 200): { lo: number; hi: number } {
  let lo = 0;
  let hi = cMax;
  for (let i = 0; i < iterations && hi > lo; i++) {
    const mid = lo + (hi - lo) / 2;
    if (mid <= lo || mid >= hi) break;
    if (f(mid) < target) lo = mid;
    else hi = mid;
  }
  return { lo, hi };
}

/** The c at which every prunable unit is at rMax. */
function cCeiling(units: readonly AllocUnit[], rMax: number): number {
  return units.reduce((a, u) => (!u.excluded && u.nuTilde > 0 ? Math.max(a, rMax * u.nuTilde) : a), 0);
}

/**
 * The spec's check (every prunable ratio at rMax, before rounding) and the same after the §5.5
 * rounding and keep-one rule, which can remove less; the latter may miss by half a group.
 */
function checkReachable(units: readonly AllocUnit[], budget: number, rMax: number): void {
  const continuous = continuousRemoved(units, Infinity, rMax);
  const rounded = roundedRemoved(units, Infinity, rMax);
  const halfGroup = units.reduce((a, u) => (u.excluded ? a : Math.max(a, u.groupParams / 2)), 0);
  if (continuous < budget * (1 - 1e-12) || rounded < budget - halfGroup) {
    const excluded = units.filter((u) => u.excluded).map((u) => `${u.type}${u.layer}`);
    throw new ConfigError(`SAAP: the budget of ${Math.round(budget)} parameters is unreachable: with every prunable layer at `
      + `rMax = ${rMax} at most ${Math.round(continuous)} can go (${rounded} in whole groups, keeping one group per layer; `
      + `excluded: ${excluded.join(', ') || 'none'}); lower the pruning ratio, raise rMax or exclude fewer layers`);
  }
}

export interface RatioAllocation {
  /** The c used (bisection on the rounded removal, see README). */
  c: number;
  /** The c at which the unrounded Σ r·N equals the budget. */
  cContinuous: number;
  /** r per unit at `c`. */
  ratios: number[];
  /** Groups removed per unit. */
  removeCounts: number[];
  removedParams: number;
  /** What rounding the ratios at `cContinuous` would have removed. */
  removedParamsAtContinuousC: number;
}

/**
 * r = min(rMax, c/ν̃): `cContinuous` solves Σ r·N = budget exactly; the c used is the one whose
 * rounded removal (§5.5) is nearest the budget, so per-layer rounding errors do not add up.
 */
export function allocateRatios(units: readonly AllocUnit[], budget: number, rMax: number): RatioAllocation {
  checkReachable(units, budget, rMax);
  if (budget <= 0) {
    const none = units.map(() => 0);
    return { c: 0, cContinuous: 0, ratios: none, removeCounts: none, removedParams: 0, removedParamsAtContinuousC: 0 };
  }
  const cMax = cCeiling(units, rMax);
  const cContinuous = continuousRemoved(units, 0, rMax) >= budget ? 0 : bisect((c) => continuousRemoved(units, c, rMax), budget, cMax).hi;
  const rounded = (c: number) => roundedRemoved(units, c, rMax);
  let c: number;
  if (rounded(0) >= budget) c = 0;
  else if (rounded(cMax) < budget) c = cMax;
  else {
    const { lo, hi } = bisect(rounded, budget, cMax);
    c = budget - rounded(lo) < rounded(hi) - budget ? lo : hi;
  }
  const ratios = units.map((u) => unitRatio(u, c, rMax));
  const removeCounts = units.map((u, i) => unitRemoval(u, ratios[i]));
  return {
    c, cContinuous, ratios, removeCounts,
    removedParams: removeCounts.reduce((a, k, i) => a + k * units[i].groupParams, 0),
    removedParamsAtContinuousC: rounded(cContinuous),
  };
}

/** Indices of the `count` lowest-scored groups of a unit (ties: lower index first). */
export function lowestGroups(fused: ArrayLike<number>, count: number): number[] {
  return bottomKIndices(fused, count);
}

/**
 * `allocation: zscore-global` (FLAP-style): z = (I_fuse − μ)/s within each unit, groups of the
 * non-excluded units removed in ascending z while the budget is not met; a group that would
 * overshoot by more than it fills is skipped (a smaller one may fit). Per unit at most
 * round(rMax·n) groups, one always kept.
 */
export function allocateZscore(units: readonly AllocUnit[], fused: readonly Float64Array[], budget: number, rMax: number):
  { removeSets: number[][]; removedParams: number } {
  checkReachable(units, budget, rMax);
  const cand: { z: number; unit: number; idx: number }[] = [];
  units.forEach((u, k) => {
    if (u.excluded) return;
    const { mu, sd } = fluctuationOf(fused[k], 'none');
    fused[k].forEach((x, idx) => cand.push({ z: sd > 0 ? (x - mu) / sd : 0, unit: k, idx }));
  });
  cand.sort((a, b) => a.z - b.z || a.unit - b.unit || a.idx - b.idx);
  const quota = units.map((u) => (u.excluded ? 0 : unitRemoval(u, rMax)));
  const removeSets: number[][] = units.map(() => []);
  let removed = 0;
  for (const { unit, idx } of cand) {
    if (removed >= budget) break;
    const size = units[unit].groupParams;
    if (removeSets[unit].length >= quota[unit] || removed + size - budget > budget - removed) continue;
    removeSets[unit].push(idx);
    removed += size;
  }
  return { removeSets: removeSets.map((s) => s.sort((a, b) => a - b)), removedParams: removed };
}
