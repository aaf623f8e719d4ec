/**
 * Shared structural surgery, driven by the family's declared coupled structures: physically
 * remove FFN channels and whole key/value head groups (with their query heads and the matching
 * `o` columns), and add bias compensation. Shapes in the config are updated with the weights.
 */
import * as tf from '@tensorflow/tfjs';
import type { CausalLM } from '../model/causal-lm.ts';
import type { LinearRole } from '../model/family.ts';
import { ConfigError } from '../util/errors.ts';

function checkKeep(keep: readonly number[], total: number, what: string, layer: number): void {
  if (keep.length === 0) throw new ConfigError(`layer ${layer}: the plan would remove every ${what} (${total}); keep at least one`);
  for (let i = 0; i < keep.length; i++) {
    if (!Number.isInteger(keep[i]) || keep[i] < 0 || keep[i] >= total || (i > 0 && keep[i] <= keep[i - 1])) {
      throw new Error(`layer ${layer}: ${what} indices to keep must be ascending, unique and < ${total}`);
    }
  }
}

/** Keep only some output units (columns of the stored `[in, out]` weight) of a linear. */
function keepOutputs(model: CausalLM, layer: number, role: LinearRole, idx: tf.Tensor1D): void {
  const p = model.linearParams(layer, role);
  const w = tf.gather(p.weight, idx, 1) as tf.Tensor2D;
  const b = p.bias ? (tf.gather(p.bias, idx) as tf.Tensor1D) : null;
  model.setLinear(layer, role, w, b);
}

/** Keep only some input features (rows of the stored weight) of a linear. */
function keepInputs(model: CausalLM, layer: number, role: LinearRole, idx: tf.Tensor1D): void {
  const p = model.linearParams(layer, role);
  model.setLinear(layer, role, tf.gather(p.weight, idx, 0) as tf.Tensor2D);
}

export function removeFfnChannels(model: CausalLM, layer: number, keep: readonly number[]): void {
  const shape = model.config.layers[layer];
  checkKeep(keep, shape.intermediateSize, 'FFN channel', layer);
  if (keep.length === shape.intermediateSize) return;
  const { outputsOf, inputsOf } = model.spec.ffnChannel;
  const idx = tf.tensor1d(Int32Array.from(keep), 'int32');
  for (const role of outputsOf) keepOutputs(model, layer, role, idx);
  keepInputs(model, layer, inputsOf, idx);
  idx.dispose();
  shape.intermediateSize = keep.length;
}

/** Feature indices (within q/o) of the query heads that share key/value heads `groups`. */
export function queryFeaturesOfGroups(groups: readonly number[], queryPerKv: number, headDim: number): number[] {
  const out: number[] = [];
  for (const k of groups) for (let h = k * queryPerKv; h < (k + 1) * queryPerKv; h++) for (let d = 0; d < headDim; d++) out.push(h * headDim + d);
  return out;
}

export function removeKvGroups(model: CausalLM, layer: number, keepGroups: readonly number[]): void {
  const shape = model.config.layers[layer];
  checkKeep(keepGroups, shape.numKvHeads, 'key/value head group', layer);
  if (keepGroups.length === shape.numKvHeads) return;
  const hd = model.config.headDim;
  const g = shape.numHeads / shape.numKvHeads;
  const { query, keyValue, inputsOf } = model.spec.kvGroup;
  const qIdx = tf.tensor1d(Int32Array.from(queryFeaturesOfGroups(keepGroups, g, hd)), 'int32');
  const kvIdx = tf.tensor1d(Int32Array.from(queryFeaturesOfGroups(keepGroups, 1, hd)), 'int32');
  keepOutputs(model, layer, query, qIdx);
  for (const role of keyValue) keepOutputs(model, layer, role, kvIdx);
  keepInputs(model, layer, inputsOf, qIdx);
  tf.dispose([qIdx, kvIdx]);
  shape.numKvHeads = keepGroups.length;
  shape.numHeads = keepGroups.length * g;
}

/** Add `delta` (HF `[out]`) to a linear's bias, creating the bias if the linear had none. */
export function addBias(model: CausalLM, layer: number, role: LinearRole, delta: Float32Array): void {
  const p = model.linearParams(layer, role);
  const out = p.weight.shape[1];
  if (delta.length !== out) throw new Error(`layer ${layer} ${role}: bias delta has ${delta.length} entries, expected ${out}`);
  const d = tf.tensor1d(delta);
  const bias = p.bias ? (tf.add(p.bias, d) as tf.Tensor1D) : d;
  if (p.bias) d.dispose();
  model.setLinear(layer, role, p.weight, bias);
}
