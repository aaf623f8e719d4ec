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

function take(tensors: NamedTensors, name: string, shape: number[], source: string): HostTensor {
  const t = tensors.get(name);
  if (!t) throw new CheckpointError(`missing tensor '${name}'`, source);
  if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
    throw new CheckpointError(
      `tensor '${name}' has shape [${t.shape}] but the config implies [${shape}]`, source);
  }
  return t;
}

function optional(tensors: NamedTensors, name: string, shape: number[], source: string): HostTensor | null {
  return tensors.has(name) ? take(tensors, name, shape, source) : null;
}

function toTensor1d(t: HostTensor): tf.Tensor1D {
  return tf.tensor1d(t.data);
}

function loadNorm(tensors: NamedTensors, spec: NormSpec | { hfName: string; hasBias: boolean },
  layer: number, dim: number, source: string): NormParams {
  const base = typeof spec.hfName === 'string' ? spec.hfName : spec.hfName(layer);
  const weight = toTensor1d(take(tensors, `${base}.weight`, [dim], source));
  const bias = spec.hasBias ? toTensor1d(take(tensors, `${base}.bias`, [dim], source)) : null;
  return { weight, bias };
}

/** Which linears the config says must carry a bias (others may still have one, e.g. FLAP's). */
export function requiredBiases(config: ModelConfig): Set<LinearRole> {
  if (config.family === 'opt') return new Set(['q', 'k', 'v', 'o', 'fc1', 'fc2']);
  const roles = new Set<LinearRole>();
  if (config.hfConfig['attention_bias'] === true) ['q', 'k', 'v', 'o'].forEach((r) => roles.add(r as LinearRole));
  if (config.hfConfig['mlp_bias'] === true) ['gate', 'up', 'down'].forEach((r) => roles.add(r as LinearRole));
  return roles;
}

/** Build device tensors from checkpoint tensors, checking every shape against the config. */
export function paramsFromNamedTensors(config: ModelConfig, tensors: NamedTensors, source: string): ModelParams {
  const spec = familySpec(config.family);
  const D = config.hiddenSize;
  const needBias = requiredBiases(config);
  // Not a tf.tidy: the returned structure holds nulls, which tidy cannot pass through.
  {
    const embedHost = take(tensors, spec.embedName, [config.vocabSize, D], source);
    const embed = tf.tensor2d(embedHost.data, [config.vocabSize, D]);
    const positions = spec.positionsName
      ? tf.tensor2d(take(tensors, spec.positionsName, [config.maxPositionEmbeddings + 2, D], source).data,
        [config.maxPositionEmbeddings + 2, D])
      : null;
    const layers: LayerParams[] = config.layers.map((shape, i) => {
      const linears: Partial<Record<LinearRole, LinearParams>> = {};
      for (const l of spec.linears) {
        const out = l.outDim(shape, config);
        const inn = l.inDim(shape, config);
        const w = take(tensors, `${l.hfName(i)}.weight`, [out, inn], source);
        const b = needBias.has(l.role)
          ? take(tensors, `${l.hfName(i)}.bias`, [out], source)
          : optional(tensors, `${l.hfName(i)}.bias`, [out], source);
        // An all-zero LLaMA bias is padding written for HF's module-wide bias switches (see
        // writeHfCheckpoint): the same function as no bias, so it is not counted or computed.
        const padding = config.family === 'llama' && b !== null && b.data.every((x) => x === 0);
        linears[l.role] = {
          weight: transposed(w.data, out, inn),
          bias: b && !padding ? toTensor1d(b) : null,
        };
      }
      return {
        linears,
        attnNorm: loadNorm(tensors, spec.attnNorm, i, D, source),
        mlpNorm: loadNorm(tensors, spec.mlpNorm, i, D, source),
      };
    });
    const finalNorm = loadNorm(tensors, { hfName: spec.finalNormName, hasBias: spec.finalNormHasBias }, 0, D, source);
    let lmHead: tf.Tensor2D;
    if (config.tieWordEmbeddings) {
      lmHead = tf.transpose(embed);
    } else {
      lmHead = transposed(take(tensors, 'lm_head.weight', [config.vocabSize, D], source).data, config.vocabSize, D);
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
