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
 * Groups: G = ⌈in/groupSize⌉; when the group size does not divide the input width (structured
 * pruning leaves FFN widths arbitrary), the last group holds the remaining in − (G−1)·groupSize
 * inputs, so every linear can be quantised.
 *
 * The QA-LoRA adapter acts on the input average-pooled within each group (the mean over the
 * group's own size n_g), so its update is constant over a group; merging it is the exact update
 * β_{g,o} += s·(A·B)_{g,o}/n_g (A: `[G, r]`, B: `[r, out]` in our layout).
 */
import * as tf from '@tensorflow/tfjs';
import { ConfigError } from '../util/errors.ts';

export interface GroupQuantOptions {
  /** Bits per weight, 2…8 (default 4). */
  bits?: number;
  /** Consecutive inputs sharing α/β (default 32); the last group may be shorter. */
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
  /** α per (group, output), `[G, out]` row-major (G = ⌈in/groupSize⌉). */
  alpha: Float32Array;
  /** β per (group, output), `[G, out]` row-major. */
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

/** How `inFeatures` inputs fall into groups: `full` groups of `groupSize`, then `tail` inputs (0 when it divides). */
export function groupLayout(inFeatures: number, groupSize: number): { groups: number; full: number; tail: number } {
  const full = Math.floor(inFeatures / groupSize);
  const tail = inFeatures - full * groupSize;
  return { groups: full + (tail > 0 ? 1 : 0), full, tail };
}

/**
 * Rows [from, from + rows) of a 2-D tensor, as a whole when that is all of it (so the divisible
 * case runs the very same ops as before partial groups existed).
 */
function rowsOf<T extends tf.Tensor2D>(t: T, from: number, rows: number): tf.Tensor2D {
  return from === 0 && rows === t.shape[0] ? t : tf.slice(t, [from, 0], [rows, t.shape[1]]);
}

/** Quantise an `[in, out]` weight group-wise (round to nearest, half to even as tf.round does). */
export function quantizeGroupwise(w: tf.Tensor2D, opts: GroupQuantOptions = {}): GroupQuantized {
  const { bits, groupSize } = resolveQuantOptions(opts);
  const [inF, outF] = w.shape;
  const { full, tail } = groupLayout(inF, groupSize);
  const levels = 2 ** bits - 1;
  /** Codes `[groups·size, out]`, α and β `[groups, out]` of `groups` groups of `size` rows from row `from`. */
  const block = (from: number, groups: number, size: number): tf.Tensor2D[] => {
    const g3 = rowsOf(w, from, groups * size).reshape([groups, size, outF]);
    const mn = tf.min(g3, 1); // [groups, out]
    const mx = tf.max(g3, 1);
    const a = tf.div(tf.sub(mx, mn), levels);
    // α = 0 only for constant groups; dividing by 1 there gives codes of 0.
    const safe = tf.where(tf.greater(a, 0), a, tf.onesLike(a));
    const codes = tf.clipByValue(tf.round(tf.div(tf.sub(g3, mn.expandDims(1)), safe.expandDims(1))), 0, levels);
    return [codes.reshape([groups * size, outF]), a, mn] as tf.Tensor2D[];
  };
  const [q, alpha, beta] = tf.tidy(() => {
    const parts = [...(full > 0 ? [block(0, full, groupSize)] : []), ...(tail > 0 ? [block(full * groupSize, 1, tail)] : [])];
    return parts.length === 1 ? parts[0] : [0, 1, 2].map((k) => tf.concat(parts.map((p) => p[k]), 0));
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
export function fakeQuantize(w: tf.Tensor2D, opts: GroupQuantOptions = {}): tf.Tensor2D {
  return dequantize(quantizeGroupwise(w, opts));
}

/**
 * The QA-LoRA update per (group, output): s·(A·B)/n_g, `[G, out]`, n_g the size of group g.
 * A: `[G, r]` acting on group means, B: `[r, out]`.
 */
export function qaLoraGroupDelta(A: tf.Tensor2D, B: tf.Tensor2D, scale: number, groupSize: number, inFeatures: number): tf.Tensor2D {
  const { groups, tail } = groupLayout(inFeatures, groupSize);
  if (A.shape[0] !== groups) throw new Error(`qaLoraGroupDelta: A has ${A.shape[0]} rows for ${groups} groups`);
  return tf.tidy(() => {
    if (tail === 0) return tf.mul(tf.matMul(A, B), scale / groupSize) as tf.Tensor2D;
    const perGroup = Float32Array.from({ length: groups }, (_, g) => scale / (g < groups - 1 ? groupSize : tail));
    return tf.mul(tf.matMul(A, B), tf.tensor2d(perGroup, [groups, 1])) as tf.Tensor2D;
  });
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

/** Average-pool `[N, in]` within consecutive groups of `groupSize` inputs (the last may be shorter) → `[N, G]`. */
export function poolGroups(x: tf.Tensor2D, groupSize: number): tf.Tensor2D {
  return tf.tidy(() => {
    const [N, inF] = x.shape;
    const { full, tail } = groupLayout(inF, groupSize);
    const cols = (from: number, n: number) => (from === 0 && n === inF ? x : tf.slice(x, [0, from], [N, n]));
    const parts: tf.Tensor2D[] = [];
    if (full > 0) parts.push(tf.mean(cols(0, full * groupSize).reshape([N, full, groupSize]), 2) as tf.Tensor2D);
    if (tail > 0) parts.push(tf.mean(cols(full * groupSize, tail), 1, true) as tf.Tensor2D);
    return parts.length === 1 ? parts[0] : tf.concat(parts, 1);
  });
}

/**
 * A (`[G, r]`, acting on group means) expanded to act on the raw input, `[in, r]`: row i is
 * A[g(i)]/n_g(i). Broadcasts and concatenations only: gather's gradient has no WebAssembly kernel.
 */
export function expandGroupRows(A: tf.Tensor2D, groupSize: number, inFeatures: number): tf.Tensor2D {
  return tf.tidy(() => {
    const [G, r] = A.shape;
    const { full, tail } = groupLayout(inFeatures, groupSize);
    const spread = (rows: tf.Tensor2D, groups: number, size: number) =>
      tf.mul(rows.reshape([groups, 1, r]), tf.fill([1, size, 1], 1 / size)).reshape([groups * size, r]) as tf.Tensor2D;
    if (tail === 0) return spread(A, G, groupSize);
    const parts = full > 0 ? [spread(tf.slice(A, [0, 0], [full, r]), full, groupSize)] : [];
    parts.push(spread(tf.slice(A, [full, 0], [1, r]), 1, tail));
    return parts.length === 1 ? parts[0] : tf.concat(parts, 0);
  });
}
