/**
 * Parameter counts by matrix type, computed from the config alone (no device reads), so reports
 * and `inspect` agree with what a checkpoint would hold.
 */
import type { ModelConfig } from './config.ts';
import { familySpec, type LinearRole } from './family.ts';
import type { CausalLM } from './causal-lm.ts';

export interface ParameterCount {
  /** Weights (and biases) per linear role summed over layers, plus embed/positions/norms/lm_head. */
  byType: Record<string, number>;
  /** All decoder-block linear weights (the usual denominator of unstructured sparsity). */
  decoderLinears: number;
  /** Everything inside the decoder blocks: linear weights and biases, per-layer norms. */
  decoderLayers: number;
  total: number;
}

export function countParameters(model: CausalLM): ParameterCount {
  return countParametersOf(model.config, (i, role) => model.weights.hasBias(i, role),
    model.weights.hasPositions() ? model.config.maxPositionEmbeddings + 2 : null);
}

/**
 * The same count from a config and which linears carry a bias — what a checkpoint's headers
 * tell without loading it. `positionRows`: rows of OPT's learned position table (null: none).
 */
export function countParametersOf(config: ModelConfig, hasBias: (layer: number, role: LinearRole) => boolean,
  positionRows: number | null): ParameterCount {
  const spec = familySpec(config.family);
  const byType: Record<string, number> = {};
  const add = (k: string, n: number) => { byType[k] = (byType[k] ?? 0) + n; };
  let decoderLinears = 0;
  let decoderLayers = 0;
  config.layers.forEach((shape, i) => {
    for (const l of spec.linears) {
      const w = l.inDim(shape, config) * l.outDim(shape, config);
      const withBias = w + (hasBias(i, l.role) ? l.outDim(shape, config) : 0);
      add(l.role, withBias);
      decoderLinears += w;
      decoderLayers += withBias;
    }
    const normSize = spec.attnNorm.hasBias ? 2 * config.hiddenSize : config.hiddenSize;
    add('norms', 2 * normSize);
    decoderLayers += 2 * normSize;
  });
  add('embed', config.vocabSize * config.hiddenSize);
  if (positionRows !== null) add('positions', positionRows * config.hiddenSize);
  add('norms', spec.finalNormHasBias ? 2 * config.hiddenSize : config.hiddenSize);
  if (!config.tieWordEmbeddings) add('lm_head', config.vocabSize * config.hiddenSize);
  const total = Object.values(byType).reduce((a, b) => a + b, 0);
  return { byType, decoderLinears, decoderLayers, total };
}

/** Per-layer shape summary as printed by `inspect`. */
export function describeLayers(config: ModelConfig): { layer: number; heads: number; kvHeads: number; ffn: number }[] {
  return config.layers.map((l, i) => ({ layer: i, heads: l.numHeads, kvHeads: l.numKvHeads, ffn: l.intermediateSize }));
}
