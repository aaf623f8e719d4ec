/** The loss and gradients of one optimiser step, shared by every trainer. */
import * as tf from '@tensorflow/tfjs';
import type { CausalLM } from '../model/causal-lm.ts';
import { trainingNllSum } from '../model/loss.ts';

/**
 * Mean next-token NLL of `accum` micro-batches (each drawn by `nextBatch` just before its pass)
 * and its gradients for `vars`, summed over the micro-batches: each micro-batch's token mean is
 * divided by `accum`, so the step's loss is the mean of the micro-batch means. The caller
 * disposes the gradients.
 */
export function lossAndGradients(model: CausalLM, vars: readonly tf.Variable[], accum: number,
  nextBatch: () => number[][]): { loss: number; grads: tf.Tensor[] } {
  let grads: tf.Tensor[] | null = null;
  let loss = 0;
  for (let k = 0; k < accum; k++) {
    const batch = nextBatch();
    const { value, grads: g } = tf.variableGrads(() => {
      const logits = model.forward(batch);
      const { sum, count } = trainingNllSum(logits, batch);
      return tf.div(sum, count * accum) as tf.Scalar;
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
  return { loss, grads };
}
