/**
 * LoRA adapters on stories260K: zero-B start, the hook against a hand-written x·W + s·(x·A)·B,
 * merge equivalence, masks kept through merge, dropout seeding, validation; and the rank
 * schedules on hand-computed cases.
 */
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import seedrandom from 'seedrandom';
import { HAVE_SHARED, NO_SHARED_REASON, STORIES_BIN, maxAbsDiff, setupBackend, logitsOf, assertLogitsClose } from './support.ts';
import { loadModel } from '../src/io/load-model.ts';
import type { CausalLM } from '../src/model/causal-lm.ts';
import type { LinearRole } from '../src/model/family.ts';
import { LoraSet, type LoraSpec } from '../src/finetune/lora.ts';
import { resolveSchedule } from '../src/finetune/schedule.ts';
import { allocateRanks } from '../src/finetune/ranks.ts';
import { ConfigError } from '../src/util/errors.ts';

const ALL: LinearRole[] = ['q', 'k', 'v', 'o', 'gate', 'up', 'down'];
const IDS = [[1, 403, 261, 380, 290, 300, 310, 320, 330, 340, 350, 360], [1, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120]];

function spec(model: CausalLM, over: Partial<LoraSpec> = {}): LoraSpec {
  const L = model.numLayers;
  return {
    ranks: new Array(L).fill(4), alphas: new Array(L).fill(8), dropout: 0, targets: ALL,
    quant: null, preserveMasks: true, seed: 7, ...over,
  };
}

/** Give every B random values (a trained-looking adapter). */
function randomizeB(set: LoraSet, seed: string, scale = 0.05): void {
  const rng = seedrandom.alea(seed);
  for (const a of set.adapters) {
    const t = tf.tensor2d(Float32Array.from({ length: a.B.size }, () => (rng() * 2 - 1) * scale), a.B.shape);
    a.B.assign(t);
    t.dispose();
  }
}

const logits = (model: CausalLM): Float32Array => logitsOf(model, IDS);


/** Each adapted linear's hooked output on random inputs (to compare with the merged weight). */
function hookedOutputs(model: CausalLM, set: LoraSet): Map<string, { x: tf.Tensor2D; y: Float32Array }> {
  const out = new Map<string, { x: tf.Tensor2D; y: Float32Array }>();
  const hook = set.hook();
  for (const a of set.adapters) {
    const x = tf.randomNormal([6, a.inFeatures], 0, 1, 'float32', 5) as tf.Tensor2D;
    const y = hook(a.layer, a.role, x, model.linearParams(a.layer, a.role)) as tf.Tensor2D;
    out.set(a.key, { x, y: Float32Array.from(y.dataSync()) });
    y.dispose();
  }
  return out;
}

function assertLinearsMatch(model: CausalLM, hooked: Map<string, { x: tf.Tensor2D; y: Float32Array }>): void {
  for (const [key, { x, y }] of hooked) {
    const [layer, role] = key.split('.');
    const got = tf.matMul(x, model.linearParams(Number(layer), role as LinearRole).weight);
    const diff = maxAbsDiff(got.dataSync(), y);
    assert.ok(diff <= 1e-5, `${key}: merged linear differs from the hooked one by ${diff}`);
    tf.dispose([got, x]);
  }
}

/** Zero the half of each targeted weight with the smallest |w| (unstructured 50 %). */
function prune50(model: CausalLM): void {
  for (let l = 0; l < model.numLayers; l++) {
    for (const role of ALL) {
      const w = model.linearParams(l, role).weight;
      const a = Float32Array.from(w.dataSync()).map(Math.abs).sort();
      const thr = a[Math.floor(a.length / 2)];
      model.setLinear(l, role, tf.tidy(() => tf.where(tf.greater(tf.abs(w), thr), w, tf.zerosLike(w))));
    }
  }
}

