/**
 * Gradients of the causal-LM loss (mean next-token NLL over all calibration tokens) with respect
 * to every decoder linear weight (HF orientation), and optionally the empirical Fisher diagonal
 * (per-sample squared gradients, averaged), as LLM-Pruner's Taylor importances use them.
 *
 * They come layer by layer from the layer-wise backward (model/layer-backward.ts), every
 * calibration batch inside the layer loop, so a layer's gradients are complete when it is left:
 * the host holds one layer's gradients (and Fisher) at a time, the backend one layer's weights.
 */
import * as tf from '@tensorflow/tfjs';
import type { CausalLM } from '../model/causal-lm.ts';
import type { LinearRole } from '../model/family.ts';
import { layerVjp, layerwiseBackward } from '../model/layer-backward.ts';
import type { GradientRequest, LinearGradient } from './method.ts';

export type LayerGradients = Partial<Record<LinearRole, LinearGradient>>;

/** Add `scale`·(gradient `[in, out]`)ᵀ (squared first with `square`) into the host accumulator `[out, in]`. */
function accumulate(g: tf.Tensor, acc: Float32Array, square: boolean, scale: number): void {
  const t = tf.tidy(() => {
    const hf = tf.transpose(g);
    return square ? tf.square(hf) : hf;
  });
  const data = t.dataSync();
  for (let i = 0; i < data.length; i++) acc[i] += data[i] * scale;
  t.dispose();
}

/**
 * Hand each layer's gradients (last layer first) to `onLayer` as soon as they are complete; the
 * arrays are reused for no other layer, and dropped after the call. Windows go `batchSize` at a
 * time; the Fisher diagonal takes one more layer product per window.
 */
export function layerGradients(model: CausalLM, windows: number[][], req: GradientRequest,
  onLayer: (layer: number, grads: LayerGradients) => void, batchSize = 8): void {
  const roles = model.spec.linears.map((l) => l.role);
  const T = windows[0].length;
  const D = model.config.hiddenSize;
  // Mean loss over all calibration tokens = Σ_batches (tokens_b / tokens) · mean loss of batch b.
  const total = windows.length * (T - 1);
  const batches: { ids: number[][] }[] = [];
  for (let i = 0; i < windows.length; i += batchSize) batches.push({ ids: windows.slice(i, i + batchSize) });
  let grads: Float32Array[] | null = null;
  let fisher: Float32Array[] | null = null;
  const weights = (l: number) => roles.map((role) => model.linearParams(l, role).weight);
  layerwiseBackward(model, batches, {
    // The batch mean, as the per-batch loss of the whole-model path: the same numbers.
    lossDivisor: (_b, count) => count,
    wrt: weights,
    onBatch: (l, g, step) => {
      grads ??= g.map((t) => new Float32Array(t.size));
      g.forEach((t, k) => accumulate(t, grads![k]!, false, (step.B * (T - 1)) / total));
      if (!req.fisher) return;
      fisher ??= g.map((t) => new Float32Array(t.size));
      const wrt = weights(l);
      // A window's own mean loss has B times the batch mean's gradient on its rows (windows do not mix).
      const n = T * D;
      for (let w = 0; w < step.B; w++) {
        const dy = step.dy.slice(w * n, (w + 1) * n);
        for (let i = 0; i < n; i++) dy[i] *= step.B;
        const r = layerVjp(model, l, step.input.subarray(w * n, (w + 1) * n), 1, T, dy, wrt, false);
        r.grads.forEach((t, k) => accumulate(t, fisher![k]!, true, 1 / windows.length));
        tf.dispose(r.grads);
      }
    },
    onLayer: (l) => {
      const out: LayerGradients = {};
      roles.forEach((role, k) => {
        out[role] = fisher ? { grad: grads![k]!, fisher: fisher[k]! } : { grad: grads![k]! };
      });
      grads = null;
      fisher = null;
      onLayer(l, out);
    },
  });
}
