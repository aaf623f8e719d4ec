/**
 * Streamed weights (host store, one layer on the backend) against resident ones: the same
 * perplexities and the same pruned weights for every method (the gradient methods through the
 * layer-wise backward), a backend working set that stays flat across layers, and clear refusals
 * (a budget below one layer, calibration worker threads); layer-pruning workers on streamed weights.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { setupBackend, HAVE_SHARED, NO_SHARED_REASON, STORIES_BIN, shared } from './support.ts';
import { runCli } from './cli-support.ts';
import { syntheticLlamaConfig, syntheticLlamaTensors, type SyntheticLlamaOptions } from '../src/model/synthetic.ts';
import { CausalLM } from '../src/model/causal-lm.ts';
import { cloneConfig } from '../src/model/config.ts';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadModel, openCheckpoint, saveModel, streamedFromNamedTensors, streamedNeed, loadNeed } from '../src/io/load-model.ts';
import { HostStore } from '../src/model/host-store.ts';
import { setDeviceMemory } from '../src/backend/memory.ts';
import { meanTokenNll, perplexityOfText } from '../src/eval/perplexity.ts';
import { embedWindows, runLayer } from '../src/prune/stats.ts';
import { pruneModel } from '../src/prune/engine.ts';
import { parseMethodOptions, resolveMethod } from '../src/prune/registry.ts';
import type { PruneTarget } from '../src/prune/method.ts';
import { findTokenizerForModel } from '../src/tokenizer/load.ts';
import { calibrationFromText } from '../src/prune/calibration.ts';
import { ConfigError, ResourceError } from '../src/util/errors.ts';
import { mulberry32 } from '../src/util/random.ts';
import type { NamedTensors } from '../src/model/tensor-data.ts';

const SHAPE: SyntheticLlamaOptions = { hidden: 32, layers: 3, heads: 4, kvHeads: 2, ffn: 64, vocab: 64, seed: 11 };

function windows(n: number, T: number, seed = 3): number[][] {
  const r = mulberry32(seed);
  return Array.from({ length: n }, () => Array.from({ length: T }, () => Math.floor(r() * SHAPE.vocab)));
}

/** The same weights twice: all on the backend, and streamed from the host. */
function pair(): { resident: CausalLM; streamed: CausalLM } {
  const config = syntheticLlamaConfig(SHAPE);
  const tensors = syntheticLlamaTensors(config, SHAPE.seed);
  return {
    resident: CausalLM.fromNamedTensors(cloneConfig(config), tensors, 'synthetic'),
    streamed: streamedFromNamedTensors(cloneConfig(config), tensors, 'synthetic'),
  };
}

/** Same tensor names, same zeros (masks), same values within 1e-6 of the largest. */
function assertSameWeights(a: NamedTensors, b: NamedTensors, what: string): void {
  assert.deepEqual([...a.keys()].sort(), [...b.keys()].sort(), `${what}: tensor names`);
  for (const [name, t] of a) {
    const u = b.get(name)!;
    assert.deepEqual(u.shape, t.shape, `${what} ${name}: shape`);
    // Read once: a streamed export widens on every read of `data`.
    const x = t.data;
    const y = u.data;
    let scale = 0;
    for (const v of x) scale = Math.max(scale, Math.abs(v));
    for (let i = 0; i < x.length; i++) {
      assert.equal(y[i] === 0, x[i] === 0, `${what} ${name}[${i}]: mask differs`);
      assert.ok(Math.abs(y[i]! - x[i]!) <= 1e-6 * scale, `${what} ${name}[${i}]: ${y[i]} vs ${x[i]}`);
    }
  }
}

function assertRelClose(a: number, b: number, what: string): void {
  assert.ok(Math.abs(a - b) <= 1e-6 * Math.abs(b), `${what}: ${a} vs ${b}`);
}

const PER_LAYER_METHODS = ['magnitude', 'wanda', 'sparsegpt', 'fistapruner', 'dsnot', 'wanda-sp', 'magnitude-sp', 'flap', 'cfsp', 'saap', 'llm-pruner'];
/** Gradient methods once more with the Fisher diagonal (per-window products) and other options. */
const GRADIENT_VARIANTS: [string, Record<string, unknown>][] = [['llm-pruner', { taylor: 'param_mix' }], ['saap', { elem: 'param_first', allocation: 'zscore-global' }]];

