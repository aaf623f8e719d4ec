/**
 * The layouts of `src/backend/layout.ts` compute the same model: attention as the per-group loop
 * (XNNPACK), as batched products on transposed keys (GPU) and as batched products with keys
 * through `transposeB`, in one step or in several (OpenBLAS); RoPE's swap as a reverse or a
 * product; matMul gradients on explicit transposes or on transposed products. Checked on
 * whichever kernel the wasm backend runs (each layout computes on any): attention values and
 * gradients, whole-model logits (prefill and KV-cache decoding) of a synthetic model and
 * stories260K, LM-loss gradients of every linear, and no tensors left behind.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { HAVE_SHARED, NO_SHARED_REASON, STORIES_BIN, assertLogitsClose, maxAbsDiff, setupBackend } from './support.ts';
import { modelLayout, setModelLayout, type ModelLayout } from '../src/backend/layout.ts';
import { attention, causalMask, type AttentionShape } from '../src/model/ops.ts';
import { buildSyntheticLlama } from '../src/model/synthetic.ts';
import { loadModel } from '../src/io/load-model.ts';
import { layerGradients, type LayerGradients } from '../src/prune/gradients.ts';
import { disposeCache, type CausalLM } from '../src/model/causal-lm.ts';
import { mulberry32 } from '../src/util/random.ts';
import { installWasmMatmul, wasmMatmulKernel } from '../src/backend/openblas.ts';

/** The layout the model was written for (XNNPACK): per-group loop, reverse, explicit transposes. */
const XNNPACK: Partial<ModelLayout> = {
  batchedAttention: false, keysByTransposeB: false, transposedHead: true, ropeByProduct: false, explicitTransposes: true, columnPanels: true,
};
const LAYOUTS: [string, Partial<ModelLayout>][] = [
  ['batched, transposed keys (GPU)', { ...XNNPACK, batchedAttention: true }],
  ['batched, keys by transposeB, one step (OpenBLAS)', {
    batchedAttention: true, keysByTransposeB: true, attentionStepBytes: 2 ** 30, transposedHead: false, ropeByProduct: true, explicitTransposes: false, columnPanels: false,
  }],
  // A step of a single group's scores: every step a gather (or a split under the tape) and a concat.
  ['batched, keys by transposeB, one group per step', {
    batchedAttention: true, keysByTransposeB: true, attentionStepBytes: 1, transposedHead: false, ropeByProduct: true, explicitTransposes: false, columnPanels: false,
  }],
];

function random(shape: number[], seed: number): tf.Tensor2D {
  const rng = mulberry32(seed);
  return tf.tensor2d(Float32Array.from({ length: shape[0]! * shape[1]! }, () => rng() * 2 - 1), [shape[0]!, shape[1]!]);
}

function withLayout<T>(layout: Partial<ModelLayout>, fn: () => T): T {
  setModelLayout(layout);
  try {
    return fn();
  } finally {
    setModelLayout(null);
  }
}

/** max |a − b| ≤ tol · max(1, max |a|): float32 rounding of differently ordered sums. */
function assertClose(a: ArrayLike<number>, b: ArrayLike<number>, tol: number, what: string): void {
  const scale = Math.max(1, ...Array.from(a, Math.abs));
  const d = maxAbsDiff(a, b);
  assert.ok(d <= tol * scale, `${what}: max |Δ| ${d} > ${tol} × ${scale}`);
}

