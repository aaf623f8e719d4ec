/**
 * The one home of a model's weights, and the mapping to and from HF tensor names.
 *
 * Linear weights are kept transposed, `[in, out]`, so every projection is a plain 2-D
 * `matMul(x, W)` — the only fast matMul on the WebAssembly backend. Checkpoints keep the HF
 * `[out, in]` layout; the transposition happens here, on load and on export.
 */
import * as tf from '@tensorflow/tfjs';
import type { ModelConfig } from './config.ts';
import { familySpec, type LinearRole, type NormSpec } from './family.ts';
import type { HostTensor, NamedTensors } from './tensor-data.ts';
import { CheckpointError } from '../util/errors.ts';

export interface LinearParams {
  /** `[in, out]`. */
  weight: tf.Tensor2D;
  bias: tf.Tensor1D | null;
}

export interface NormParams {
  weight: tf.Tensor1D;
  bias: tf.Tensor1D | null;
}

export interface LayerParams {
  linears: Partial<Record<LinearRole, LinearParams>>;
  attnNorm: NormParams;
  mlpNorm: NormParams;
}

export interface ModelParams {
  /** `[vocab, hidden]`. */
  embed: tf.Tensor2D;
  /** OPT learned positions `[maxPos + 2, hidden]`. */
  positions: tf.Tensor2D | null;
  layers: LayerParams[];
  finalNorm: NormParams;
  /** Output head `[hidden, vocab]` (the embedding transposed when tied). */
  lmHead: tf.Tensor2D;
}

/** A tensor a checkpoint of some config holds (or may hold, when not `required`), with its HF shape. */
export interface ExpectedTensor {
  name: string;
  shape: number[];
  required: boolean;
}

/** Which linears the config says must carry a bias (others may still have one, e.g. FLAP's). */
export function requiredBiases(config: ModelConfig): Set<LinearRole> {
  if (config.family === 'opt') return new Set(['q', 'k', 'v', 'o', 'fc1', 'fc2']);
  const roles = new Set<LinearRole>();
  if (config.hfConfig['attention_bias'] === true) ['q', 'k', 'v', 'o'].forEach((r) => roles.add(r as LinearRole));
  if (config.hfConfig['mlp_bias'] === true) ['gate', 'up', 'down'].forEach((r) => roles.add(r as LinearRole));
  return roles;
}

/** Every tensor the model reads from a checkpoint of `config`, in load order. */
export function expectedTensors(config: ModelConfig): ExpectedTensor[] {
  const spec = familySpec(config.family);
  const D = config.hiddenSize;
  const needBias = requiredBiases(config);
  const out: ExpectedTensor[] = [];
  const add = (name: string, shape: number[], required = true) => out.push({ name, shape, required });
  const norm = (base: string, hasBias: boolean) => {
    add(`${base}.weight`, [D]);
    if (hasBias) add(`${base}.bias`, [D]);
  };
  add(spec.embedName, [config.vocabSize, D]);
  if (spec.positionsName) add(spec.positionsName, [config.maxPositionEmbeddings + 2, D]);
  config.layers.forEach((shape, i) => {
    for (const l of spec.linears) {
      const rows = l.outDim(shape, config);
      add(`${l.hfName(i)}.weight`, [rows, l.inDim(shape, config)]);
      add(`${l.hfName(i)}.bias`, [rows], needBias.has(l.role));
    }
    norm(spec.attnNorm.hfName(i), spec.attnNorm.hasBias);
    norm(spec.mlpNorm.hfName(i), spec.mlpNorm.hasBias);
  });
  norm(spec.finalNormName, spec.finalNormHasBias);
  if (!config.tieWordEmbeddings) add('lm_head.weight', [config.vocabSize, D]);
  return out;
}

/**
 * Check a checkpoint's tensor shapes against its config before reading any weight: every
 * required tensor present, every present one of the implied shape. `shapeOf` answers from
 * loaded tensors or from file headers alike.
 */
