import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import * as tf from '@tensorflow/tfjs';
import { BlockContext, type CausalLM } from '../src/model/causal-lm.ts';
import { loadModel } from '../src/io/load-model.ts';
import { loadTokenizer } from '../src/tokenizer/load.ts';
import { calibrationFromText } from '../src/prune/calibration.ts';
import { pruneModel } from '../src/prune/engine.ts';
import { resolveMethod, parseMethodOptions } from '../src/prune/registry.ts';
import { disposeLayerModel, layerModel, layerWeights } from '../src/prune/parallel.ts';
import { readLinear } from '../src/prune/linear-io.ts';
import { ConfigError } from '../src/util/errors.ts';
import { buildSyntheticLlama } from './synthetic-model.ts';
import { HAVE_SHARED, NO_SHARED_REASON, STORIES_BIN, STORIES_TOK, setupBackend, shared } from './support.ts';

before(setupBackend);

function blockOut(model: CausalLM, i: number, x: tf.Tensor2D, B: number, T: number): Float32Array {
  const ctx = new BlockContext(B, T, 0, model.config);
  try {
    return tf.tidy(() => Float32Array.from(model.runBlock(i, x, ctx).out.dataSync()));
  } finally {
    ctx.dispose();
  }
}

test('a one-layer model rebuilt from the host copy of layer i runs block i bit-identically (LLaMA GQA, OPT with biases)', { skip: HAVE_SHARED ? false : NO_SHARED_REASON }, () => {
  const models = [buildSyntheticLlama({ hidden: 32, layers: 3, heads: 4, kvHeads: 2, ffn: 40, vocab: 50, seed: 3 }), loadModel(shared('golden/opt-tiny')).model];
  for (const model of models) {
    const before = tf.memory().numTensors;
    const D = model.config.hiddenSize;
    const x = tf.randomNormal([2 * 5, D], 0, 1, 'float32', 7) as tf.Tensor2D;
    for (const i of [0, model.numLayers - 1]) {
      const one = layerModel(model.config, i, new Map(layerWeights(model, i)));
      assert.deepEqual(blockOut(one, i, x, 2, 5), blockOut(model, i, x, 2, 5), `${model.config.family} layer ${i}`);
      assert.throws(() => one.linearParams((i + 1) % model.numLayers, 'q'));
      disposeLayerModel(one, i);
    }
    x.dispose();
    assert.equal(tf.memory().numTensors, before, 'no tensor leak');
    model.dispose();
  }
});

async function storiesCalibration(nsamples: number, seqlen: number): Promise<number[][]> {
  const tok = await loadTokenizer(STORIES_TOK);
  return calibrationFromText(tok, { text: shared('text/tinystories-sample.txt'), nsamples, seqlen, seed: 0 }).windows;
}

function allWeights(model: CausalLM): Float32Array[] {
  const out: Float32Array[] = [];
  for (let i = 0; i < model.numLayers; i++) for (const l of model.spec.linears) out.push(readLinear(model, i, l.role).data);
  return out;
}

test('fistapruner on stories260K: 2 worker threads give the same masks and weights as the in-process run', { skip: HAVE_SHARED ? false : NO_SHARED_REASON }, async () => {
  const windows = await storiesCalibration(8, 64);
  const method = await resolveMethod('fistapruner');
  const run = async (workers: number, pattern: { kind: 'unstructured' } | { kind: 'nm'; n: number; m: number }) => {
    const { model } = loadModel(STORIES_BIN);
    const t0 = performance.now();
    const report = await pruneModel(model, {
      method, options: parseMethodOptions(method, {}), workers, target: { sparsity: 0.5, pattern }, windows,
    });
    const seconds = (performance.now() - t0) / 1000;
    const w = allWeights(model);
    model.dispose();
    return { report, w, seconds };
  };
  // (2:4 with 2 workers runs end to end in fistapruner.test.ts.)
  for (const pattern of [{ kind: 'unstructured' as const }]) {
    const one = await run(1, pattern);
    const two = await run(2, pattern);
    assert.equal(one.report.mode, 'dense-parallel');
    assert.equal(two.w.length, one.w.length);
    one.w.forEach((a, k) => {
      const masksA = a.map((v) => (v === 0 ? 0 : 1));
      const masksB = two.w[k]!.map((v) => (v === 0 ? 0 : 1));
      assert.deepEqual(masksB, masksA, `mask of matrix ${k}`);
      assert.deepEqual(two.w[k], a, `weights of matrix ${k}`);
    });
    // The per-operator log (λ, E_round/E_total …) travels back from the workers intact.
    const strip = (r: typeof one.report) => r.layers.map((l) => JSON.stringify(l.detail, (k, v) => (k === 'seconds' ? undefined : v)));
    assert.deepEqual(strip(two.report), strip(one.report));
    assert.ok(one.report.zeros.overall.sparsity >= 0.5 - 0.01);
    console.log(`# ${pattern.kind}: workers 1 ${one.seconds.toFixed(2)} s, workers 2 ${two.seconds.toFixed(2)} s`);
  }
});

