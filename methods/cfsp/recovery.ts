/**
 * CFSP's recovery schedule (cfsp.md §8, Decision 6): IG-LoRA — per-layer LoRA ranks from the
 * block scores s_l of the pruning run, with the allocation the run was configured with
 * (`rankAllocation`, default `importance`), around the r̄ asked for at recovery time.
 * α_l = α·r_l/r̄, so the update scale α_l/r_l = α/r̄ is the same in every layer (cfsp.md's
 * suggestion).
 */
import type { RecoverySchedule } from '../../src/prune/method.ts';
import { cfspReportSchema, type CfspReport } from './report.ts';
import { cfspLoraRanks } from './ranks.ts';

export const cfspRecovery: RecoverySchedule<CfspReport> = {
  description: 'IG-LoRA: per-layer ranks from the block scores of the CFSP run (importance / inverse / uniform), α_l/r_l constant',
  report: cfspReportSchema,
  plan: ({ report, rank, alpha }) => {
    const ranks = cfspLoraRanks(report.perLayer.map((l) => l.score), rank, report.lora.allocation);
    return { ranks, alphas: ranks.map((r) => (alpha * r) / rank), quant: null, allocation: report.lora.allocation };
  },
};
