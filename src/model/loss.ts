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
 * Rows and targets for next-token prediction over B windows of T tokens laid out as `[B*T]`:
 * row b*T+t predicts ids[b][t+1], for t < T-1.
 */
export function nextTokenTargets(ids: readonly (readonly number[])[]): { rows: Int32Array; targets: Int32Array } {
  const T = ids[0].length;
  const rows: number[] = [];
  const targets: number[] = [];
  ids.forEach((row, b) => {
    for (let t = 0; t + 1 < T; t++) {
      rows.push(b * T + t);
      targets.push(row[t + 1]);
    }
  });
  return { rows: Int32Array.from(rows), targets: Int32Array.from(targets) };
}

/** Sum of next-token NLLs over the rows of `logits` `[B*T, V]` (scalar) and the count. */
export function causalLmNllSum(logits: tf.Tensor2D, ids: readonly (readonly number[])[]): { sum: tf.Scalar; count: number } {
  const { rows, targets } = nextTokenTargets(ids);
  const sum = tf.tidy(() => tf.sum(tokenNll(tf.gather(logits, tf.tensor1d(rows, 'int32')) as tf.Tensor2D, targets)) as tf.Scalar);
  return { sum, count: rows.length };
}

/**
 * Sum of next-token NLLs over B windows laid out as `[B*T, V]` logits, differentiable on every
 * backend: the target logit is picked with a one-hot product and the rows without a target are
 * weighted out, because gather's gradient (UnsortedSegmentSum) has no WebAssembly kernel. One-hot
 * costs `[B*T, V]` memory, the same as the logits' gradient anyway.
 */
export function trainingNllSum(logits: tf.Tensor2D, ids: readonly (readonly number[])[]): { sum: tf.Scalar; count: number } {
  const { rows, targets } = nextTokenTargets(ids);
  const [N, V] = logits.shape;
  const tgt = new Int32Array(N);
  const w = new Float32Array(N);
  rows.forEach((r, k) => {
    tgt[r] = targets[k];
    w[r] = 1;
  });
  const sum = tf.tidy(() => {
    // int32 one-hot then cast: the WebAssembly OneHot kernel returns all zeros for dtype float32.
    const oneHot = tf.cast(tf.oneHot(tf.tensor1d(tgt, 'int32'), V), 'float32');
    const picked = tf.sum(tf.mul(logits, oneHot), -1);
    return tf.sum(tf.mul(tf.sub(tf.logSumExp(logits, -1), picked), tf.tensor1d(w))) as tf.Scalar;
  });
  return { sum, count: rows.length };
}