describe('streamed weights (synthetic model)', () => {
  before(setupBackend);

  it('a streamed model keeps no weight on the backend between calls, and scores the same perplexity', async () => {
    const t0 = tf.memory().numTensors;
    const { resident, streamed } = pair();
    assert.equal(streamed.mode, 'streamed');
    assert.equal(resident.mode, 'resident');
    const tResident = tf.memory().numTensors;
    assert.ok(tResident > t0, 'the resident model holds its tensors');
    const ws = windows(5, 16);
    const a = await meanTokenNll(resident, ws, 2);
    const countBefore = tf.memory().numTensors;
    const b = await meanTokenNll(streamed, ws, 2);
    assert.equal(tf.memory().numTensors, countBefore, 'the streamed pass leaves nothing on the backend');
    assert.equal(a.tokens, b.tokens);
    assertRelClose(b.nll, a.nll, 'mean NLL');
    // The whole-model forward (decode, zero-shot) works streamed too, one layer uploaded at a time.
    const la = resident.forward([ws[0]!]);
    const lb = streamed.forward([ws[0]!]);
    const [diff, scale] = tf.tidy(() => [tf.max(tf.abs(tf.sub(la, lb))).dataSync()[0]!, tf.max(tf.abs(la)).dataSync()[0]!]);
    assert.ok(diff! <= 1e-6 * scale!, `logits differ by ${diff}`);
    tf.dispose([la, lb]);
    resident.dispose();
    streamed.dispose();
    assert.equal(tf.memory().numTensors, t0);
  });

  it('numTensors stays flat across layers of a layer-major pass', () => {
    const { resident, streamed } = pair();
    resident.dispose();
    const base = tf.memory().numTensors;
    let states = embedWindows(streamed, windows(4, 16));
    for (let i = 0; i < streamed.numLayers; i++) {
      states = runLayer(streamed, i, states)!;
      assert.equal(tf.memory().numTensors, base, `after layer ${i}`);
    }
    streamed.dispose();
  });

  for (const [name, raw] of [...PER_LAYER_METHODS.map((n): [string, Record<string, unknown>] => [n, {}]), ...GRADIENT_VARIANTS]) {
    it(`${name}${Object.keys(raw).length ? ` ${JSON.stringify(raw)}` : ''}: the same pruned weights and perplexity streamed as resident`, async () => {
      const method = await resolveMethod(name);
      const options = parseMethodOptions(method, raw);
      const target: PruneTarget = method.kind === 'structured'
        ? { sparsity: 0.2, pattern: { kind: 'unstructured' } }
        : { sparsity: 0.5, pattern: { kind: 'unstructured' } };
      const { resident, streamed } = pair();
      const calib = windows(4, 16, 9);
      const ra = await pruneModel(resident, { method, options, target, windows: calib });
      const perLayer: number[] = [];
      const bytesBefore = tf.memory().numBytes;
      const layerLinearBytes = streamed.spec.linears.reduce((n, l) => n + 4 * l.inDim(streamed.config.layers[0]!, streamed.config) * l.outDim(streamed.config.layers[0]!, streamed.config), 0);
      const rb = await pruneModel(streamed, { method, options, target, windows: calib, onLayer: () => perLayer.push(tf.memory().numTensors) });
      assert.ok(perLayer.every((n) => n === perLayer[0]), `${name}: tensors per layer ${perLayer}`);
      assert.deepEqual(streamed.config.layers, resident.config.layers, `${name}: layer shapes`);
      assert.deepEqual(rb.zeros, ra.zeros);
      assert.deepEqual(rb.removed, ra.removed);
      // Measured where the streamed working set peaks: at least one (unpruned) decoder layer's linears above what the backend held before.
      // (Magnitude-SP scores host weights and holds a layer only for its surgery, which shrinks it.)
      const held = rb.peakTensorBytes - bytesBefore;
      const minimum = name === 'magnitude-sp' ? 1 : layerLinearBytes;
      assert.ok(held >= minimum, `${name}: streamed working set ${held} bytes, expected at least ${minimum}`);
      assertSameWeights(resident.toNamedTensors(), streamed.toNamedTensors(), name);
      const ws = windows(3, 16, 5);
      assertRelClose((await meanTokenNll(streamed, ws, 2)).nll, (await meanTokenNll(resident, ws, 2)).nll, `${name} NLL`);
      resident.dispose();
      streamed.dispose();
    });
  }

  it('a pruned streamed model saves from the host store and reloads to the resident result', async () => {
    const method = await resolveMethod('wanda');
    const req = { method, options: parseMethodOptions(method, {}), target: { sparsity: 0.5, pattern: { kind: 'unstructured' } } as const, windows: windows(4, 16, 9) };
    const { resident, streamed } = pair();
    await pruneModel(resident, req);
    await pruneModel(streamed, req);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'prunelab-streamed-'));
    try {
      const before = tf.memory().numTensors;
      saveModel(streamed, dir);
      assert.equal(tf.memory().numTensors, before, 'saving a streamed model uploads nothing');
      const { model: back } = loadModel(dir);
      assertSameWeights(resident.toNamedTensors(), back.toNamedTensors(), 'reloaded');
      back.dispose();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
      resident.dispose();
      streamed.dispose();
    }
  });

  it('the host store keeps bf16 weights 16-bit when a write-back only masks them, and widens them when it changes values', () => {
    const store = new HostStore();
    const values = Float32Array.from([0.5, -1.25, 3, 0.0078125]);
    const halves = new Uint16Array(new Uint32Array(values.buffer).map((u) => u >>> 16));
    store.putStored('w', [2, 2], 'BF16', halves);
    assert.deepEqual([...store.get('w')!.data], [...values]);
    assert.equal(store.bytes(), 8);
    store.putF32('w', { shape: [2, 2], data: Float32Array.from([0.5, 0, 3, 0]) });
    assert.equal(store.dtypeOf('w'), 'BF16');
    assert.deepEqual([...store.get('w')!.data], [0.5, 0, 3, 0]);
    store.putF32('w', { shape: [2, 2], data: Float32Array.from([0.1, 0, 3, 0]) });
    assert.equal(store.dtypeOf('w'), 'F32', '0.1 is not a bf16');
    assert.equal(store.get('w')!.data[0], Math.fround(0.1));
  });

  for (const name of ['wanda', 'fistapruner']) {
    it(`${name}: layers pruned on 2 worker threads from streamed weights = in process from resident ones (dense-parallel)`, async () => {
      const method = await resolveMethod(name);
      const options = parseMethodOptions(method, name === 'fistapruner' ? { maxRounds: 1, itersPerRound: 5 } : {});
      const req = { method, options, target: { sparsity: 0.5, pattern: { kind: 'unstructured' } } as const, windows: windows(4, 16, 9), mode: 'dense-parallel' as const };
      const { resident, streamed } = pair();
      const ra = await pruneModel(resident, req);
      const before = tf.memory().numTensors;
      const rb = await pruneModel(streamed, { ...req, workers: 2 });
      assert.equal(tf.memory().numTensors, before, `${name}: the streamed model keeps nothing on the backend`);
      assert.deepEqual(rb.zeros, ra.zeros);
      assertSameWeights(resident.toNamedTensors(), streamed.toNamedTensors(), `${name} workers=2 streamed`);
      resident.dispose();
      streamed.dispose();
    });
  }

  it('calibration threads refuse streamed weights with what to do', async () => {
    const { resident, streamed } = pair();
    resident.dispose();
    const wanda = await resolveMethod('wanda');
    await assert.rejects(
      pruneModel(streamed, { method: wanda, options: parseMethodOptions(wanda, {}), target: { sparsity: 0.5, pattern: { kind: 'unstructured' } }, windows: windows(4, 16), threads: 2 }),
      (e: Error) => e instanceof ConfigError && /streamed/.test(e.message));
    streamed.dispose();
  });
});

