/**
 * `config.json` ⇄ ModelConfig. Per-layer shapes that differ are stored under `prunelab_layers`
 * (a uniform model keeps only the standard keys, so standard tools still load it).
 */
import type { LayerShape, ModelConfig } from '../model/config.ts';
import { cloneConfig, layersAreUniform, uniformLayers } from '../model/config.ts';
import { CheckpointError } from '../util/errors.ts';

export const SUPPORTED_MODEL_TYPES = ['llama', 'mistral', 'qwen2', 'opt'] as const;

interface StoredLayer {
  num_attention_heads: number;
  num_key_value_heads: number;
  intermediate_size: number;
}

function int(cfg: Record<string, unknown>, key: string, file: string, fallback?: number): number {
  const v = cfg[key] ?? fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) {
    throw new CheckpointError(`'${key}' must be a positive integer (got ${JSON.stringify(cfg[key])})`, file);
  }
  return v;
}

/** hidden_size / num_attention_heads, refused (naming both) when it is not an integer. */
function derivedHeadDim(hiddenSize: number, numHeads: number, file: string, canSet: boolean): number {
  if (hiddenSize % numHeads !== 0) {
    throw new CheckpointError(`hidden_size ${hiddenSize} is not divisible by num_attention_heads ${numHeads}, so the head size is not an integer`
      + (canSet ? ' (a model whose heads are not hidden_size / num_attention_heads wide states head_dim)' : ''), file);
  }
  return hiddenSize / numHeads;
}

function num(cfg: Record<string, unknown>, key: string, fallback: number): number {
  const v = cfg[key];
  return typeof v === 'number' ? v : fallback;
}

function tokenId(v: unknown): number | null {
  if (typeof v === 'number') return v;
  if (Array.isArray(v) && typeof v[0] === 'number') return v[0];
  return null;
}

function perLayer(cfg: Record<string, unknown>, numLayers: number, uniform: LayerShape, file: string): LayerShape[] {
  const stored = cfg['prunelab_layers'];
  if (stored === undefined) return uniformLayers(numLayers, uniform);
  if (!Array.isArray(stored) || stored.length !== numLayers) {
    throw new CheckpointError(`'prunelab_layers' must list ${numLayers} layers`, file);
  }
  return stored.map((s: StoredLayer, i) => {
    const l = {
      numHeads: int(s as unknown as Record<string, unknown>, 'num_attention_heads', `${file} prunelab_layers[${i}]`),
      numKvHeads: int(s as unknown as Record<string, unknown>, 'num_key_value_heads', `${file} prunelab_layers[${i}]`),
      intermediateSize: int(s as unknown as Record<string, unknown>, 'intermediate_size', `${file} prunelab_layers[${i}]`),
    };
    if (l.numHeads % l.numKvHeads !== 0) {
      throw new CheckpointError(`layer ${i}: ${l.numHeads} heads are not divisible by ${l.numKvHeads} key/value heads`, file);
    }
    return l;
  });
}