describe('model layouts compute the same model', () => {
  before(setupBackend);
  after(() => setModelLayout(null));

  it('causalMask: query i (at position past + i) sees keys 0..past + i, tiled per head', () => {
    const m = causalMask(2, 4, 2, 2);
    const X = -1e9;
    assert.deepEqual(Array.from(m.dataSync()), [0, 0, 0, X, 0, 0, 0, 0, 0, 0, 0, X, 0, 0, 0, 0]);
    assert.deepEqual(m.shape, [4, 4]);
    m.dispose();
  });

  // B = 3 with 4 query heads over 2 kv heads: 6 groups, so a step of 4 groups leaves a short last step.
  const cases: [string, AttentionShape, number][] = [
    ['prefill after 2 cached positions, 4 query heads over 2 kv heads', { B: 3, Tq: 5, Tk: 7, numHeads: 4, numKvHeads: 2, headDim: 8, scale: 8 ** -0.5 }, 2],
    ['one query (decode), no mask', { B: 2, Tq: 1, Tk: 6, numHeads: 4, numKvHeads: 2, headDim: 8, scale: 8 ** -0.5 }, 5],
    ['one kv head (multi-query)', { B: 2, Tq: 4, Tk: 4, numHeads: 3, numKvHeads: 1, headDim: 4, scale: 0.5 }, 0],
    ['as many kv heads as query heads', { B: 1, Tq: 6, Tk: 6, numHeads: 2, numKvHeads: 2, headDim: 4, scale: 0.5 }, 0],
  ];
  for (const [name, s, past] of cases) {
    it(`attention values and gradients agree: ${name}`, () => {
      const { B, Tq, Tk, numHeads: H, numKvHeads: KV, headDim: hd } = s;
      const q = random([B * Tq, H * hd], 1), k = random([B * Tk, KV * hd], 2), v = random([B * Tk, KV * hd], 3);
      const r = random([B * Tq, H * hd], 4);
      const mask = Tq > 1 ? causalMask(Tq, Tk, past, H / KV) : null;
      const run = (layout: Partial<ModelLayout>) => withLayout(layout, () => {
        const before = tf.memory().numTensors;
        const out = attention(q, k, v, s, mask);
        assert.equal(tf.memory().numTensors, before + 1, 'attention left tensors behind');
        // Gradients of Σ r ⊙ attention(q, k, v): the tape runs the split path of a stepped layout.
        const grads = tf.grads((a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) => tf.sum(tf.mul(attention(a as tf.Tensor2D, b as tf.Tensor2D, c as tf.Tensor2D, s, mask), r)))([q, k, v]);
        const host = [out, ...grads].map((t) => t.dataSync().slice());
        tf.dispose([out, ...grads]);
        return host;
      });
      const before = tf.memory().numTensors;
      const ref = run(XNNPACK);
      for (const [lname, layout] of LAYOUTS) {
        const got = run(layout);
        ['values', 'dq', 'dk', 'dv'].forEach((what, i) => assertClose(got[i]!, ref[i]!, 1e-5, `${lname}: ${what}`));
      }
      assert.equal(tf.memory().numTensors, before, 'tensors left behind');
      tf.dispose([q, k, v, r, ...(mask ? [mask] : [])]);
    });
  }

  /** Prefill logits of two rows, then prefill + 3 cached decode steps of one row, under `layout`. */
  function logitsUnder(model: CausalLM, ids: number[][], layout: Partial<ModelLayout>): Float32Array[] {
    return withLayout(layout, () => {
      const before = tf.memory().numTensors;
      const out: Float32Array[] = [];
      const whole = model.forward(ids);
      out.push(whole.dataSync().slice() as Float32Array);
      whole.dispose();
      const cache = model.newCache();
      const pre = model.forward([ids[0]!.slice(0, 6)], cache);
      out.push(pre.dataSync().slice() as Float32Array);
      pre.dispose();
      for (const id of ids[0]!.slice(6, 9)) {
        const step = model.forward([[id]], cache);
        out.push(step.dataSync().slice() as Float32Array);
        step.dispose();
      }
      disposeCache(cache);
      assert.equal(tf.memory().numTensors, before, 'forward left tensors behind');
      return out;
    });
  }

  function assertSameModel(model: CausalLM, ids: number[][]): void {
    const ref = logitsUnder(model, ids, XNNPACK);
    for (const [name, layout] of LAYOUTS) {
      const got = logitsUnder(model, ids, layout);
      got.forEach((l, i) => {
        try {
          assertLogitsClose(l, ref[i]!);
        } catch (e) {
          throw new Error(`${name}, forward ${i}: ${(e as Error).message}`);
        }
      });
    }
  }

  it('synthetic model (6 query heads over 2 kv heads, tied head): prefill and cached decoding logits agree', () => {
    const model = buildSyntheticLlama({ hidden: 48, layers: 2, heads: 6, kvHeads: 2, ffn: 96, vocab: 300, seed: 7, tied: true, std: 0.2 });
    try {
      assertSameModel(model, [[1, 5, 9, 200, 33, 4, 17, 250, 3, 99, 12, 8], [2, 6, 10, 201, 34, 5, 18, 251, 4, 98, 11, 7]]);
    } finally {
      model.dispose();
    }
  });

  it('stories260K: prefill and cached decoding logits agree', { skip: HAVE_SHARED ? false : NO_SHARED_REASON }, () => {
    const { model } = loadModel(STORIES_BIN);
    try {
      assertSameModel(model, [[1, 403, 407, 261, 378, 507, 5, 60, 70, 80, 90, 100], [1, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120]]);
    } finally {
      model.dispose();
    }
  });

  it('LM-loss gradients of every linear agree (layer-wise backward, matMul gradients with or without explicit transposes)', () => {
    const model = buildSyntheticLlama({ hidden: 48, layers: 2, heads: 6, kvHeads: 2, ffn: 96, vocab: 300, seed: 8, std: 0.2 });
    const windows = [[1, 5, 9, 200, 33, 4, 17, 250], [2, 6, 10, 201, 34, 5, 18, 251], [7, 8, 9, 10, 11, 12, 13, 14]];
    const grads = (layout: Partial<ModelLayout>) => withLayout(layout, () => {
      const before = tf.memory().numTensors;
      const out: LayerGradients[] = [];
      layerGradients(model, windows, { fisher: false }, (l, g) => { out[l] = g; }, 2);
      assert.equal(tf.memory().numTensors, before, 'gradients left tensors behind');
      return out;
    });
    try {
      const ref = grads(XNNPACK);
      for (const [name, layout] of LAYOUTS) {
        const got = grads(layout);
        ref.forEach((layer, l) => {
          for (const [role, g] of Object.entries(layer)) {
            assertClose(got[l]![role as keyof LayerGradients]!.grad, g!.grad, 1e-4, `${name}: layer ${l} ${role}`);
          }
        });
      }
    } finally {
      model.dispose();
    }
  });

  it('each wasm kernel picks its layout (OpenBLAS: batched with transposeB; XNNPACK: the per-group loop)', () => {
    setModelLayout(null);
    const flags = () => { const l = modelLayout(); return [l.batchedAttention, l.keysByTransposeB, l.ropeByProduct, l.transposedHead, l.explicitTransposes, l.columnPanels]; };
    const blas = [true, true, true, false, false, false], xnnpack = [false, false, false, true, true, true];
    assert.deepEqual(flags(), wasmMatmulKernel() === 'openblas' ? blas : xnnpack);
    installWasmMatmul('xnnpack');
    try {
      assert.deepEqual(flags(), xnnpack);
    } finally {
      installWasmMatmul();
    }
  });
});
