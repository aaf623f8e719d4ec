/**
 * FLAP's four compressed-structure rules (CASIA-IVA-Lab/FLAP @ 3bb57db lib/prune.py
 * `prune_flap`, `cal_remove_neuron`), generalised to GQA by treating one key/value group (a KV
 * head with all its query heads) as the attention unit, and to any layer shapes by counting
 * parameters per unit instead of LLaMA-7B constants (4·D·128 per head, 3·D per channel).
 *
 * - UL-UM: per layer, remove ⌊p·n⌋ lowest-scoring units of each module (raw scores).
 * - UL-MM: per layer, remove ⌊removeHeads / L⌋ head groups; FFN channels from the remaining
 *   parameter budget of the layer.
 * - AL-MM: z-scores per layer and module; remove the `removeHeads` lowest groups of the model,
 *   then FFN channels from the remaining parameter budget of the model.
 * - AL-AM: z-scores per layer and module, one descending order over all units of both modules,
 *   the cut placed where the kept parameters are closest to (1 − p) of all prunable parameters.
 * Head groups are scored from the squared metric of their `o`-input features: summed per group
 * (UL) or standardised per layer over all features and then averaged per group (AL).
 */
import { ConfigError } from '../../src/util/errors.ts';
import { pruneCount } from '../../src/prune/masks.ts';
import { keepFromScores, selectGlobal, standardize, standardizedGlobalKeep } from '../../src/prune/structured.ts';

export type FlapStructure = 'UL-UM' | 'UL-MM' | 'AL-MM' | 'AL-AM';

export interface FlapLayerInput {
  /** Metric per FFN channel. */
  mlp: Float64Array;
  /** Squared metric per `o` input feature (groups × featuresPerGroup, group-major); absent for FFN-only scope. */
  attn?: Float64Array;
  groups: number;
  featuresPerGroup: number;
  /** Decoder-linear weights removed with one head group / one FFN channel. */
  groupParams: number;
  channelParams: number;
}

export interface FlapAllocation {
  keepChannels: number[][];
  keepGroups: number[][] | null;
  /** Layers (by module) where the keep-at-least-one guard restored a unit. */
  guarded: { attn: number[]; mlp: number[] };
}

export interface FlapAllocateOptions {
  structure: FlapStructure;
  sparsity: number;
  removeHeads: number;
  heads: boolean;
}

const all = (n: number) => Array.from({ length: n }, (_, i) => i);

function groupSums(f: Float64Array, groups: number, per: number, mean: boolean): Float64Array {
  const s = new Float64Array(groups);
  for (let k = 0; k < groups; k++) {
    for (let d = 0; d < per; d++) s[k] += f[k * per + d];
    if (mean) s[k] /= per;
  }
  return s;
}

/** Keep all but the r lowest scores; refuses to empty the layer. */
function removeLowest(scores: Float64Array, r: number, what: string, layer: number): number[] {
  if (r >= scores.length) throw new ConfigError(`flap: layer ${layer} would lose all ${scores.length} ${what}; lower the sparsity or removeHeads`);
  return keepFromScores(scores, scores.length - r);
}

function channelsToRemove(budget: number, channelParams: number, what: string): number {
  const n = Math.floor(budget / channelParams);
  if (n < 0) throw new ConfigError(`flap: removeHeads removes more parameters than the sparsity target allows (${what})`);
  return n;
}

const layerParams = (l: FlapLayerInput) => l.groups * l.groupParams + l.mlp.length * l.channelParams;

