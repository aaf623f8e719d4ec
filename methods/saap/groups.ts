/**
 * Taylor importances of SAAP's coupled groups (saap.md §2–§3): the group layout of one layer
 * (from the family's declared coupled structures) handed to LLM-Pruner's pure
 * `taylorGroupScores`, so both methods score slices with the same code.
 */
import type { LinearRole } from '../../src/model/family.ts';
import { taylorGroupScores, type GroupMember, type GroupReduction } from '../llm-pruner/taylor.ts';

export type TaylorEstimator = 'vectorize' | 'param_first' | 'param_mix';

/** A linear in HF orientation `[rows = out, cols = in]`, with its LM-loss gradient. */
export interface LinearTaylorInput {
  weight: Float32Array;
  grad: Float32Array;
  /** Empirical Fisher diagonal; needed by `param_mix`. */
  fisher?: Float32Array;
  rows: number;
  cols: number;
}

/** Roles and shapes of one decoder layer's coupled structures (from the family spec). */
export interface LayerGroupLayout {
  ffn: { outputsOf: readonly LinearRole[]; inputsOf: LinearRole };
  kv: { query: LinearRole; keyValue: readonly LinearRole[]; inputsOf: LinearRole };
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  intermediateSize: number;
}

export interface LayerGroupScores {
  /** One score per key/value head group. */
  attn: Float64Array;
  /** One score per FFN channel. */
  mlp: Float64Array;
}

function member(linears: Partial<Record<LinearRole, LinearTaylorInput>>, role: LinearRole, axis: 'out' | 'in', per: number): GroupMember {
  const l = linears[role];
  if (!l) throw new Error(`saap group importance: no weight/gradient for '${role}'`);
  return { weight: l.weight, grad: l.grad, fisher: l.fisher, rows: l.rows, cols: l.cols, axis, per };
}

/**
 * Group scores of one layer. KV group k = the g·hd query rows of heads [k·g, (k+1)·g), rows
 * [k·hd, (k+1)·hd) of each key/value linear, and the g·hd `o` columns of those query heads
 * (saap.md §2, GQA rule); FFN channel c = row c of each up-projection and column c of down.
 */
export function layerGroupScores(linears: Partial<Record<LinearRole, LinearTaylorInput>>, layout: LayerGroupLayout,
  est: TaylorEstimator, reduction: GroupReduction = 'sum'): LayerGroupScores {
  const { numHeads, numKvHeads, headDim: hd, intermediateSize } = layout;
  if (numHeads % numKvHeads !== 0) throw new Error(`saap group importance: ${numHeads} heads not divisible by ${numKvHeads} KV heads`);
  const g = numHeads / numKvHeads;
  const kv = [
    member(linears, layout.kv.query, 'out', g * hd),
    ...layout.kv.keyValue.map((r) => member(linears, r, 'out', hd)),
    member(linears, layout.kv.inputsOf, 'in', g * hd),
  ];
  const ffn = [
    ...layout.ffn.outputsOf.map((r) => member(linears, r, 'out', 1)),
    member(linears, layout.ffn.inputsOf, 'in', 1),
  ];
  return {
    attn: taylorGroupScores(kv, numKvHeads, est, reduction),
    mlp: taylorGroupScores(ffn, intermediateSize, est, reduction),
  };
}
