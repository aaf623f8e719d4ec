/**
 * Faster matMul gradients on the WebAssembly backend. tf.matMul's own gradient multiplies with
 * transposeA/transposeB flags, whose kernels run 10–20× slower there than plain 2-D products;
 * while training, the gradient is replaced by products on explicit transposes. Same values
 * (tested); other backends are unaffected in result. Where the layout says transposed products
 * are as fast (OpenBLAS: `modelLayout().explicitTransposes` false) the original gradient runs.
 */
import * as tf from '@tensorflow/tfjs';
import { modelLayout } from '../backend/layout.ts';

/**
 * Replace tf.matMul's gradient, for plain 2-D products, by products on explicit transposes
 * (`dA = dy·transpose(B)`, `dB = transpose(A)·dy`); other products keep the original gradient.
 * Returns the function that restores the original.
 */
export function useExplicitTransposeMatMulGradient(): () => void {
  const original = tf.getGradient('BatchMatMul');
  tf.registerGradient({
    kernelName: 'BatchMatMul',
    inputsToSave: ['a', 'b'],
    gradFunc: (dy, saved, attrs) => {
      const [a, b] = saved;
      const { transposeA, transposeB } = attrs as unknown as { transposeA: boolean; transposeB: boolean };
      if (a.rank !== 2 || b.rank !== 2 || transposeA || transposeB || !modelLayout().explicitTransposes) return original.gradFunc(dy, saved, attrs);
      return {
        a: () => tf.matMul(dy as tf.Tensor2D, tf.transpose(b as tf.Tensor2D)),
        b: () => tf.matMul(tf.transpose(a as tf.Tensor2D), dy as tf.Tensor2D),
      };
    },
  });
  return () => tf.registerGradient(original);
}

/** Run `fn` with the explicit-transpose matMul gradient, restoring the original afterwards. */
export function withFastMatMulGradient<T>(fn: () => T): T {
  const restore = useExplicitTransposeMatMulGradient();
  let out: T;
  try {
    out = fn();
  } catch (e) {
    restore();
    throw e;
  }
  // An async fn (a training loop that lets the event loop turn) keeps the gradient until it settles.
  if (out instanceof Promise) return out.finally(restore) as T;
  restore();
  return out;
}