test('a failing layer rejects with the worker\'s error and leaves no worker thread running', { skip: HAVE_SHARED ? false : NO_SHARED_REASON }, async () => {
  const windows = await storiesCalibration(2, 32);
  const method = await resolveMethod('fistapruner');
  const { model } = loadModel(STORIES_BIN);
  // Each live worker is an OS thread of this process.
  const threads = () => (fs.existsSync('/proc/self/task') ? fs.readdirSync('/proc/self/task').length : 0);
  const threadsBefore = threads();
  // lambdaInit previous-layer chains the layers: the method refuses it in setup, before any worker starts.
  await assert.rejects(pruneModel(model, {
    method, options: parseMethodOptions(method, { lambdaInit: 'previous-layer' }), workers: 2,
    target: { sparsity: 0.5, pattern: { kind: 'unstructured' } }, windows,
  }), (e: unknown) => e instanceof ConfigError && /previous-layer/.test(e.message));
  await new Promise((r) => setTimeout(r, 100));
  assert.ok(threads() <= threadsBefore, `threads: ${threadsBefore} before, ${threads()} after`);
  // A worker that cannot even start (the method name does not resolve there) fails the same way.
  await assert.rejects(pruneModel(model, {
    method: { ...method, name: 'no-such-method' }, options: parseMethodOptions(method, {}), workers: 2,
    target: { sparsity: 0.5, pattern: { kind: 'unstructured' } }, windows,
  }), (e: unknown) => e instanceof ConfigError && /unknown method 'no-such-method'/.test(e.message));
  await new Promise((r) => setTimeout(r, 100));
  assert.ok(threads() <= threadsBefore, `threads: ${threadsBefore} before, ${threads()} after`);
  // Parallel layers need dense inputs.
  await assert.rejects(pruneModel(model, {
    method, options: parseMethodOptions(method, {}), workers: 2, mode: 'sequential',
    target: { sparsity: 0.5, pattern: { kind: 'unstructured' } }, windows,
  }), ConfigError);
  model.dispose();
});

test('sequential mode runs in process and differs from dense-parallel from layer 1 on', { skip: HAVE_SHARED ? false : NO_SHARED_REASON }, async () => {
  const windows = await storiesCalibration(4, 32);
  const method = await resolveMethod('fistapruner');
  const prune = async (mode: 'sequential' | 'dense-parallel') => {
    const { model } = loadModel(STORIES_BIN);
    const r = await pruneModel(model, { method, options: parseMethodOptions(method, {}), mode, target: { sparsity: 0.5, pattern: { kind: 'unstructured' } }, windows });
    const w = allWeights(model);
    model.dispose();
    return { r, w };
  };
  const seq = await prune('sequential');
  const par = await prune('dense-parallel');
  assert.equal(seq.r.mode, 'sequential');
  const per = seq.w.length / 5;
  // Layer 0 sees the embeddings in both modes; later layers see pruned vs dense inputs.
  for (let k = 0; k < per; k++) assert.deepEqual(seq.w[k], par.w[k]);
  assert.ok(seq.w.slice(per).some((a, k) => a.some((v, j) => v !== par.w[per + k]![j])));
});
