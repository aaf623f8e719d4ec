/**
 * The report of one pruning call: what was actually removed, measured on the pruned model
 * (zeros counted in the weights, parameters recounted from the shapes), with denominators named.
 */
import type { CausalLM } from '../model/causal-lm.ts';
import type { LayerShape } from '../model/config.ts';
import type { LinearRole } from '../model/family.ts';
import { countParameters, type ParameterCount } from '../model/count.ts';
import type { MethodReport, PruneTarget, TargetScope } from './method.ts';
import type { BudgetRecord } from './budget.ts';
import { nativeKernels } from '../linalg/native.ts';

export interface SparsityByType {
  /** Zeros / entries of that matrix type over all layers (entries counted in the pruned shapes). */
  [role: string]: { zeros: number; total: number; sparsity: number };
}

export interface PruneReport<R extends MethodReport = MethodReport> {
  method: string;
  options: Record<string, unknown>;
  target: { sparsity: number; pattern: string };
  mode: string;
  /** Zero entries in decoder linears (unstructured/N:M), per matrix type and overall. */
  zeros: { byType: SparsityByType; overall: { zeros: number; total: number; sparsity: number }; denominator: string };
  parameters: { before: ParameterCount; after: ParameterCount };
  /** Removed fraction of: decoder-linear weights (as stored), FFN channels, all parameters. */
  removed: { decoderLinears: number; ffnChannels: number; allParameters: number };
  /** 1 − (non-zero decoder-linear weights after / decoder-linear weights before). */
  effectiveSparsity: number;
  /**
   * Fractions removed, zeros counted as removed (so unstructured, N:M and structured results
   * share one axis): of all parameters, of decoder-layer parameters, and of the method's own scope.
   */
  measured: { allParameters: number; decoderLayers: number; scope: { name: TargetScope; fraction: number } | null };
  layers: { before: LayerShape; after: LayerShape; detail: Record<string, unknown> }[];
  methodReport?: R;
  /** A budgeted run (structured): the budget, the method's sparsity it came to, the planned fraction. */
  budget?: BudgetRecord;
  calibration: object | null;
  seconds: number;
  peakTensorBytes: number;
  /** Threads the layer-wise calibration passes ran on (after the automatic choice, if any); absent without passes. */
  threadsUsed?: number;
}

export function countZeros(model: CausalLM): { byType: SparsityByType; overall: { zeros: number; total: number; sparsity: number } } {
  const byType: SparsityByType = {};
  let zeros = 0;
  let total = 0;
  /**
   * Zeros and size of one linear, counted on the host: streamed weights there as they are (no
   * upload), others read back (order does not matter for a count); on the addon's threads where
   * there is one (equal + cast + sum on the wasm backend ran on one thread: 0.25–0.3 s of a
   * 2-thread Wanda prune of the bench's 512×8 model).
   */
  const native = nativeKernels()?.countZeros;
  const count = (i: number, role: LinearRole): [number, number] => {
    const host = model.weights.hostWeight(i, role);
    const data = host ? host.data : model.withParts([i], () => model.linearParams(i, role).weight.dataSync());
    if (native && data instanceof Float32Array) return [native(data), data.length];
    let n = 0;
    for (let k = 0; k < data.length; k++) n += Number(data[k] === 0);
    return [n, data.length];
  };
  model.config.layers.forEach((_, i) => {
    for (const l of model.spec.linears) {
      const [n, size] = count(i, l.role);
      const e = (byType[l.role] ??= { zeros: 0, total: 0, sparsity: 0 });
      e.zeros += n;
      e.total += size;
      zeros += n;
      total += size;
    }
  });
  for (const e of Object.values(byType)) e.sparsity = e.total ? e.zeros / e.total : 0;
  return { byType, overall: { zeros, total, sparsity: total ? zeros / total : 0 } };
}

export function buildReport<R extends MethodReport>(model: CausalLM, r: {
  method: string; options: Record<string, unknown>; target: PruneTarget; mode: string; calibration: object | null;
  paramsBefore: ParameterCount; shapesBefore: LayerShape[]; perLayer: Record<string, unknown>[];
  methodReport?: R; seconds: number; peakTensorBytes: number; targetScope?: TargetScope; budget?: BudgetRecord; threadsUsed?: number;
}): PruneReport<R> {
  const after = countParameters(model);
  const z = countZeros(model);
  const ffnBefore = r.shapesBefore.reduce((a, s) => a + s.intermediateSize, 0);
  const ffnAfter = model.config.layers.reduce((a, s) => a + s.intermediateSize, 0);
  const pattern = r.target.pattern.kind === 'nm' ? `${r.target.pattern.n}:${r.target.pattern.m}` : 'unstructured';
  const zeros = z.overall.zeros;
  const b = r.paramsBefore;
  const removedOf = (before: number, after: number) => 1 - (after - zeros) / before;
  const scopeFraction: Record<TargetScope, number> = {
    'decoder-linears': removedOf(b.decoderLinears, after.decoderLinears),
    'ffn-channels': 1 - ffnAfter / ffnBefore,
    'decoder-layers': removedOf(b.decoderLayers, after.decoderLayers),
    'all-parameters': removedOf(b.total, after.total),
  };
  return {
    method: r.method, options: r.options, target: { sparsity: r.target.sparsity, pattern }, mode: r.mode,
    zeros: { ...z, denominator: 'decoder-block linear weights (embeddings, norms and lm_head excluded)' },
    parameters: { before: r.paramsBefore, after },
    removed: {
      decoderLinears: 1 - after.decoderLinears / r.paramsBefore.decoderLinears,
      ffnChannels: 1 - ffnAfter / ffnBefore,
      allParameters: 1 - after.total / r.paramsBefore.total,
    },
    effectiveSparsity: 1 - (after.decoderLinears - z.overall.zeros) / r.paramsBefore.decoderLinears,
    measured: {
      allParameters: scopeFraction['all-parameters'],
      decoderLayers: scopeFraction['decoder-layers'],
      scope: r.targetScope ? { name: r.targetScope, fraction: scopeFraction[r.targetScope] } : null,
    },
    layers: r.shapesBefore.map((before, i) => ({ before, after: { ...model.config.layers[i] }, detail: r.perLayer[i] ?? {} })),
    methodReport: r.methodReport,
    ...(r.budget ? { budget: r.budget } : {}),
    calibration: r.calibration,
    seconds: r.seconds,
    peakTensorBytes: r.peakTensorBytes,
    ...(r.threadsUsed !== undefined ? { threadsUsed: r.threadsUsed } : {}),
  };
}
