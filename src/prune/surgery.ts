/**
 * Shared structural surgery, driven by the layer's coupled structures (`coupling.ts`): physically
 * remove FFN channels and whole key/value head groups (with their query heads and the matching
 * `o` columns), and add bias compensation. Shapes in the config are updated with the weights.
 */
import * as tf from '@tensorflow/tfjs';
import type { CausalLM } from '../model/causal-lm.ts';
import type { LinearRole } from '../model/family.ts';
import { ConfigError } from '../util/errors.ts';
import { couplingLayout, ffnChannelCoupling, kvGroupCoupling, unitSlices, type Coupling } from './coupling.ts';

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

/** Keep only units `keep` of a coupled structure: the matching rows/columns of every member. */
function keepUnits(model: CausalLM, layer: number, coupling: Coupling, keep: readonly number[]): void {
  const byPer = new Map<number, tf.Tensor1D>();
  for (const m of coupling.members) {
    let idx = byPer.get(m.per);
    if (!idx) {
      idx = tf.tensor1d(Int32Array.from(unitSlices(keep, m.per)), 'int32');
      byPer.set(m.per, idx);
    }
    if (m.axis === 'out') keepOutputs(model, layer, m.role, idx);
    else keepInputs(model, layer, m.role, idx);
  }
  tf.dispose([...byPer.values()]);
}

export function removeFfnChannels(model: CausalLM, layer: number, keep: readonly number[]): void {
  const shape = model.config.layers[layer];
  checkKeep(keep, shape.intermediateSize, 'FFN channel', layer);
  if (keep.length === shape.intermediateSize) return;
  keepUnits(model, layer, ffnChannelCoupling(couplingLayout(model, layer)), keep);
  shape.intermediateSize = keep.length;
}

export function removeKvGroups(model: CausalLM, layer: number, keepGroups: readonly number[]): void {
  const shape = model.config.layers[layer];
  checkKeep(keepGroups, shape.numKvHeads, 'key/value head group', layer);
  if (keepGroups.length === shape.numKvHeads) return;
  const g = shape.numHeads / shape.numKvHeads;
  keepUnits(model, layer, kvGroupCoupling(couplingLayout(model, layer)), keepGroups);
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
