/**
 * The faster paths of the forward pass compute the same values as the plain ones, bit for bit:
 * a wide head through its transposed layout (`headProduct`) against one `tf.matMul`, and RoPE (a reverse
 * or a product with a permutation, with signed sin, or the fused native kernel) against the definition
 * written out per element, and the fused kernel's gradient against the composed ops'; the fused
 * RMSNorm, SiLU(gate) ⊙ up and grouped attention against the composed ops, bit for bit, and not
 * taken under a tape.
 */
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { setupBackend } from './support.ts';
import { applyRope, attention, causalMask, disposeRope, headProduct, makeRope, rmsNorm, ropeTables, silu, siluMul } from '../src/model/ops.ts';
import { setModelLayout } from '../src/backend/layout.ts';
import { mulberry32 } from '../src/util/random.ts';
import { installWasmMatmul } from '../src/backend/openblas.ts';
import { ATTENTION_KERNEL, COLUMN_SQUARE_SUMS_KERNEL, RMSNORM_KERNEL, ROPE_KERNEL, SILU_MUL_KERNEL, fusedKernelUsable, ropeKernelActive } from '../src/backend/native-elementwise.ts';
import { columnSquareSums } from '../src/prune/stats.ts';

function randomTensor(shape: [number, number], seed: number): tf.Tensor2D {
  const rng = mulberry32(seed);
  return tf.tensor2d(Float32Array.from({ length: shape[0] * shape[1] }, () => rng() * 2 - 1), shape);
}

