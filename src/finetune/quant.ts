/**
 * Group-wise asymmetric fake quantisation (group fine-tuning on a quantised base, QA-LoRA reading).
 *
 * Our linear weights are stored transposed, `[in, out]`, so "output row o, input group g" of the
 * paper's `[out, in]` matrix is the block of `groupSize` consecutive *rows* g·gs … (g+1)·gs−1 of
 * column o here. Per (g, o):
 *
 *   α = (max − min)/(2^bits − 1),  β = min,  q = clamp(round((w − β)/α), 0, 2^bits − 1),  Ŵ = α·q + β.
 *
 * A constant group (max = min) has α = 0: it is stored as q = 0, Ŵ = β exactly.
 *
 * The QA-LoRA adapter acts on the input average-pooled within each group, so its update is
 * constant over a group; merging it is the exact update β_{g,o} += s·(A·B)_{g,o}/groupSize
 * (A: `[in/groupSize, r]`, B: `[r, out]` in our layout).
 */
import * as tf from '@tensorflow/tfjs';
import { ConfigError } from '../util/errors.ts';

export interface GroupQuantOptions {
  /** Bits per weight, 2…8 (default 4). */
  bits?: number;
  /** Consecutive inputs sharing α/β (default 32); must divide the input width. */
  groupSize?: number;
}

export const DEFAULT_QUANT_BITS = 4;
export const DEFAULT_QUANT_GROUP_SIZE = 32;

/** A quantised `[in, out]` weight: codes plus per-(group, output) scale and offset. */
export interface GroupQuantized {
  bits: number;
  groupSize: number;
  inFeatures: number;
  outFeatures: number;
  /** Codes in the `[in, out]` layout, row-major (`in·out` entries). */
  q: Uint8Array;
  /** α per (group, output), `[in/groupSize, out]` row-major. */
  alpha: Float32Array;
  /** β per (group, output), `[in/groupSize, out]` row-major. */
  beta: Float32Array;
}

export function resolveQuantOptions(opts: GroupQuantOptions = {}): Required<GroupQuantOptions> {
  const bits = opts.bits ?? DEFAULT_QUANT_BITS;
  const groupSize = opts.groupSize ?? DEFAULT_QUANT_GROUP_SIZE;
  if (!Number.isInteger(bits) || bits < 2 || bits > 8) {
    throw new ConfigError(`quant.bits must be an integer in 2..8, got ${bits}`);
  }
  if (!Number.isInteger(groupSize) || groupSize < 1) {
    throw new ConfigError(`quant.groupSize must be a positive integer, got ${groupSize}`);
  }
  return { bits, groupSize };
}

export function checkGroupDivides(inFeatures: number, groupSize: number, what: string): void {
  if (inFeatures % groupSize !== 0) {
    throw new ConfigError(
      `quant.groupSize ${groupSize} does not divide the input width ${inFeatures} of ${what}; ` +
        `choose a group size that divides every targeted linear's input width (or leave that linear out of the targets)`);
  }
}

/** Quantise an `[in, out]` weight group-wise (round to nearest, half to even as tf.round does). */
export function quantizeGroupwise(w: tf.Tensor2D, opts: GroupQuantOptions = {}, what = 'weight'): GroupQuantized {
  const { bits, groupSize } = resolveQuantOptions(opts);
  const [inF, outF] = w.shape;
  checkGroupDivides(inF, groupSize, what);
  const G = inF / groupSize;
  const levels = 2 ** bits - 1;
  const [q, alpha, beta] = tf.tidy(() => {
    const g3 = w.reshape([G, groupSize, outF]);
    const mn = tf.min(g3, 1); // [G, out]
    const mx = tf.max(g3, 1);
    const a = tf.div(tf.sub(mx, mn), levels);
    // α = 0 only for constant groups; dividing by 1 there gives codes of 0.
    const safe = tf.where(tf.greater(a, 0), a, tf.onesLike(a));
    const codes = tf.clipByValue(tf.round(tf.div(tf.sub(g3, mn.expandDims(1)), safe.expandDims(1))), 0, levels);
    return [codes.reshape([inF, outF]), a, mn];
  });
  const out: GroupQuantized = {
    bits, groupSize, inFeatures: inF, outFeatures: outF,
    q: Uint8Array.from(q.dataSync()),
    alpha: Float32Array.from(alpha.dataSync()),
    beta: Float32Array.from(beta.dataSync()),
  };
  tf.dispose([q, alpha, beta]);
  return out;
}

/** Ŵ = α·q + β as an `[in, out]` tensor. */
export function dequantize(qw: GroupQuantized): tf.Tensor2D {
  return tf.tensor2d(dequantizeHost(qw), [qw.inFeatures, qw.outFeatures]);
}

/** Ŵ = α·q + β on the host (`[in, out]` row-major), computed in float32 like the device would. */
export function dequantizeHost(qw: GroupQuantized): Float32Array {
  const { inFeatures: inF, outFeatures: outF, groupSize } = qw;
  const out = new Float32Array(inF * outF);
  for (let i = 0; i < inF; i++) {
    const gRow = Math.floor(i / groupSize) * outF;
    for (let o = 0; o < outF; o++) {
      out[i * outF + o] = Math.fround(qw.alpha[gRow + o] * qw.q[i * outF + o]) + qw.beta[gRow + o];
    }
  }
  return out;
}

/** Quantise then dequantise: the frozen base group fine-tuning trains against. */
export function fakeQuantize(w: tf.Tensor2D, opts: GroupQuantOptions = {}, what = 'weight'): tf.Tensor2D {
  return dequantize(quantizeGroupwise(w, opts, what));
}

/**
 * The QA-LoRA update per (group, output): s·(A·B)/groupSize, `[in/groupSize, out]`.
 * A: `[in/groupSize, r]` acting on group means, B: `[r, out]`.
 */
export function qaLoraGroupDelta(A: tf.Tensor2D, B: tf.Tensor2D, scale: number, groupSize: number): tf.Tensor2D {
  return tf.tidy(() => tf.mul(tf.matMul(A, B), scale / groupSize) as tf.Tensor2D);
}

/** Exact merge of a QA-LoRA update into the quantised form: β += delta (codes and α unchanged). */
export function mergeIntoBeta(qw: GroupQuantized, delta: Float32Array): GroupQuantized {
  if (delta.length !== qw.beta.length) {
    throw new Error(`mergeIntoBeta: delta has ${delta.length} entries, β has ${qw.beta.length}`);
  }
  const beta = new Float32Array(qw.beta.length);
  for (let k = 0; k < beta.length; k++) beta[k] = qw.beta[k] + delta[k];
  return { ...qw, beta };
}

/** Average-pool `[N, in]` within consecutive groups of `groupSize` inputs → `[N, in/groupSize]`. */
export function poolGroups(x: tf.Tensor2D, groupSize: number): tf.Tensor2D {
  return tf.tidy(() => {
    const [N, inF] = x.shape;
    return tf.mean(x.reshape([N, inF / groupSize, groupSize]), 2) as tf.Tensor2D;
  });
}