describe('streamed weights (stories260K, forced by a tiny --device-memory)', { skip: HAVE_SHARED ? false : NO_SHARED_REASON }, () => {
  before(setupBackend);
  after(() => setDeviceMemory(null));
  const text = shared('text/tinystories-sample.txt');

  it('a budget below the model streams it; the same perplexity and wanda / sparsegpt / saap / llm-pruner masks', async () => {
    setDeviceMemory(null);
    const ckpt = openCheckpoint(STORIES_BIN);
    const need = streamedNeed(ckpt);
    assert.ok(need.backendBytes < loadNeed(ckpt).backendBytes, 'streaming needs less than residency');
    const tokenizer = await findTokenizerForModel(STORIES_BIN);
    const calib = calibrationFromText(tokenizer, { text, nsamples: 8, seqlen: 128, seed: 0 });
    for (const name of ['wanda', 'sparsegpt', 'saap', 'llm-pruner']) {
      setDeviceMemory(null);
      const { model: resident } = loadModel(STORIES_BIN);
      setDeviceMemory(need.backendBytes);
      const { model: streamed } = loadModel(STORIES_BIN);
      assert.equal(resident.mode, 'resident');
      assert.equal(streamed.mode, 'streamed');
      const opts = { seqlen: 128, maxWindows: 6 };
      if (name === 'wanda') {
        assertRelClose((await perplexityOfText(streamed, tokenizer, text, opts)).ppl, (await perplexityOfText(resident, tokenizer, text, opts)).ppl, 'dense ppl');
      }
      const method = await resolveMethod(name);
      const sparsity = method.kind === 'structured' ? 0.3 : 0.5;
      const req = { method, options: parseMethodOptions(method, {}), target: { sparsity, pattern: { kind: 'unstructured' } } as const, windows: calib.windows };
      await pruneModel(resident, req);
      await pruneModel(streamed, req);
      assert.deepEqual(streamed.config.layers, resident.config.layers, `${name}: layer shapes`);
      assertSameWeights(resident.toNamedTensors(), streamed.toNamedTensors(), name);
      assertRelClose((await perplexityOfText(streamed, tokenizer, text, opts)).ppl, (await perplexityOfText(resident, tokenizer, text, opts)).ppl, `${name} ppl`);
      resident.dispose();
      streamed.dispose();
    }
  });

  it('a budget below one layer is refused before any weight is read, saying what is needed', () => {
    setDeviceMemory(1000);
    assert.throws(() => loadModel(STORIES_BIN), (e: Error) =>
      e instanceof ResourceError && /one decoder layer/.test(e.message) && /--device-memory/.test(e.message) && /0\.00 GiB/.test(e.message));
    setDeviceMemory(null);
  });

  it('the CLI: eval ppl, generate and eval speed record the execution mode; streamed gives the same perplexity and tokens', () => {
    const budget = String(streamedNeed(openCheckpoint(STORIES_BIN)).backendBytes);
    const ppl = ['eval', 'ppl', '--model', STORIES_BIN, '--text', text, '--seqlen', '128', '--max-windows', '4'];
    const a = runCli(ppl);
    const b = runCli([...ppl, '--device-memory', budget]);
    assert.equal(a.status, 0, a.stderr);
    assert.equal(b.status, 0, b.stderr);
    assert.equal(a.json?.execution, 'resident');
    assert.equal(b.json?.execution, 'streamed');
    assert.equal(b.json?.threads, 1, 'streamed passes run in process');
    assertRelClose(b.json?.ppl as number, a.json?.ppl as number, 'CLI ppl');
    const gen = ['generate', '--model', STORIES_BIN, '--greedy', '--max-new-tokens', '12'];
    const ga = runCli(gen);
    const gb = runCli([...gen, '--device-memory', budget]);
    assert.equal(gb.status, 0, gb.stderr);
    assert.equal(gb.json?.execution, 'streamed');
    assert.deepEqual(gb.json?.ids, ga.json?.ids);
    const refused = runCli([...ppl, '--device-memory', budget, '--threads', '2']);
    assert.equal(refused.status, 2);
    assert.match(refused.stderr, /--threads 2: this model's weights are streamed/);
    const bad = runCli([...ppl, '--device-memory', 'lots']);
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /--device-memory must be a positive size/);
  });
});