export function checkTensorShapes(config: ModelConfig, shapeOf: (name: string) => readonly number[] | undefined,
  source: string): void {
  for (const e of expectedTensors(config)) {
    const shape = shapeOf(e.name);
    if (!shape) {
      if (e.required) throw new CheckpointError(`missing tensor '${e.name}'`, source);
      continue;
    }
    if (shape.length !== e.shape.length || shape.some((d, i) => d !== e.shape[i])) {
      throw new CheckpointError(`tensor '${e.name}' has shape [${shape}] but the config implies [${e.shape}]`, source);
    }
  }
}

/**
 * An all-zero LLaMA bias is padding written for HF's module-wide bias switches (see
 * writeHfCheckpoint): the same function as no bias, so it is neither counted nor computed.
 */
export function isPaddingBias(config: ModelConfig, data: Float32Array): boolean {
  return config.family === 'llama' && data.every((x) => x === 0);
}

/** Reads a checkpoint tensor by HF name (from loaded tensors or a host store alike). */
export type TensorGetter = (name: string) => HostTensor | undefined;

/** A tensor known to be present (shapes were checked by {@link checkTensorShapes}). */
function take(get: TensorGetter, name: string): HostTensor {
  return get(name) as HostTensor;
}

function toTensor1d(t: HostTensor): tf.Tensor1D {
  return tf.tensor1d(t.data);
}

function loadNorm(get: TensorGetter, base: string, hasBias: boolean): NormParams {
  const weight = toTensor1d(take(get, `${base}.weight`));
  const bias = hasBias ? toTensor1d(take(get, `${base}.bias`)) : null;
  return { weight, bias };
}

/** The token (and OPT position) embeddings of a model. */
export interface EmbeddingParams {
  embed: tf.Tensor2D;
  positions: tf.Tensor2D | null;
}

/** The final norm and output head of a model. */
export interface HeadParams {
  finalNorm: NormParams;
  lmHead: tf.Tensor2D;
}

export function embeddingFromNamed(config: ModelConfig, get: TensorGetter): EmbeddingParams {
  const spec = familySpec(config.family);
  const D = config.hiddenSize;
  const embed = tf.tensor2d(take(get, spec.embedName).data, [config.vocabSize, D]);
  const positions = spec.positionsName
    ? tf.tensor2d(take(get, spec.positionsName).data, [config.maxPositionEmbeddings + 2, D])
    : null;
  return { embed, positions };
}

/** Final norm and head; a tied head is the transposed embedding (`embed` when it is already on the backend). */
export function headFromNamed(config: ModelConfig, get: TensorGetter, embed?: tf.Tensor2D): HeadParams {
  const spec = familySpec(config.family);
  const finalNorm = loadNorm(get, spec.finalNormName, spec.finalNormHasBias);
  const lmHead = config.tieWordEmbeddings
    ? (embed ? tf.transpose(embed) : transposed(take(get, spec.embedName).data, config.vocabSize, config.hiddenSize))
    : transposed(take(get, 'lm_head.weight').data, config.vocabSize, config.hiddenSize);
  return { finalNorm, lmHead };
}

/** Decoder layer i on the backend, linears transposed to `[in, out]`, padding biases dropped. */
export function layerFromNamed(config: ModelConfig, get: TensorGetter, i: number): LayerParams {
  const spec = familySpec(config.family);
  const shape = config.layers[i];
  const linears: Partial<Record<LinearRole, LinearParams>> = {};
  for (const l of spec.linears) {
    const w = take(get, `${l.hfName(i)}.weight`);
    const b = get(`${l.hfName(i)}.bias`) ?? null;
    linears[l.role] = {
      weight: transposed(w.data, l.outDim(shape, config), l.inDim(shape, config)),
      bias: b && !isPaddingBias(config, b.data) ? toTensor1d(b) : null,
    };
  }
  return {
    linears,
    attnNorm: loadNorm(get, spec.attnNorm.hfName(i), spec.attnNorm.hasBias),
    mlpNorm: loadNorm(get, spec.mlpNorm.hfName(i), spec.mlpNorm.hasBias),
  };
}