export function parseHfConfig(raw: Record<string, unknown>, file: string): ModelConfig {
  const modelType = raw['model_type'];
  if (typeof modelType !== 'string' || !(SUPPORTED_MODEL_TYPES as readonly string[]).includes(modelType)) {
    throw new CheckpointError(
      `unknown model_type ${JSON.stringify(modelType)}; supported: ${SUPPORTED_MODEL_TYPES.join(', ')}`, file);
  }
  const vocabSize = int(raw, 'vocab_size', file);
  const hiddenSize = int(raw, 'hidden_size', file);
  const numLayers = int(raw, 'num_hidden_layers', file);
  const numHeads = int(raw, 'num_attention_heads', file);
  if (modelType === 'opt') {
    if (raw['do_layer_norm_before'] === false) {
      throw new CheckpointError('post-LayerNorm OPT (do_layer_norm_before: false, e.g. OPT-350M) is not supported', file);
    }
    const proj = raw['word_embed_proj_dim'];
    if (proj !== undefined && proj !== hiddenSize) {
      throw new CheckpointError(`word_embed_proj_dim ${String(proj)} ≠ hidden_size ${hiddenSize} (project_in/out) is not supported`, file);
    }
    const act = raw['activation_function'] ?? 'relu';
    if (act !== 'relu') throw new CheckpointError(`OPT activation_function '${String(act)}' is not supported (relu only)`, file);
    if (raw['enable_bias'] === false) throw new CheckpointError('OPT with enable_bias: false is not supported', file);
    const shape = { numHeads, numKvHeads: numHeads, intermediateSize: int(raw, 'ffn_dim', file) };
    return {
      family: 'opt', vocabSize, hiddenSize, numLayers,
      headDim: derivedHeadDim(hiddenSize, numHeads, file, false),
      layers: perLayer(raw, numLayers, shape, file),
      maxPositionEmbeddings: int(raw, 'max_position_embeddings', file),
      tieWordEmbeddings: raw['tie_word_embeddings'] !== false,
      bosTokenId: tokenId(raw['bos_token_id']),
      eosTokenId: tokenId(raw['eos_token_id']),
      normEps: 1e-5,
      ropeTheta: 0,
      ropeLayout: 'half',
      hfConfig: structuredClone(raw),
    };
  }
  const act = raw['hidden_act'] ?? 'silu';
  if (act !== 'silu') throw new CheckpointError(`hidden_act '${String(act)}' is not supported (silu only)`, file);
  const scaling = raw['rope_scaling'];
  if (scaling !== undefined && scaling !== null) {
    throw new CheckpointError('rope_scaling is not supported yet (plain RoPE only)', file);
  }
  const numKvHeads = int(raw, 'num_key_value_heads', file, numHeads);
  const headDim = raw['head_dim'] == null ? derivedHeadDim(hiddenSize, numHeads, file, true) : int(raw, 'head_dim', file);
  if (numHeads % numKvHeads !== 0) {
    throw new CheckpointError(`${numHeads} attention heads are not divisible by ${numKvHeads} key/value heads`, file);
  }
  const shape = { numHeads, numKvHeads, intermediateSize: int(raw, 'intermediate_size', file) };
  return {
    family: 'llama', vocabSize, hiddenSize, numLayers, headDim,
    layers: perLayer(raw, numLayers, shape, file),
    maxPositionEmbeddings: int(raw, 'max_position_embeddings', file, 2048),
    tieWordEmbeddings: raw['tie_word_embeddings'] === true,
    bosTokenId: tokenId(raw['bos_token_id']),
    eosTokenId: tokenId(raw['eos_token_id']),
    normEps: num(raw, 'rms_norm_eps', 1e-6),
    ropeTheta: num(raw, 'rope_theta', 10000),
    ropeLayout: 'half',
    hfConfig: structuredClone(raw),
  };
}

/** config.json contents for a model (always the HF half-split RoPE layout). */
export function serializeHfConfig(config: ModelConfig, torchDtype: string, biases: { attention: boolean; mlp: boolean }): Record<string, unknown> {
  const c = cloneConfig(config);
  const out: Record<string, unknown> = { ...c.hfConfig };
  const first = c.layers[0];
  out['vocab_size'] = c.vocabSize;
  out['hidden_size'] = c.hiddenSize;
  out['num_hidden_layers'] = c.numLayers;
  out['num_attention_heads'] = first.numHeads;
  out['tie_word_embeddings'] = c.tieWordEmbeddings;
  out['torch_dtype'] = torchDtype;
  if (c.family === 'opt') {
    out['ffn_dim'] = first.intermediateSize;
  } else {
    out['num_key_value_heads'] = first.numKvHeads;
    out['intermediate_size'] = first.intermediateSize;
    // Explicit whenever it cannot be derived: pruned heads break hidden_size / num_attention_heads.
    if (c.headDim !== c.hiddenSize / first.numHeads || out['head_dim'] !== undefined || !layersAreUniform(c.layers)) out['head_dim'] = c.headDim;
    if (biases.attention) out['attention_bias'] = true;
    if (biases.mlp) out['mlp_bias'] = true;
  }
  if (layersAreUniform(c.layers)) {
    delete out['prunelab_layers'];
  } else {
    out['prunelab_layers'] = c.layers.map((l): StoredLayer => ({
      num_attention_heads: l.numHeads,
      num_key_value_heads: l.numKvHeads,
      intermediate_size: l.intermediateSize,
    }));
  }
  return out;
}
