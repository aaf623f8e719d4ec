/**
 * The optimiser of every trainer: AdamW as torch.optim.AdamW computes it, written with tf ops,
 * and gradient clipping by global norm as torch's clip_grad_norm_ does it.
 */
import * as tf from '@tensorflow/tfjs';
import type { NamedTensors } from '../model/tensor-data.ts';
import { hostCopy, restoreVariable } from './checkpoint.ts';

export interface AdamWOptions {
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

/**
 * AdamW for a fixed list of variables (decoupled weight decay, bias-corrected moments):
 * p ← p·(1 − lr·wd) − (lr/bc1)·m / (√v/√bc2 + ε), bc_i = 1 − β_i^t.
 */
export class AdamW {
  readonly m: tf.Variable[];
  readonly v: tf.Variable[];
  /** Updates done so far (t of the bias corrections). */
  t = 0;

  constructor(readonly params: readonly tf.Variable[], readonly opts: AdamWOptions) {
    this.m = params.map((p) => zeroMoment(p));
    this.v = params.map((p) => zeroMoment(p));
  }

  /** One update with gradients in `params` order, each scaled by `gradScale` (clipping). */
  step(grads: readonly tf.Tensor[], lr: number, gradScale = 1): void {
    const { beta1, beta2, eps, weightDecay } = this.opts;
    this.t += 1;
    const bc1 = 1 - beta1 ** this.t;
    const bc2 = 1 - beta2 ** this.t;
    tf.tidy(() => {
      this.params.forEach((p, i) => {
        const g = gradScale !== 1 ? tf.mul(grads[i], gradScale) : grads[i];
        this.m[i].assign(tf.add(tf.mul(this.m[i], beta1), tf.mul(g, 1 - beta1)));
        this.v[i].assign(tf.add(tf.mul(this.v[i], beta2), tf.mul(tf.square(g), 1 - beta2)));
        const denom = tf.add(tf.div(tf.sqrt(this.v[i]), Math.sqrt(bc2)), eps);
        const decayed = weightDecay > 0 ? tf.mul(p, 1 - lr * weightDecay) : p;
        p.assign(tf.sub(decayed, tf.mul(tf.div(this.m[i], denom), lr / bc1)));
      });
    });
  }

  /** Moments by name (`<prefix>adam.m.<i>`, `<prefix>adam.v.<i>`), for checkpoints. */
  toNamedTensors(out: NamedTensors = new Map(), prefix = ''): NamedTensors {
    this.params.forEach((_, i) => {
      out.set(`${prefix}adam.m.${i}`, hostCopy(this.m[i]));
      out.set(`${prefix}adam.v.${i}`, hostCopy(this.v[i]));
    });
    return out;
  }

  /** Restore the moments written by `toNamedTensors` and the step count `t`. */
  loadNamedTensors(tensors: NamedTensors, t: number, source: string, prefix = ''): void {
    this.params.forEach((_, i) => {
      restoreVariable(this.m[i], tensors, `${prefix}adam.m.${i}`, 'optimiser moment', source);
      restoreVariable(this.v[i], tensors, `${prefix}adam.v.${i}`, 'optimiser moment', source);
    });
    this.t = t;
  }

  dispose(): void {
    tf.dispose([...this.m, ...this.v]);
  }
}

function zeroMoment(p: tf.Variable): tf.Variable {
  const z = tf.zerosLike(p);
  const v = tf.variable(z, false);
  z.dispose();
  return v;
}

/** The global L2 norm of all gradients together. */
export function globalNorm(grads: readonly tf.Tensor[]): number {
  const normT = tf.tidy(() => tf.sqrt(tf.addN(grads.map((g) => tf.sum(tf.square(g))))));
  const norm = normT.dataSync()[0];
  normT.dispose();
  return norm;
}

/** The factor clip_grad_norm_ scales gradients by: max_norm/(norm + 1e-6), capped at 1; 0 = no clipping. */
export function clipFactor(gradNorm: number, maxGradNorm: number): number {
  return maxGradNorm > 0 ? Math.min(1, maxGradNorm / (gradNorm + 1e-6)) : 1;
}
