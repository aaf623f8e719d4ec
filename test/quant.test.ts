/**
 * Group-wise fake quantisation (saap.md §6): hand-computed cases (a partial last group included),
 * the α/2 error bound and the group layout on random weights (checked against min/max computed
 * here from the raw array), the exact QA-LoRA merge β += s·(A·B)/n_g with and without a partial
 * group, and the packed INT4 layout of the quantised export.
 */
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import seedrandom from 'seedrandom';
import { setupBackend, maxAbsDiff } from './support.ts';
import {
  dequantize, dequantizeHost, expandGroupRows, fakeQuantize, mergeIntoBeta, poolGroups, qaLoraGroupDelta, quantizeGroupwise,
} from '../src/finetune/quant.ts';
import { packCodes, unpackCodes } from '../src/io/quantized-checkpoint.ts';
import { ConfigError } from '../src/util/errors.ts';

function randomArray(n: number, seed: string, scale = 1): Float32Array {
  const rng = seedrandom.alea(seed);
  return Float32Array.from({ length: n }, () => (rng() * 2 - 1) * scale);
}

describe('group-wise fake quantisation', () => {
  before(setupBackend);

  it('hand-computed 2-bit group: α = 0.5, β = 0, codes [0,0,1,3]', () => {
    // One output column, one group of 4 inputs (stored [in, out] = [4, 1]).
    const w = tf.tensor2d([0, 0.1, 0.26, 1.5], [4, 1]);
    const qw = quantizeGroupwise(w, { bits: 2, groupSize: 4 });
    assert.deepEqual(Array.from(qw.q), [0, 0, 1, 3]);
    assert.ok(Math.abs(qw.alpha[0] - 0.5) < 1e-7);
    assert.equal(qw.beta[0], 0);
    assert.deepEqual(Array.from(dequantizeHost(qw)), [0, 0, 0.5, 1.5]);
    w.dispose();
  });

  it('groups run along the input axis of our [in, out] layout, per output column', () => {
    // Column 0 holds 0..7, column 1 holds 100 + 10·i; groups of 4 inputs → 2 groups per column.
    const data: number[] = [];
    for (let i = 0; i < 8; i++) data.push(i, 100 + 10 * i);
    const w = tf.tensor2d(data, [8, 2]);
    const qw = quantizeGroupwise(w, { bits: 4, groupSize: 4 });
    // β per (group, out): min of inputs 0..3 and 4..7 of each column.
    assert.deepEqual(Array.from(qw.beta), [0, 100, 4, 140]);
    // α = (max − min)/15: 3/15 for column 0, 30/15 for column 1.
    assert.ok(maxAbsDiff(qw.alpha, [0.2, 2, 0.2, 2]) < 1e-6);
    w.dispose();
  });

  for (const [bits, gs, inF] of [[4, 16, 64], [3, 8, 64], [8, 32, 64], [4, 16, 70], [4, 32, 20]] as const) {
    it(`random weights, ${bits} bits, ${inF} inputs in groups of ${gs}: |w − Ŵ| ≤ α/2 in every group, α/β from the group min/max`, () => {
      const outF = 24;
      const raw = randomArray(inF * outF, `q${bits}`, 0.3);
      const w = tf.tensor2d(raw, [inF, outF]);
      const qw = quantizeGroupwise(w, { bits, groupSize: gs });
      const deq = dequantizeHost(qw);
      const levels = 2 ** bits - 1;
      for (let g = 0; g < Math.ceil(inF / gs); g++) {
        const end = Math.min(inF, (g + 1) * gs);
        for (let o = 0; o < outF; o++) {
          let mn = Infinity;
          let mx = -Infinity;
          for (let i = g * gs; i < end; i++) {
            mn = Math.min(mn, raw[i * outF + o]);
            mx = Math.max(mx, raw[i * outF + o]);
          }
          const alpha = qw.alpha[g * outF + o];
          assert.equal(qw.beta[g * outF + o], mn);
          assert.ok(Math.abs(alpha - (mx - mn) / levels) <= 1e-6 * Math.abs(mx - mn));
          for (let i = g * gs; i < end; i++) {
            const k = i * outF + o;
            assert.ok(qw.q[k] <= levels);
            const err = Math.abs(raw[k] - deq[k]);
            assert.ok(err <= alpha / 2 + 1e-6, `group ${g} out ${o} input ${i}: error ${err} > α/2 = ${alpha / 2}`);
          }
        }
      }
      // The device dequantisation and fakeQuantize agree with the host one.
      const d1 = dequantize(qw);
      const d2 = fakeQuantize(w, { bits, groupSize: gs });
      assert.ok(maxAbsDiff(d1.dataSync(), deq) <= 1e-6);
      assert.ok(maxAbsDiff(d2.dataSync(), deq) <= 1e-6);
      tf.dispose([w, d1, d2]);
    });
  }

  it('a constant group is exact (α = 0, Ŵ = β)', () => {
    const w = tf.fill([8, 3], 0.37) as tf.Tensor2D;
    const qw = quantizeGroupwise(w, { bits: 4, groupSize: 4 });
    assert.ok(qw.alpha.every((a) => a === 0));
    assert.ok(maxAbsDiff(dequantizeHost(qw), new Float32Array(24).fill(0.37)) === 0);
    w.dispose();
  });

  it('QA-LoRA merge is exact: x·Ŵ + s·pool(x)·A·B = x·dequant(β + s·(A·B)/gs)', () => {
    const inF = 32;
    const outF = 12;
    const gs = 8;
    const r = 3;
    const s = 2;
    const w = tf.tensor2d(randomArray(inF * outF, 'w', 0.5), [inF, outF]);
    const A = tf.tensor2d(randomArray((inF / gs) * r, 'A'), [inF / gs, r]);
    const B = tf.tensor2d(randomArray(r * outF, 'B'), [r, outF]);
    const x = tf.tensor2d(randomArray(5 * inF, 'x'), [5, inF]);
    const qw = quantizeGroupwise(w, { bits: 4, groupSize: gs });
    const wq = dequantize(qw);
    const delta = qaLoraGroupDelta(A, B, s, gs, inF);
    const merged = dequantize(mergeIntoBeta(qw, delta.dataSync() as Float32Array));
    const y1 = tf.tidy(() => tf.add(tf.matMul(x, wq), tf.mul(tf.matMul(tf.matMul(poolGroups(x, gs), A), B), s)));
    const y2 = tf.matMul(x, merged);
    const diff = maxAbsDiff(y1.dataSync(), y2.dataSync());
    assert.ok(diff <= 1e-5, `max |Δ| ${diff}`);
    // And the update is non-trivial (the test could fail if the adapter were ignored).
    const y0 = tf.matMul(x, wq);
    assert.ok(maxAbsDiff(y0.dataSync(), y2.dataSync()) > 1e-2);
    tf.dispose([w, A, B, x, wq, delta, merged, y1, y2, y0]);
  });

  it('a partial last group (5 inputs, groups of 2): β = [0, 2, 10], α = [1/3, 1/3, 0], codes [0, 3, 0, 3, 0] (2 bits)', () => {
    const w = tf.tensor2d([0, 1, 2, 3, 10], [5, 1]);
    const qw = quantizeGroupwise(w, { bits: 2, groupSize: 2 });
    assert.deepEqual(Array.from(qw.q), [0, 3, 0, 3, 0]);
    assert.deepEqual(Array.from(qw.beta), [0, 2, 10]);
    assert.ok(maxAbsDiff(qw.alpha, [1 / 3, 1 / 3, 0]) < 1e-7);
    assert.ok(maxAbsDiff(dequantizeHost(qw), [0, 1, 2, 3, 10]) < 1e-6);
    w.dispose();
  });

  it('QA-LoRA with a partial last group (30 inputs, groups of 8 + 6): pooling is the group mean, the merge is exact', () => {
    const inF = 30;
    const outF = 5;
    const gs = 8;
    const r = 2;
    const s = 1.5;
    const xs = randomArray(3 * inF, 'px');
    const x = tf.tensor2d(xs, [3, inF]);
    // Group means computed here: groups [0,8), [8,16), [16,24), [24,30).
    const bounds = [[0, 8], [8, 16], [16, 24], [24, 30]];
    const means = Array.from({ length: 3 }, (_, n) => bounds.map(([a, b]) => {
      let t = 0;
      for (let i = a; i < b; i++) t += xs[n * inF + i];
      return t / (b - a);
    })).flat();
    const pooled = poolGroups(x, gs);
    assert.deepEqual(pooled.shape, [3, 4]);
    assert.ok(maxAbsDiff(pooled.dataSync(), means) < 1e-6);
    const A = tf.tensor2d(randomArray(4 * r, 'pA'), [4, r]);
    const B = tf.tensor2d(randomArray(r * outF, 'pB'), [r, outF]);
    // The expanded A acts on raw inputs exactly as A acts on the group means.
    const viaExpand = tf.matMul(x, expandGroupRows(A, gs, inF));
    const viaPool = tf.matMul(pooled, A);
    assert.ok(maxAbsDiff(viaExpand.dataSync(), viaPool.dataSync()) < 1e-6);
    const w = tf.tensor2d(randomArray(inF * outF, 'pw', 0.5), [inF, outF]);
    const qw = quantizeGroupwise(w, { bits: 4, groupSize: gs });
    assert.equal(qw.alpha.length, 4 * outF);
    const delta = qaLoraGroupDelta(A, B, s, gs, inF);
    const merged = dequantize(mergeIntoBeta(qw, delta.dataSync() as Float32Array));
    const wq = dequantize(qw);
    const y1 = tf.tidy(() => tf.add(tf.matMul(x, wq), tf.mul(tf.matMul(viaPool, B), s)));
    const y2 = tf.matMul(x, merged);
    assert.ok(maxAbsDiff(y1.dataSync(), y2.dataSync()) <= 1e-5);
    tf.dispose([x, pooled, A, B, viaExpand, viaPool, w, delta, merged, wq, y1, y2]);
  });

  it('packed codes: two per byte, input 2j low nibble, 2j+1 high, HF [out, ⌈in/2⌉] rows; unpack inverts', () => {
    // [in, out] = [3, 2]: column 0 holds codes 1, 2, 3; column 1 holds 15, 0, 7.
    const qw = { bits: 4, groupSize: 2, inFeatures: 3, outFeatures: 2, q: Uint8Array.from([1, 15, 2, 0, 3, 7]), alpha: new Float32Array(4), beta: new Float32Array(4) };
    assert.deepEqual(Array.from(packCodes(qw)), [0x21, 0x03, 0x0f, 0x07]);
    assert.deepEqual(Array.from(unpackCodes(packCodes(qw), 3, 2, 4)), Array.from(qw.q));
    const q8 = { ...qw, bits: 8, q: Uint8Array.from([1, 255, 2, 0, 3, 7]) };
    assert.deepEqual(Array.from(packCodes(q8)), [1, 2, 3, 255, 0, 7]);
    assert.deepEqual(Array.from(unpackCodes(packCodes(q8), 3, 2, 8)), Array.from(q8.q));
  });

  it('rejects bad settings with a ConfigError', () => {
    const w = tf.zeros([12, 2]) as tf.Tensor2D;
    assert.throws(() => quantizeGroupwise(w, { bits: 9 }), ConfigError);
    assert.throws(() => quantizeGroupwise(w, { groupSize: 0 }), (e: Error) => e instanceof ConfigError && /groupSize must be a positive integer/.test(e.message));
    w.dispose();
  });
});