describe('LoRA adapters (stories260K)', { skip: HAVE_SHARED ? false : NO_SHARED_REASON }, () => {
  before(setupBackend);

  it('B = 0 at the start: the hooked model gives the base logits exactly; A is U(±1/√in), seeded', () => {
    const { model } = loadModel(STORIES_BIN);
    const base = logits(model);
    const set = LoraSet.create(model, spec(model));
    set.attach(model);
    assert.equal(maxAbsDiff(logits(model), base), 0);
    for (const a of set.adapters) {
      const A = a.A.dataSync();
      const bound = 1 / Math.sqrt(a.inFeatures);
      assert.ok(A.every((v) => Math.abs(v) <= bound));
      assert.ok(A.some((v) => Math.abs(v) > bound / 2), 'A should not be (near) zero');
      assert.ok(a.B.dataSync().every((v) => v === 0));
    }
    const first = Float32Array.from(set.adapters[0].A.dataSync());
    const same = LoraSet.create(model, spec(model));
    const other = LoraSet.create(model, spec(model, { seed: 8 }));
    assert.equal(maxAbsDiff(same.adapters[0].A.dataSync(), first), 0);
    assert.ok(maxAbsDiff(other.adapters[0].A.dataSync(), first) > 1e-3);
    set.detach();
    assert.equal(model.linearHook, null);
    [set, same, other].forEach((s) => s.dispose());
    model.dispose();
  });

  it('the hook computes x·W + (α/r)·(x·A)·B (checked with a JS matmul)', () => {
    const { model } = loadModel(STORIES_BIN);
    const set = LoraSet.create(model, spec(model, { ranks: [0, 2, 0, 0, 0], alphas: [1, 6, 1, 1, 1], targets: ['up'] }));
    assert.equal(set.adapters.length, 1);
    randomizeB(set, 'hook', 0.5);
    const a = set.get(1, 'up');
    assert.ok(a);
    const p = model.linearParams(1, 'up');
    const [inF, outF] = p.weight.shape;
    const x = tf.tensor2d(Float32Array.from({ length: 3 * inF }, (_, i) => Math.sin(i)), [3, inF]);
    const y = set.hook()(1, 'up', x, p);
    assert.ok(y);
    const W = p.weight.dataSync();
    const A = a.A.dataSync();
    const B = a.B.dataSync();
    const X = x.dataSync();
    const expect = new Float32Array(3 * outF);
    for (let n = 0; n < 3; n++) {
      const xa = [0, 0];
      for (let i = 0; i < inF; i++) for (let k = 0; k < 2; k++) xa[k] += X[n * inF + i] * A[i * 2 + k];
      for (let o = 0; o < outF; o++) {
        let s = 0;
        for (let i = 0; i < inF; i++) s += X[n * inF + i] * W[i * outF + o];
        expect[n * outF + o] = s + 3 * (xa[0] * B[o] + xa[1] * B[outF + o]); // α/r = 6/2
      }
    }
    assert.ok(maxAbsDiff(y.dataSync(), expect) < 1e-4);
    // A linear without an adapter falls back to the model's own linear.
    assert.equal(set.hook()(0, 'up', x, model.linearParams(0, 'up')), null);
    tf.dispose([x, y]);
    set.dispose();
    model.dispose();
  });

  it('merged weights give the same logits as the unmerged adapters (≤ 1e-5)', () => {
    const { model } = loadModel(STORIES_BIN);
    const base = logits(model);
    const set = LoraSet.create(model, spec(model));
    randomizeB(set, 'merge');
    set.attach(model);
    const hooked = logits(model);
    assert.ok(maxAbsDiff(hooked, base) > 1e-2, 'adapters should change the logits');
    const perLinear = hookedOutputs(model, set);
    const before = tf.memory().numTensors;
    set.merge(model);
    assert.equal(model.linearHook, null);
    assertLogitsClose(hooked, logits(model));
    // Merge frees the adapters (2 variables per adapter) and replaces weights one for one.
    assert.equal(tf.memory().numTensors, before - 2 * 5 * ALL.length);
    assertLinearsMatch(model, perLinear);
    model.dispose();
  });

  it('masks: zeros of a 50 %-pruned weight stay exactly zero after merge, and merge is exact', () => {
    const { model } = loadModel(STORIES_BIN);
    prune50(model);
    const zerosBefore = ALL.map((r) => Array.from(model.linearParams(2, r).weight.dataSync(), (v) => v === 0));
    const set = LoraSet.create(model, spec(model));
    assert.ok(set.adapters.every((a) => a.mask !== null));
    randomizeB(set, 'mask');
    set.attach(model);
    const hooked = logits(model);
    const perLinear = hookedOutputs(model, set);
    set.merge(model);
    assertLogitsClose(hooked, logits(model));
    assertLinearsMatch(model, perLinear);
    ALL.forEach((r, k) => {
      const w = model.linearParams(2, r).weight.dataSync();
      const z = zerosBefore[k];
      let kept = 0;
      let changed = 0;
      for (let i = 0; i < w.length; i++) {
        if (z[i]) assert.equal(w[i], 0, `${r}[${i}] was pruned but is ${w[i]} after merge`);
        else kept++;
        if (!z[i] && w[i] !== 0) changed++;
      }
      assert.ok(kept > 0 && changed > 0);
      assert.ok(z.filter(Boolean).length >= w.length / 2 - 1, 'about half the weights are pruned');
    });
    model.dispose();
  });

  it('without preserveMasks the merge fills pruned zeros (the mask is what keeps them)', () => {
    const { model } = loadModel(STORIES_BIN);
    prune50(model);
    const set = LoraSet.create(model, spec(model, { preserveMasks: false, targets: ['q'] }));
    randomizeB(set, 'nomask');
    set.merge(model);
    const w = model.linearParams(0, 'q').weight.dataSync();
    assert.ok(w.filter((v) => v === 0).length < w.length / 4);
    model.dispose();
  });

  it('dropout: seeded in training mode, off in evaluation mode', () => {
    const { model } = loadModel(STORIES_BIN);
    const set = LoraSet.create(model, spec(model, { dropout: 0.5 }));
    randomizeB(set, 'drop');
    set.attach(model, { training: false });
    const evalA = logits(model);
    const evalB = logits(model);
    assert.equal(maxAbsDiff(evalA, evalB), 0);
    set.setMode({ training: true });
    set.dropoutSeed = 11;
    const t1 = logits(model);
    const t1again = logits(model);
    set.dropoutSeed = 12;
    const t2 = logits(model);
    assert.equal(maxAbsDiff(t1, t1again), 0);
    assert.ok(maxAbsDiff(t1, t2) > 1e-4);
    assert.ok(maxAbsDiff(t1, evalA) > 1e-4);
    set.dispose();
    model.dispose();
  });

  it('rejects targets outside the family and rank lists of the wrong length', () => {
    const { model } = loadModel(STORIES_BIN);
    assert.throws(() => LoraSet.create(model, spec(model, { targets: ['fc1'] })), (e: Error) => e instanceof ConfigError && /fc1.*llama/.test(e.message));
    assert.throws(() => LoraSet.create(model, spec(model, { ranks: [8, 8] })), ConfigError);
    const q0 = Float32Array.from(model.linearParams(0, 'q').weight.dataSync());
    assert.throws(() => LoraSet.create(model, spec(model, { quant: { bits: 9, groupSize: 32 } })),
      (e: Error) => e instanceof ConfigError && /bits must be an integer in 2\.\.8/.test(e.message));
    assert.equal(maxAbsDiff(model.linearParams(0, 'q').weight.dataSync(), q0), 0, 'a rejected spec must not quantise anything');
    model.dispose();
  });

  it("group quantisation adapts every linear: down's input width 172 = 5 groups of 32 + one of 12", () => {
    const { model } = loadModel(STORIES_BIN);
    const set = LoraSet.create(model, spec(model, { quant: { bits: 4, groupSize: 32 } }));
    assert.equal(set.adapters.length, model.numLayers * ALL.length);
    assert.deepEqual(set.get(0, 'down')?.A.shape, [6, 4]);
    assert.deepEqual(set.get(0, 'q')?.A.shape, [2, 4]);
    randomizeB(set, 'partial');
    const hooked = hookedOutputs(model, set);
    set.merge(model);
    assertLinearsMatch(model, hooked);
    model.dispose();
  });
});

