/**
 * FLAP (baselines.md §7): fluctuation-based structured pruning with bias compensation.
 * - `scope: ffn` is the FFN-only form the CFSP repository uses as a baseline (`flap_bias`):
 *   WIFV per FFN channel, z-scores per block, one global threshold, `down` bias compensation;
 *   the sparsity is the fraction of FFN channels removed.
 * - `scope: ffn+heads` (default) is full FLAP (CASIA-IVA-Lab/FLAP): FFN channels and attention
 *   head groups (GQA: one KV head with all its query heads), structures UL-UM/UL-MM/AL-MM/AL-AM,
 *   compensation on `down` and `o`; the sparsity is the fraction of prunable decoder-linear
 *   weights (q, k, v, o and the FFN linears) removed.
 */
import { z } from 'zod';
import { defineMethod, type LayerPlan, type PlanContext } from '../../src/prune/method.ts';
import type { LinearRole } from '../../src/model/family.ts';
import { couplingLayout, queryFeaturesOfGroups, queryPerKv, unitParams } from '../../src/prune/coupling.ts';
import { biasCompensation, featureMean, flapFeatureMetric } from './metrics.ts';
import { allocateFlap, type FlapLayerInput } from './allocate.ts';

const options = z.object({
  scope: z.enum(['ffn', 'ffn+heads']).default('ffn+heads').describe("'ffn' = CFSP's FFN-only flap_bias baseline; 'ffn+heads' = full FLAP"),
  structure: z.enum(['UL-UM', 'UL-MM', 'AL-MM', 'AL-AM']).default('AL-AM').describe('uniform/adaptive across layers × uniform/manual/adaptive across modules'),
  metric: z.enum(['IFV', 'WIFV', 'WIFN']).default('WIFV').describe('input-feature variance, weighted variance, weighted norm'),
  removeHeads: z.number().int().min(0).default(8).describe('head groups removed in total (UL-MM: ⌊removeHeads/L⌋ per layer; AL-MM: model-wide); FLAP --remove_heads'),
  biasCompensation: z.boolean().default(true).describe('add the removed units\' mean contribution to the o/down bias'),
}).strict();
type Options = z.infer<typeof options>;

const complement = (n: number, keep: readonly number[]) => {
  const k = new Set(keep);
  return Array.from({ length: n }, (_, i) => i).filter((i) => !k.has(i));
};

function layerInputs(ctx: PlanContext<Options>, heads: boolean): FlapLayerInput[] {
  const { model, stats, weight, options: o } = ctx;
  const { config, spec } = model;
  return config.layers.map((shape, i) => {
    const g = queryPerKv(couplingLayout(model, i));
    const down = stats[i].downIn;
    if (!down) throw new Error(`flap: no down-input statistics for layer ${i}`);
    const input: FlapLayerInput = {
      mlp: flapFeatureMetric(o.metric, weight(i, spec.ffnChannel.inputsOf), down),
      groups: shape.numKvHeads,
      featuresPerGroup: g * config.headDim,
      // Weights only: the denominator is the prunable decoder-linear weights (see README).
      groupParams: unitParams(model, i, 'attn', { biases: false }),
      channelParams: unitParams(model, i, 'mlp', { biases: false }),
    };
    if (heads) {
      const ctxStats = stats[i].attnCtx;
      if (!ctxStats) throw new Error(`flap: no attention-context statistics for layer ${i}`);
      // The reference squares the metric of the o-projection inputs before grouping per head.
      input.attn = flapFeatureMetric(o.metric, weight(i, spec.kvGroup.inputsOf), ctxStats).map((v) => v * v);
    }
    return input;
  });
}

export default defineMethod<Options>({
  name: 'flap',
  displayName: 'FLAP',
  description: 'FLAP: fluctuation metric (WIFV), standardised, adaptive structure, with bias compensation (FFN channels and head groups)',
  reference: 'An et al., arXiv 2312.11983 (AAAI 2024); CASIA-IVA-Lab/FLAP @ 3bb57db lib/prune.py; CFSP repository lib/prune.py (prune_flap_bias); baselines.md §7',
  granularity: ['ffn-channels', 'attention-heads'],
  options,
  kind: 'structured',
  stats: (o) => ({
    perLayer: {
      colSum: o.scope === 'ffn' ? ['downIn'] : ['downIn', 'attnCtx'],
      colSqSum: o.scope === 'ffn' ? ['downIn'] : ['downIn', 'attnCtx'],
    },
  }),
  plan: (ctx) => {
    const { model, options: o, target, stats, weight } = ctx;
    const heads = o.scope === 'ffn+heads';
    const inputs = layerInputs(ctx, heads);
    const alloc = allocateFlap(inputs, { structure: o.structure, sparsity: target.sparsity, removeHeads: o.removeHeads, heads });
    const { spec, config } = model;
    let prunable = 0;
    let removed = 0;
    const layers: LayerPlan[] = inputs.map((l, i) => {
      const plan: LayerPlan = { keepChannels: alloc.keepChannels[i] };
      const bias: Partial<Record<LinearRole, Float32Array>> = {};
      const dropCh = complement(l.mlp.length, alloc.keepChannels[i]);
      prunable += l.mlp.length * l.channelParams + (heads ? l.groups * l.groupParams : 0);
      removed += dropCh.length * l.channelParams;
      if (o.biasCompensation && dropCh.length > 0) {
        bias[spec.ffnChannel.inputsOf] = biasCompensation(weight(i, spec.ffnChannel.inputsOf), featureMean(stats[i].downIn!), dropCh);
      }
      if (alloc.keepGroups) {
        plan.keepKvGroups = alloc.keepGroups[i];
        const dropG = complement(l.groups, alloc.keepGroups[i]);
        removed += dropG.length * l.groupParams;
        if (o.biasCompensation && dropG.length > 0) {
          const features = queryFeaturesOfGroups(dropG, queryPerKv(couplingLayout(model, i)), config.headDim);
          bias[spec.kvGroup.inputsOf] = biasCompensation(weight(i, spec.kvGroup.inputsOf), featureMean(stats[i].attnCtx!), features);
        }
      }
      if (Object.keys(bias).length > 0) plan.biasDelta = bias;
      return plan;
    });
    return {
      layers,
      report: {
        denominator: heads
          ? 'prunable decoder-linear weights (q, k, v, o and FFN linears; biases excluded)'
          : 'FFN channels (all blocks together)',
        scope: o.scope,
        structure: o.structure,
        removedFraction: removed / prunable,
        keptChannels: alloc.keepChannels.map((k) => k.length),
        keptKvGroups: alloc.keepGroups?.map((k) => k.length) ?? null,
        guardedLayers: alloc.guarded,
      },
    };
  },
});
