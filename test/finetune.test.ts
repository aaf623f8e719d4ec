/**
 * The recovery trainer on stories260K and TinyStories text: loss goes down on a 50 %-pruned model
 * with masks kept and no tensor leak; merged = unmerged after training (plain LoRA and SAAP's
 * fake-quantised base + QA-LoRA); an interrupted + resumed run equals the uninterrupted one
 * exactly; AdamW and the learning-rate schedule on hand-computed cases; option errors.
 */
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { HAVE_SHARED, NO_SHARED_REASON, STORIES_BIN, STORIES_TOK, maxAbsDiff, setupBackend, shared, tmpDir, logitsOf, assertLogitsClose } from './support.ts';
import { loadModel } from '../src/io/load-model.ts';
import type { CausalLM } from '../src/model/causal-lm.ts';
import type { LinearRole } from '../src/model/family.ts';
import { causalLmNllSum, trainingNllSum } from '../src/model/loss.ts';
import { loadTokenizer } from '../src/tokenizer/load.ts';
import type { Tokenizer } from '../src/tokenizer/types.ts';
import { AdamW, finetune, lrAt, type FinetuneData, type FinetuneResult } from '../src/finetune/trainer.ts';
import { fakeQuantize, dequantizeHost } from '../src/finetune/quant.ts';
import { ConfigError } from '../src/util/errors.ts';

const ROLES: LinearRole[] = ['q', 'k', 'v', 'o', 'gate', 'up', 'down'];
const IDS = [[1, 403, 261, 380, 290, 300, 310, 320, 330, 340, 350, 360], [1, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120]];

const logits = (model: CausalLM): Float32Array => logitsOf(model, IDS);


function prune50(model: CausalLM): void {
  for (let l = 0; l < model.numLayers; l++) {
    for (const role of ROLES) {
      const w = model.linearParams(l, role).weight;
      const a = Float32Array.from(w.dataSync()).map(Math.abs).sort();
      const thr = a[Math.floor(a.length / 2)];
      model.setLinear(l, role, tf.tidy(() => tf.where(tf.greater(tf.abs(w), thr), w, tf.zerosLike(w))));
    }
  }
}

describe('AdamW and learning-rate schedule (hand-computed)', () => {
  before(setupBackend);

  it('AdamW: p=1, g=0.5, lr 0.1, wd 0.1 → 0.89, then 0.7811 (bias-corrected step of exactly lr)', () => {
    const p = tf.variable(tf.tensor2d([[1]]));
    const adam = new AdamW([p], { beta1: 0.9, beta2: 0.999, eps: 0, weightDecay: 0.1 });
    const g = tf.tensor2d([[0.5]]);
    adam.step([g], 0.1);
    assert.ok(Math.abs(p.dataSync()[0] - 0.89) < 1e-6, `${p.dataSync()[0]}`);
    adam.step([g], 0.1);
    assert.ok(Math.abs(p.dataSync()[0] - 0.7811) < 1e-6, `${p.dataSync()[0]}`);
    // Gradient scaling (clipping) scales m by the factor and v by its square: the step is unchanged
    // for a constant gradient, but the moments are not.
    assert.ok(Math.abs(adam.m[0].dataSync()[0] - 0.095) < 1e-7);
    tf.dispose([p, g]);
    adam.dispose();
  });

  it('warm-up then cosine: lr 1, 10 steps, warm-up 2 → 0.5, 1, …, 0.5 at step 6, floor at the end', () => {
    const c = { lr: 1, steps: 10, warmupSteps: 2, minLrRatio: 0 };
    assert.equal(lrAt(1, c), 0.5);
    assert.equal(lrAt(2, c), 1);
    assert.ok(Math.abs(lrAt(6, c) - 0.5) < 1e-12);
    assert.ok(Math.abs(lrAt(10, c)) < 1e-12);
    assert.ok(Math.abs(lrAt(10, { ...c, minLrRatio: 0.1 }) - 0.1) < 1e-12);
    assert.ok(Math.abs(lrAt(4, c) - (0.5 * (1 + Math.cos(Math.PI / 4)))) < 1e-12);
  });
});

