/**
 * SAAP's recovery schedule (saap.md §6, QA-LoRA reading): group fine-tuning — a frozen base
 * fake-quantised group-wise to INT4 (asymmetric, groups of 32 input features) with LoRA adapters
 * of rank r̄ in every layer, merged afterwards. The quantiser needs the group size to divide a
 * linear's input width in every layer; structured pruning leaves FFN widths arbitrary, so a
 * linear where it does not (often `down`) is left out of recovery and recorded as skipped.
 * It reads no report, so it also applies to models other methods pruned.
 */
import type { RecoverySchedule } from '../../src/prune/method.ts';
import type { LinearRole } from '../../src/model/family.ts';
import type { ModelView } from '../../src/model/view.ts';
import { allocateRanks } from '../../src/finetune/ranks.ts';
import { ConfigError } from '../../src/util/errors.ts';

export const SAAP_QUANT = Object.freeze({ bits: 4, groupSize: 32 });

/** Linears whose input width the group size divides in every layer, and the others. */
export function quantisableTargets(model: ModelView, groupSize: number): { targets: LinearRole[]; skipped: LinearRole[] } {
  const targets: LinearRole[] = [];
  const skipped: LinearRole[] = [];
  for (const l of model.spec.linears) {
    const ok = model.config.layers.every((shape) => l.inDim(shape, model.config) % groupSize === 0);
    (ok ? targets : skipped).push(l.role);
  }
  if (targets.length === 0) throw new ConfigError(`SAAP group fine-tuning: no linear has an input width divisible by ${groupSize}`);
  return { targets, skipped };
}

export const saapRecovery: RecoverySchedule<undefined> = {
  description: 'group fine-tuning: INT4 group-fake-quantised frozen base (groups of 32) + LoRA r̄ in every layer, merged',
  plan: ({ model, rank, alpha }) => {
    const { targets, skipped } = quantisableTargets(model, SAAP_QUANT.groupSize);
    const ranks = allocateRanks(rank, 'uniform', model.numLayers);
    return { ranks, alphas: ranks.map(() => alpha), quant: { ...SAAP_QUANT }, targets, skippedTargets: skipped, allocation: 'uniform' };
  },
};
