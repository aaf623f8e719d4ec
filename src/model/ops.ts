/**
 * Tensor building blocks of the decoder blocks: norms, RoPE, projections and causal attention.
 * Every function works on flattened token rows `[N, features]` with N = batch × time, so the
 * projections stay plain 2-D matMuls (the fast path of the WebAssembly backend).
 */
import * as tf from '@tensorflow/tfjs';
import type { RopeLayout } from './config.ts';
import type { LinearParams, NormParams } from './params.ts';

export function rmsNorm(x: tf.Tensor2D, p: NormParams, eps: number): tf.Tensor2D {
  return tf.tidy(() => {
    const ms = tf.mean(tf.square(x), -1, true);
    return tf.mul(tf.mul(x, tf.rsqrt(tf.add(ms, eps))), p.weight) as tf.Tensor2D;
  });
}

export function layerNorm(x: tf.Tensor2D, p: NormParams, eps: number): tf.Tensor2D {
  return tf.tidy(() => {
    const { mean, variance } = tf.moments(x, -1, true);
    const y: tf.Tensor2D = tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, eps))).mul(p.weight);
    return p.bias ? tf.add(y, p.bias) as tf.Tensor2D : y;
  });
}

export function linear(x: tf.Tensor2D, p: LinearParams): tf.Tensor2D {
  const y = tf.matMul(x, p.weight) as tf.Tensor2D;
  if (!p.bias) return y;
  const yb = tf.add(y, p.bias) as tf.Tensor2D;
  y.dispose();
  return yb;
}

export function silu(x: tf.Tensor): tf.Tensor {
  return tf.tidy(() => tf.mul(x, tf.sigmoid(x)));
}

/** cos/sin tables `[T, headDim/2]` for positions start..start+T-1, computed in float64. */
export function ropeTables(start: number, length: number, headDim: number, theta: number): { cos: Float32Array; sin: Float32Array } {
  const half = headDim / 2;
  const cos = new Float32Array(length * half);
  const sin = new Float32Array(length * half);
  for (let t = 0; t < length; t++) {
    for (let i = 0; i < half; i++) {
      const angle = (start + t) / Math.pow(theta, (2 * i) / headDim);
      cos[t * half + i] = Math.cos(angle);
      sin[t * half + i] = Math.sin(angle);
    }
  }
  return { cos, sin };
}

export interface Rope {
  cos: tf.Tensor;
  sin: tf.Tensor;
  layout: RopeLayout;
}

/** Device tensors for `applyRope`, shaped to broadcast over `[B, T, heads, …]`. */
export function makeRope(start: number, length: number, headDim: number, theta: number, layout: RopeLayout): Rope {
  const { cos, sin } = ropeTables(start, length, headDim, theta);
  const half = headDim / 2;
  return tf.tidy(() => {
    const c = tf.tensor(cos, [1, length, 1, half]);
    const s = tf.tensor(sin, [1, length, 1, half]);
    if (layout === 'half') {
      // rotate_half pairs dimension i with i + half: duplicate the tables along the head dim.
      return { cos: tf.concat([c, c], -1), sin: tf.concat([s, s], -1), layout };
    }
    return { cos: c.expandDims(-1), sin: s.expandDims(-1), layout };
  });
}

export function disposeRope(r: Rope): void {
  r.cos.dispose();
  r.sin.dispose();
}

/** Rotate `x: [N, heads*headDim]` (N = B*T) by RoPE; returns the same shape. */
export function applyRope(x: tf.Tensor2D, B: number, T: number, heads: number, headDim: number, rope: Rope): tf.Tensor2D {
  return tf.tidy(() => {
    const half = headDim / 2;
    if (rope.layout === 'half') {
      const x4 = x.reshape([B, T, heads, headDim]);
      const [a, b] = tf.split(x4, 2, -1);
      const rotated = tf.concat([tf.neg(b), a], -1);
      return tf.add(tf.mul(x4, rope.cos), tf.mul(rotated, rope.sin)).reshape([B * T, heads * headDim]);
    }
    // Interleaved pairs (2i, 2i+1), as Meta/llama2.c checkpoints expect.
    const x5 = x.reshape([B, T, heads, half, 2]);
    const [even, odd] = tf.split(x5, 2, -1);
    const outEven = tf.sub(tf.mul(even, rope.cos), tf.mul(odd, rope.sin));
    const outOdd = tf.add(tf.mul(even, rope.sin), tf.mul(odd, rope.cos));
    return tf.concat([outEven, outOdd], -1).reshape([B * T, heads * headDim]);
  });
}

/** Additive causal mask `[g*Tq, Tk]` for queries at positions past..past+Tq-1, tiled for g heads. */
export function causalMask(Tq: number, Tk: number, past: number, groups: number): tf.Tensor2D {
  const m = new Float32Array(groups * Tq * Tk);
  for (let h = 0; h < groups; h++) {
    for (let i = 0; i < Tq; i++) {
      const row = (h * Tq + i) * Tk;
      for (let j = past + i + 1; j < Tk; j++) m[row + j] = -1e9;
    }
  }
  return tf.tensor2d(m, [groups * Tq, Tk]);
}

export interface AttentionShape {
  B: number;
  Tq: number;
  Tk: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  scale: number;
}

/**
 * Causal grouped-query attention. q: `[B*Tq, H*hd]`, k/v: `[B*Tk, KV*hd]` (keys after RoPE,
 * including cached past positions). For each (batch, kv head) the g query heads that share it
 * are stacked into one `[g*Tq, hd]` block, so scores and context are two plain 2-D matMuls per
 * group instead of batched matMuls (slow on the WebAssembly backend).
 * `mask` is `[g*Tq, Tk]` or null when Tq = 1 (a single new token may see every key).
 */
export function attention(q: tf.Tensor2D, k: tf.Tensor2D, v: tf.Tensor2D, s: AttentionShape, mask: tf.Tensor2D | null): tf.Tensor2D {
  return tf.tidy(() => {
    const { B, Tq, Tk, numHeads: H, numKvHeads: KV, headDim: hd } = s;
    const g = H / KV;
    // [B, KV, g, Tq, hd] → blocks of [g*Tq, hd]
    const qg = q.mul(s.scale).reshape([B, Tq, KV, g, hd]).transpose([0, 2, 3, 1, 4]).reshape([B * KV, g * Tq, hd]);
    const kt = k.reshape([B, Tk, KV, hd]).transpose([0, 2, 3, 1]).reshape([B * KV, hd, Tk]);
    const vg = v.reshape([B, Tk, KV, hd]).transpose([0, 2, 1, 3]).reshape([B * KV, Tk, hd]);
    const qs = tf.unstack(qg);
    const ks = tf.unstack(kt);
    const vs = tf.unstack(vg);
    const outs: tf.Tensor2D[] = [];
    for (let i = 0; i < B * KV; i++) {
      let scores = tf.matMul(qs[i] as tf.Tensor2D, ks[i] as tf.Tensor2D);
      if (mask) scores = tf.add(scores, mask);
      outs.push(tf.matMul(tf.softmax(scores), vs[i] as tf.Tensor2D));
    }
    return tf.stack(outs).reshape([B, KV, g, Tq, hd]).transpose([0, 3, 1, 2, 4]).reshape([B * Tq, H * hd]) as tf.Tensor2D;
  });
}
