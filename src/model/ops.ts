/**
 * Tensor building blocks of the decoder blocks: norms, RoPE, projections and causal attention.
 * Every function works on flattened token rows `[N, features]` with N = batch × time, so the
 * projections stay plain 2-D matMuls (the fast path of the WebAssembly backend).
 */
import * as tf from '@tensorflow/tfjs';
import type { RopeLayout } from './config.ts';
import type { LinearParams, NormParams } from './params.ts';
import { modelLayout } from '../backend/layout.ts';
import { ATTENTION_KERNEL, RMSNORM_KERNEL, ROPE_KERNEL, SILU_MUL_KERNEL, fusedKernelUsable, ropeKernelActive } from '../backend/native-elementwise.ts';

export function rmsNorm(x: tf.Tensor2D, p: NormParams, eps: number): tf.Tensor2D {
  // One native kernel where there is one and no gradient is recorded (the same values; src/backend/native-elementwise.ts).
  if (fusedKernelUsable(RMSNORM_KERNEL)) return tf.engine().runKernel(RMSNORM_KERNEL, { x, weight: p.weight }, { eps }) as tf.Tensor2D;
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

/** Products with fewer rows than this stay as they are (a decode step keeps the backend's cached packed weight). */
const WIDE_MIN_ROWS = 64;
/** Weights above this size are past the L2 cache many times over. */
const WIDE_MIN_BYTES = 16 * 2 ** 20;

/**
 * `x · w` for an output head `w: [D, V]`, given `wT = wᵀ` (`[V, D]`: the embedding of a tied
 * model) or null. The WebAssembly backend's single-threaded GEMM streams the whole packed
 * weight once per few rows of x, so a weight far past the L2 cache is read from memory hundreds
 * of times: the SmolLM-135M head (512×576×49152) ran at 10.7 GFLOP/s. As `(wT · xᵀ)ᵀ` the small
 * xᵀ is the packed operand and wT streams once: 25 GFLOP/s with the transposes (measured in CPU
 * time; column slices of w would need a sliced copy of w each call, since the backend's slice
 * reads its whole input to the host). Each logit is the same dot product in the same order,
 * so the values are equal bit for bit; while gradients are recorded the product stays as it is.
 * With the products on OpenBLAS (src/backend/openblas.ts) the plain product is the fast one
 * (`modelLayout().transposedHead` is false there).
 */
export function headProduct(x: tf.Tensor2D, w: tf.Tensor2D, wT: tf.Tensor2D | null): tf.Tensor2D {
  const [inDim, outDim] = w.shape;
  if (!wT || !modelLayout().transposedHead || x.shape[0] < WIDE_MIN_ROWS || 4 * inDim * outDim <= WIDE_MIN_BYTES || tf.engine().isTapeOn()) return tf.matMul(x, w);
  return tf.tidy(() => tf.transpose(tf.matMul(wT, tf.transpose(x))) as tf.Tensor2D);
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

/**
 * SiLU(gate) ⊙ up, the gate and up projections made by the callbacks, gate first: with the composed
 * ops its SiLU is taken (and the gate freed) before up exists; the fused kernel (where usable, see
 * rmsNorm) holds gate and up instead, the same peak.
 */
export function siluMul(gate: () => tf.Tensor2D, up: () => tf.Tensor2D): tf.Tensor2D {
  if (fusedKernelUsable(SILU_MUL_KERNEL)) {
    return tf.tidy(() => tf.engine().runKernel(SILU_MUL_KERNEL, { gate: gate(), up: up() }) as tf.Tensor2D);
  }
  const act = tf.tidy(() => silu(gate()));
  const out = tf.tidy(() => tf.mul(act, up()) as tf.Tensor2D);
  act.dispose();
  return out;
}

/** cos/sin tables `[T, headDim/2]` for positions start..start+T-1, computed in float64. */
export function ropeTables(start: number, length: number, headDim: number, theta: number): { cos: Float32Array; sin: Float32Array } {
  const half = headDim / 2;
  const cos = new Float32Array(length * half);
  const sin = new Float32Array(length * half);
  const period = Float64Array.from({ length: half }, (_, i) => Math.pow(theta, (2 * i) / headDim));
  for (let t = 0; t < length; t++) {
    for (let i = 0; i < half; i++) {
      const angle = (start + t) / period[i]!;
      cos[t * half + i] = Math.cos(angle);
      sin[t * half + i] = Math.sin(angle);
    }
  }
  return { cos, sin };
}

/**
 * RoPE for one head count: x' = x ⊙ cos + (x · R) ⊙ sin, where R is the constant signed
 * permutation that pairs the rotated dimensions (block-diagonal over heads). Both layouts share
 * this path and differ only in the pairing: `half` pairs i with i + hd/2 (HF rotate_half),
 * `interleaved` pairs 2i with 2i+1 (Meta/llama2.c). Viewing each head's dimensions as `[2, s]`
 * blocks (s = hd/2 for `half`, 1 for `interleaved`), x · R swaps the two rows of every block and
 * negates the new first row: one `reverse` of a 3-D view, with the sign folded into the sin
 * table. It used to be a `[width, width]` matMul (10% of a SmolLM-135M layer's products); a
 * permutation with signs is exact either way, so the values are the same bit for bit.
 */
export interface Rope {
  /** `[T, heads*hd]`, broadcast over the batch. */
  cos: tf.Tensor2D;
  /** `[T, heads*hd]`: sin with the sign of R's entry of each dimension (−sin for the first of a pair). */
  sin: tf.Tensor2D;
  /** Width of a swapped block: hd/2 (`half`) or 1 (`interleaved`). */
  span: number;
  /**
   * `[hd, hd]` 0/1 permutation that swaps the two rows of every block, when the layout takes the
   * swap as a product (`modelLayout().ropeByProduct`: the wasm `reverse` took ~40 ns per element,
   * 68 of a 4-layer SmolLM-shape prefill's 860 CPU-ms; the products on OpenBLAS take 3); null: the
   * swap is a `reverse`. Each output is one x · 1 plus zeros, so the values are the same (up to
   * the sign of a zero, and a non-finite x).
   */
  swap: tf.Tensor2D | null;
  /** sin with the two blocks of every pair swapped, `[T, heads*hd]`: the fused kernel's gradient table. */
  sinSwapped: tf.Tensor2D;
}

export function makeRope(start: number, length: number, heads: number, headDim: number, theta: number, layout: RopeLayout): Rope {
  const { cos, sin } = ropeTables(start, length, headDim, theta);
  const half = headDim / 2;
  const width = heads * headDim;
  const c = new Float32Array(length * width);
  const s = new Float32Array(length * width);
  // freq[d]: the frequency index of dimension d; sign[d]: the sign of its partner's term in x · R.
  const freq = new Int32Array(headDim);
  const sign = new Float32Array(headDim);
  for (let d = 0; d < headDim; d++) {
    if (layout === 'half') {
      freq[d] = d % half;
      sign[d] = d < half ? -1 : 1;
    } else {
      freq[d] = d >> 1;
      sign[d] = d % 2 === 0 ? -1 : 1;
    }
  }
  // Head 0 of each position, then copies for the other heads (a prefill forward makes these per call).
  for (let t = 0; t < length; t++) {
    const row = t * width;
    for (let d = 0; d < headDim; d++) {
      c[row + d] = cos[t * half + freq[d]];
      s[row + d] = sign[d] * sin[t * half + freq[d]];
    }
    for (let h = 1; h < heads; h++) {
      c.copyWithin(row + h * headDim, row, row + headDim);
      s.copyWithin(row + h * headDim, row, row + headDim);
    }
  }
  const span = layout === 'half' ? half : 1;
  const sw = new Float32Array(length * width);
  for (let j = 0; j < width; j++) {
    const r = j % (2 * span);
    const partner = j - r + (r < span ? r + span : r - span);
    for (let t = 0; t < length; t++) sw[t * width + j] = s[t * width + partner]!;
  }
  return {
    cos: tf.tensor2d(c, [length, width]), sin: tf.tensor2d(s, [length, width]), span,
    swap: modelLayout().ropeByProduct ? swapMatrix(headDim, span) : null, sinSwapped: tf.tensor2d(sw, [length, width]),
  };
}

/** P with (x·P)[c] = x[partner(c)], partner swapping the two rows of each `[2, span]` block. */
function swapMatrix(headDim: number, span: number): tf.Tensor2D {
  const p = new Float32Array(headDim * headDim);
  for (let c = 0; c < headDim; c++) {
    const block = Math.floor(c / (2 * span)), r = c % (2 * span);
    const partner = block * 2 * span + (r < span ? r + span : r - span);
    p[partner * headDim + c] = 1;
  }
  return tf.tensor2d(p, [headDim, headDim]);
}

export function disposeRope(r: Rope): void {
  tf.dispose([r.cos, r.sin, r.sinSwapped]);
  r.swap?.dispose();
}

/** Rotate `x: [B*T, heads*hd]` by RoPE; returns the same shape. */
export function applyRope(x: tf.Tensor2D, B: number, T: number, rope: Rope): tf.Tensor2D {
  // One native kernel where there is one (the same values; src/backend/native-elementwise.ts).
  if (ropeKernelActive()) {
    return tf.engine().runKernel(ROPE_KERNEL, { x, cos: rope.cos, sin: rope.sin, sinSwapped: rope.sinSwapped }, { span: rope.span }) as tf.Tensor2D;
  }
  return tf.tidy(() => {
    const width = x.shape[1];
    const swapped = rope.swap
      ? tf.matMul(x.reshape([(B * T * width) / rope.swap.shape[0], rope.swap.shape[0]]), rope.swap)
      : tf.reverse(x.reshape([(B * T * width) / (2 * rope.span), 2, rope.span]), 1);
    const y = tf.add(tf.mul(x.reshape([B, T, width]), rope.cos), tf.mul(swapped.reshape([B, T, width]), rope.sin));
    return y.reshape([B * T, width]) as tf.Tensor2D;
  });
}

/** Additive causal mask `[g*Tq, Tk]` for queries at positions past..past+Tq-1, tiled for g heads. */
export function causalMask(Tq: number, Tk: number, past: number, groups: number): tf.Tensor2D {
  const m = new Float32Array(groups * Tq * Tk);
  for (let i = 0; i < Tq; i++) m.fill(-1e9, i * Tk + past + i + 1, (i + 1) * Tk);
  for (let h = 1; h < groups; h++) m.copyWithin(h * Tq * Tk, 0, Tq * Tk);
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
 * group instead of batched matMuls (slow on the WebAssembly backend's XNNPACK); GPUs and OpenBLAS
 * take batched products instead (`modelLayout()`, src/backend/layout.ts).
 * `mask` is `[g*Tq, Tk]` or null when Tq = 1 (a single new token may see every key).
 */
export function attention(q: tf.Tensor2D, k: tf.Tensor2D, v: tf.Tensor2D, s: AttentionShape, mask: tf.Tensor2D | null): tf.Tensor2D {
  const layout = modelLayout();
  if (layout.batchedAttention && layout.keysByTransposeB) return groupedAttention(q, k, v, s, mask, layout.attentionStepBytes);
  return tf.tidy(() => {
    const { B, Tq, Tk, numHeads: H, numKvHeads: KV, headDim: hd } = s;
    const g = H / KV;
    // Lay out q as row blocks [g*Tq, hd] per (batch, kv head), k as [hd, Tk] and v as [Tk, hd]
    // blocks, all stacked along rows of 2-D tensors.
    const qg: tf.Tensor2D = q.mul(s.scale).reshape([B, Tq, KV, g, hd]).transpose([0, 2, 3, 1, 4]).reshape([B * KV * g * Tq, hd]);
    const kt: tf.Tensor2D = k.reshape([B, Tk, KV, hd]).transpose([0, 2, 3, 1]).reshape([B * KV * hd, Tk]);
    const vg: tf.Tensor2D = v.reshape([B, Tk, KV, hd]).transpose([0, 2, 1, 3]).reshape([B * KV * Tk, hd]);
    if (layout.batchedAttention) {
      // GPU: the same blocks as one batched matMul each (src/backend/layout.ts).
      let scores = tf.matMul(qg.reshape([B * KV, g * Tq, hd]), kt.reshape([B * KV, hd, Tk]));
      if (mask) scores = tf.add(scores, mask);
      const ctx = tf.matMul(tf.softmax(scores), vg.reshape([B * KV, Tk, hd]));
      return ctx.reshape([B, KV, g, Tq, hd]).transpose([0, 3, 1, 2, 4]).reshape([B * Tq, H * hd]) as tf.Tensor2D;
    }
    // Blocks are taken with a row gather, not a slice: the WebAssembly backend's slice (and split)
    // first copies its whole input to the host, once per block — 44% of a stories260K
    // perplexity batch (16 × 256 tokens, 64 blocks per operand) went there. Gather has no
    // gradient kernel there, so while gradients are recorded the blocks come from one split each.
    const n = B * KV;
    const taping = tf.engine().isTapeOn();
    const blocks = (t: tf.Tensor2D, rowsPerBlock: number): ((i: number) => tf.Tensor2D) => {
      const cols = t.shape[1];
      if (taping) {
        const parts = tf.split(t, n, 0) as tf.Tensor2D[];
        return (i) => parts[i]!;
      }
      const flat = t.reshape([n, rowsPerBlock * cols]);
      return (i) => tf.gather(flat, tf.tensor1d([i], 'int32'), 0).reshape([rowsPerBlock, cols]) as tf.Tensor2D;
    };
    const qBlock = blocks(qg, g * Tq);
    const kBlock = blocks(kt, hd);
    const vBlock = blocks(vg, Tk);
    const outs: tf.Tensor2D[] = [];
    // Each block's scores and softmax are freed as soon as its context is made: kept to the outer
    // tidy's end they were B·H·Tq·Tk floats several times over (1 GB of WebAssembly heap, which
    // never shrinks, for 8 × 512 tokens of 32 heads). Saved-for-gradient tensors are kept by the tape.
    for (let i = 0; i < n; i++) {
      outs.push(tf.tidy(() => {
        const vi = vBlock(i);
        let scores = tf.matMul(qBlock(i), kBlock(i));
        if (mask) scores = tf.add(scores, mask);
        return tf.matMul(tf.softmax(scores), vi);
      }));
    }
    return tf.concat(outs, 0).reshape([B, KV, g, Tq, hd]).transpose([0, 3, 1, 2, 4]).reshape([B * Tq, H * hd]) as tf.Tensor2D;
  });
}

/**
 * `attention` as batched products over (batch, kv head) groups, keys read through `transposeB`:
 * the layout for products on OpenBLAS, where every product variant runs at the same rate, so
 * the per-group loop's gathers, its concat and the keys' transpose only cost time. Groups are
 * taken a step at a time so that one step's scores stay under `stepBytes`
 * (`modelLayout().attentionStepBytes`). With one query (decode) or one kv head the transposes
 * are reshapes.
 */
function groupedAttention(q: tf.Tensor2D, k: tf.Tensor2D, v: tf.Tensor2D, s: AttentionShape, mask: tf.Tensor2D | null, stepBytes: number): tf.Tensor2D {
  const { B, Tq, Tk, numHeads: H, numKvHeads: KV, headDim: hd } = s;
  const step = Math.max(1, Math.floor(stepBytes / (4 * (H / KV) * Tq * Tk)));
  // One native kernel where there is one and no gradient is recorded: the steps below, the same values.
  if (fusedKernelUsable(ATTENTION_KERNEL)) {
    const attrs = { B, Tq, Tk, H, KV, hd, scale: s.scale, step };
    return tf.engine().runKernel(ATTENTION_KERNEL, mask ? { q, k, v, mask } : { q, k, v }, attrs) as tf.Tensor2D;
  }
  return tf.tidy(() => {
    const g = H / KV, n = B * KV;
    const q5 = q.mul(s.scale).reshape([B, Tq, KV, g, hd]);
    const qg = (Tq === 1 ? q5 : q5.transpose([0, 2, 3, 1, 4])).reshape([n, g * Tq, hd]) as tf.Tensor3D;
    const byGroup = (t: tf.Tensor2D) => (KV === 1 ? t : t.reshape([B, Tk, KV, hd]).transpose([0, 2, 1, 3])).reshape([n, Tk, hd]) as tf.Tensor3D;
    const kg = byGroup(k), vg = byGroup(v);
    // Each step's scores and softmax are freed once its context exists (the tape keeps what gradients need).
    const run = (qi: tf.Tensor3D, ki: tf.Tensor3D, vi: tf.Tensor3D) => tf.tidy(() => {
      let scores = tf.matMul(qi, ki, false, true);
      if (mask) scores = tf.add(scores, mask);
      return tf.matMul(tf.softmax(scores), vi) as tf.Tensor3D;
    });
    let ctx: tf.Tensor3D;
    if (step >= n) {
      ctx = run(qg, kg, vg);
    } else {
      // Consecutive runs of `step` groups: each slice is one contiguous copy (on wasm inside the
      // heap, src/backend/wasm-copies.ts), with a gradient under the tape.
      const block = (t: tf.Tensor3D, start: number) => tf.slice(t, [start, 0, 0], [Math.min(step, n - start), -1, -1]);
      const parts: tf.Tensor3D[] = [];
      for (let start = 0; start < n; start += step) parts.push(run(block(qg, start), block(kg, start), block(vg, start)));
      ctx = tf.concat(parts, 0) as tf.Tensor3D;
    }
    const c5 = ctx.reshape([B, KV, g, Tq, hd]);
    return (Tq === 1 ? c5 : c5.transpose([0, 3, 1, 2, 4])).reshape([B * Tq, H * hd]) as tf.Tensor2D;
  });
}
