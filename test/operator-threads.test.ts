import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import type { CausalLM } from '../src/model/causal-lm.ts';
import { loadModel } from '../src/io/load-model.ts';
import { loadTokenizer } from '../src/tokenizer/load.ts';
import { calibrationFromText } from '../src/prune/calibration.ts';
import { pruneModel } from '../src/prune/engine.ts';
import { parseMethodOptions, resolveMethod } from '../src/prune/registry.ts';
import { readLinear } from '../src/prune/linear-io.ts';
import { buildSyntheticLlama } from './synthetic-model.ts';
import { backendLinAlg } from '../src/linalg/backend.ts';
import { HAVE_SHARED, NO_SHARED_REASON, STORIES_BIN, STORIES_TOK, setupBackend, shared } from './support.ts';

before(setupBackend);

/** Every operator's pruned weight (masked entries 0, so it carries the mask), the report without timings, the log. */
async function prune(model: CausalLM, name: string, opts: Record<string, unknown>, windows: number[][], threads: number) {
  const method = await resolveMethod(name);
  const logs: string[] = [];
  const report = await pruneModel(model, {
    method, options: parseMethodOptions(method, opts), target: { sparsity: 0.5, pattern: { kind: 'unstructured' } }, windows, threads,
    log: (msg) => logs.push(msg),
  });
  const weights: Float32Array[] = [];
  for (let i = 0; i < model.numLayers; i++) for (const l of model.spec.linears) weights.push(readLinear(model, i, l.role).data);
  // Everything in the report but the timings (keys ending in "seconds").
  const detail = JSON.stringify(report.layers.map((l) => l.detail), (k, v) => (/seconds$/i.test(k) ? undefined : v));
  // SparseGPT factors H once per tap in a call: a k or v solved on its own (a worker's task) factors it again.
  const k0 = (report.layers[0]?.detail as { operators?: Record<string, { factorSeconds?: number }> }).operators?.k;
  return { weights, detail, kFactored: (k0?.factorSeconds ?? 0) > 0, logs: logs.filter((m) => !/ s$|took|seconds|\d+\.\d+ s/.test(m)) };
}

const METHODS: [string, Record<string, unknown>][] = [
  ['sparsegpt', {}],
  ['fistapruner', { itersPerRound: 3, maxRounds: 2, powerIters: 5 }],
  ['fistapruner', { itersPerRound: 3, maxRounds: 1, powerIters: 5, intraLayerCorrection: false }],
  ['wanda', {}],
  ['dsnot', {}],
  ['dsnot', { initial_method: 'sparsegpt' }],
];

async function compare(label: string, load: () => CausalLM, windows: number[][]): Promise<void> {
  for (const [name, opts] of METHODS) {
    const tag = `${label} ${name} ${JSON.stringify(opts)}`;
    const m1 = load();
    const one = await prune(m1, name, opts, windows, 1);
    m1.dispose();
    const m2 = load();
    const two = await prune(m2, name, opts, windows, 2);
    m2.dispose();
    assert.equal(two.weights.length, one.weights.length);
    // Pruned weights carry the masks (masked entries are 0) and any updated values: bit for bit.
    one.weights.forEach((w, k) => assert.deepEqual(two.weights[k], w, `${tag}: matrix ${k}`));
    assert.ok(two.detail === one.detail, `${tag}: per-operator reports differ`);
    // SparseGPT solves in process where the backend has native kernels (threadedSolve 'within'), else k goes to a worker on its own.
    const sideBySide = backendLinAlg().native === undefined;
    if (name === 'sparsegpt') assert.deepEqual([one.kFactored, two.kFactored], [false, sideBySide], `${tag}: k was solved on its own only with 2 threads on workers`);
  }
}

test('operators solved on 2 threads give the in-process weights and reports bit for bit (synthetic LLaMA)', async () => {
  // Two batches of calibration windows (the pool needs ≥ 2 to use 2 threads): 4097+ tokens.
  const windows = Array.from({ length: 40 }, (_, w) => Array.from({ length: 128 }, (_, t) => (w * 7 + t * 13) % 50));
  await compare('synthetic', () => buildSyntheticLlama({ hidden: 32, layers: 2, heads: 4, kvHeads: 2, ffn: 48, vocab: 50, seed: 5 }), windows);
});

test('operators solved on 2 threads give the in-process weights and reports bit for bit (stories260K)', { skip: HAVE_SHARED ? false : NO_SHARED_REASON }, async () => {
  const tok = await loadTokenizer(STORIES_TOK);
  // 17 × 256 tokens: two batches, so the passes (and the solves) get a pool of 2.
  const windows = calibrationFromText(tok, { text: shared('text/tinystories-sample.txt'), nsamples: 17, seqlen: 256, seed: 0 }).windows;
  await compare('stories260K', () => loadModel(STORIES_BIN).model, windows);
});

test('a method whose state is chained across layers is solved in process, with a log line saying why', { skip: HAVE_SHARED ? false : NO_SHARED_REASON }, async () => {
  const tok = await loadTokenizer(STORIES_TOK);
  const windows = calibrationFromText(tok, { text: shared('text/tinystories-sample.txt'), nsamples: 17, seqlen: 256, seed: 0 }).windows;
  const opts = { itersPerRound: 2, maxRounds: 2, powerIters: 5, lambdaInit: 'previous-layer' };
  const m1 = loadModel(STORIES_BIN).model;
  const one = await prune(m1, 'fistapruner', opts, windows, 1);
  m1.dispose();
  const m2 = loadModel(STORIES_BIN).model;
  const two = await prune(m2, 'fistapruner', opts, windows, 2);
  m2.dispose();
  one.weights.forEach((w, k) => assert.deepEqual(two.weights[k], w, `matrix ${k}`));
  assert.ok(two.logs.some((m) => m.startsWith('operators solved in process (') && m.includes('previous-layer')), two.logs.join('\n'));
});
