/**
 * Model configuration with per-layer shapes.
 *
 * Structured pruning makes layers differ in head count, key/value head count and FFN width,
 * so these live per layer. `hfConfig` keeps the original `config.json` so that keys PruneLab
 * does not interpret survive a load → save round trip.
 */
export type Family = 'llama' | 'opt';

export interface LayerShape {
  /** Query heads. */
  numHeads: number;
  /** Key/value heads (GQA: numHeads is a multiple of numKvHeads). */
  numKvHeads: number;
  /** FFN width (LLaMA: gate/up rows; OPT: fc1 rows). */
  intermediateSize: number;
}

export type RopeLayout = 'half' | 'interleaved';

export interface ModelConfig {
  family: Family;
  vocabSize: number;
  hiddenSize: number;
  headDim: number;
  numLayers: number;
  layers: LayerShape[];
  maxPositionEmbeddings: number;
  tieWordEmbeddings: boolean;
  bosTokenId: number | null;
  eosTokenId: number | null;
  /** LLaMA: RMSNorm epsilon; OPT: LayerNorm epsilon. */
  normEps: number;
  /** LLaMA only. */
  ropeTheta: number;
  /** LLaMA only: HF checkpoints use `half` (rotate_half); Meta/llama2.c use `interleaved`. */
  ropeLayout: RopeLayout;
  /** Original config.json (or a synthesised one), kept for round trips. */
  hfConfig: Record<string, unknown>;
}

/** Build a config with the same shape in every layer. */
export function uniformLayers(numLayers: number, shape: LayerShape): LayerShape[] {
  return Array.from({ length: numLayers }, () => ({ ...shape }));
}

export function layersAreUniform(layers: readonly LayerShape[]): boolean {
  const [first] = layers;
  return layers.every(
    (l) =>
      l.numHeads === first.numHeads &&
      l.numKvHeads === first.numKvHeads &&
      l.intermediateSize === first.intermediateSize,
  );
}

export function cloneConfig(config: ModelConfig): ModelConfig {
  return {
    ...config,
    layers: config.layers.map((l) => ({ ...l })),
    hfConfig: structuredClone(config.hfConfig),
  };
}
