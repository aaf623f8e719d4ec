/**
 * LLM-Pruner, block-wise mode (baselines.md §8; saap.md §2–3): groups are KV head groups and
 * FFN channels; importance from gradients of the causal-LM loss (Taylor, default the released
 * `param_first`) or weight magnitude / random; per pruned layer the lowest groups are removed at
 * the same ratio (`prune_local`), inside the layer ranges [start, end).
 */
import { z } from 'zod';
import seedrandom from 'seedrandom';
import { defineMethod, type LayerGradientContext, type MethodReport } from '../../src/prune/method.ts';
import { ConfigError } from '../../src/util/errors.ts';
import { keepFromScores } from '../../src/prune/structured.ts';
import { couplingLayout, layerCoupling, queryPerKv, type CoupledModule as Module } from '../../src/prune/coupling.ts';
import { couplingScores, linearInputs, type GroupReduction } from '../../src/prune/taylor.ts';
import { unitsToRemove } from './groups.ts';

const layerIndex = z.number().int().min(0).optional();
const options = z.object({
  importance: z.enum(['taylor', 'l1', 'l2', 'random']).default('taylor').describe('LLM-Pruner --pruner_type'),
  taylor: z.enum(['vectorize', 'param_first', 'param_second', 'param_mix']).default('param_first').describe('Taylor variant (--taylor); param_first = released Element¹'),
  groupReduction: z.enum(['sum', 'mean', 'max']).optional().describe('reduction across group members (default: sum for taylor, mean for l1/l2)'),
  attnLayerStart: layerIndex.describe('first layer whose heads are pruned (default round(4·L/32))'),
  attnLayerEnd: layerIndex.describe('end (exclusive) of head pruning (default L − round(2·L/32))'),
  mlpLayerStart: layerIndex.describe('first layer whose FFN channels are pruned (default round(4·L/32))'),
  mlpLayerEnd: layerIndex.describe('end (exclusive) of FFN pruning (default L − round(2·L/32))'),
  seed: z.number().int().default(42).describe('seed of random importance'),
}).strict();
type Options = z.infer<typeof options>;

/** LLaMA-7B's 4 … 30 of 32 layers, scaled to L layers (half-up rounding). */
export function defaultLayerRange(L: number): [number, number] {
  return [Math.round((4 * L) / 32), L - Math.round((2 * L) / 32)];
}

function range(o: Options, module: Module, L: number): [number, number] {
  const [ds, de] = defaultLayerRange(L);
  const s = (module === 'attn' ? o.attnLayerStart : o.mlpLayerStart) ?? ds;
  const e = (module === 'attn' ? o.attnLayerEnd : o.mlpLayerEnd) ?? de;
  if (s > e || e > L) throw new ConfigError(`llm-pruner: ${module} layer range [${s}, ${e}) does not fit ${L} layers`);
  return [s, e];
}

function reductionOf(o: Options): GroupReduction {
  return o.groupReduction ?? (o.importance === 'taylor' ? 'sum' : 'mean');
}

/** Taylor scores of one layer's KV head groups and FFN channels, from its complete gradients. */
type LayerScores = Record<Module, Float64Array>;

function layerScores(ctx: LayerGradientContext<Options>): LayerScores {
  const { model, options: o, layer, linears } = ctx;
  const layout = couplingLayout(model, layer);
  const score = (m: Module) => couplingScores(linears, layerCoupling(layout, m), o.taylor, reductionOf(o));
  return { attn: score('attn'), mlp: score('mlp') };
}

