import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import type { CausalLM } from '../src/model/causal-lm.ts';
import { loadModel } from '../src/io/load-model.ts';
import { loadTokenizer } from '../src/tokenizer/load.ts';
import { tokenizeText } from '../src/data/text.ts';
import { batchNllSum, perplexityOfTokens, perplexityOfTokensParallel } from '../src/eval/perplexity.ts';
import { ForwardPool, runBatches } from '../src/parallel/forward-pool.ts';
import { modelFromShared, shareModel } from '../src/parallel/shared-params.ts';
import { coresFree, poolPays, POOL_START_SECONDS, resolveThreads } from '../src/parallel/threads.ts';
import { ConfigError } from '../src/util/errors.ts';
import { buildSyntheticLlama } from './synthetic-model.ts';
import { runCli } from './cli-support.ts';
import { HAVE_SHARED, NO_SHARED_REASON, STORIES_BIN, STORIES_TOK, setupBackend, shared } from './support.ts';

before(setupBackend);

const TEXT = shared('text/tinystories-sample.txt');
const skip = HAVE_SHARED ? false : NO_SHARED_REASON;

function logits(model: CausalLM, ids: number[][]): Float32Array {
  return tf.tidy(() => Float32Array.from(model.forward(ids).dataSync()));
}

test('a model rebuilt from its shared host copy computes bit-identical logits (LLaMA tied + biases, OPT)', { skip }, () => {
  const models = [
    buildSyntheticLlama({ hidden: 32, layers: 2, heads: 4, kvHeads: 2, ffn: 40, vocab: 50, seed: 5 }),
    loadModel(shared('golden/llama-tiny-bias-tied')).model,
    loadModel(shared('golden/opt-tiny')).model,
  ];
  for (const model of models) {
    const before = tf.memory().numTensors;
    const ids = [[1, 7, 3, 9, 4, 2], [5, 5, 8, 1, 0, 3]];
    const copy = modelFromShared(shareModel(model));
    assert.deepEqual(logits(copy, ids), logits(model, ids), model.config.family);
    copy.dispose();
    assert.equal(tf.memory().numTensors, before, 'no tensor leak');
    model.dispose();
  }
});

test('perplexity on stories260K: 1, 2 and 3 worker threads give the in-process number bit for bit', { skip }, async () => {
  const tok = await loadTokenizer(STORIES_TOK);
  const ids = tokenizeText(tok, TEXT);
  const { model } = loadModel(STORIES_BIN);
  const before = tf.memory().numTensors;
  // seqlen 256: the documented dense number (60 windows, 4 batches of up to 16).
  const dense = await perplexityOfTokens(model, ids, TEXT, tok.id, { seqlen: 256 });
  assert.ok(Math.abs(dense.ppl - 5.7351) < 1e-4, `dense ppl ${dense.ppl}`);
  const two = await perplexityOfTokensParallel(model, ids, TEXT, tok.id, { seqlen: 256, threads: 2 });
  assert.equal(two.threadsUsed, 2);
  assert.equal(two.ppl, dense.ppl);
  assert.equal(two.tokens, dense.tokens);
  // More batches than threads, an uneven last batch: dynamic scheduling, same sums in batch order.
  const opts = { seqlen: 128, maxWindows: 11, batchSize: 2 };
  const ref = await perplexityOfTokens(model, ids, TEXT, tok.id, opts);
  for (const threads of [1, 3]) {
    const r = await perplexityOfTokensParallel(model, ids, TEXT, tok.id, { ...opts, threads });
    assert.equal(r.threadsUsed, threads);
    assert.equal(r.ppl, ref.ppl, `${threads} threads`);
    assert.ok(Math.abs(r.ppl - ref.ppl) <= 1e-6 * ref.ppl);
  }
  assert.equal(tf.memory().numTensors, before, 'no tensor leak');
  model.dispose();
});

test('a pool pays when start-up + work/n < work: above 2 s of work for two threads, 1.5 s for three, never for one', () => {
  assert.equal(POOL_START_SECONDS, 1);
  assert.equal(poolPays(1.99, 2), false);
  assert.equal(poolPays(2.01, 2), true);
  assert.equal(poolPays(1.49, 3), false);
  assert.equal(poolPays(1.51, 3), true);
  assert.equal(poolPays(1000, 1), false);
  // Fewer free cores than threads: the count that can run decides.
  assert.equal(poolPays(1000, 2, 1), false);
  assert.equal(poolPays(1.6, 3, 3), true);
  assert.equal(poolPays(1.6, 3, 2), false);
});