describe('recovery fine-tuning (stories260K, TinyStories sample)', { skip: HAVE_SHARED ? false : NO_SHARED_REASON }, () => {
  let text: FinetuneData;
  before(async () => {
    await setupBackend();
    const tokenizer = await loadTokenizer(STORIES_TOK);
    const lines = fs.readFileSync(shared('text/tinystories-sample.txt'), 'utf8').split('\n');
    text = { text: lines, tokenizer };
  });

  it('the differentiable training loss equals the model loss module', () => {
    const { model } = loadModel(STORIES_BIN);
    const l = model.forward(IDS);
    const a = causalLmNllSum(l, IDS);
    const b = trainingNllSum(l, IDS);
    assert.equal(a.count, b.count);
    assert.ok(Math.abs(a.sum.dataSync()[0] - b.sum.dataSync()[0]) < 1e-4);
    tf.dispose([l, a.sum, b.sum]);
    model.dispose();
  });

  describe('50 %-pruned model, 24 steps of uniform LoRA', () => {
    let model: CausalLM;
    let result: FinetuneResult;
    let zeros: boolean[][];
    let tensorsBefore = 0;
    const progress: number[] = [];
    before(async () => {
      model = loadModel(STORIES_BIN).model;
      prune50(model);
      zeros = [];
      for (let l = 0; l < model.numLayers; l++) {
        for (const r of ROLES) zeros.push(Array.from(model.linearParams(l, r).weight.dataSync(), (v) => v === 0));
      }
      tensorsBefore = tf.memory().numTensors;
      result = await finetune(model, {
        data: text, steps: 24, lr: 5e-3, warmupSteps: 2, seqLen: 64, microBatchSize: 4,
        maxHeldOutWindows: 16, seed: 1, onProgress: (p) => progress.push(p.step),
      });
    });

    it('lowers the held-out loss', () => {
      const { before: b, after } = result.heldOut;
      assert.ok(after !== null);
      assert.ok(after < b - 0.3, `held-out NLL ${b} → ${after}`);
      assert.equal(result.heldOut.start, b, 'B = 0: training starts at the base model');
      assert.equal(result.log.length, 24);
      assert.deepEqual(progress, Array.from({ length: 24 }, (_, i) => i + 1));
      assert.ok(result.log.every((e) => Number.isFinite(e.loss)));
      assert.ok(result.log[23].lr < 1e-6 && result.log[1].lr === 5e-3);
    });

    it('keeps every pruned zero exactly zero after merge', () => {
      let k = 0;
      let changed = 0;
      for (let l = 0; l < model.numLayers; l++) {
        for (const r of ROLES) {
          const w = model.linearParams(l, r).weight.dataSync();
          const z = zeros[k++];
          for (let i = 0; i < w.length; i++) {
            if (z[i]) assert.equal(w[i], 0, `layer ${l} ${r}[${i}] refilled`);
            else if (w[i] !== 0) changed++;
          }
        }
      }
      assert.ok(changed > 0);
    });

    it('leaks no tensors and restores the hook', () => {
      assert.equal(tf.memory().numTensors, tensorsBefore);
      assert.equal(model.linearHook, null);
      model.dispose();
    });
  });

  it('after training steps, unmerged adapters and merged weights give the same logits', async () => {
    const { model } = loadModel(STORIES_BIN);
    const base = logits(model);
    const r = await finetune(model, { data: text, steps: 3, lr: 1e-2, warmupSteps: 0, seqLen: 32, microBatchSize: 2, maxHeldOutWindows: 2, merge: false });
    const set = r.adapters;
    assert.ok(set);
    assert.ok(set.adapters.every((a) => a.B.dataSync().some((v) => v !== 0)), 'B should be non-zero after training');
    const hooked = logits(model);
    assert.ok(maxAbsDiff(hooked, base) > 1e-3);
    set.merge(model);
    assert.equal(model.linearHook, null);
    assertLogitsClose(hooked, logits(model));
    model.dispose();
  });

  it('SAAP: fake-quantised base + QA-LoRA adapters equal the merged model; quantised export matches', async () => {
    const original = loadModel(STORIES_BIN).model;
    const { model } = loadModel(STORIES_BIN);
    const r = await finetune(model, {
      data: text, schedule: { name: 'group-quant', ranks: [8, 8, 8, 8, 8], alphas: [16, 16, 16, 16, 16], quant: { bits: 4, groupSize: 4 }, allocation: 'uniform' }, steps: 3, lr: 1e-2, warmupSteps: 0,
      seqLen: 32, microBatchSize: 2, maxHeldOutWindows: 2, merge: false,
    });
    assert.notEqual(r.heldOut.start, r.heldOut.before, 'the base should be quantised before training');
    // The frozen base is the fake-quantised original.
    const wq = fakeQuantize(original.linearParams(3, 'down').weight, { bits: 4, groupSize: 4 });
    assert.ok(maxAbsDiff(wq.dataSync(), model.linearParams(3, 'down').weight.dataSync()) <= 1e-6);
    wq.dispose();
    const set = r.adapters;
    assert.ok(set);
    const a = set.get(0, 'q');
    assert.ok(a);
    assert.deepEqual(a.A.shape, [64 / 4, 8], 'QA-LoRA A acts on group means');
    assert.ok(a.B.dataSync().some((v) => v !== 0));
    const hooked = logits(model);
    const quantized = set.merge(model);
    assertLogitsClose(hooked, logits(model));
    const q = quantized.get('2.up');
    assert.ok(q);
    assert.deepEqual(Array.from(dequantizeHost(q)), Array.from(model.linearParams(2, 'up').weight.dataSync()));
    original.dispose();
    model.dispose();
  });

  it('resume: stop at step 3 of 6, resume in a fresh run → the same losses, bit for bit', async () => {
    // A small token corpus so the 6 steps wrap around epochs (data cursor) with dropout (RNG state).
    const { text: lines, tokenizer } = text as { text: string[]; tokenizer: Tokenizer };
    const data: FinetuneData = { tokens: tokenizer.encode(lines[0], { addBos: true }).slice(0, 320) };
    const common = {
      data, steps: 6, lr: 5e-3, warmupSteps: 1, seqLen: 32, microBatchSize: 2, gradAccum: 2, dropout: 0.1,
      heldOutFraction: 0.25, maxHeldOutWindows: 2, seed: 3, rank: 4,
    };
    const full = loadModel(STORIES_BIN).model;
    const ref = await finetune(full, common);
    assert.ok(ref.trainWindows * 2 < 6 * 4, 'the run should cross epoch boundaries');

    const dir = path.join(tmpDir('resume'), 'ckpt');
    const first = loadModel(STORIES_BIN).model;
    const r1 = await finetune(first, { ...common, checkpointDir: dir, checkpointEvery: 3, stopAfterStep: 3 });
    assert.equal(r1.completed, false);
    assert.equal(r1.step, 3);
    first.dispose();
    assert.deepEqual(fs.readdirSync(dir).sort(), ['state-3.safetensors', 'state.json']);

    const second = loadModel(STORIES_BIN).model;
    const r2 = await finetune(second, { ...common, checkpointDir: dir, checkpointEvery: 3, resume: true });
    assert.equal(r2.resumedFromStep, 3);
    assert.equal(r2.completed, true);
    assert.deepEqual(r2.log.slice(3), ref.log.slice(3));
    assert.deepEqual(r2.log.slice(0, 3), ref.log.slice(0, 3));
    assert.equal(maxAbsDiff(logits(second), logits(full)), 0);
    assert.deepEqual(fs.readdirSync(dir).sort(), ['state-6.safetensors', 'state.json']);

    // A checkpoint made with other settings is refused, naming what differs.
    const third = loadModel(STORIES_BIN).model;
    await assert.rejects(() => finetune(third, { ...common, lr: 1e-3, checkpointDir: dir, resume: true }),
      (e: Error) => e instanceof ConfigError && /lr \(checkpoint 0.005, now 0.001\)/.test(e.message));
    [full, second, third].forEach((m) => m.dispose());
  });

  it('rejects unknown options and inconsistent settings with a ConfigError', async () => {
    const { model } = loadModel(STORIES_BIN);
    const bad = { data: text, steps: 2, learningRate: 1 } as unknown as Parameters<typeof finetune>[1];
    await assert.rejects(() => finetune(model, bad), (e: Error) => e instanceof ConfigError && /learningRate/.test(e.message));
    await assert.rejects(() => finetune(model, { data: text, steps: 2, resume: true }), ConfigError);
    await assert.rejects(() => finetune(model, { data: text, steps: 2, schedule: { name: 'two', ranks: [1, 2], alphas: [1, 2], quant: null, allocation: 'importance' } }),
      (e: Error) => e instanceof ConfigError && /2 ranks and 2 alphas for 5 layers/.test(e.message));
    await assert.rejects(() => finetune(model, { data: { tokens: [1, 2, 3] }, steps: 2, seqLen: 8 }), /corpus too small/);
    assert.equal(model.linearHook, null);
    model.dispose();
  });
});