export default defineMethod<Options, MethodReport, LayerScores>({
  name: 'llm-pruner',
  displayName: 'LLM-Pruner',
  description: 'LLM-Pruner (block-wise): Taylor importance of KV head groups and FFN channels, same ratio per layer in a layer range',
  reference: 'Ma, Fang, Wang, arXiv 2305.11627 (NeurIPS 2023); horseee/LLM-Pruner @ 128a07d hf_prune.py, LLMPruner/pruner/hf_llama_pruner.py, metapruner.py; baselines.md §8',
  granularity: ['ffn-channels', 'attention-heads'],
  // Checked against horseee/LLM-Pruner: README §3.2 command line, post_training.py defaults for what
  // it leaves out, HF Trainer's default linear schedule; LoRA on every linear of a LLaMA block.
  recoveryRecipe: {
    description: 'LLM-Pruner post-training: plain LoRA, batch 64 (4 × 16), cutoff 256, 2 epochs of Alpaca, lr 1e-4 linear, warm-up 100',
    source: 'horseee/LLM-Pruner README (post_training.py --lora_r 8 --num_epochs 2 --learning_rate 1e-4 --batch_size 64) and post_training.py defaults',
    settings: {
      schedule: 'uniform', rank: 8, alpha: 16, dropout: 0.05, lr: 1e-4, lrSchedule: 'linear', warmup: 100,
      microBatch: 4, gradAccum: 16, seqlen: 256, epochs: 2, format: 'alpaca-json', template: 'alpaca',
      trainOnInputs: false, heldOut: 2000,
    },
  },
  options,
  kind: 'structured',
  stats: (o) => o.importance === 'taylor'
    ? { perLayer: {}, gradients: { fisher: o.taylor === 'param_second' || o.taylor === 'param_mix' } }
    : { perLayer: {} },
  layerScores,
  plan: (ctx) => {
    const { model, options: o, target } = ctx;
    const L = model.numLayers;
    const hd = model.config.headDim;
    const ranges = { attn: range(o, 'attn', L), mlp: range(o, 'mlp', L) };
    const reduction = reductionOf(o);
    const rng = seedrandom(`llm-pruner:${o.seed}`);
    // Decide every count first, so an impossible ratio is refused before any scoring.
    const counts = model.config.layers.map((shape, i) => {
      const inRange = (m: Module) => i >= ranges[m][0] && i < ranges[m][1];
      const g = queryPerKv(couplingLayout(model, i));
      const attn = inRange('attn') ? unitsToRemove(shape.numKvHeads, g * hd, target.sparsity) : 0;
      const mlp = inRange('mlp') ? unitsToRemove(shape.intermediateSize, 1, target.sparsity) : 0;
      if (attn >= shape.numKvHeads) throw new ConfigError(`llm-pruner: ratio ${target.sparsity} would remove all ${shape.numKvHeads} head groups of layer ${i}`);
      if (mlp >= shape.intermediateSize) throw new ConfigError(`llm-pruner: ratio ${target.sparsity} would remove all ${shape.intermediateSize} FFN channels of layer ${i}`);
      return { attn, mlp };
    });
    const scoreOf = (i: number, m: Module): Float64Array => {
      const c = layerCoupling(couplingLayout(model, i), m);
      if (o.importance === 'random') return Float64Array.from({ length: c.units }, () => rng());
      if (o.importance === 'taylor') {
        const s = ctx.layerScores?.[i]?.[m];
        if (!s) throw new Error(`llm-pruner: the engine supplied no gradient scores for layer ${i}`);
        return s;
      }
      return couplingScores(linearInputs(ctx, i, c.members.map((x) => x.role)), c, o.importance, reduction);
    };
    const layers = model.config.layers.map((shape, i) => ({
      keepKvGroups: counts[i].attn > 0 ? keepFromScores(scoreOf(i, 'attn'), shape.numKvHeads - counts[i].attn) : undefined,
      keepChannels: counts[i].mlp > 0 ? keepFromScores(scoreOf(i, 'mlp'), shape.intermediateSize - counts[i].mlp) : undefined,
    }));
    return {
      layers,
      report: {
        denominator: 'per pruned layer: KV head groups (at q-channel granularity, as --pruning_ratio) and FFN channels; removed.allParameters gives the whole-model fraction',
        importance: o.importance === 'taylor' ? `taylor:${o.taylor}` : o.importance,
        groupReduction: reduction,
        attnLayers: ranges.attn,
        mlpLayers: ranges.mlp,
        removedKvGroups: counts.map((c) => c.attn),
        removedChannels: counts.map((c) => c.mlp),
      },
    };
  },
});
