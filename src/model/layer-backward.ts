/**
 * The backward pass one decoder layer at a time (gradient checkpointing at layer boundaries), so
 * gradients need no more of the model on the backend than a forward pass does (streamed weights).
 *
 * 1. Forward layer-major over all batches, keeping every layer's input hidden states on the
 *    host (`runLayer`, as calibration does): (layers + 1) · tokens · hidden · 4 bytes.
 * 2. At the head: the loss of each batch and its gradient with respect to the last hidden states.
 * 3. For layer L-1 … 0: hold the layer on the backend, recompute its forward (the model's own
 *    block, `runBlock`) from the stored input under a gradient tape and take the vector–Jacobian
 *    product with the upstream gradient: the gradients of the tensors asked for in that layer
 *    (its weights, or adapter variables) and the gradient of its input, the next one down.
 * The embeddings and the head are frozen (no gradient is taken for them). Every batch of a layer
 * is done before the next layer down, so a layer's gradients are complete when it is left.
 */
import * as tf from '@tensorflow/tfjs';
import { BlockContext, type CausalLM } from './causal-lm.ts';
import { nextTokenTargets, trainingNllSum, type LossMask } from './loss.ts';
import { withFastMatMulGradient } from './matmul-grad.ts';
import { embedBatches, runLayer, type HiddenStates } from '../prune/stats.ts';

/** One batch of equal-length windows and (optionally) which of its tokens are predicted. */
export interface LossBatch {
  ids: readonly (readonly number[])[];
  mask?: LossMask;
}

/** A batch's place in a layer's backward step, handed to `onBatch`. */
export interface BatchStep {
  batch: number;
  /** The layer's input rows `[B*T, D]` (host, read-only). */
  input: Float32Array;
  /** ∂loss/∂(layer output), same layout (host, read-only). */
  dy: Float32Array;
  B: number;
  T: number;
}

export interface LayerBackwardOptions {
  /** Batch b's loss is its summed next-token NLL divided by `lossDivisor(b, predicted tokens)`. */
  lossDivisor(batch: number, count: number): number;
  /** The tensors to differentiate in `layer` (its weights, adapter variables …), asked while the layer is held. */
  wrt(layer: number): tf.Tensor[];
  /** The gradients of `wrt(layer)` for one batch (disposed after the call; the layer is still held). */
  onBatch(layer: number, grads: tf.Tensor[], step: BatchStep): void;
  /** Every batch of `layer` is done: its gradients are complete (the layer is still held). */
  onLayer?(layer: number): void;
}

/** Run the layer-wise backward over `batches`; returns the summed loss and the predicted tokens. */
export function layerwiseBackward(model: CausalLM, batches: readonly LossBatch[], opts: LayerBackwardOptions): { loss: number; tokens: number } {
  // Attention, head and RoPE products differentiate through the fast explicit-transpose gradient.
  return withFastMatMulGradient(() => backwardImpl(model, batches, opts));
}

function backwardImpl(model: CausalLM, batches: readonly LossBatch[], opts: LayerBackwardOptions): { loss: number; tokens: number } {
  const L = model.numLayers;
  const inputs: (HiddenStates | null)[] = [];
  let states = embedBatches(model, batches.map((b) => b.ids));
  for (let l = 0; l < L; l++) {
    inputs.push(states);
    states = runLayer(model, l, states)!;
  }
  const { T, D } = states;
  let loss = 0;
  let tokens = 0;
  // ∂loss/∂(hidden states) per batch, entering the head; replaced layer by layer on the way down.
  const dys: Float32Array[] = model.withParts(['head'], () => states.batches.map((s, b) => {
    const batch = batches[b]!;
    const count = nextTokenTargets(batch.ids, batch.mask).rows.length;
    const divisor = opts.lossDivisor(b, count);
    tokens += count;
    return tf.tidy(() => {
      const x = tf.tensor2d(s.data, [s.B * T, D]);
      const { value, grads } = tf.engine().gradients(() => tf.div(trainingNllSum(model.head(x), batch.ids, batch.mask).sum, divisor) as tf.Scalar, [x]);
      loss += value.dataSync()[0]!;
      return Float32Array.from(grads[0]!.dataSync() as Float32Array);
    });
  }));
  for (let l = L - 1; l >= 0; l--) {
    const layerIn = inputs[l]!;
    model.withParts([l], () => {
      const wrt = opts.wrt(l);
      layerIn.batches.forEach((s, b) => {
        const { dx, grads } = layerVjp(model, l, s.data, s.B, T, dys[b]!, wrt, l > 0);
        try {
          opts.onBatch(l, grads, { batch: b, input: s.data, dy: dys[b]!, B: s.B, T });
        } finally {
          tf.dispose(grads);
        }
        if (dx) dys[b] = dx;
      });
      opts.onLayer?.(l);
    });
    // This layer's inputs are no longer needed: the host keeps only what lies below.
    inputs[l] = null;
  }
  return { loss, tokens };
}

/**
 * Vector–Jacobian product of decoder layer `layer` (held by the caller) at input `x` (`[B*T, D]`,
 * host) with upstream gradient `dy`: the gradients of `wrt` (new tensors, caller disposes) and,
 * with `inputGrad`, ∂/∂x on the host.
 */
export function layerVjp(model: CausalLM, layer: number, x: Float32Array, B: number, T: number, dy: Float32Array,
  wrt: readonly tf.Tensor[], inputGrad: boolean): { dx: Float32Array | null; grads: tf.Tensor[] } {
  if (wrt.length === 0 && !inputGrad) return { dx: null, grads: [] };
  const D = model.config.hiddenSize;
  const ctx = new BlockContext(B, T, 0, model.config);
  try {
    let dx: Float32Array | null = null;
    const grads = tf.tidy(() => {
      const xt = tf.tensor2d(x, [B * T, D]);
      const dyt = tf.tensor2d(dy, [B * T, D]);
      const xs = inputGrad ? [xt, ...wrt] : [...wrt];
      const r = tf.engine().gradients(() => model.runBlock(layer, xt, ctx).out, xs, dyt);
      if (inputGrad) dx = Float32Array.from(r.grads[0]!.dataSync() as Float32Array);
      return inputGrad ? r.grads.slice(1) : r.grads;
    });
    return { dx, grads };
  } finally {
    ctx.dispose();
  }
}
