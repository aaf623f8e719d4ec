/**
 * The statistics passes' shortcuts (src/prune/stats.ts) give the values of the full passes, bit
 * for bit: linears whose outputs reach none of the requested taps are skipped
 * (`linearsPastTaps`, `withSkippedLinears`), and an empty dense snapshot (no linear pruned yet)
 * reuses the current run's taps instead of running the layer twice. Reference: the taps of a
 * plain `runBlock`, multiplied here, and the full dense snapshot.
 */
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { setupBackend } from './support.ts';
import { buildSyntheticLlama } from './synthetic-model.ts';
import { BlockContext } from '../src/model/causal-lm.ts';
import { TAP_NAMES, type LinearRole } from '../src/model/family.ts';
import { collectLayerStats, embedWindows, linearsPastTaps, withLinearWeights } from '../src/prune/stats.ts';

before(setupBackend);

const SYNTH = { hidden: 64, layers: 2, heads: 4, kvHeads: 2, ffn: 160, vocab: 96, seed: 5 };
const windows = (n: number, T: number) => Array.from({ length: n }, (_, w) => Array.from({ length: T }, (_, t) => 3 + ((w * 31 + t * 7) % 90)));

test('linearsPastTaps: the linears reading the last requested tap or a later one (LLaMA)', () => {
  const model = buildSyntheticLlama(SYNTH);
  try {
    const past = (taps: typeof TAP_NAMES[number][]) => [...linearsPastTaps(model, taps)].sort();
    assert.deepEqual(past(['attnIn']), ['down', 'gate', 'k', 'o', 'q', 'up', 'v']);
    assert.deepEqual(past(['attnCtx']), ['down', 'gate', 'o', 'up']);
    assert.deepEqual(past(['mlpIn']), ['down', 'gate', 'up']);
    assert.deepEqual(past(['downIn']), ['down']);
    assert.deepEqual(past(['attnIn', 'downIn']), ['down']);
  } finally {
    model.dispose();
  }
});

test('collectLayerStats: each tap alone (later linears skipped) equals XᵀX of the full block\'s taps, bit for bit', () => {
  const model = buildSyntheticLlama(SYNTH);
  try {
    const states = embedWindows(model, windows(3, 16));
    const layer = 1;
    // Reference: the full block's taps over the same batch (one batch: 3 × 16 tokens ≤ 4096).
    const batch = states.batches[0]!;
    assert.equal(states.batches.length, 1);
    const ctx = new BlockContext(batch.B, states.T, 0, model.config);
    const before = tf.memory().numTensors;
    try {
      for (const tap of TAP_NAMES) {
        const ref = tf.tidy(() => {
          const x = tf.tensor2d(batch.data, [batch.B * states.T, states.D]);
          const t = model.runBlock(layer, x, ctx, { taps: true }).taps![tap];
          return Float32Array.from(tf.matMul(tf.transpose(t), t).dataSync());
        });
        const got = collectLayerStats(model, layer, states, { gram: [tap] })[tap]!.gram!;
        assert.equal(got.length, ref.length);
        for (let i = 0; i < ref.length; i++) assert.equal(got[i], ref[i], `${tap} gram[${i}]`);
      }
    } finally {
      ctx.dispose();
    }
    assert.equal(model.linearHook, null, 'the hook is restored');
    assert.equal(tf.memory().numTensors, before, 'no tensor left behind');
  } finally {
    model.dispose();
  }
});

test('collectLayerStats: an empty dense snapshot equals the full one while nothing is pruned; a partial one equals the full one after pruning some linears', () => {
  const model = buildSyntheticLlama(SYNTH);
  const layer = 0;
  const roles = model.spec.linears.map((l) => l.role);
  const dense = Object.fromEntries(roles.map((r) => [r, tf.clone(model.linearParams(layer, r).weight)])) as Record<LinearRole, tf.Tensor2D>;
  try {
    const states = embedWindows(model, windows(2, 12));
    const req = { gram: TAP_NAMES, cross: TAP_NAMES, denseGram: TAP_NAMES };
    const same = (a: ReturnType<typeof collectLayerStats>, b: ReturnType<typeof collectLayerStats>, what: string) => {
      for (const tap of TAP_NAMES) {
        for (const k of ['gram', 'cross', 'denseGram'] as const) assert.deepEqual(a[tap]![k], b[tap]![k], `${what}: ${tap} ${k}`);
      }
    };
    same(collectLayerStats(model, layer, states, req, {}), collectLayerStats(model, layer, states, req, dense), 'nothing pruned');
    // Nothing pruned: cross and denseGram are the Gram matrix itself.
    const s = collectLayerStats(model, layer, states, req, {});
    for (const tap of TAP_NAMES) assert.deepEqual(s[tap]!.cross, s[tap]!.gram);
    // Prune q, k, v (halve their weights): only their dense weights differ from the current ones.
    const pruned: LinearRole[] = ['q', 'k', 'v'];
    const saved = pruned.map((r) => model.linearParams(layer, r).weight);
    for (const r of pruned) model.linearParams(layer, r).weight = tf.mul(dense[r], 0.5) as tf.Tensor2D;
    try {
      const partial = Object.fromEntries(pruned.map((r) => [r, dense[r]]));
      const a = collectLayerStats(model, layer, states, req, partial);
      same(a, collectLayerStats(model, layer, states, req, dense), 'q, k, v pruned');
      assert.notDeepEqual(a.attnCtx!.cross, a.attnCtx!.gram, 'X ≠ X* after the pruned q, k, v');
      // And the dense statistic is the dense layer's own Gram.
      const d = withLinearWeights(model, layer, dense, () => collectLayerStats(model, layer, states, { gram: ['downIn'] }));
      assert.deepEqual(a.downIn!.denseGram, d.downIn!.gram);
    } finally {
      for (const [i, r] of pruned.entries()) {
        model.linearParams(layer, r).weight.dispose();
        model.linearParams(layer, r).weight = saved[i]!;
      }
    }
  } finally {
    tf.dispose(Object.values(dense));
    model.dispose();
  }
});
