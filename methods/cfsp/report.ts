/**
 * CFSP's report (saved as `methodReport` in prune_report.json): the block scores and allocation
 * that set the pruning budget, and the IG-LoRA rank schedule derived from them. The schema checks
 * the JSON read back from disk before the recovery schedule uses it.
 */
import { z } from 'zod';
import { RANK_ALLOCATIONS } from '../../src/finetune/ranks.ts';

export const cfspReportSchema = z.object({
  globalMetric: z.string(),
  localMetric: z.string(),
  clampActive: z.boolean(),
  keptFraction: z.number(),
  perLayer: z.array(z.object({
    layer: z.number().int(),
    blockDistance: z.number(),
    centred: z.number(),
    sigmoid: z.number(),
    /** The clamped block score s_l. */
    score: z.number(),
    keepRatio: z.number(),
    keepRatioBeforeFloor: z.number(),
    width: z.number().int(),
    kept: z.number().int(),
  })).min(1),
  lora: z.object({
    meanRank: z.number().int().positive(),
    allocation: z.enum(RANK_ALLOCATIONS),
    /** Per-layer ranks, or why they could not be computed. */
    ranks: z.union([z.array(z.number().int()), z.string()]),
    total: z.number().int().nullable(),
  }),
});

export type CfspReport = z.infer<typeof cfspReportSchema>;
