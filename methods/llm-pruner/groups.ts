/**
 * LLM-Pruner's block-wise groups of one decoder layer, built from the family's declared coupled
 * structures instead of a traced dependency graph (saap.md §2): a KV head group (the query heads
 * sharing one key/value head: q rows, k and v rows, o columns) and an FFN channel (gate/up rows,
 * down column; OPT fc1 row, fc2 column).
 */
import type { LinearGradient, PlanContext } from '../../src/prune/method.ts';
import type { LinearRole } from '../../src/model/family.ts';
import type { GroupMember } from './taylor.ts';

export type Module = 'attn' | 'mlp';

export function groupMembers<O>(ctx: PlanContext<O>, layer: number, module: Module): { members: GroupMember[]; groups: number } {
  const { model, weight, gradients } = ctx;
  const shape = model.config.layers[layer];
  const hd = model.config.headDim;
  const g = shape.numHeads / shape.numKvHeads;
  const member = (role: LinearRole, axis: 'out' | 'in', per: number): GroupMember => {
    const w = weight(layer, role);
    const gr: LinearGradient | undefined = gradients?.[layer]?.[role];
    return { weight: w.data, rows: w.rows, cols: w.cols, grad: gr?.grad, fisher: gr?.fisher, axis, per };
  };
  if (module === 'attn') {
    const { query, keyValue, inputsOf } = model.spec.kvGroup;
    return {
      groups: shape.numKvHeads,
      members: [member(query, 'out', g * hd), ...keyValue.map((r) => member(r, 'out', hd)), member(inputsOf, 'in', g * hd)],
    };
  }
  const { outputsOf, inputsOf } = model.spec.ffnChannel;
  return { groups: shape.intermediateSize, members: [...outputsOf.map((r) => member(r, 'out', 1)), member(inputsOf, 'in', 1)] };
}

/**
 * Units removed by `prune_local` at ratio r: the root has C = units · width channels
 * (width = g·head_dim for a head group, 1 for an FFN channel); n = C − int(C·(1 − r)) channels
 * go, i.e. ⌊n / width⌋ whole units.
 */
export function unitsToRemove(units: number, width: number, ratio: number): number {
  const c = units * width;
  return Math.floor((c - Math.floor(c * (1 - ratio))) / width);
}
