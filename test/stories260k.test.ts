/**
 * stories260K (a real pretrained llama2.c model): the golden greedy decode from BOS, HF export
 * and reload with identical logits, and perplexity protocol checks on in-domain text.
 */
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import fs from 'node:fs';
import { HAVE_SHARED, NO_SHARED_REASON, setupBackend, shared, STORIES_BIN, STORIES_TOK, tmpDir, maxAbsDiff } from './support.ts';
import { loadModel, saveModel } from '../src/io/load-model.ts';
import { loadTokenizer } from '../src/tokenizer/load.ts';
import { generate } from '../src/model/generate.ts';
import { perplexityOfText, perplexityOfTokens } from '../src/eval/perplexity.ts';
import { tokenNll } from '../src/model/loss.ts';
import { readLlama2cCheckpoint } from '../src/io/llama2c.ts';
import { CausalLM } from '../src/model/causal-lm.ts';

const GOLDEN = 'Once upon a time, there was a little girl named Lily. She loved to play outside in the park';

describe('stories260K', { skip: HAVE_SHARED ? false : NO_SHARED_REASON }, () => {
  before(setupBackend);

  it('greedy decoding from BOS reproduces the golden text (KV cache)', async () => {
    const { model } = loadModel(STORIES_BIN);
    const tok = await loadTokenizer(STORIES_TOK);
    const before = tf.memory().numTensors;
    const r = await generate(model, [1], { maxNewTokens: 40, greedy: true });
    assert.equal(tf.memory().numTensors, before, 'generate leaked tensors');
    const text = tok.decode(r.ids);
    assert.ok(text.startsWith(GOLDEN), `got: ${JSON.stringify(text)}`);
    model.dispose();
  });

  it('export to an HF directory reloads with identical logits', () => {
    const { model } = loadModel(STORIES_BIN);
    const dir = tmpDir('stories-hf');
    saveModel(model, dir);
    const { model: reloaded } = loadModel(dir);
    assert.equal(reloaded.config.ropeLayout, 'half');
    const ids = [[1, 403, 407, 261, 378, 434, 500, 365, 288, 10, 300, 42, 99, 180, 11, 480]];
    const a = model.forward(ids);
    const b = reloaded.forward(ids);
    assert.deepEqual(a.dataSync(), b.dataSync());
    tf.dispose([a, b]);
    model.dispose();
    reloaded.dispose();
  });

  it('the interleaved RoPE layout (llama2.c weights as stored) computes the same model', () => {
    const { config, tensors } = readLlama2cCheckpoint(STORIES_BIN);
    assert.equal(config.ropeLayout, 'interleaved');
    const interleaved = CausalLM.fromNamedTensors(config, tensors, 'interleaved');
    const { model } = loadModel(STORIES_BIN);
    assert.equal(model.config.ropeLayout, 'half');
    const ids = [[1, 403, 407, 261, 378, 434, 500, 365, 288, 10, 300, 42, 99, 180, 11, 480]];
    const a = interleaved.forward(ids);
    const b = model.forward(ids);
    // Same arithmetic up to the pairing order inside RoPE: fp32 noise only (logits are ~10).
    assert.ok(maxAbsDiff(a.dataSync(), b.dataSync()) < 1e-4);
    tf.dispose([a, b]);
    interleaved.dispose();
    model.dispose();
  });

  it('F32 save → load is bit-exact', () => {
    const { model } = loadModel(STORIES_BIN);
    const dir = tmpDir('stories-f32');
    saveModel(model, dir);
    const { model: again } = loadModel(dir);
    const dir2 = tmpDir('stories-f32b');
    saveModel(again, dir2);
    const { model: third } = loadModel(dir2);
    const x = again.toNamedTensors();
    const y = third.toNamedTensors();
    assert.deepEqual([...x.keys()].sort(), [...y.keys()].sort());
    for (const [name, t] of x) assert.deepEqual(t.data, y.get(name)!.data, name);
    [model, again, third].forEach((m) => m.dispose());
  });

  it('F16 save: half the bytes, reload within fp16 rounding', () => {
    const { model } = loadModel(STORIES_BIN);
    const d32 = tmpDir('stories-f32s');
    const d16 = tmpDir('stories-f16');
    saveModel(model, d32, { dtype: 'f32' });
    saveModel(model, d16, { dtype: 'f16' });
    const size = (d: string) => fs.statSync(`${d}/model.safetensors`).size;
    assert.ok(Math.abs(size(d16) / size(d32) - 0.5) < 0.01, `${size(d16)} vs ${size(d32)}`);
    assert.equal(JSON.parse(fs.readFileSync(`${d16}/config.json`, 'utf8')).torch_dtype, 'float16');
    const { model: half } = loadModel(d16);
    const ids = [[1, 403, 407, 261, 378, 434, 500, 365]];
    const a = model.forward(ids);
    const b = half.forward(ids);
    const diff = maxAbsDiff(a.dataSync(), b.dataSync());
    assert.ok(diff > 0 && diff < 0.05, `fp16 rounding moved logits by ${diff}`);
    tf.dispose([a, b]);
    model.dispose();
    half.dispose();
  });

  it('perplexity: windows, tail dropped, equals a per-window hand computation, no leak', async () => {
    const { model } = loadModel(STORIES_BIN);
    const tok = await loadTokenizer(STORIES_TOK);
    const file = shared('text', 'tinystories-sample.txt');
    const before = tf.memory().numTensors;
    const r = await perplexityOfText(model, tok, file, { seqlen: 128, maxWindows: 4 });
    assert.equal(tf.memory().numTensors, before, 'perplexity leaked tensors');
    assert.equal(r.windows, 4);
    assert.equal(r.tokens, 4 * 127);
    assert.equal(r.protocol.seqlen, 128);
    // Independent computation: each window alone, NLL of tokens 1..T-1, averaged over all.
    const ids = tok.encode((await import('node:fs')).readFileSync(file, 'utf8'), { addBos: true });
    assert.equal(ids[0], 1);
    assert.equal(ids.filter((t) => t === 1).length, 1, 'exactly one BOS');
    let sum = 0;
    for (let w = 0; w < 4; w++) {
      const win = ids.slice(w * 128, (w + 1) * 128);
      const nll = tf.tidy(() => tokenNll(model.forward([win]).slice([0, 0], [127, -1]) as tf.Tensor2D, win.slice(1)).sum());
      sum += nll.dataSync()[0];
      nll.dispose();
    }
    assert.ok(Math.abs(r.nll - sum / (4 * 127)) < 1e-5);
    assert.ok(r.ppl > 1 && r.ppl < 20, `in-domain perplexity should be small, got ${r.ppl}`);
    // Batching does not change the number.
    const r1 = await perplexityOfTokens(model, ids, file, tok.id, { seqlen: 128, maxWindows: 4, batchSize: 1 });
    assert.ok(Math.abs(r1.nll - r.nll) < 1e-5);
    model.dispose();
  });
});
