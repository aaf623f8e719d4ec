/**
 * Importance of coupled structures after LLM-Pruner (saap.md §3; horseee/LLM-Pruner @ 128a07d
 * LLMPruner/pruner/hf_llama_pruner.py `TaylorImportance`, `MagnitudeImportance`): an engine
 * primitive on host arrays, used by `llm-pruner` and `saap`. The groups come from `coupling.ts`.
 *
 * A group family is described by its member linears. In member m, group u owns `per`
 * consecutive slices (rows for axis 'out', columns for axis 'in') starting at u·per; every
 * member covers all groups (rows or cols = groups · per). With g = ∂L/∂W, F = empirical Fisher
 * diagonal and k running over the elements of one slice:
 *   vectorize    |Σ_k g_k w_k|
 *   param_first  Σ_k |g_k w_k|
 *   param_second Σ_k |w_k F_kk w_k|
 *   param_mix    Σ_k |g_k w_k − ½ w_k F_kk w_k|
 *   l1 / l2      Σ_k |w_k|^p           (MagnitudeImportance, no root)
 * Group score: fold each member's `per` slices of a group to the smallest `per` of all members
 * (slice a·min + d adds into position d, as LLM-Pruner's `view(len/min, min).sum(0)`), reduce
 * across members position by position (sum / mean / max), then sum the positions (LLM-Pruner
 * sums the head_dim channels of a head). With `sum` this is the sum of every slice importance
 * of every member of the group.
 */
import type { LinearRole } from '../model/family.ts';
import type { PlanContext } from './method.ts';
import { ffnChannelCoupling, kvGroupCoupling, type Coupling, type CouplingLayout } from './coupling.ts';

export type TaylorVariant = 'vectorize' | 'param_first' | 'param_second' | 'param_mix';
export type SliceImportance = TaylorVariant | 'l1' | 'l2';
export type GroupReduction = 'sum' | 'mean' | 'max';

export interface GroupMember {
  /** Row-major `[rows, cols]`, HF orientation `[out, in]`. */
  weight: Float32Array;
  rows: number;
  cols: number;
  /** ∂L/∂W, same layout (Taylor variants). */
  grad?: Float32Array;
  /** Empirical Fisher diagonal, same layout (param_second, param_mix). */
  fisher?: Float32Array;
  /** 'out': a slice is a row (output unit); 'in': a column (input feature). */
  axis: 'out' | 'in';
  /** Consecutive slices per group. */
  per: number;
}

/** Element salience whose per-slice reduction gives the importance. */
function salience(m: GroupMember, kind: SliceImportance, i: number): number {
  const w = m.weight[i];
  switch (kind) {
    case 'l1': return Math.abs(w);
    case 'l2': return w * w;
    case 'vectorize':
    case 'param_first': return m.grad![i] * w;
    case 'param_second': return w * m.fisher![i] * w;
    case 'param_mix': return m.grad![i] * w - 0.5 * w * m.fisher![i] * w;
  }
}

/** Importance of every slice (row or column) of one member. */
export function sliceImportances(m: GroupMember, kind: SliceImportance): Float64Array {
  const { rows, cols } = m;
  if (m.weight.length !== rows * cols) throw new Error(`member weight has ${m.weight.length} entries, expected ${rows}×${cols}`);
  const needGrad = kind !== 'l1' && kind !== 'l2' && kind !== 'param_second';
  const needFisher = kind === 'param_second' || kind === 'param_mix';
  if (needGrad && m.grad?.length !== m.weight.length) throw new Error(`${kind} importance needs the gradient of every weight`);
  if (needFisher && m.fisher?.length !== m.weight.length) throw new Error(`${kind} importance needs the Fisher diagonal of every weight`);
  const out = new Float64Array(m.axis === 'out' ? rows : cols);
  const signedSum = kind === 'vectorize';
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const s = salience(m, kind, r * cols + c);
      out[m.axis === 'out' ? r : c] += signedSum ? s : Math.abs(s);
    }
  }
  if (signedSum) for (let i = 0; i < out.length; i++) out[i] = Math.abs(out[i]);
  return out;
}

