/**
 * The coupled structures of a decoder layer, from the family's declared coupling
 * (`FamilySpec.kvGroup`, `FamilySpec.ffnChannel`; saap.md §2): which rows and columns of which
 * linears belong to key/value head group u or FFN channel c, and how many parameters one unit
 * holds. Structured methods (importances, budgets) and the surgery that removes units all read
 * it from here. Pure, TensorFlow.js-free.
 *
 * A KV head group u = the g = numHeads/numKvHeads query heads sharing key/value head u: rows
 * [u·g·hd, (u+1)·g·hd) of q, rows [u·hd, (u+1)·hd) of k and v, and the same g·hd columns of o.
 * An FFN channel c = row c of each up-projection (gate, up; OPT fc1) and column c of down (fc2).
 */
import type { ModelConfig } from '../model/config.ts';
import type { FamilySpec, LinearRole } from '../model/family.ts';
import type { ModelView } from '../model/view.ts';
import { ConfigError } from '../util/errors.ts';

/** 'attn': key/value head groups; 'mlp': FFN channels. */
export type CoupledModule = 'attn' | 'mlp';

/**
 * One linear's share of a coupled structure: unit u owns `per` consecutive slices starting at
 * u·per — output rows (`out`, HF `[out, in]` orientation) or input columns (`in`).
 */
export interface CoupledMember {
  role: LinearRole;
  axis: 'out' | 'in';
  per: number;
}

export interface Coupling {
  module: CoupledModule;
  /** Number of units (KV head groups or FFN channels) of the layer. */
  units: number;
  /** Forward order: the producing linears, then the consuming one. */
  members: readonly CoupledMember[];
}

/** What a layer's coupling depends on: the family's coupled roles and the layer's shape. */
export interface CouplingLayout {
  ffn: FamilySpec['ffnChannel'];
  kv: FamilySpec['kvGroup'];
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  intermediateSize: number;
}

/** The layout of `layer` of a model (a `ModelView`, or anything with its spec and config). */
export function couplingLayout(model: { spec: FamilySpec; config: Readonly<ModelConfig> }, layer: number): CouplingLayout {
  const s = model.config.layers[layer];
  if (!s) throw new ConfigError(`layer ${layer} does not exist (the model has ${model.config.layers.length} layers)`);
  return {
    ffn: model.spec.ffnChannel, kv: model.spec.kvGroup, numHeads: s.numHeads, numKvHeads: s.numKvHeads,
    headDim: model.config.headDim, intermediateSize: s.intermediateSize,
  };
}

/** Query heads per key/value head; refuses a layer whose head counts do not divide. */
export function queryPerKv(layout: CouplingLayout): number {
  const { numHeads, numKvHeads } = layout;
  if (!(numKvHeads > 0) || numHeads % numKvHeads !== 0) {
    throw new ConfigError(`${numHeads} query heads are not a whole multiple of ${numKvHeads} key/value heads`);
  }
  return numHeads / numKvHeads;
}

export function kvGroupCoupling(layout: CouplingLayout): Coupling {
  const g = queryPerKv(layout);
  const hd = layout.headDim;
  const { query, keyValue, inputsOf } = layout.kv;
  return {
    module: 'attn',
    units: layout.numKvHeads,
    members: [
      { role: query, axis: 'out', per: g * hd },
      ...keyValue.map((role): CoupledMember => ({ role, axis: 'out', per: hd })),
      { role: inputsOf, axis: 'in', per: g * hd },
    ],
  };
}

export function ffnChannelCoupling(layout: CouplingLayout): Coupling {
  const { outputsOf, inputsOf } = layout.ffn;
  return {
    module: 'mlp',
    units: layout.intermediateSize,
    members: [...outputsOf.map((role): CoupledMember => ({ role, axis: 'out', per: 1 })), { role: inputsOf, axis: 'in', per: 1 }],
  };
}

export function layerCoupling(layout: CouplingLayout, module: CoupledModule): Coupling {
  return module === 'attn' ? kvGroupCoupling(layout) : ffnChannelCoupling(layout);
}

/** Slice indices owned by `units` when each owns `per` consecutive slices (order of `units`). */
export function unitSlices(units: readonly number[], per: number): number[] {
  const out: number[] = [];
  for (const u of units) for (let d = 0; d < per; d++) out.push(u * per + d);
  return out;
}

/** Feature indices (within q's outputs / o's inputs) of the query heads that share key/value heads `groups`. */
export function queryFeaturesOfGroups(groups: readonly number[], queryPerKvHead: number, headDim: number): number[] {
  return unitSlices(groups, queryPerKvHead * headDim);
}

/**
 * Parameters one unit of `module` holds in `layer`: per member, `per` slices of a row (in-dim
 * weights, plus its bias entry when `biases` and the linear has a bias) or of a column (out-dim
 * weights; a column owns no bias entry). `biases: false` counts weights only.
 */
export function unitParams(model: ModelView, layer: number, module: CoupledModule, opts: { biases: boolean }): number {
  const shape = model.config.layers[layer];
  if (!shape) throw new ConfigError(`layer ${layer} does not exist (the model has ${model.numLayers} layers)`);
  let n = 0;
  for (const m of layerCoupling(couplingLayout(model, layer), module).members) {
    const lin = model.spec.linears.find((l) => l.role === m.role);
    if (!lin) throw new ConfigError(`family ${model.config.family} has no linear '${m.role}'`);
    n += m.axis === 'out'
      ? m.per * (lin.inDim(shape, model.config) + (opts.biases && model.hasBias(layer, m.role) ? 1 : 0))
      : m.per * lin.outDim(shape, model.config);
  }
  return n;
}
