/**
 * Causal-LM losses. Per-token NLL is computed as logsumexp(logits) − logit[target], which avoids
 * materialising a one-hot `[N, vocab]` matrix for large vocabularies.
 */
import * as tf from '@tensorflow/tfjs';

/** NLL of `targets[n]` under `logits[n]` for each row n → `[N]`. Differentiable. */
export function tokenNll(logits: tf.Tensor2D, targets: Int32Array | readonly number[]): tf.Tensor1D {
  return tf.tidy(() => {
    const [N, V] = logits.shape;
    const flatIdx = Int32Array.from({ length: N }, (_, n) => n * V + targets[n]);
    const picked = tf.gather(logits.reshape([-1]), tf.tensor1d(flatIdx, 'int32'));
    return tf.sub(tf.logSumExp(logits, -1), picked) as tf.Tensor1D;
  });
}

/**
 * Which tokens are predicted, per window, aligned with its ids: token t (t ≥ 1) counts in the loss
 * when `mask[b][t]` is non-zero (token 0 is never predicted). Used for instruction data (loss on the
 * response only) and for padding; without a mask every token after the first counts.
 */
export type LossMask = readonly (readonly number[])[];

/**
 * Rows and targets for next-token prediction over B windows of T tokens laid out as `[B*T]`:
 * row b*T+t predicts ids[b][t+1], for t < T-1 (and, with a mask, only where mask[b][t+1] ≠ 0).
 */
export function nextTokenTargets(ids: readonly (readonly number[])[], mask?: LossMask): { rows: Int32Array; targets: Int32Array } {
  const T = ids[0].length;
  const rows: number[] = [];
  const targets: number[] = [];
  ids.forEach((row, b) => {
    for (let t = 0; t + 1 < T; t++) {
      if (mask && !mask[b][t + 1]) continue;
      rows.push(b * T + t);
      targets.push(row[t + 1]);
    }
  });
  return { rows: Int32Array.from(rows), targets: Int32Array.from(targets) };
}

/** Sum of next-token NLLs over the rows of `logits` `[B*T, V]` (scalar) and the count (see `LossMask`). */
export function causalLmNllSum(logits: tf.Tensor2D, ids: readonly (readonly number[])[], mask?: LossMask): { sum: tf.Scalar; count: number } {
  const { rows, targets } = nextTokenTargets(ids, mask);
  if (rows.length === 0) return { sum: tf.scalar(0), count: 0 };
  const sum = tf.tidy(() => tf.sum(tokenNll(tf.gather(logits, tf.tensor1d(rows, 'int32')) as tf.Tensor2D, targets)) as tf.Scalar);
  return { sum, count: rows.length };
}

/**
 * Sum of next-token NLLs of B windows laid out as `[B*T, V]` logits — the training loss, with an
 * explicit gradient so it is differentiable on every backend and cheap to differentiate: gather's
 * gradient (UnsortedSegmentSum) has no WebAssembly kernel, and a one-hot product's gradient goes
 * through a slow broadcast. Forward: p = softmax(logits) (one fused kernel), log-sum-exp =
 * max(logits) − log(max(p)) (max(p) ≥ 1/V cannot underflow), NLL = lse − logit[target].
 * Backward: (p − one-hot) ⊙ weight · dy, weight 0 on rows without a target (and rows a mask drops).
 */
export function trainingNllSum(logits: tf.Tensor2D, ids: readonly (readonly number[])[], mask?: LossMask): { sum: tf.Scalar; count: number } {
  const { rows, targets } = nextTokenTargets(ids, mask);
  const [N, V] = logits.shape;
  const tgt = new Int32Array(N);
  const w = new Float32Array(N);
  const flat = new Int32Array(N);
  rows.forEach((r, k) => {
    tgt[r] = targets[k];
    w[r] = 1;
  });
  for (let n = 0; n < N; n++) flat[n] = n * V + tgt[n];
  // int32 one-hot then cast: the WebAssembly OneHot kernel returns zeros for dtype float32.
  const oneHot = () => tf.cast(tf.oneHot(tf.tensor1d(tgt, 'int32'), V), 'float32');
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [x, save] = args as [tf.Tensor2D, tf.GradSaveFunc];
    const p = tf.softmax(x);
    save([p]);
    const lse = tf.sub(tf.max(x, -1), tf.log(tf.max(p, -1)));
    const picked = tf.gather(x.reshape([-1]), tf.tensor1d(flat, 'int32'));
    const value = tf.sum(tf.mul(tf.sub(lse, picked), tf.tensor1d(w)));
    const gradFunc = (dy: tf.Tensor, [sp]: tf.Tensor[]) =>
      [tf.mul(tf.mul(tf.sub(sp, oneHot()), tf.tensor2d(w, [N, 1])), dy)];
    return { value, gradFunc };
  });
  return { sum: f(logits) as tf.Scalar, count: rows.length };
}
