/**
 * Engine primitives shared by methods: the mask target (`Cut`, `cutOf`, `withScope`,
 * `maskForCut`), SparseGPT's per-row block cut, and the coupled structures of a layer (members,
 * slices, parameters per unit with and without biases) by hand and against parameter counts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { gaussian } from '../src/util/random.ts';
import { cutOf, maskForCut, maskNM, maskPerMatrix, maskPerRow, withScope, type Cut } from '../src/prune/masks.ts';
import { sparsegptPrune } from '../src/prune/obs.ts';
import {
  couplingLayout, ffnChannelCoupling, kvGroupCoupling, queryFeaturesOfGroups, unitParams, unitSlices,
} from '../src/prune/coupling.ts';
import { syntheticLlamaConfig } from '../src/model/synthetic.ts';
import { modelView, viewFromData, type ModelView } from '../src/model/view.ts';
import type { LinearRole } from '../src/model/family.ts';
import { loadModel } from '../src/io/load-model.ts';
import { ConfigError } from '../src/util/errors.ts';
import { HAVE_SHARED, NO_SHARED_REASON, SHARED_DATA, STORIES_BIN, setupBackend } from './support.ts';

test('cutOf / withScope: the engine target as a cut, N:M unchanged by the scope', () => {
  const un = { sparsity: 0.3, pattern: { kind: 'unstructured' } } as const;
  const nm = { sparsity: 0.5, pattern: { kind: 'nm', n: 2, m: 4 } } as const;
  assert.deepEqual(cutOf(un, 'row'), { kind: 'row', sparsity: 0.3 });
  assert.deepEqual(cutOf(un, 'matrix'), { kind: 'matrix', sparsity: 0.3 });
  assert.deepEqual(cutOf(nm, 'row'), { kind: 'nm', n: 2, m: 4 });
  assert.deepEqual(withScope({ kind: 'row', sparsity: 0.3 }, 'matrix'), { kind: 'matrix', sparsity: 0.3 });
  assert.deepEqual(withScope({ kind: 'nm', n: 1, m: 4 }, 'row'), { kind: 'nm', n: 1, m: 4 });
});

test('maskForCut by hand: per row, per matrix and 2:4 choose different entries', () => {
  // Row 0 holds the four smallest scores of the matrix.
  const s = [1, 2, 3, 4, 10, 20, 30, 40];
  assert.deepEqual([...maskForCut(s, 2, 4, { kind: 'row', sparsity: 0.5 })], [0, 0, 1, 1, 0, 0, 1, 1]);
  assert.deepEqual([...maskForCut(s, 2, 4, { kind: 'matrix', sparsity: 0.5 })], [0, 0, 0, 0, 1, 1, 1, 1]);
  assert.deepEqual([...maskForCut([4, 1, 3, 2, 5, 8, 6, 7], 1, 8, { kind: 'nm', n: 2, m: 4 })], [1, 0, 1, 0, 0, 1, 0, 1]);
  assert.throws(() => maskForCut(s, 2, 4, { kind: 'nm', n: 2, m: 3 }), ConfigError);
});

test('maskForCut equals the selection it names on random scores', () => {
  const g = gaussian(3);
  const rows = 7, cols = 24;
  const s = Float64Array.from({ length: rows * cols }, () => g());
  const cases: [Cut, Uint8Array][] = [
    [{ kind: 'row', sparsity: 0.4 }, maskPerRow(s, rows, cols, 0.4)],
    [{ kind: 'matrix', sparsity: 0.4 }, maskPerMatrix(s, rows, cols, 0.4)],
    [{ kind: 'nm', n: 1, m: 4 }, maskNM(s, rows, cols, 1, 4)],
  ];
  for (const [cut, expected] of cases) assert.deepEqual(maskForCut(s, rows, cols, cut), expected, JSON.stringify(cut));
});

test('SparseGPT with a per-row cut prunes ⌊s·width⌋ of every row inside every sweep block', () => {
  const g = gaussian(5);
  const rows = 6, cols = 40, B = 16; // blocks 16, 16, 8
  const X = Float64Array.from({ length: 80 * cols }, () => g());
  const H = new Float64Array(cols * cols);
  for (let t = 0; t < 80; t++) for (let i = 0; i < cols; i++) for (let j = 0; j < cols; j++) H[i * cols + j]! += X[t * cols + i]! * X[t * cols + j]!;
  const W = Float32Array.from({ length: rows * cols }, () => g());
  const r = sparsegptPrune(W, rows, cols, H, { kind: 'row', sparsity: 0.5, blocksize: B });
  for (const [i1, i2] of [[0, 16], [16, 32], [32, 40]] as const) {
    for (let row = 0; row < rows; row++) {
      let z = 0;
      for (let j = i1; j < i2; j++) z += r.mask[row * cols + j] === 0 ? 1 : 0;
      assert.equal(z, Math.floor(0.5 * (i2 - i1)), `row ${row}, block [${i1}, ${i2})`);
    }
  }
});

/** A LLaMA view: hidden 8, 4 query heads of dim 2 over 2 KV heads, FFN 6; biases on `biased`. */
function llamaView(biased: LinearRole[]): ModelView {
  const config = syntheticLlamaConfig({ hidden: 8, layers: 2, heads: 4, kvHeads: 2, ffn: 6, vocab: 16, seed: 0 });
  return viewFromData({ config, biases: [biased, biased], parameters: { byType: {}, decoderLinears: 0, decoderLayers: 0, total: 0 } });
}

