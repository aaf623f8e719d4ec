/**
 * SAAP — structurally-aware adaptive pruning (Zheng, Ren et al., arXiv 2412.15127), as specified
 * in docs/methods/saap.md: LLM-Pruner's coupled groups (GQA-aware KV head groups, FFN channels),
 * vector-wise and element-wise Taylor importances fused by homoscedastic-uncertainty weights,
 * a fluctuation indicator that decides which layers are pruned and how much, and removal of the
 * lowest fused groups under a budget on all model parameters. Recovery lives in src/finetune.
 */
import { z } from 'zod';
import { defineMethod, type LayerGradientContext, type MethodReport, type PlanContext, type StructuralPlan } from '../../src/prune/method.ts';
import { ConfigError } from '../../src/util/errors.ts';
import { saapRecovery } from './recovery.ts';
import { couplingLayout, unitParams } from '../../src/prune/coupling.ts';
import { layerGroupScores } from '../../src/prune/taylor.ts';
import { fuseScores, type UnitScores } from './fusion.ts';
import {
  MODULE_TYPES, allocateRatios, allocateZscore, defaultExcludeCount, fixedExclusion, fluctuationOf, lowestGroups,
  normalisedImportance, rankedExclusion, type AllocUnit, type ModuleType,
} from './allocation.ts';

const LAYER_SCOPE_WITH_RATIO = "sigmaScope 'layer' cannot be combined with allocation 'ratio': with one σ per layer and "
  + 'module type the mean fused score of every (layer, type) is exactly 1, so the layer importance μ carries no '
  + "cross-layer information and the ratio allocation degenerates; use sigmaScope 'module_type' or 'global', "
  + "or allocation 'zscore-global'";

const shape = {
  vec: z.enum(['vectorize']).default('vectorize').describe('vector-wise (coarse) Taylor importance |Σ g·w| per slice'),
  elem: z.enum(['param_mix', 'param_first']).default('param_mix')
    .describe('element-wise Taylor importance: Σ|g·w − ½wFw| (empirical Fisher) or Σ|g·w|'),
  groupReduction: z.enum(['sum']).default('sum').describe('group score = sum of its member slices (LLM-Pruner)'),
  sigmaScope: z.enum(['module_type', 'global', 'layer']).default('module_type').describe('groups sharing one σ per metric'),
  sigmaFit: z.enum(['closed', 'adam']).default('closed').describe('σ² = mean score (closed) or log σ² learnt by Adam to convergence'),
  fluctuation: z.enum(['cv', 'none']).default('cv').describe('ν = μ/(1+φ) with φ = std/mean (cv), or ν = μ'),
  allocation: z.enum(['ratio', 'zscore-global']).default('ratio').describe('per-layer ratios ∝ 1/ν̃, or a global z-score ranking'),
  exclude: z.enum(['ranked', 'fixed']).default('ranked').describe('leave the most important layers unpruned, or a fixed first/last range'),
  excludeCount: z.number().int().min(0).optional().describe('layers excluded per type when ranked (default round(6·L/32))'),
  excludeFirst: z.number().int().min(0).default(4).describe('fixed exclusion: first layers left unpruned'),
  excludeLast: z.number().int().min(0).default(2).describe('fixed exclusion: last layers left unpruned'),
  rMax: z.number().gt(0).lt(1).default(0.9).describe('largest per-layer pruning ratio'),
};

const options = z.object(shape).strict().superRefine((o, ctx) => {
  if (o.sigmaScope === 'layer' && o.allocation === 'ratio') ctx.addIssue({ code: 'custom', path: ['sigmaScope'], message: LAYER_SCOPE_WITH_RATIO });
});

export type SaapOptions = z.infer<typeof options>;

/**
 * Parameters removed with one KV group and with one FFN channel of a layer, biases included:
 * the budget is a fraction of all model parameters, and removing a row removes its bias entry.
 */
function groupParams(ctx: PlanContext<SaapOptions, SaapLayerScores>, layer: number): Record<ModuleType, number> {
  return { attn: unitParams(ctx.model, layer, 'attn', { biases: true }), mlp: unitParams(ctx.model, layer, 'mlp', { biases: true }) };
}

/** Vector-wise and element-wise group scores of one layer, per module type. */
export type SaapLayerScores = Record<ModuleType, { vec: Float64Array; elem: Float64Array }>;

/** One layer's group scores, from its complete gradients (the engine frees them after). */
function layerScores(ctx: LayerGradientContext<SaapOptions>): SaapLayerScores {
  const { model, options: o, layer, linears } = ctx;
  for (const l of model.spec.linears) if (!linears[l.role]?.grad) throw new Error(`saap: no gradient for layer ${layer} ${l.role}`);
  const layout = couplingLayout(model, layer);
  const vec = layerGroupScores(linears, layout, o.vec);
  const elem = layerGroupScores(linears, layout, o.elem);
  return { attn: { vec: vec.attn, elem: elem.attn }, mlp: { vec: vec.mlp, elem: elem.mlp } };
}

/** Vector-wise and element-wise group scores of every (layer, type). */
function groupImportances(ctx: PlanContext<SaapOptions, SaapLayerScores>): UnitScores[] {
  const { model, layerScores: scores } = ctx;
  if (!scores) throw new Error('saap: the engine supplied no gradient scores');
  const units: UnitScores[] = [];
  for (let l = 0; l < model.numLayers; l++) {
    if (!scores[l]) throw new Error(`saap: no gradient scores for layer ${l}`);
    for (const type of MODULE_TYPES) units.push({ layer: l, type, ...scores[l][type] });
  }
  return units;
}

