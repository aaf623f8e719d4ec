/**
 * IG-LoRA rank schedule (cfsp.md Decision 6, §8): per-block LoRA ranks from the same clamped
 * block scores s_l that set the pruning budget. Pure; used by the recovery step.
 */

export type RankAllocation = 'importance' | 'uniform' | 'inverse';

/**
 * - `importance`: r_l = max(1, round(r̄ · s_l / mean(s))) — important blocks get more rank.
 * - `uniform`:    r_l = r̄.
 * - `inverse`:    w_l = (1/s_l) / mean(1/s), r_l = max(1, round(r̄ · w_l)).
 * round() is half-up (Math.round); the realised total may differ from L · r̄ by rounding and
 * the floor of 1.
 */
export function cfspLoraRanks(blockScores: readonly number[], meanRank: number, allocation: RankAllocation): number[] {
  if (!Number.isInteger(meanRank) || meanRank < 1) throw new RangeError(`cfsp: mean LoRA rank must be a positive integer, got ${meanRank}`);
  if (blockScores.length === 0) return [];
  if (allocation === 'uniform') return blockScores.map(() => meanRank);
  if (blockScores.some((s) => !(s > 0) || !Number.isFinite(s))) {
    throw new RangeError(`cfsp: block scores must be positive and finite for '${allocation}' ranks, got [${blockScores.join(', ')}]`);
  }
  const w = allocation === 'importance' ? blockScores : blockScores.map((s) => 1 / s);
  const mu = w.reduce((a, x) => a + x, 0) / w.length;
  return w.map((x) => Math.max(1, Math.round((meanRank * x) / mu)));
}
