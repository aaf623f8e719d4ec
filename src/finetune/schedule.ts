/**
 * Recovery schedules: how rank (and base quantisation) is laid over the layers on top of one
 * trainer. The core knows one schedule, `uniform` (every adapted layer gets r̄ and α — the
 * common recipe of the structured-pruning baselines, baselines.md §8.6); every other schedule is a method's own
 * (`RecoverySchedule` in the plug-in contract), which hands the trainer a resolved plan.
 */
import { ConfigError } from '../util/errors.ts';
import type { RecoveryPlan } from '../prune/method.ts';
import { allocateRanks } from './ranks.ts';
import { resolveQuantOptions } from './quant.ts';

/** `uniform`, or a method schedule's plan under the schedule's name. */
export type ScheduleSpec = 'uniform' | (Omit<RecoveryPlan, 'targets' | 'skippedTargets'> & { name: string });

export interface ResolvedSchedule {
  /** The schedule's name (`uniform` or the method that declared it). */
  kind: string;
  /** Rank per layer (0 for layers without adapters). */
  ranks: number[];
  /** α per layer. */
  alphas: number[];
  quant: { bits: number; groupSize: number } | null;
  /** Sum of ranks over adapted layers, to be recorded with results. */
  totalRank: number;
  allocation: string;
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
  const { rank, alpha, numLayers } = ctx;
  if (!(Number.isFinite(alpha) && alpha > 0)) throw new ConfigError(`alpha must be positive, got ${alpha}`);
  let ranks: number[];
  let alphas: number[];
  let quant: ResolvedSchedule['quant'] = null;
  let kind = 'uniform';
  let allocation = 'uniform';
  if (spec === 'uniform') {
    ranks = allocateRanks(rank, 'uniform', numLayers);
    alphas = ranks.map(() => alpha);
  } else {
    kind = spec.name;
    allocation = spec.allocation;
    ranks = [...spec.ranks];
    alphas = [...spec.alphas];
    const bad = (what: string) => new ConfigError(`recovery schedule '${spec.name}': ${what}`);
    if (ranks.length !== numLayers || alphas.length !== numLayers) {
      throw bad(`${ranks.length} ranks and ${alphas.length} alphas for ${numLayers} layers`);
    }
    ranks.forEach((r, i) => { if (!Number.isInteger(r) || r < 0) throw bad(`rank of layer ${i} must be a non-negative integer, got ${r}`); });
    alphas.forEach((a, i) => { if (!Number.isFinite(a) || a <= 0) throw bad(`alpha of layer ${i} must be positive, got ${a}`); });
    quant = spec.quant ? resolveQuantOptions(spec.quant) : null;
  }
  if (ctx.layers) {
    const keep = new Set<number>();
    for (const l of ctx.layers) {
      if (!Number.isInteger(l) || l < 0 || l >= numLayers) throw new ConfigError(`layers: ${l} is not a layer index in 0..${numLayers - 1}`);
      keep.add(l);
    }
    ranks = ranks.map((r, i) => (keep.has(i) ? r : 0));
  }
  return { kind, ranks, alphas, quant, totalRank: ranks.reduce((a, b) => a + b, 0), allocation };
}
