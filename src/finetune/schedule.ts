/**
 * Recovery schedules: how rank (and quantisation) is laid over the layers on top of one trainer.
 *
 * - `uniform`: every adapted layer gets r̄ (LLM-Pruner recipe, baselines.md §8.6).
 * - `cfsp` (IG-LoRA, cfsp.md §8): from per-layer block scores s_l, μ = mean(s):
 *     `importance` r_l = max(1, round(r̄·s_l/μ)); `inverse` w_l = (1/s_l)/mean(1/s), r_l = max(1, round(r̄·w_l));
 *     `uniform` r_l = r̄. JS rounding (half up) is used; the realised total is reported.
 *     α_l = α·r_l/r̄ by default, so the update scale α_l/r_l = α/r̄ is the same in every layer
 *     (cfsp.md's suggestion); `alphaPolicy: 'constant-alpha'` keeps α_l = α instead.
 * - `saap` (saap.md §6): group fine-tuning — fake-quantised base (bits, groupSize) with QA-LoRA
 *   adapters; `quant: 'none'` (alias `'plain'`) is standard LoRA on the unquantised weights.
 */
import { ConfigError } from '../util/errors.ts';
import { DEFAULT_QUANT_BITS, DEFAULT_QUANT_GROUP_SIZE, resolveQuantOptions } from './quant.ts';

export type RankAllocation = 'uniform' | 'importance' | 'inverse';
export type AlphaPolicy = 'constant-scale' | 'constant-alpha';

export interface UniformSchedule {
  kind: 'uniform';
}
export interface CfspSchedule {
  kind: 'cfsp';
  /** Per-layer block importance scores (positive), one per model layer. */
  scores: readonly number[];
  /** Default `importance`. */
  allocation?: RankAllocation;
  /** Default `constant-scale`. */
  alphaPolicy?: AlphaPolicy;
}
export interface SaapSchedule {
  kind: 'saap';
  /** `group` (default): fake-quantised base + QA-LoRA; `none`/`plain`: standard LoRA. */
  quant?: 'group' | 'none' | 'plain';
  /** Default 4. */
  bits?: number;
  /** Default 32; must divide the input width of every targeted linear. */
  groupSize?: number;
}
export type ScheduleSpec = 'uniform' | 'saap' | UniformSchedule | CfspSchedule | SaapSchedule;

export interface ResolvedSchedule {
  kind: 'uniform' | 'cfsp' | 'saap';
  /** Rank per layer (0 for layers without adapters). */
  ranks: number[];
  /** α per layer. */
  alphas: number[];
  quant: { bits: number; groupSize: number } | null;
  /** Sum of ranks over adapted layers, to be recorded with results. */
  totalRank: number;
  allocation: RankAllocation;
}

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

export interface ScheduleContext {
  /** r̄. */
  rank: number;
  /** α at r̄. */
  alpha: number;
  numLayers: number;
  /** Layers that get adapters (default all); others get rank 0. */
  layers?: readonly number[];
}

export function resolveSchedule(spec: ScheduleSpec, ctx: ScheduleContext): ResolvedSchedule {
  const s: UniformSchedule | CfspSchedule | SaapSchedule = typeof spec === 'string' ? { kind: spec } : spec;
  const { rank, alpha, numLayers } = ctx;
  if (!(Number.isFinite(alpha) && alpha > 0)) throw new ConfigError(`alpha must be positive, got ${alpha}`);
  let ranks: number[];
  let alphas: number[];
  let quant: ResolvedSchedule['quant'] = null;
  let allocation: RankAllocation = 'uniform';
  switch (s.kind) {
    case 'uniform':
      ranks = allocateRanks(rank, 'uniform', numLayers);
      alphas = ranks.map(() => alpha);
      break;
    case 'cfsp': {
      allocation = s.allocation ?? 'importance';
      ranks = allocateRanks(rank, allocation, numLayers, s.scores);
      const policy = s.alphaPolicy ?? 'constant-scale';
      alphas = ranks.map((r) => (policy === 'constant-scale' ? (alpha * r) / rank : alpha));
      break;
    }
    case 'saap': {
      ranks = allocateRanks(rank, 'uniform', numLayers);
      alphas = ranks.map(() => alpha);
      const mode = s.quant ?? 'group';
      if (mode === 'group') {
        quant = resolveQuantOptions({ bits: s.bits ?? DEFAULT_QUANT_BITS, groupSize: s.groupSize ?? DEFAULT_QUANT_GROUP_SIZE });
      } else if (mode !== 'none' && mode !== 'plain') {
        throw new ConfigError(`schedule.quant must be 'group', 'none' or 'plain', got '${String(mode)}'`);
      }
      break;
    }
    default:
      throw new ConfigError(`unknown recovery schedule '${(s as { kind: unknown }).kind}'; valid: uniform, cfsp, saap`);
  }
  if (ctx.layers) {
    const keep = new Set<number>();
    for (const l of ctx.layers) {
      if (!Number.isInteger(l) || l < 0 || l >= numLayers) throw new ConfigError(`layers: ${l} is not a layer index in 0..${numLayers - 1}`);
      keep.add(l);
    }
    ranks = ranks.map((r, i) => (keep.has(i) ? r : 0));
  }
  return { kind: s.kind, ranks, alphas, quant, totalRank: ranks.reduce((a, b) => a + b, 0), allocation };
}