/** Fold, reduce across members, and sum positions (see the module comment). */
export function reduceGroups(members: readonly { scores: Float64Array; per: number }[], groups: number, reduction: GroupReduction): Float64Array {
  if (members.length === 0) throw new Error('reduceGroups: no members');
  const min = Math.min(...members.map((m) => m.per));
  for (const m of members) {
    if (m.scores.length !== groups * m.per) throw new Error(`reduceGroups: member has ${m.scores.length} slices, expected ${groups}×${m.per}`);
    if (m.per % min !== 0) throw new Error(`reduceGroups: ${m.per} slices per group do not fold onto ${min}`);
  }
  const out = new Float64Array(groups);
  const folded = new Float64Array(min);
  for (let u = 0; u < groups; u++) {
    let total = 0;
    for (let d = 0; d < min; d++) {
      let acc = reduction === 'max' ? -Infinity : 0;
      for (const m of members) {
        folded[d] = 0;
        for (let a = 0; a < m.per / min; a++) folded[d] += m.scores[u * m.per + a * min + d];
        acc = reduction === 'max' ? Math.max(acc, folded[d]) : acc + folded[d];
      }
      total += reduction === 'mean' ? acc / members.length : acc;
    }
    out[u] = total;
  }
  return out;
}

/** Group importances of `groups` coupled structures from their member linears. */
export function taylorGroupScores(members: readonly GroupMember[], groups: number, kind: SliceImportance,
  reduction: GroupReduction = 'sum'): Float64Array {
  return reduceGroups(members.map((m) => ({ scores: sliceImportances(m, kind), per: m.per })), groups, reduction);
}

/** A linear in HF orientation `[rows = out, cols = in]`, with its LM-loss gradient when known. */
export interface LinearTaylorInput {
  weight: Float32Array;
  /** Needed by the Taylor variants. */
  grad?: Float32Array;
  /** Empirical Fisher diagonal; needed by `param_second` and `param_mix`. */
  fisher?: Float32Array;
  rows: number;
  cols: number;
}

export type LayerLinears = Partial<Record<LinearRole, LinearTaylorInput>>;

/** Importance of every unit of `coupling` from its member linears. */
export function couplingScores(linears: LayerLinears, coupling: Coupling, kind: SliceImportance,
  reduction: GroupReduction = 'sum'): Float64Array {
  const members = coupling.members.map((m): GroupMember => {
    const l = linears[m.role];
    if (!l) throw new Error(`group importance: no weight for '${m.role}'`);
    return { weight: l.weight, grad: l.grad, fisher: l.fisher, rows: l.rows, cols: l.cols, axis: m.axis, per: m.per };
  });
  return taylorGroupScores(members, coupling.units, kind, reduction);
}

export interface LayerGroupScores {
  /** One score per key/value head group. */
  attn: Float64Array;
  /** One score per FFN channel. */
  mlp: Float64Array;
}

/** Scores of both coupled structures of one layer (KV head groups and FFN channels). */
export function layerGroupScores(linears: LayerLinears, layout: CouplingLayout, kind: SliceImportance,
  reduction: GroupReduction = 'sum'): LayerGroupScores {
  return {
    attn: couplingScores(linears, kvGroupCoupling(layout), kind, reduction),
    mlp: couplingScores(linears, ffnChannelCoupling(layout), kind, reduction),
  };
}

/** Weights of linears `roles` of `layer` (magnitude importances; Taylor ones get gradients through `layerScores`). */
export function linearInputs(ctx: Pick<PlanContext<unknown>, 'weight'>, layer: number, roles: readonly LinearRole[]): LayerLinears {
  const out: LayerLinears = {};
  for (const role of roles) {
    const w = ctx.weight(layer, role);
    out[role] = { weight: w.data, rows: w.rows, cols: w.cols };
  }
  return out;
}