describe('rank schedules (hand-computed)', () => {
  it('cfsp importance: scores [1,2,3], r̄ 8 → μ 2 → ranks [4, 8, 12]', () => {
    assert.deepEqual(allocateRanks(8, 'importance', 3, [1, 2, 3]), [4, 8, 12]);
  });

  it('cfsp inverse: 1/s = [1, 1/2, 1/3], mean 11/18 → w = [18/11, 9/11, 6/11] → round(8w) = [13, 7, 4]', () => {
    assert.deepEqual(allocateRanks(8, 'inverse', 3, [1, 2, 3]), [13, 7, 4]);
  });

  it('floor of 1: scores [0.01, 1, 1, 1.99], r̄ 2 → [max(1, round(0.02)), 2, 2, round(3.98)] = [1, 2, 2, 4]', () => {
    assert.deepEqual(allocateRanks(2, 'importance', 4, [0.01, 1, 1, 1.99]), [1, 2, 2, 4]);
  });

  it('uniform gives r̄ everywhere; layers restricts; a method plan passes through as given', () => {
    const u = resolveSchedule('uniform', { rank: 8, alpha: 16, numLayers: 4, layers: [1, 3] });
    assert.deepEqual(u.ranks, [0, 8, 0, 8]);
    assert.equal(u.quant, null);
    const p = resolveSchedule({ name: 'm', ranks: [4, 8, 12], alphas: [8, 16, 24], quant: { bits: 3, groupSize: 64 }, allocation: 'importance' },
      { rank: 8, alpha: 16, numLayers: 3 });
    assert.deepEqual([p.kind, p.ranks, p.alphas, p.quant, p.totalRank, p.allocation], ['m', [4, 8, 12], [8, 16, 24], { bits: 3, groupSize: 64 }, 24, 'importance']);
  });

  it('bad input: scores of the wrong length or non-positive, unknown layer', () => {
    assert.throws(() => allocateRanks(8, 'importance', 3, [1, 2]), ConfigError);
    assert.throws(() => allocateRanks(8, 'inverse', 2, [1, 0]), ConfigError);
    assert.throws(() => resolveSchedule('uniform', { rank: 8, alpha: 16, numLayers: 2, layers: [2] }), ConfigError);
    const plan = { name: 'm', ranks: [1, 1], alphas: [1, 1], quant: null, allocation: 'uniform' };
    assert.throws(() => resolveSchedule({ ...plan, ranks: [1, -1] }, { rank: 8, alpha: 16, numLayers: 2 }), /rank of layer 1/);
    assert.throws(() => resolveSchedule({ ...plan, alphas: [1, 0] }, { rank: 8, alpha: 16, numLayers: 2 }), /alpha of layer 1/);
    assert.throws(() => resolveSchedule({ ...plan, quant: { bits: 9, groupSize: 4 } }, { rank: 8, alpha: 16, numLayers: 2 }), /bits/);
  });
});
