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

/** A tensor known to be present (shapes were checked by {@link checkTensorShapes}). */
function take(tensors: NamedTensors, name: string): HostTensor {
  return tensors.get(name) as HostTensor;
}

function toTensor1d(t: HostTensor): tf.Tensor1D {
  return tf.tensor1d(t.data);
}

function loadNorm(tensors: NamedTensors, spec: NormSpec | { hfName: string; hasBias: boolean },
  layer: number): NormParams {
  const base = typeof spec.hfName === 'string' ? spec.hfName : spec.hfName(layer);
  const weight = toTensor1d(take(tensors, `${base}.weight`));
  const bias = spec.hasBias ? toTensor1d(take(tensors, `${base}.bias`)) : null;
  return { weight, bias };
}

/** Build device tensors from checkpoint tensors, checking every shape against the config. */
export function paramsFromNamedTensors(config: ModelConfig, tensors: NamedTensors, source: string): ModelParams {
  checkTensorShapes(config, (name) => tensors.get(name)?.shape, source);
  const spec = familySpec(config.family);
  const D = config.hiddenSize;
  // Not a tf.tidy: the returned structure holds nulls, which tidy cannot pass through.
  {
    const embedHost = take(tensors, spec.embedName);
    const embed = tf.tensor2d(embedHost.data, [config.vocabSize, D]);
    const positions = spec.positionsName
      ? tf.tensor2d(take(tensors, spec.positionsName).data, [config.maxPositionEmbeddings + 2, D])
      : null;
    const layers: LayerParams[] = config.layers.map((shape, i) => {
      const linears: Partial<Record<LinearRole, LinearParams>> = {};
      for (const l of spec.linears) {
        const out = l.outDim(shape, config);
        const inn = l.inDim(shape, config);
        const w = take(tensors, `${l.hfName(i)}.weight`);
        const b = tensors.get(`${l.hfName(i)}.bias`) ?? null;
        linears[l.role] = {
          weight: transposed(w.data, out, inn),
          bias: b && !isPaddingBias(config, b.data) ? toTensor1d(b) : null,
        };
      }
      return {
        linears,
        attnNorm: loadNorm(tensors, spec.attnNorm, i),
        mlpNorm: loadNorm(tensors, spec.mlpNorm, i),
      };
    });
    const finalNorm = loadNorm(tensors, { hfName: spec.finalNormName, hasBias: spec.finalNormHasBias }, 0);
    let lmHead: tf.Tensor2D;
    if (config.tieWordEmbeddings) {
      lmHead = tf.transpose(embed);
    } else {
      lmHead = transposed(take(tensors, 'lm_head.weight').data, config.vocabSize, D);
    }
    return { embed, positions, layers, finalNorm, lmHead };
  }
}

/** `[rows, cols]` host data → device tensor `[cols, rows]`. */
function transposed(data: Float32Array, rows: number, cols: number): tf.Tensor2D {
  return tf.tidy(() => tf.transpose(tf.tensor2d(data, [rows, cols])));
}

function host(t: tf.Tensor): HostTensor {
  return { shape: t.shape.slice(), data: t.dataSync() as Float32Array };
}

/** Export to HF names and layouts (linears back to `[out, in]`). */
export function paramsToNamedTensors(config: ModelConfig, params: ModelParams): NamedTensors {
  const spec = familySpec(config.family);
  const out: NamedTensors = new Map();
  const put = (name: string, t: tf.Tensor) => out.set(name, host(t));
  put(spec.embedName, params.embed);
  if (spec.positionsName && params.positions) put(spec.positionsName, params.positions);
  params.layers.forEach((layer, i) => {
    for (const l of spec.linears) {
      const p = layer.linears[l.role];
      if (!p) continue;
      const wt = tf.transpose(p.weight);
      put(`${l.hfName(i)}.weight`, wt);
      wt.dispose();
      if (p.bias) put(`${l.hfName(i)}.bias`, p.bias);
    }
    const norms: [NormSpec, NormParams][] = [[spec.attnNorm, layer.attnNorm], [spec.mlpNorm, layer.mlpNorm]];
    for (const [ns, np] of norms) {
      put(`${ns.hfName(i)}.weight`, np.weight);
      if (np.bias) put(`${ns.hfName(i)}.bias`, np.bias);
    }
  });
  put(`${spec.finalNormName}.weight`, params.finalNorm.weight);
  if (params.finalNorm.bias) put(`${spec.finalNormName}.bias`, params.finalNorm.bias);
  if (!config.tieWordEmbeddings) {
    const head = tf.transpose(params.lmHead);
    put('lm_head.weight', head);
    head.dispose();
  }
  return out;
}

/** Every tensor a model owns, once each (the tied head is a separate transposed copy). */
export function paramTensors(params: ModelParams): tf.Tensor[] {
  const all: tf.Tensor[] = [params.embed, params.lmHead, params.finalNorm.weight];
  if (params.positions) all.push(params.positions);
  if (params.finalNorm.bias) all.push(params.finalNorm.bias);
  for (const layer of params.layers) {
    for (const p of Object.values(layer.linears)) {
      if (!p) continue;
      all.push(p.weight);
      if (p.bias) all.push(p.bias);
    }
    for (const n of [layer.attnNorm, layer.mlpNorm]) {
      all.push(n.weight);
      if (n.bias) all.push(n.bias);
    }
  }
  return all;
}

export function disposeParams(params: ModelParams): void {
  for (const t of paramTensors(params)) if (!t.isDisposed) t.dispose();
}