describe('forward speed paths', () => {
  before(setupBackend);

  // The transposed route is XNNPACK's (with OpenBLAS the plain product is taken): checked on that kernel.
  it('headProduct through the transposed head equals one matMul bit for bit (17 MB head, 96 rows)', () => {
    installWasmMatmul('xnnpack');
    try {
      headProductCase();
    } finally {
      installWasmMatmul();
    }
  });

  function headProductCase(): void {
    // [256, 16500] fp32 is 16.9 MB, above the threshold.
    const x = randomTensor([96, 256], 1);
    const w = randomTensor([256, 16500], 2);
    const wT = tf.transpose(w) as tf.Tensor2D;
    const whole = tf.matMul(x, w);
    const viaT = headProduct(x, w, wT);
    assert.deepEqual(viaT.shape, [96, 16500]);
    assert.ok(Buffer.from((viaT.dataSync() as Float32Array).buffer).equals(Buffer.from((whole.dataSync() as Float32Array).buffer)));
    // Few rows (a decode step), or no transposed head: one plain product.
    const x1 = tf.slice(x, [0, 0], [2, 256]);
    assert.deepEqual(headProduct(x1, w, wT).dataSync(), tf.matMul(x1, w).dataSync());
    assert.deepEqual(headProduct(x, w, null).dataSync(), whole.dataSync());
    tf.dispose([x, w, wT, whole, viaT, x1]);
  }

  /** fn with the fused RoPE kernel removed (the composed ops), or as it is. */
  function withRopeKernel<T>(fused: boolean, fn: () => T): T {
    const k = tf.getKernel(ROPE_KERNEL, 'wasm');
    if (fused || !k) return fn();
    tf.unregisterKernel(ROPE_KERNEL, 'wasm');
    try {
      return fn();
    } finally {
      tf.registerKernel(k);
    }
  }

  // hd 8 (blocks of 4 or 1) and 64 (blocks of 32: the fused kernel's vector loop), batch 2 over the tables.
  for (const [layout, byProduct, hd] of [['half', false, 8], ['interleaved', false, 8], ['half', true, 8], ['interleaved', true, 8], ['half', true, 64], ['interleaved', true, 64]] as const) {
    for (const fused of [true, false]) {
      const how = fused ? 'the fused kernel' : `the swap as ${byProduct ? 'a product' : 'a reverse'}`;
      it(`RoPE (${layout}, hd ${hd}, ${how}) equals x·cos + rotate(x)·sin written per element`, (t) => {
        if (fused && !ropeKernelActive()) return t.skip('no fused RoPE kernel: the OpenBLAS addon with its elementwise kernels is not built');
        const B = 2, T = 5, heads = 3, start = 7, width = heads * hd;
        const x = randomTensor([B * T, width], 3);
        setModelLayout({ ropeByProduct: byProduct });
        const rope = makeRope(start, T, heads, hd, 10000, layout);
        setModelLayout(null);
        assert.equal(rope.swap !== null, byProduct);
        const got = withRopeKernel(fused, () => applyRope(x, B, T, rope).dataSync());
        const xs = x.dataSync();
        const { cos, sin } = ropeTables(start, T, hd, 10000);
        const half = hd / 2;
        for (let n = 0; n < B * T; n++) {
          const t = n % T;
          for (let h = 0; h < heads; h++) {
            for (let i = 0; i < half; i++) {
              // The pair (a, b) rotated by angle i: a' = a cos − b sin, b' = b cos + a sin.
              const [da, db] = layout === 'half' ? [i, i + half] : [2 * i, 2 * i + 1];
              const a = xs[n * width + h * hd + da]!, b = xs[n * width + h * hd + db]!;
              const c = cos[t * half + i]!, s = sin[t * half + i]!;
              assert.equal(got[n * width + h * hd + da], Math.fround(Math.fround(a * c) + Math.fround(-b * s)));
              assert.equal(got[n * width + h * hd + db], Math.fround(Math.fround(b * c) + Math.fround(a * s)));
            }
          }
        }
        tf.dispose(x);
        disposeRope(rope);
      });
    }
  }

  for (const layout of ['half', 'interleaved'] as const) {
    it(`RoPE's gradient (${layout}): the fused kernel's equals the composed ops', bit for bit`, (t) => {
      if (!ropeKernelActive()) return t.skip('no fused RoPE kernel: the OpenBLAS addon with its elementwise kernels is not built');
      const B = 3, T = 4, heads = 2, hd = 64, width = heads * hd;
      const x = randomTensor([B * T, width], 5);
      const dy = randomTensor([B * T, width], 6);
      const rope = makeRope(3, T, heads, hd, 10000, layout);
      // The vector–Jacobian product with dy, as the backward pass takes it (layer-backward.ts).
      const vjp = () => {
        const { grads } = tf.engine().gradients(() => tf.sum(tf.mul(applyRope(x, B, T, rope), dy)) as tf.Scalar, [x]);
        const g = grads[0]!.dataSync() as Float32Array;
        tf.dispose(grads);
        return g;
      };
      const fused = withRopeKernel(true, vjp);
      const composed = withRopeKernel(false, vjp);
      assert.ok(Buffer.from(fused.buffer).equals(Buffer.from(composed.buffer)));
      // And the gradient is the transpose of the rotation: dx·(rotation) written out for one entry pair.
      const c = rope.cos.dataSync(), s = rope.sin.dataSync(), d = dy.dataSync();
      const [j, p] = layout === 'half' ? [5, 5 + hd / 2] : [10, 11];
      const n = 7, tt = n % T;
      assert.equal(fused[n * width + j], Math.fround(Math.fround(d[n * width + j]! * c[tt * width + j]!) + Math.fround(d[n * width + p]! * s[tt * width + p]!)));
      tf.dispose([x, dy]);
      disposeRope(rope);
    });
  }

  const bits = (t: tf.Tensor) => Buffer.from((t.dataSync() as Float32Array).buffer);

  it('RMSNorm and SiLU(gate) ⊙ up: the fused kernels equal the composed ops bit for bit', (t) => {
    if (!fusedKernelUsable(RMSNORM_KERNEL)) return t.skip('no fused kernels: the OpenBLAS addon with its elementwise kernels is not built');
    // Row lengths below, at and off the 16 partial sums; values from 1e-3 to 1e3 in size; eps as LLaMA and stories260K set it.
    for (const [rows, cols, eps, seed] of [[3, 7, 1e-5, 1], [128, 64, 1e-5, 2], [33, 576, 1e-6, 3], [2, 1411, 1e-5, 4]] as const) {
      const rng = mulberry32(seed);
      const x = tf.tensor2d(Float32Array.from({ length: rows * cols }, () => (rng() * 2 - 1) * 10 ** (rng() * 6 - 3)), [rows, cols]);
      const w = tf.tensor1d(Float32Array.from({ length: cols }, () => rng() * 2 - 0.5));
      const fused = rmsNorm(x, { weight: w, bias: null }, eps);
      const composed = withoutKernel(RMSNORM_KERNEL, () => rmsNorm(x, { weight: w, bias: null }, eps));
      assert.ok(bits(fused).equals(bits(composed)), `RMSNorm ${rows}×${cols}`);
      const g = tf.mul(x, 3), u = tf.sub(x, 0.25);
      const fusedGU = siluMul(() => g.clone() as tf.Tensor2D, () => u.clone() as tf.Tensor2D);
      const composedGU = tf.mul(silu(g), u);
      assert.ok(bits(fusedGU).equals(bits(composedGU)), `SiLU·up ${rows}×${cols}`);
      tf.dispose([x, w, fused, composed, g, u, fusedGU, composedGU]);
    }
  });

  it("the statistics' column sums of squares: the fused kernel equals Square then Sum bit for bit", (t) => {
    if (!fusedKernelUsable(COLUMN_SQUARE_SUMS_KERNEL)) return t.skip('no fused kernels: the OpenBLAS addon with its elementwise kernels is not built');
    // A calibration batch's shape (split over the pool), odd sides, one row; values over six decades,
    // so a product's rounding before its add (no fused multiply-add) shows in the sums.
    for (const [rows, cols, seed] of [[4096, 512, 1], [1000, 1411, 2], [7, 3, 3], [1, 300, 4]] as const) {
      const rng = mulberry32(seed);
      const x = tf.tensor2d(Float32Array.from({ length: rows * cols }, () => (rng() * 2 - 1) * 10 ** (rng() * 6 - 3)), [rows, cols]);
      const fused = columnSquareSums(x);
      const composed = withoutKernel(COLUMN_SQUARE_SUMS_KERNEL, () => columnSquareSums(x));
      assert.deepEqual(fused.shape, [cols]);
      assert.ok(bits(fused).equals(bits(composed)), `${rows}×${cols}`);
      tf.dispose([x, fused, composed]);
    }
  });

  it('RMSNorm and SiLU(gate) ⊙ up take the composed ops under a gradient tape (the fused kernels have no gradient)', (t) => {
    if (!fusedKernelUsable(SILU_MUL_KERNEL)) return t.skip('no fused kernels: the OpenBLAS addon with its elementwise kernels is not built');
    const x = randomTensor([4, 16], 9);
    const w = tf.ones([16]) as tf.Tensor1D;
    let usable: boolean | null = null;
    const { grads } = tf.engine().gradients(() => {
      usable = fusedKernelUsable(RMSNORM_KERNEL);
      return tf.sum(siluMul(() => rmsNorm(x, { weight: w, bias: null }, 1e-5), () => x)) as tf.Scalar;
    }, [x]);
    assert.equal(usable, false);
    assert.ok(grads[0]!.dataSync().every(Number.isFinite));
    tf.dispose([x, w, ...grads]);
  });

  /** fn with a fused kernel removed (the composed ops). */
  function withoutKernel<T>(name: string, fn: () => T): T {
    const k = tf.getKernel(name, 'wasm')!;
    tf.unregisterKernel(name, 'wasm');
    try {
      return fn();
    } finally {
      tf.registerKernel(k);
    }
  }

  it('grouped attention: the fused kernel equals the composed ops bit for bit (prefill, decode, batches, GQA, steps)', (t) => {
    if (!fusedKernelUsable(ATTENTION_KERNEL)) return t.skip('no fused kernels: the OpenBLAS addon with its elementwise kernels is not built');
    // [B, Tq, Tk (past = Tk − Tq), H, KV, hd, step bytes]: one step, a step per group or two, decode without a mask;
    // the last two large enough that the layouts (2^15 elements) and the masked softmax (a scores product of
    // 2^21 multiply-adds: native/elementwise-kernels.c) split over the addon's threads, the last in steps of three groups.
    const cases = [[1, 16, 16, 8, 4, 8, 1 << 26], [2, 12, 20, 6, 2, 16, 1 << 26], [2, 9, 9, 4, 4, 32, 4 * 2 * 9 * 9], [3, 5, 5, 4, 1, 8, 4 * 4 * 5 * 5 * 2 + 1], [2, 1, 7, 8, 2, 8, 1 << 26],
      [4, 128, 128, 8, 4, 32, 1 << 26], [4, 96, 320, 8, 2, 64, 4 * 4 * 96 * 320 * 3]] as const;
    for (const [B, Tq, Tk, H, KV, hd, stepBytes] of cases) {
      const q = randomTensor([B * Tq, H * hd], B + Tq), k = randomTensor([B * Tk, KV * hd], 2 * Tk), v = randomTensor([B * Tk, KV * hd], 3 * Tk + 1);
      const mask = Tq === 1 ? null : causalMask(Tq, Tk, Tk - Tq, H / KV);
      const shape = { B, Tq, Tk, numHeads: H, numKvHeads: KV, headDim: hd, scale: 1 / Math.sqrt(hd) };
      setModelLayout({ batchedAttention: true, keysByTransposeB: true, attentionStepBytes: stepBytes });
      try {
        const fused = attention(q, k, v, shape, mask);
        const composed = withoutKernel(ATTENTION_KERNEL, () => attention(q, k, v, shape, mask));
        assert.deepEqual(fused.shape, [B * Tq, H * hd]);
        assert.ok(bits(fused).equals(bits(composed)), JSON.stringify({ B, Tq, Tk, H, KV, hd, stepBytes }));
        tf.dispose([fused, composed]);
      } finally {
        setModelLayout(null);
      }
      tf.dispose([q, k, v, ...(mask ? [mask] : [])]);
    }
  });
});