test('free cores: all cores less the load beyond this process\'s own thread, rounded, at least 1', () => {
  assert.equal(coresFree(2, 0.1), 2);
  assert.equal(coresFree(2, 1.0), 2);
  assert.equal(coresFree(2, 1.4), 2);
  assert.equal(coresFree(2, 1.6), 1);
  assert.equal(coresFree(2, 10.7), 1);
  assert.equal(coresFree(16, 5), 12);
});

test('automatic threads: a short pass stays in process, a long one moves its remaining batches to a pool; same sums', { skip }, async () => {
  const { model } = loadModel(STORIES_BIN);
  const rows = [[1, 30, 40, 50], [1, 60, 70, 80], [1, 90, 100, 110], [1, 120, 130, 140]];
  const tasks = rows.map((r) => ({ type: 'nll' as const, rows: [r] }));
  const expected = rows.map((r) => batchNllSum(model, [r]));
  const short = await runBatches(model, tasks, 2, true, (t) => batchNllSum(model, t.rows));
  assert.equal(short.threadsUsed, 1);
  assert.deepEqual(short.results, expected);
  // The first task made to look slow (2.1 s): 3 more such tasks are 6.3 s of estimated work, which pays for two workers.
  let calls = 0;
  const slowFirst = (t: (typeof tasks)[number]) => {
    if (calls++ === 0) { const until = performance.now() + 2100; while (performance.now() < until); }
    return batchNllSum(model, t.rows);
  };
  // The rule on free cores (a loaded test machine has none to spare: poolPaysNow would keep it in process).
  const long = await runBatches(model, tasks, 2, true, slowFirst, undefined, (sec, n) => poolPays(sec, n));
  assert.equal(calls, 1, 'only the first task ran in process');
  assert.equal(long.threadsUsed, 2);
  assert.deepEqual(long.results, expected);
  // Not automatic: the threads asked for, from the first task.
  const asked = await runBatches(model, tasks, 2, false, () => { throw new Error('not in process'); });
  assert.equal(asked.threadsUsed, 2);
  assert.deepEqual(asked.results, expected);
  model.dispose();
});

test('the pool returns results by task, closes every thread, and stops on a worker error', { skip }, async () => {
  const { model } = loadModel(STORIES_BIN);
  const rows = [[1, 30, 40, 50], [1, 60, 70, 80], [1, 90, 100, 110], [1, 120, 130, 140], [1, 150, 160, 170]];
  const expected = rows.map((r) => batchNllSum(model, [r]));
  const pool = ForwardPool.start(model, 2);
  assert.equal(pool.size, 2);
  try {
    assert.deepEqual(await pool.run(rows.map((r) => ({ type: 'nll', rows: [r] }))), expected);
  } finally {
    await pool.close();
  }
  assert.equal(pool.running, 0, 'no thread left behind');

  // A ragged batch throws in the worker: the error reaches the caller, every thread stops.
  const bad = ForwardPool.start(model, 2);
  await assert.rejects(bad.run([{ type: 'nll', rows: [[1, 2, 3]] }, { type: 'nll', rows: [[1, 2, 3], [4, 5]] }]), /worker/);
  await bad.close(0);
  assert.equal(bad.running, 0);
  model.dispose();
});

test('--threads: default all cores, 1 on native TensorFlow, bad values refused clearly', () => {
  assert.ok(resolveThreads(undefined, 'wasm') >= 1);
  assert.equal(resolveThreads(3, 'cpu'), 3);
  assert.equal(resolveThreads(4, 'node'), 1);
  for (const bad of [0, -1, 1.5, Number.NaN]) {
    assert.throws(() => resolveThreads(bad, 'wasm'), (e: Error) => e instanceof ConfigError && /--threads must be a positive integer/.test(e.message));
  }
});

test('prunelab eval ppl --threads 2 records its threads, matches --threads 1, and exits', { skip }, () => {
  const args = ['eval', 'ppl', '--model', STORIES_BIN, '--text', TEXT, '--seqlen', '256', '--max-windows', '20'];
  const one = runCli([...args, '--threads', '1']);
  const two = runCli([...args, '--threads', '2']);
  assert.equal(one.status, 0, one.stderr);
  assert.equal(two.status, 0, two.stderr);
  assert.equal(one.json?.threads, 1);
  assert.equal(two.json?.threads, 2);
  assert.equal(two.json?.threadsUsed, 2);
  assert.equal(two.json?.ppl, one.json?.ppl);
  assert.equal(two.json?.tensorsAfter, 0);
  const bad = runCli([...args, '--threads', '0']);
  assert.equal(bad.status, 2);
  assert.match(String(bad.json?.error), /--threads must be a positive integer \(got 0\)/);
  assert.doesNotMatch(bad.stderr, /at .*\.ts:\d+/, 'no stack trace');
});
