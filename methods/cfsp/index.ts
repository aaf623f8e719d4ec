/**
 * CFSP (cfsp.md): coarse-to-fine structured pruning of FFN channels. One dense calibration pass
 * gives per-block input/output distances (coarse: how much budget each block keeps, through a
 * clamped sigmoid) and per-channel down-projection input norms (fine: which channels to keep).
 */
import { z } from 'zod';
import { defineMethod, type PlanContext, type StructuralPlan } from '../../src/prune/method.ts';
import { topKIndices } from '../../src/prune/masks.ts';
import { ConfigError } from '../../src/util/errors.ts';
import type { CfspReport } from './report.ts';
import { cfspRecovery } from './recovery.ts';
import { allocateKeepRatios, keptChannelCount } from './allocation.ts';
import { activationScores, relativeWeightScores } from './scores.ts';
import { cfspLoraRanks } from './ranks.ts';

const options = z.object({
  globalMetric: z.enum(['angular', 'cosine', 'mse']).default('angular').describe('block importance: per-token distance between block input and output'),
  localMetric: z.enum(['activation', 'relative-weight']).default('activation').describe('channel score: down_proj input norm, or RIA-style relative |W| times it'),
  a: z.number().finite().min(0).default(1).describe('sigmoid slope of the block budget (0 = uniform)'),
  b: z.number().finite().min(0).default(1).describe('activation exponent inside the down term (relative-weight only)'),
  c: z.number().finite().min(0).default(1).describe('outer activation exponent (relative-weight only)'),
  roundTo: z.number().int().min(1).default(1).describe('kept channel counts are multiples of this (128 = released --cuda_friendly)'),
  refTokens: z.number().finite().positive().default(131072).describe('reference token count scaling the per-token mean distance (released: 128 × 1024)'),
  clampMargin: z.number().finite().min(1).default(1.05).describe('max-clamp margin: largest keep ratio becomes (1 − p) + p / margin'),
  minKeepRatio: z.number().finite().min(0).max(1).default(0).describe('budget-preserving floor on every block keep ratio (0 = off; ≤ 1 − p)'),
  rankAllocation: z.enum(['importance', 'uniform', 'inverse']).default('importance').describe('IG-LoRA rank schedule reported for recovery'),
  rank: z.number().int().min(1).default(8).describe('mean LoRA rank of the reported schedule'),
}).strict();

export type CfspOptions = z.infer<typeof options>;

function plan(ctx: PlanContext<CfspOptions>): StructuralPlan<CfspReport> {
  const { model, options: o, target } = ctx;
  const p = target.sparsity;
  if (o.minKeepRatio > 1 - p + 1e-12) {
    throw new ConfigError(`cfsp: option 'minKeepRatio' (${o.minKeepRatio}) must be <= 1 - sparsity (${1 - p})`);
  }
  if (!ctx.blockDistance) throw new Error('cfsp: the engine did not provide block distances');
  const distances = Array.from(ctx.blockDistance);
  const alloc = allocateKeepRatios(distances, p, o);
  const { outputsOf, inputsOf } = model.spec.ffnChannel;
  const layers = model.config.layers.map((shape, l) => {
    const st = ctx.stats[l]?.downIn;
    if (!st?.colSqSum) throw new Error(`cfsp: no down-projection input statistics for layer ${l}`);
    const m = shape.intermediateSize;
    const scores = o.localMetric === 'activation'
      ? activationScores(st.colSqSum)
      : relativeWeightScores(st.colSqSum, ctx.weight(l, inputsOf), outputsOf.map((r) => ctx.weight(l, r)), o.b, o.c);
    // topKIndices: largest scores, ties to the lower index, returned ascending.
    return { keepChannels: topKIndices(scores, keptChannelCount(m, alloc.keepRatios[l], o.roundTo)) };
  });
  let ranks: number[] | string;
  try {
    ranks = cfspLoraRanks(alloc.scores, o.rank, o.rankAllocation);
  } catch (e) {
    ranks = (e as Error).message;
  }
  const widths = model.config.layers.map((s) => s.intermediateSize);
  const kept = layers.map((lp) => lp.keepChannels.length);
  ctx.log(`cfsp: keep ratios ${alloc.keepRatios.map((r) => r.toFixed(3)).join(' ')}${alloc.clampActive ? ' (max clamp active)' : ''}`);
  return {
    layers,
    report: {
      globalMetric: o.globalMetric,
      localMetric: o.localMetric,
      clampActive: alloc.clampActive,
      keptFraction: kept.reduce((a, k) => a + k, 0) / widths.reduce((a, m) => a + m, 0),
      perLayer: distances.map((d, l) => ({
        layer: l,
        blockDistance: d,
        centred: alloc.centred[l],
        sigmoid: alloc.sigmoid[l],
        score: alloc.scores[l],
        keepRatio: alloc.keepRatios[l],
        keepRatioBeforeFloor: alloc.rawKeepRatios[l],
        width: widths[l],
        kept: kept[l],
      })),
      lora: {
        meanRank: o.rank,
        allocation: o.rankAllocation,
        ranks,
        total: Array.isArray(ranks) ? ranks.reduce((a, r) => a + r, 0) : null,
      },
    },
  };
}

export default defineMethod<CfspOptions, CfspReport>({
  name: 'cfsp',
  displayName: 'CFSP',
  description: 'CFSP: FFN-channel pruning, per-block budget from block input/output angles, channels by activation norm',
  reference: 'Wang et al., arXiv 2409.13199 (COLING 2025); wyxscir/CFSP @ b2d5b13 lib/prune.py (prune_cfsp)',
  granularity: ['ffn-channels'],
  targetScope: 'ffn-channels',
  options,
  kind: 'structured',
  stats: (o) => ({ perLayer: { colSqSum: ['downIn'] }, blockDistance: o.globalMetric }),
  plan,
  recovery: cfspRecovery,
  recoveryRecipe: {
    description: "CFSP's IG-LoRA ranks on LLM-Pruner's recipe (the paper's data and steps are not published)",
    source: "cfsp.md §8: ranks from the block scores; data and schedule LLM-Pruner's (baselines.md §8.6)",
    basedOn: 'llm-pruner',
    settings: { schedule: 'cfsp' },
  },
});
