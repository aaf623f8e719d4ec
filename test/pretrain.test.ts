/**
 * Pretraining from scratch: Brown corpus text and split; the unigram baseline by hand; the fused
 * cross-entropy, the explicit-transpose matMul gradient and the differentiable embedding against
 * reference gradients; a tiny model on a Brown slice lowers its held-out loss; an interrupted +
 * resumed run equals the uninterrupted one; `prunelab pretrain` writes a directory that loads and
 * that `prunelab eval ppl` scores exactly as the training report says.
 */
import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { setModelLayout } from '../src/backend/layout.ts';
import { maxAbsDiff, setupBackend, tmpDir } from './support.ts';
import { runCli } from './cli-support.ts';
import { BROWN_GENRES, brownSplit, brownText, detokenize, readBrownFile } from '../src/data/brown.ts';
import { trainBpe, writeBpeTokenizer } from '../src/tokenizer/bpe-train.ts';
import { HfTokenizer } from '../src/tokenizer/hf.ts';
import { findTokenizerForModel } from '../src/tokenizer/load.ts';
import { loadModel } from '../src/io/load-model.ts';
import { trainingNllSum } from '../src/model/loss.ts';
import { buildSyntheticLlama } from '../src/model/synthetic.ts';
import {
  WindowSampler, heldOutWindows, pretrain, unigramBaseline, useExplicitTransposeMatMulGradient,
  type PretrainConfig, type PretrainData,
} from '../src/train/pretrain.ts';

describe('Brown corpus text', () => {
  it('strips tags, attaches punctuation and quotes as print does', () => {
    const tagged = "\n\n\tThe/at jury/nn said/vbd ``/`` no/at evidence/nn ''/'' ,/, (/( he/pps said/vbd )/) " +
      "to/in Allen/np Jr./np ./.\nIt's/pps+bez 1/2/cd done/vbn ;/. '/' quite/ql '/' so/rb ?/.\n\n\n\tHe/pps left/vbd --/-- fast/rb ./.\n";
    assert.equal(detokenize(tagged),
      'The jury said "no evidence," (he said) to Allen Jr. It\'s 1/2 done; \'quite\' so?\nHe left -- fast.');
    assert.ok(readBrownFile('ca01').startsWith(
      'The Fulton County Grand Jury said Friday an investigation of Atlanta\'s recent primary election produced "no evidence" that any irregularities took place.\n'));
  });

  it('fixed split: 465 training, 20 held-out and 15 calibration files, disjoint, every genre held out', () => {
    const s = brownSplit();
    assert.deepEqual([s.train.length, s.heldOut.length, s.calibration.length], [465, 20, 15]);
    const all = new Set([...s.train, ...s.heldOut, ...s.calibration]);
    assert.equal(all.size, 500);
    for (const g of BROWN_GENRES) {
      assert.ok(s.heldOut.some((f) => f[1] === g) && s.calibration.some((f) => f[1] === g), `genre ${g}`);
    }
  });
});

