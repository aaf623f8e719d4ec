/**
 * A model's weights as host copies in SharedArrayBuffers, so one copy serves every worker thread
 * (posting a SharedArrayBuffer shares it, it is not copied); each worker uploads them to its own
 * backend. Exact: the tensors are copied as stored (linears stay `[in, out]`, a tied head is its
 * own tensor), so a rebuilt model computes bit-identically to the original.
 */
import * as tf from '@tensorflow/tfjs';
import { CausalLM } from '../model/causal-lm.ts';
import type { ModelConfig } from '../model/config.ts';
import type { LinearRole } from '../model/family.ts';
import type { LayerParams, LinearParams, ModelParams, NormParams } from '../model/params.ts';

export interface SharedTensor {
  shape: number[];
  /** Backed by a SharedArrayBuffer; read-only by convention. */
  data: Float32Array;
}

interface SharedNorm { weight: SharedTensor; bias: SharedTensor | null }
interface SharedLinear { weight: SharedTensor; bias: SharedTensor | null }

export interface SharedModel {
  config: ModelConfig;
  embed: SharedTensor;
  positions: SharedTensor | null;
  layers: { linears: [LinearRole, SharedLinear][]; attnNorm: SharedNorm; mlpNorm: SharedNorm }[];
  finalNorm: SharedNorm;
  lmHead: SharedTensor;
}

function share(t: tf.Tensor): SharedTensor {
  if (t.dtype !== 'float32') throw new Error(`shared-params: expected float32 weights, got ${t.dtype}`);
  const data = new Float32Array(new SharedArrayBuffer(t.size * 4));
  data.set(t.dataSync() as Float32Array);
  return { shape: t.shape.slice(), data };
}

const shareOpt = (t: tf.Tensor | null): SharedTensor | null => (t ? share(t) : null);
const shareNorm = (n: NormParams): SharedNorm => ({ weight: share(n.weight), bias: shareOpt(n.bias) });

/** Host copies of every weight of `model`, in SharedArrayBuffers. */
export function shareModel(model: CausalLM): SharedModel {
  const p = model.params;
  return {
    config: model.config,
    embed: share(p.embed),
    positions: shareOpt(p.positions),
    layers: p.layers.map((l) => ({
      linears: (Object.entries(l.linears) as [LinearRole, LinearParams][]).map(([role, lp]) => [role, { weight: share(lp.weight), bias: shareOpt(lp.bias) }]),
      attnNorm: shareNorm(l.attnNorm),
      mlpNorm: shareNorm(l.mlpNorm),
    })),
    finalNorm: shareNorm(p.finalNorm),
    lmHead: share(p.lmHead),
  };
}

function upload<R extends tf.Rank>(t: SharedTensor): tf.Tensor<R> {
  return tf.tensor<tf.Rank>(t.data, t.shape, 'float32') as tf.Tensor<R>;
}
const uploadOpt = (t: SharedTensor | null): tf.Tensor1D | null => (t ? upload<tf.Rank.R1>(t) : null);
const uploadNorm = (n: SharedNorm): NormParams => ({ weight: upload<tf.Rank.R1>(n.weight), bias: uploadOpt(n.bias) });

/** The model on the current backend (dispose with `model.dispose()`). */
export function modelFromShared(m: SharedModel): CausalLM {
  const layers: LayerParams[] = m.layers.map((l) => {
    const linears: LayerParams['linears'] = {};
    for (const [role, lp] of l.linears) linears[role] = { weight: upload<tf.Rank.R2>(lp.weight), bias: uploadOpt(lp.bias) };
    return { linears, attnNorm: uploadNorm(l.attnNorm), mlpNorm: uploadNorm(l.mlpNorm) };
  });
  const params: ModelParams = {
    embed: upload<tf.Rank.R2>(m.embed),
    positions: m.positions ? upload<tf.Rank.R2>(m.positions) : null,
    layers,
    finalNorm: uploadNorm(m.finalNorm),
    lmHead: upload<tf.Rank.R2>(m.lmHead),
  };
  return new CausalLM(m.config, params);
}
