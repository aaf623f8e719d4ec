/**
 * Per-layer LoRA rank allocation from per-layer scores, shared by any recovery schedule that lays
 * ranks by importance (free of TensorFlow.js, so method plug-ins may use it):
 *   `importance` r_l = max(1, round(r̄·s_l/μ)), μ = mean(s);
 *   `inverse`    w_l = (1/s_l)/mean(1/s), r_l = max(1, round(r̄·w_l));
 *   `uniform`    r_l = r̄.
 * JS rounding (half up) is used; callers report the realised total.
 */
import { ConfigError } from '../util/errors.ts';

export const RANK_ALLOCATIONS = ['uniform', 'importance', 'inverse'] as const;
export type RankAllocation = (typeof RANK_ALLOCATIONS)[number];

/** Per-layer ranks for `numLayers` layers (see the module comment for the formulas). */
export function allocateRanks(rBar: number, allocation: RankAllocation, numLayers: number, scores?: readonly number[]): number[] {
  if (!Number.isInteger(rBar) || rBar < 1) throw new ConfigError(`rank must be a positive integer, got ${rBar}`);
  if (allocation === 'uniform') return new Array<number>(numLayers).fill(rBar);
  if (!scores) throw new ConfigError(`rank allocation '${allocation}' needs per-layer scores`);
  if (scores.length !== numLayers) {
    throw new ConfigError(`rank allocation '${allocation}': ${scores.length} scores given for ${numLayers} layers`);
  }
  scores.forEach((s, i) => {
    if (!Number.isFinite(s) || s <= 0) throw new ConfigError(`rank allocation: score of layer ${i} must be positive and finite, got ${s}`);
  });
  const mean = (v: readonly number[]) => v.reduce((a, b) => a + b, 0) / v.length;
  const weights = allocation === 'importance'
    ? scores.map((s) => s / mean(scores))
    : (() => {
      const inv = scores.map((s) => 1 / s);
      const m = mean(inv);
      return inv.map((w) => w / m);
    })();
  return weights.map((w) => Math.max(1, Math.round(rBar * w)));
}