describe('pretraining building blocks', () => {
  before(setupBackend);

  it('unigram baseline, add-one smoothing (by hand)', () => {
    // Training counts over V = 4: 0:0, 1:1, 2:2, 3:1 (N = 4) → p = (c + 1) / 8.
    // Window [0, 2, 3] scores 2 and 3 (not its first token): p = 3/8 and 2/8.
    const r = unigramBaseline([1, 2, 2, 3], [[0, 2, 3]], 4);
    const nll = -(Math.log(3 / 8) + Math.log(2 / 8)) / 2;
    assert.equal(r.tokens, 2);
    assert.ok(Math.abs(r.loss - nll) < 1e-12);
    assert.ok(Math.abs(r.ppl - Math.exp(nll)) < 1e-12);
  });

  it('held-out windows are the eval-ppl windows (non-overlapping, tail dropped)', () => {
    assert.deepEqual(heldOutWindows([1, 2, 3, 4, 5, 6, 7], 3), [[1, 2, 3], [4, 5, 6]]);
    assert.deepEqual(heldOutWindows([1, 2, 3, 4, 5, 6, 7], 3, 1), [[1, 2, 3]]);
  });

  it('training loss: value and gradient equal the textbook log-softmax form', () => {
    const ids = [[1, 5, 2, 7], [3, 3, 0, 6]];
    const logits = tf.tidy(() => tf.mul(tf.randomNormal([8, 9], 0, 1, 'float32', 3), 4)) as tf.Tensor2D;
    // Reference: −Σ log_softmax(logits)[t, ids[t+1]] over rows that have a next token.
    const mask = new Float32Array(8 * 9);
    ids.forEach((row, b) => row.slice(1).forEach((t, i) => { mask[(b * 4 + i) * 9 + t] = 1; }));
    const reference = (l: tf.Tensor) => tf.neg(tf.sum(tf.mul(tf.logSoftmax(l as tf.Tensor2D), tf.tensor2d(mask, [8, 9]))));
    const a = tf.valueAndGrad((l: tf.Tensor) => trainingNllSum(l as tf.Tensor2D, ids).sum)(logits);
    const b = tf.valueAndGrad(reference)(logits);
    assert.ok(Math.abs(a.value.dataSync()[0] - b.value.dataSync()[0]) < 1e-4);
    assert.ok(maxAbsDiff(a.grad.dataSync(), b.grad.dataSync()) < 1e-6);
    tf.dispose([logits, a.value, a.grad, b.value, b.grad]);
  });

  it('explicit-transpose matMul gradient equals the original, which is restored afterwards', () => {
    const x = tf.randomNormal([5, 3], 0, 1, 'float32', 1) as tf.Tensor2D;
    const w = tf.randomNormal([3, 4], 0, 1, 'float32', 2) as tf.Tensor2D;
    const loss = (a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.square(tf.matMul(a as tf.Tensor2D, b as tf.Tensor2D)));
    const ref = tf.grads(loss)([x, w]);
    const original = tf.getGradient('BatchMatMul');
    const restore = useExplicitTransposeMatMulGradient();
    assert.notEqual(tf.getGradient('BatchMatMul'), original);
    // Forced: with the products on OpenBLAS the layout leaves the original gradient in place.
    setModelLayout({ explicitTransposes: true });
    const fast = tf.grads(loss)([x, w]);
    setModelLayout(null);
    restore();
    assert.equal(tf.getGradient('BatchMatMul'), original);
    for (let i = 0; i < 2; i++) assert.ok(maxAbsDiff(ref[i].dataSync(), fast[i].dataSync()) < 1e-5);
    tf.dispose([x, w, ...ref, ...fast]);
  });

  it('differentiable embedding: same forward as gather, gradient = rows of dy summed per id', () => {
    const model = buildSyntheticLlama({ hidden: 8, layers: 1, heads: 2, kvHeads: 1, ffn: 16, vocab: 11, seed: 4 });
    const ids = [[3, 1, 3], [0, 10, 1]];
    const plain = model.embed(ids);
    model.differentiableEmbedding = true;
    const diff = model.embed(ids);
    assert.equal(maxAbsDiff(plain.dataSync(), diff.dataSync()), 0);
    const dy = tf.randomNormal([6, 8], 0, 1, 'float32', 5);
    const g = tf.grad((table: tf.Tensor) => {
      const saved = model.params.embed;
      model.params.embed = table as tf.Tensor2D;
      try {
        return tf.sum(tf.mul(model.embed(ids), dy));
      } finally {
        model.params.embed = saved;
      }
    })(model.params.embed);
    const d = dy.arraySync() as number[][];
    const expect = Array.from({ length: 11 }, () => new Array<number>(8).fill(0));
    ids.flat().forEach((id, n) => d[n].forEach((v, j) => { expect[id][j] += v; }));
    assert.ok(maxAbsDiff(g.dataSync(), expect.flat()) < 1e-6);
    tf.dispose([plain, diff, dy, g]);
    model.dispose();
  });

  it('window sampler: epoch 0 is a permutation of the aligned windows; the cursor resumes the stream', () => {
    const s = new WindowSampler(100, 10, 7);
    const first = s.next(10);
    assert.deepEqual([...first].sort((a, b) => a - b), [0, 10, 20, 30, 40, 50, 60, 70, 80, 90]);
    const more = s.next(12);
    const resumed = new WindowSampler(100, 10, 7, { epoch: 1, pos: 0 });
    assert.deepEqual(resumed.next(12), more);
    assert.ok(more.every((o) => o + 10 <= 100));
    assert.notDeepEqual(new WindowSampler(100, 10, 8).next(10), first);
  });
});

