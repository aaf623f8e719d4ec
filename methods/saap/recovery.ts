/**
 * SAAP's recovery schedule (saap.md §6, QA-LoRA reading): group fine-tuning — a frozen base
 * fake-quantised group-wise to INT4 (asymmetric, groups of 32 input features) with LoRA adapters
 * of rank r̄ in every layer, merged afterwards. Every linear is adapted: where the group size does
 * not divide a linear's input width (structured pruning leaves FFN widths arbitrary), the last
 * group of each row is shorter (finetune/quant.ts), so nothing is skipped.
 * It reads no report, so it also applies to models other methods pruned.
 */
import type { RecoverySchedule } from '../../src/prune/method.ts';
import type { LinearRole } from '../../src/model/family.ts';
import type { ModelView } from '../../src/model/view.ts';
import { allocateRanks } from '../../src/finetune/ranks.ts';
import { ConfigError } from '../../src/util/errors.ts';

export const SAAP_QUANT = Object.freeze({ bits: 4, groupSize: 32 });

/** The linears group quantisation adapts (all of them, partial last groups included) and those it leaves out (none). */
export function quantisableTargets(model: ModelView, groupSize: number): { targets: LinearRole[]; skipped: LinearRole[] } {
  if (!Number.isInteger(groupSize) || groupSize < 1) throw new ConfigError(`SAAP group fine-tuning: group size must be a positive integer, got ${groupSize}`);
  return { targets: model.spec.linears.map((l) => l.role), skipped: [] };
}

export const saapRecovery: RecoverySchedule<undefined> = {
  description: 'group fine-tuning: INT4 group-fake-quantised frozen base (groups of 32, the last one partial) + LoRA r̄ on every linear of every layer, merged',
  plan: ({ model, rank, alpha }) => {
    const { targets, skipped } = quantisableTargets(model, SAAP_QUANT.groupSize);
    const ranks = allocateRanks(rank, 'uniform', model.numLayers);
    return { ranks, alphas: ranks.map(() => alpha), quant: { ...SAAP_QUANT }, targets, skippedTargets: skipped, allocation: 'uniform' };
  },
};