/** Build device tensors from checkpoint tensors, checking every shape against the config. */
export function paramsFromNamedTensors(config: ModelConfig, tensors: NamedTensors, source: string): ModelParams {
  checkTensorShapes(config, (name) => tensors.get(name)?.shape, source);
  const get: TensorGetter = (name) => tensors.get(name);
  // Not a tf.tidy: the returned structure holds nulls, which tidy cannot pass through.
  const { embed, positions } = embeddingFromNamed(config, get);
  const layers = config.layers.map((_, i) => layerFromNamed(config, get, i));
  const { finalNorm, lmHead } = headFromNamed(config, get, embed);
  return { embed, positions, layers, finalNorm, lmHead };
}

/** `[rows, cols]` host data → device tensor `[cols, rows]`. */
function transposed(data: Float32Array, rows: number, cols: number): tf.Tensor2D {
  return tf.tidy(() => tf.transpose(tf.tensor2d(data, [rows, cols])));
}

function host(t: tf.Tensor): HostTensor {
  return { shape: t.shape.slice(), data: t.dataSync() as Float32Array };
}

/** Decoder layer i in HF names and layouts (linears back to `[out, in]`), handed to `put`. */
export function layerToNamed(config: ModelConfig, layer: LayerParams, i: number, put: (name: string, t: HostTensor) => void): void {
  const spec = familySpec(config.family);
  for (const l of spec.linears) {
    const p = layer.linears[l.role];
    if (!p) continue;
    const wt = tf.transpose(p.weight);
    put(`${l.hfName(i)}.weight`, host(wt));
    wt.dispose();
    if (p.bias) put(`${l.hfName(i)}.bias`, host(p.bias));
  }
  const norms: [NormSpec, NormParams][] = [[spec.attnNorm, layer.attnNorm], [spec.mlpNorm, layer.mlpNorm]];
  for (const [ns, np] of norms) {
    put(`${ns.hfName(i)}.weight`, host(np.weight));
    if (np.bias) put(`${ns.hfName(i)}.bias`, host(np.bias));
  }
}

/** Export to HF names and layouts (linears back to `[out, in]`). */
export function paramsToNamedTensors(config: ModelConfig, params: ModelParams): NamedTensors {
  const spec = familySpec(config.family);
  const out: NamedTensors = new Map();
  const put = (name: string, t: tf.Tensor) => out.set(name, host(t));
  put(spec.embedName, params.embed);
  if (spec.positionsName && params.positions) put(spec.positionsName, params.positions);
  params.layers.forEach((layer, i) => layerToNamed(config, layer, i, (name, t) => out.set(name, t)));
  put(`${spec.finalNormName}.weight`, params.finalNorm.weight);
  if (params.finalNorm.bias) put(`${spec.finalNormName}.bias`, params.finalNorm.bias);
  if (!config.tieWordEmbeddings) {
    const head = tf.transpose(params.lmHead);
    put('lm_head.weight', head);
    head.dispose();
  }
  return out;
}

/** The tensors of one decoder layer, once each. */
export function layerTensors(layer: LayerParams): tf.Tensor[] {
  const all: tf.Tensor[] = [];
  for (const p of Object.values(layer.linears)) {
    if (!p) continue;
    all.push(p.weight);
    if (p.bias) all.push(p.bias);
  }
  for (const n of [layer.attnNorm, layer.mlpNorm]) {
    all.push(n.weight);
    if (n.bias) all.push(n.bias);
  }
  return all;
}

/** Every tensor a model owns, once each (the tied head is a separate transposed copy). */
export function paramTensors(params: ModelParams): tf.Tensor[] {
  const all: tf.Tensor[] = [params.embed, params.lmHead, params.finalNorm.weight];
  if (params.positions) all.push(params.positions);
  if (params.finalNorm.bias) all.push(params.finalNorm.bias);
  for (const layer of params.layers) all.push(...layerTensors(layer));
  return all;
}

export function disposeParams(params: ModelParams): void {
  for (const t of paramTensors(params)) if (!t.isDisposed) t.dispose();
}
