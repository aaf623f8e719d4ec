/** Greedy decoding by re-running the whole sequence each step (no cache): the golden definition. */
import * as tf from '@tensorflow/tfjs';
import type { CausalLM } from '../src/model/causal-lm.ts';

export function greedyNoCache(model: CausalLM, prompt: readonly number[], steps: number): number[] {
  const ids = [...prompt];
  const out: number[] = [];
  for (let s = 0; s < steps; s++) {
    const next = tf.tidy(() => {
      const logits = model.forward([ids]);
      return tf.argMax(logits.slice([ids.length - 1, 0], [1, -1]), -1);
    });
    const id = next.dataSync()[0];
    next.dispose();
    ids.push(id);
    out.push(id);
  }
  return out;
}