test('coupling by hand: KV group u = q rows [4u, 4u+4), k/v rows [2u, 2u+2), o columns [4u, 4u+4); FFN channel c', () => {
  const layout = couplingLayout(llamaView([]), 1);
  const kv = kvGroupCoupling(layout);
  assert.equal(kv.units, 2);
  assert.deepEqual(kv.members, [
    { role: 'q', axis: 'out', per: 4 }, { role: 'k', axis: 'out', per: 2 }, { role: 'v', axis: 'out', per: 2 }, { role: 'o', axis: 'in', per: 4 },
  ]);
  const ffn = ffnChannelCoupling(layout);
  assert.equal(ffn.units, 6);
  assert.deepEqual(ffn.members, [{ role: 'gate', axis: 'out', per: 1 }, { role: 'up', axis: 'out', per: 1 }, { role: 'down', axis: 'in', per: 1 }]);
  assert.deepEqual(unitSlices([1], 4), [4, 5, 6, 7]);
  assert.deepEqual(unitSlices([2, 0], 2), [4, 5, 0, 1]);
  assert.deepEqual(queryFeaturesOfGroups([1], 2, 2), [4, 5, 6, 7]);
  assert.throws(() => kvGroupCoupling({ ...layout, numHeads: 5 }), ConfigError);
  assert.throws(() => couplingLayout(llamaView([]), 2), ConfigError);
});

test('parameters per unit by hand, with and without biases', () => {
  // attn: q 4 rows × 8, k and v 2 rows × 8 each, o 4 columns × 8 = 96 weights; FFN: 3 × 8 = 24.
  const plain = llamaView([]);
  assert.equal(unitParams(plain, 0, 'attn', { biases: false }), 96);
  assert.equal(unitParams(plain, 0, 'attn', { biases: true }), 96);
  assert.equal(unitParams(plain, 0, 'mlp', { biases: true }), 24);
  // Biases on q, k, v, o (attention_bias): one entry per removed row (4 + 2 + 2); o's bias is per
  // output, not per removed input column, so it stays.
  const biased = llamaView(['q', 'k', 'v', 'o', 'down']);
  assert.equal(unitParams(biased, 0, 'attn', { biases: false }), 96);
  assert.equal(unitParams(biased, 0, 'attn', { biases: true }), 104);
  assert.equal(unitParams(biased, 0, 'mlp', { biases: true }), 24);
});

test('units × parameters per unit = the counted coupled parameters (stories260K, OPT, LLaMA with biases)', { skip: HAVE_SHARED ? false : NO_SHARED_REASON }, async () => {
  await setupBackend();
  for (const p of [STORIES_BIN, path.join(SHARED_DATA, 'golden/opt-tiny'), path.join(SHARED_DATA, 'golden/llama-tiny-bias-tied')]) {
    const { model } = loadModel(p);
    const view = modelView(model);
    const by = view.parameters.byType;
    const sum = (roles: readonly LinearRole[]) => roles.reduce((a, r) => a + by[r]!, 0);
    // Biases of the consuming linears (o, down/fc2) are per output and never removed.
    const fixed = (role: LinearRole) => {
      let n = 0;
      for (let l = 0; l < view.numLayers; l++) if (view.hasBias(l, role)) n += view.config.hiddenSize;
      return n;
    };
    const { kvGroup, ffnChannel } = view.spec;
    let attn = 0, mlp = 0, weights = 0;
    view.config.layers.forEach((s, l) => {
      attn += s.numKvHeads * unitParams(view, l, 'attn', { biases: true });
      mlp += s.intermediateSize * unitParams(view, l, 'mlp', { biases: true });
      weights += s.numKvHeads * unitParams(view, l, 'attn', { biases: false }) + s.intermediateSize * unitParams(view, l, 'mlp', { biases: false });
    });
    assert.equal(attn + fixed(kvGroup.inputsOf), sum([kvGroup.query, ...kvGroup.keyValue, kvGroup.inputsOf]), `${p}: attention`);
    assert.equal(mlp + fixed(ffnChannel.inputsOf), sum([...ffnChannel.outputsOf, ffnChannel.inputsOf]), `${p}: FFN`);
    assert.equal(weights, view.parameters.decoderLinears, `${p}: decoder-linear weights`);
    model.dispose();
  }
});
