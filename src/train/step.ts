/** The loss and gradients of one optimiser step, shared by every trainer. */
import * as tf from '@tensorflow/tfjs';
import type { CausalLM } from '../model/causal-lm.ts';
import { trainingNllSum, type LossMask } from '../model/loss.ts';

/**
 * One micro-batch: equal-length windows, or padded sequences with a loss mask (see `LossMask`:
 * which tokens are predicted; padding and, for instruction data, prompt tokens are not).
 */
export type TrainBatch = number[][] | { ids: number[][]; lossMask: LossMask };

/**
 * Mean next-token NLL of `accum` micro-batches (each drawn by `nextBatch` just before its pass)
 * and its gradients for `vars`, summed over the micro-batches: each micro-batch's token mean is
 * divided by `accum`, so the step's loss is the mean of the micro-batch means (a micro-batch
 * without any predicted token adds 0). `tokens`: predicted tokens of the step. The caller
 * disposes the gradients.
 */
export function lossAndGradients(model: CausalLM, vars: readonly tf.Variable[], accum: number,
  nextBatch: () => TrainBatch): { loss: number; grads: tf.Tensor[]; tokens: number } {
  let grads: tf.Tensor[] | null = null;
  let loss = 0;
  let tokens = 0;
  for (let k = 0; k < accum; k++) {
    const batch = nextBatch();
    const [ids, mask] = Array.isArray(batch) ? [batch, undefined] : [batch.ids, batch.lossMask];
    const { value, grads: g } = tf.variableGrads(() => {
      const logits = model.forward(ids);
      const { sum, count } = trainingNllSum(logits, ids, mask);
      tokens += count;
      return tf.div(sum, Math.max(1, count) * accum) as tf.Scalar;
    }, vars as tf.Variable[]);
    loss += value.dataSync()[0];
    value.dispose();
    const gl = vars.map((v) => g[v.name]);
    if (grads === null) {
      grads = gl;
    } else {
      const prev: tf.Tensor[] = grads;
      grads = prev.map((p, i) => tf.add(p, gl[i]));
      tf.dispose([...prev, ...gl]);
    }
  }
  if (grads === null) throw new RangeError(`gradient accumulation needs at least one micro-batch (got ${accum})`);
  return { loss, grads, tokens };
}
