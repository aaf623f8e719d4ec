/**
 * Host access to decoder linears in HF orientation (`[out, in]` row-major), the orientation in
 * which pruning methods are specified. The device keeps `[in, out]`; this is the one place that
 * converts.
 */
import * as tf from '@tensorflow/tfjs';
import type { CausalLM } from '../model/causal-lm.ts';
import type { LinearRole } from '../model/family.ts';

export interface HostLinear {
  data: Float32Array;
  rows: number;
  cols: number;
}

export function readLinear(model: CausalLM, layer: number, role: LinearRole): HostLinear {
  // Streamed weights not on the backend are read from the host as they are: no upload.
  const host = model.weights.hostWeight(layer, role);
  if (host) return { data: host.data, rows: host.shape[0]!, cols: host.shape[1]! };
  return model.withParts([layer], () => {
    const w = model.linearParams(layer, role).weight;
    const [inDim, outDim] = w.shape;
    const t = tf.transpose(w);
    const data = t.dataSync() as Float32Array;
    t.dispose();
    return { data: Float32Array.from(data), rows: outDim, cols: inDim };
  });
}

/** Replace a linear's weight (streamed models: the layer is written back to the host once no one holds it). */
export function writeLinear(model: CausalLM, layer: number, role: LinearRole, data: Float32Array, rows: number, cols: number): void {
  model.withParts([layer], () => {
    const w = tf.tidy(() => tf.transpose(tf.tensor2d(data, [rows, cols])) as tf.Tensor2D);
    model.setLinear(layer, role, w);
  });
}

export function readBias(model: CausalLM, layer: number, role: LinearRole): Float32Array | null {
  return model.withParts([layer], () => {
    const b = model.linearParams(layer, role).bias;
    return b ? Float32Array.from(b.dataSync()) : null;
  });
}