describe('pretraining a tiny model on a Brown slice', () => {
  let data: PretrainData;
  let vocab: number;
  const shape: PretrainConfig = {
    vocab: 0, hidden: 32, layers: 2, heads: 4, kvHeads: 2, ffn: 88, seqLen: 32, batchSize: 4, lr: 1e-2, seed: 3,
    steps: 30, evalEvery: 10, evalWindows: 1000,
  };

  before(async () => {
    await setupBackend();
    const dir = tmpDir('pretrain-tok');
    writeBpeTokenizer(dir, trainBpe([brownText(['ca02', 'cb02', 'ck02'])], { vocabSize: 384 }));
    const tok = await HfTokenizer.fromDirectory(dir);
    fs.rmSync(dir, { recursive: true, force: true });
    vocab = tok.vocabSize;
    data = { train: tok.encode(brownText(['ca02', 'cb02', 'ck02']), { addBos: true }), heldOut: tok.encode(readBrownFile('ca05').slice(0, 3000), { addBos: true }) };
  });

  it('30 steps lower the held-out loss well below the initial one; no tensor leak', async () => {
    const tensors = tf.memory().numTensors;
    const r = await pretrain({ ...shape, vocab, data });
    assert.ok(r.completed && r.heldOut);
    const initial = r.evals[0].loss;
    assert.equal(r.evals[0].step, 0);
    assert.ok(Math.abs(initial - Math.log(vocab)) < 0.1, `initial loss ${initial} ≈ ln V`);
    assert.ok(r.heldOut.loss < initial - 0.5, `held-out ${initial} → ${r.heldOut.loss}`);
    assert.equal(r.evals[r.evals.length - 1].windows, r.heldOut.windows);
    assert.equal(r.tokensSeen, 30 * 4 * 32);
    r.model.dispose();
    assert.equal(tf.memory().numTensors, tensors);
  });

  it('resuming from a mid-run checkpoint reproduces the uninterrupted run exactly', async () => {
    const dirA = tmpDir('pretrain-a');
    const dirB = tmpDir('pretrain-b');
    try {
      const opts = { ...shape, vocab, data, steps: 10, evalEvery: 4 };
      const a = await pretrain({ ...opts, checkpointDir: dirA, checkpointEvery: 5 });
      const b1 = await pretrain({ ...opts, checkpointDir: dirB, checkpointEvery: 2, stopAfterStep: 6 });
      assert.equal(b1.completed, false);
      b1.model.dispose();
      const b2 = await pretrain({ ...opts, checkpointDir: dirB, resume: true });
      assert.equal(b2.resumedFromStep, 6);
      assert.deepEqual(b2.log, a.log);
      assert.deepEqual(b2.evals, a.evals);
      assert.deepEqual(b2.heldOut, a.heldOut);
      assert.equal(maxAbsDiff(a.model.params.lmHead.dataSync(), b2.model.params.lmHead.dataSync()), 0);
      // A different setting cannot resume this checkpoint.
      await assert.rejects(() => pretrain({ ...opts, lr: 2e-2, checkpointDir: dirB, resume: true }), /different settings/);
      a.model.dispose();
      b2.model.dispose();
    } finally {
      fs.rmSync(dirA, { recursive: true, force: true });
      fs.rmSync(dirB, { recursive: true, force: true });
    }
  });

  it('prunelab pretrain (stopped, then --resume) writes a loadable HF directory; eval ppl matches the report', async () => {
    const work = tmpDir('pretrain-cli');
    try {
      const corpus = path.join(work, 'corpus.txt');
      fs.writeFileSync(corpus, brownText(['ca02', 'ck02', 'ck03']));
      const out = path.join(work, 'model');
      const common = ['pretrain', '--corpus', corpus, '--out', out, '--vocab', '320', '--hidden', '32', '--layers', '1',
        '--heads', '4', '--kv-heads', '2', '--seqlen', '32', '--steps', '8', '--batch', '2', '--eval-every', '0', '--checkpoint-every', '4'];
      const stopped = runCli([...common, '--stop-after', '4']);
      assert.equal(stopped.status, 0, stopped.stderr);
      assert.equal(stopped.json?.completed, false);
      const refused = runCli(common);
      assert.notEqual(refused.status, 0, 'an unfinished run is not overwritten without --resume');
      const done = runCli([...common, '--resume']);
      assert.equal(done.status, 0, done.stderr);
      assert.equal(done.json?.completed, true);
      for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'heldout.txt', 'train_report.json']) {
        assert.ok(fs.existsSync(path.join(out, f)), f);
      }
      assert.ok(!fs.existsSync(path.join(out, '.pretrain')), 'checkpoint removed at the end');
      const report = JSON.parse(fs.readFileSync(path.join(out, 'train_report.json'), 'utf8'));
      assert.equal(report.training.resumedFromStep, 4);
      assert.equal(report.tokensSeen, 8 * 2 * 32);
      assert.ok(report.unigramBaseline.ppl > 1 && report.heldOut.ppl > 1);
      assert.match(report.command, /^prunelab pretrain --corpus /);

      const { model } = loadModel(out);
      const tok = await findTokenizerForModel(out);
      assert.equal(model.config.vocabSize, tok.vocabSize);
      assert.equal(model.config.headDim, 8);
      assert.equal(model.config.layers[0].numKvHeads, 2);
      assert.equal(tok.decode(tok.encode('The jury said.')), 'The jury said.');
      model.dispose();

      const ppl = runCli(['eval', 'ppl', '--model', out, '--text', path.join(out, 'heldout.txt'), '--seqlen', '32']);
      assert.equal(ppl.status, 0, ppl.stderr);
      assert.ok(Math.abs((ppl.json?.ppl as number) - report.heldOut.ppl) < 1e-4 * report.heldOut.ppl,
        `eval ppl ${ppl.json?.ppl} vs report ${report.heldOut.ppl}`);
    } finally {
      fs.rmSync(work, { recursive: true, force: true });
    }
  });
});
