/**
 * Gradients of the causal-LM loss with respect to every decoder linear weight (HF orientation),
 * and optionally the empirical Fisher diagonal (per-sample squared gradients, averaged), as
 * LLM-Pruner's Taylor importances use them.
 */
import * as tf from '@tensorflow/tfjs';
import type { CausalLM } from '../model/causal-lm.ts';
import type { LinearRole } from '../model/family.ts';
import { trainingNllSum } from '../model/loss.ts';
import { withFastMatMulGradient } from '../model/matmul-grad.ts';
import type { GradientRequest, LinearGradient } from './method.ts';
import { assertResident } from '../model/param-provider.ts';

type Slot = { layer: number; role: LinearRole; variable: tf.Variable; original: tf.Tensor2D };

/** Mean next-token NLL; `trainingNllSum` because gather's gradient has no WebAssembly kernel. */
function lossOf(model: CausalLM, rows: number[][]): tf.Scalar {
  const logits = model.forward(rows);
  const { sum, count } = trainingNllSum(logits, rows);
  return tf.div(sum, count) as tf.Scalar;
}

/** Weight gradients (`[in, out]` device layout) of f, summed into host accumulators `[out, in]`. */
function accumulate(slots: Slot[], f: () => tf.Scalar, into: Float32Array[], square: boolean, scale: number): void {
  const { grads, value } = tf.variableGrads(f, slots.map((s) => s.variable));
  value.dispose();
  slots.forEach((s, k) => {
    const g = tf.tidy(() => {
      const t = tf.transpose(grads[s.variable.name]);
      return square ? tf.square(t) : t;
    });
    const data = g.dataSync();
    const acc = into[k];
    for (let i = 0; i < data.length; i++) acc[i] += data[i] * scale;
    g.dispose();
  });
  tf.dispose(Object.values(grads));
}

export function linearGradients(model: CausalLM, windows: number[][], req: GradientRequest, batchSize = 8): Partial<Record<LinearRole, LinearGradient>>[] {
  assertResident(model.mode, 'a method with whole-model gradients (SAAP, LLM-Pruner)');
  return withFastMatMulGradient(() => gradientsImpl(model, windows, req, batchSize));
}

function gradientsImpl(model: CausalLM, windows: number[][], req: GradientRequest, batchSize: number): Partial<Record<LinearRole, LinearGradient>>[] {
  const slots: Slot[] = [];
  model.config.layers.forEach((_, layer) => {
    for (const l of model.spec.linears) {
      const p = model.linearParams(layer, l.role);
      const variable = tf.variable(p.weight, true, `grad-${layer}-${l.role}-${Math.random().toString(36).slice(2)}`);
      slots.push({ layer, role: l.role, variable, original: p.weight });
      p.weight = variable as unknown as tf.Tensor2D;
    }
  });
  const grads = slots.map((s) => new Float32Array(s.original.size));
  const fisher = req.fisher ? slots.map((s) => new Float32Array(s.original.size)) : null;
  try {
    // Mean loss over all calibration tokens = Σ_batches (tokens_b / tokens) · mean loss of batch b.
    const total = windows.length * (windows[0].length - 1);
    for (let i = 0; i < windows.length; i += batchSize) {
      const rows = windows.slice(i, i + batchSize);
      accumulate(slots, () => lossOf(model, rows), grads, false, (rows.length * (rows[0].length - 1)) / total);
    }
    if (fisher) {
      for (const row of windows) accumulate(slots, () => lossOf(model, [row]), fisher, true, 1 / windows.length);
    }
  } finally {
    for (const s of slots) {
      model.linearParams(s.layer, s.role).weight = s.original;
      s.variable.dispose();
    }
  }
  const out: Partial<Record<LinearRole, LinearGradient>>[] = model.config.layers.map(() => ({}));
  slots.forEach((s, k) => {
    out[s.layer][s.role] = fisher ? { grad: grads[k], fisher: fisher[k] } : { grad: grads[k] };
  });
  return out;
}
