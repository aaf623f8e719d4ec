/**
 * IG-LoRA rank schedule (cfsp.md Decision 6, §8): per-block LoRA ranks from the same clamped
 * block scores s_l that set the pruning budget. The formulas are the shared rank allocation
 * (`allocateRanks` in src/finetune/ranks.ts) and CFSP's recovery schedule (recovery.ts) calls this
 * same function, so the ranks reported here are exactly the ranks `prunelab finetune --schedule cfsp`
 * trains with (for the same r̄):
 * - `importance`: r_l = max(1, round(r̄ · s_l / mean(s))) — important blocks get more rank;
 * - `uniform`:    r_l = r̄;
 * - `inverse`:    w_l = (1/s_l) / mean(1/s), r_l = max(1, round(r̄ · w_l)).
 */
import { allocateRanks, type RankAllocation } from '../../src/finetune/ranks.ts';

export type { RankAllocation };

export function cfspLoraRanks(blockScores: readonly number[], meanRank: number, allocation: RankAllocation): number[] {
  return allocateRanks(meanRank, allocation, blockScores.length, blockScores);
}
