/**
 * A LLaMA-family CausalLM with seeded random weights (normal, std 0.02; norm weights 1), built
 * through the HF tensor names of `src/model/family.ts`, for tests and benchmarks that need a
 * model of a chosen shape. Same options → bit-identical weights.
 */
import { mulberry32 } from '../util/random.ts';
import { CausalLM } from './causal-lm.ts';
import { uniformLayers, type LayerShape, type ModelConfig } from './config.ts';
import { LLAMA } from './family.ts';
import type { NamedTensors } from './tensor-data.ts';

export interface SyntheticLlamaOptions {
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  /** FFN width of every layer (or give `layerShapes`). */
  ffn: number;
  vocab: number;
  seed: number;
  /** Per-layer shapes overriding heads/kvHeads/ffn (structured-pruning-like models). */
  layerShapes?: LayerShape[];
  maxPositions?: number;
  tied?: boolean;
  std?: number;
}

export function syntheticLlamaConfig(o: SyntheticLlamaOptions): ModelConfig {
  if (o.hidden % o.heads !== 0) throw new Error(`hidden ${o.hidden} is not a multiple of heads ${o.heads}`);
  const headDim = o.hidden / o.heads;
  if (headDim % 2 !== 0) throw new Error(`head dim ${headDim} must be even (RoPE)`);
  const layers = o.layerShapes?.map((l) => ({ ...l }))
    ?? uniformLayers(o.layers, { numHeads: o.heads, numKvHeads: o.kvHeads, intermediateSize: o.ffn });
  const maxPos = o.maxPositions ?? 512;
  return {
    family: 'llama',
    vocabSize: o.vocab,
    hiddenSize: o.hidden,
    headDim,
    numLayers: layers.length,
    layers,
    maxPositionEmbeddings: maxPos,
    tieWordEmbeddings: o.tied ?? false,
    bosTokenId: 1,
    eosTokenId: 2,
    normEps: 1e-5,
    ropeTheta: 10000,
    ropeLayout: 'half',
    hfConfig: {
      model_type: 'llama', architectures: ['LlamaForCausalLM'], hidden_size: o.hidden,
      num_hidden_layers: layers.length, num_attention_heads: o.heads, num_key_value_heads: o.kvHeads,
      intermediate_size: o.ffn, vocab_size: o.vocab, max_position_embeddings: maxPos,
      rms_norm_eps: 1e-5, rope_theta: 10000, tie_word_embeddings: o.tied ?? false,
    },
  };
}


/** Named HF tensors (`[out, in]` linears) with seeded normal weights. */
export function syntheticLlamaTensors(config: ModelConfig, seed: number, std = 0.02): NamedTensors {
  const rng = mulberry32(0x9e3779b9 ^ Math.imul(seed | 0, 0x85ebca6b));
  // Box–Muller using both outputs of each pair; a small integer PRNG keeps building models with
  // tens of millions of weights fast (seedrandom's ARC4 takes seconds for that).
  const normal = (n: number): Float32Array => {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i += 2) {
      const r = std * Math.sqrt(-2 * Math.log(1 - rng()));
      const phi = 2 * Math.PI * rng();
      a[i] = r * Math.cos(phi);
      if (i + 1 < n) a[i + 1] = r * Math.sin(phi);
    }
    return a;
  };
  const D = config.hiddenSize;
  const t: NamedTensors = new Map();
  t.set(LLAMA.embedName, { shape: [config.vocabSize, D], data: normal(config.vocabSize * D) });
  config.layers.forEach((shape, i) => {
    for (const l of LLAMA.linears) {
      const out = l.outDim(shape, config);
      const inn = l.inDim(shape, config);
      t.set(`${l.hfName(i)}.weight`, { shape: [out, inn], data: normal(out * inn) });
    }
    t.set(`${LLAMA.attnNorm.hfName(i)}.weight`, { shape: [D], data: new Float32Array(D).fill(1) });
    t.set(`${LLAMA.mlpNorm.hfName(i)}.weight`, { shape: [D], data: new Float32Array(D).fill(1) });
  });
  t.set(`${LLAMA.finalNormName}.weight`, { shape: [D], data: new Float32Array(D).fill(1) });
  if (!config.tieWordEmbeddings) t.set('lm_head.weight', { shape: [config.vocabSize, D], data: normal(config.vocabSize * D) });
  return t;
}

export function buildSyntheticLlama(o: SyntheticLlamaOptions): CausalLM {
  const config = syntheticLlamaConfig(o);
  return CausalLM.fromNamedTensors(config, syntheticLlamaTensors(config, o.seed, o.std ?? 0.02), `synthetic(seed=${o.seed})`);
}