export function allocateFlap(layers: readonly FlapLayerInput[], o: FlapAllocateOptions): FlapAllocation {
  const L = layers.length;
  const p = o.sparsity;
  const guarded = { attn: [] as number[], mlp: [] as number[] };
  if (!o.heads) {
    if (o.structure === 'UL-MM' || o.structure === 'AL-MM') {
      throw new ConfigError(`flap: structure ${o.structure} allocates heads manually; it needs scope 'ffn+heads'`);
    }
    if (o.structure === 'UL-UM') {
      return { keepChannels: layers.map((l, i) => removeLowest(l.mlp, pruneCount(l.mlp.length, p), 'FFN channels', i)), keepGroups: null, guarded };
    }
    // FFN-only AL-AM = the CFSP repository's flap_bias: per-block z-scores, one global threshold.
    const sel = standardizedGlobalKeep(layers.map((l) => l.mlp), p);
    guarded.mlp = sel.guarded;
    return { keepChannels: sel.keep, keepGroups: null, guarded };
  }
  for (const [i, l] of layers.entries()) {
    if (!l.attn || l.attn.length !== l.groups * l.featuresPerGroup) throw new Error(`flap: layer ${i} has no head-feature scores`);
  }
  if (o.structure === 'UL-UM') {
    return {
      keepGroups: layers.map((l, i) => removeLowest(groupSums(l.attn!, l.groups, l.featuresPerGroup, false), pruneCount(l.groups, p), 'head groups', i)),
      keepChannels: layers.map((l, i) => removeLowest(l.mlp, pruneCount(l.mlp.length, p), 'FFN channels', i)),
      guarded,
    };
  }
  if (o.structure === 'UL-MM') {
    const perLayer = Math.floor(o.removeHeads / L);
    const keepGroups = layers.map((l, i) => removeLowest(groupSums(l.attn!, l.groups, l.featuresPerGroup, false), perLayer, 'head groups', i));
    const keepChannels = layers.map((l, i) => {
      const r = channelsToRemove(p * layerParams(l) - perLayer * l.groupParams, l.channelParams, `layer ${i}`);
      return removeLowest(l.mlp, r, 'FFN channels', i);
    });
    return { keepGroups, keepChannels, guarded };
  }
  // Adaptive across layers: z-scores per layer and module.
  const attnZ = layers.map((l) => groupSums(standardize(l.attn!), l.groups, l.featuresPerGroup, true));
  const mlpZ = layers.map((l) => standardize(l.mlp));
  if (o.structure === 'AL-MM') {
    const totalGroups = layers.reduce((a, l) => a + l.groups, 0);
    if (o.removeHeads >= totalGroups) throw new ConfigError(`flap: removeHeads ${o.removeHeads} would remove every one of the ${totalGroups} head groups`);
    const heads = selectGlobal(attnZ, totalGroups - o.removeHeads);
    guarded.attn = heads.guarded;
    const removedHeadParams = layers.reduce((a, l, i) => a + (l.groups - heads.keep[i].length) * l.groupParams, 0);
    const budget = p * layers.reduce((a, l) => a + layerParams(l), 0) - removedHeadParams;
    const totalChannels = layers.reduce((a, l) => a + l.mlp.length, 0);
    const r = channelsToRemove(budget, layers[0].channelParams, 'whole model');
    if (r >= totalChannels) throw new ConfigError('flap: the sparsity target would remove every FFN channel');
    const mlp = selectGlobal(mlpZ, totalChannels - r);
    guarded.mlp = mlp.guarded;
    return { keepGroups: heads.keep, keepChannels: mlp.keep, guarded };
  }
  return allocateAlAm(layers, attnZ, mlpZ, p, guarded);
}

/** AL-AM: one order over head groups (first, layer-major) and channels; parameter-weighted cut. */
function allocateAlAm(layers: readonly FlapLayerInput[], attnZ: Float64Array[], mlpZ: Float64Array[], p: number,
  guarded: FlapAllocation['guarded']): FlapAllocation {
  type Unit = { layer: number; attn: boolean; unit: number; z: number; w: number };
  const units: Unit[] = [];
  layers.forEach((l, i) => attnZ[i].forEach((z, k) => units.push({ layer: i, attn: true, unit: k, z, w: l.groupParams })));
  layers.forEach((l, i) => mlpZ[i].forEach((z, j) => units.push({ layer: i, attn: false, unit: j, z, w: l.channelParams })));
  // Stable sort: equal z keep concatenation order (heads before channels, lower layer first).
  const order = all(units.length).sort((a, b) => (units[b].z - units[a].z) || a - b);
  const total = units.reduce((a, u) => a + u.w, 0);
  const target = total * (1 - p);
  let cum = 0;
  let best = Infinity;
  let cut = 0;
  order.forEach((u, pos) => {
    cum += units[u].w;
    const d = Math.abs(cum - target);
    if (d < best) { best = d; cut = pos; }
  });
  // The reference keeps units strictly above the score at the cut, so the cut unit itself goes.
  const keepGroups: number[][] = layers.map(() => []);
  const keepChannels: number[][] = layers.map(() => []);
  for (let pos = 0; pos < cut; pos++) {
    const u = units[order[pos]];
    (u.attn ? keepGroups : keepChannels)[u.layer].push(u.unit);
  }
  layers.forEach((_, i) => {
    if (keepGroups[i].length === 0) { guarded.attn.push(i); keepGroups[i].push(keepFromScores(attnZ[i], 1)[0]); }
    if (keepChannels[i].length === 0) { guarded.mlp.push(i); keepChannels[i].push(keepFromScores(mlpZ[i], 1)[0]); }
    keepGroups[i].sort((a, b) => a - b);
    keepChannels[i].sort((a, b) => a - b);
  });
  return { keepGroups, keepChannels, guarded };
}