function plan(ctx: PlanContext<SaapOptions, SaapLayerScores>): StructuralPlan {
  const { model, options: o, target } = ctx;
  if (o.sigmaScope === 'layer' && o.allocation === 'ratio') throw new ConfigError(LAYER_SCOPE_WITH_RATIO);
  const L = model.numLayers;
  const units = groupImportances(ctx);
  const { fused, sigmas } = fuseScores(units, o.sigmaScope, o.sigmaFit, ctx.log);
  for (const s of sigmas) if (s.adamSteps !== undefined) ctx.log(`saap: Adam σ fit for '${s.scope}' converged in ${s.adamSteps} steps`);

  // Fluctuation, effective and normalised importance per (layer, type); unit index = 2·layer + type.
  const fl = fused.map((f) => fluctuationOf(f, o.fluctuation));
  const nuTilde = new Array<number>(units.length);
  const excludeCount = o.excludeCount ?? defaultExcludeCount(L);
  const excluded = {} as Record<ModuleType, number[]>;
  for (const type of MODULE_TYPES) {
    const idx = units.map((u, k) => (u.type === type ? k : -1)).filter((k) => k >= 0);
    const nt = normalisedImportance(idx.map((k) => fl[k].nu));
    idx.forEach((k, j) => { nuTilde[k] = nt[j]; });
    excluded[type] = o.exclude === 'ranked' ? rankedExclusion(nt, excludeCount) : fixedExclusion(L, o.excludeFirst, o.excludeLast);
  }

  const total = model.parameters.total;
  const budget = target.sparsity * total;
  const sizes = Array.from({ length: L }, (_, l) => groupParams(ctx, l));
  const alloc: AllocUnit[] = units.map((u, k) => ({
    layer: u.layer, type: u.type, groups: u.vec.length, groupParams: sizes[u.layer][u.type], nuTilde: nuTilde[k],
    excluded: excluded[u.type].includes(u.layer),
  }));

  let removeSets: number[][];
  let removedParams: number;
  let ratioInfo: Record<string, unknown> = {};
  let ratios: number[] | null = null;
  if (o.allocation === 'ratio') {
    const a = allocateRatios(alloc, budget, o.rMax);
    removeSets = units.map((_, k) => lowestGroups(fused[k], a.removeCounts[k]));
    removedParams = a.removedParams;
    ratios = a.ratios;
    ratioInfo = { c: a.c, cContinuous: a.cContinuous, removedFractionAtContinuousC: a.removedParamsAtContinuousC / total };
  } else {
    const a = allocateZscore(alloc, fused, budget, o.rMax);
    removeSets = a.removeSets;
    removedParams = a.removedParams;
  }

  const keepOf = (n: number, drop: number[]) => Array.from({ length: n }, (_, i) => i).filter((i) => !drop.includes(i));
  const layers = Array.from({ length: L }, (_, l) => {
    const [ka, km] = [2 * l, 2 * l + 1];
    return { keepKvGroups: keepOf(units[ka].vec.length, removeSets[ka]), keepChannels: keepOf(units[km].vec.length, removeSets[km]) };
  });
  const unitReport = (k: number) => ({
    groups: alloc[k].groups, groupParams: alloc[k].groupParams, mu: fl[k].mu, sd: fl[k].sd, phi: fl[k].phi, nu: fl[k].nu,
    nuTilde: nuTilde[k], excluded: alloc[k].excluded, ratio: ratios ? ratios[k] : removeSets[k].length / alloc[k].groups,
    removed: removeSets[k].length,
  });
  return {
    layers,
    report: {
      sigma2: sigmas, excludeCount: o.exclude === 'ranked' ? excludeCount : null, excludedLayers: excluded,
      perLayer: Array.from({ length: L }, (_, l) => ({ layer: l, attn: unitReport(2 * l), mlp: unitReport(2 * l + 1) })),
      ...ratioInfo,
      target: { paramRatio: target.sparsity, totalParams: total, budgetParams: budget },
      realised: { removedParams, removedFraction: removedParams / total },
    },
  };
}

export default defineMethod<SaapOptions, MethodReport, SaapLayerScores>({
  name: 'saap',
  displayName: 'SAAP',
  recovery: saapRecovery,
  recoveryRecipe: {
    description: "SAAP's group fine-tuning (INT4 groups of 32, QA-LoRA) on LLM-Pruner's recipe",
    source: 'saap.md §6: "Data and schedule: LLM-Pruner\'s recipe"',
    basedOn: 'llm-pruner',
    settings: { schedule: 'saap' },
  },
  description: 'SAAP: fused vector/element Taylor importances of KV head groups and FFN channels, fluctuation-guided layer ratios',
  reference: 'Zheng, Ren et al., arXiv 2412.15127 (SAAP); groups and Taylor estimators after LLM-Pruner (Ma et al., arXiv 2305.11627, horseee/LLM-Pruner @ 128a07d)',
  granularity: ['ffn-channels', 'attention-heads'],
  targetScope: 'all-parameters',
  options,
  kind: 'structured',
  stats: (o) => ({ perLayer: {}, gradients: { fisher: o.elem === 'param_mix' } }),
  layerScores,
  plan,
});
