/**
 * Structured baselines (baselines.md §5–§7): Magnitude-SP, Wanda-SP and FLAP (the engine's shared
 * selection helpers are tested in test/structured.test.ts). Hand-computed scores on tiny weights and
 * statistics; FLAP's bias compensation checked on a model built so that compensation is exact;
 * every baseline run end to end through the CLI on stories260K, with the reported parameter
 * fractions recounted from the saved safetensors header.
 */
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { HAVE_SHARED, NO_SHARED_REASON, STORIES_BIN, STORIES_TOK, maxAbsDiff, setupBackend, shared, tmpDir } from '../support.ts';
import { runCliAsync, type CliRun } from '../cli-support.ts';
import magnitudeSp, { columnL2Norms } from '../../methods/magnitude-sp/index.ts';
import wandaSp, { wandaSpScores } from '../../methods/wanda-sp/index.ts';
import flap from '../../methods/flap/index.ts';
import { biasCompensation, featureVariance, flapFeatureMetric } from '../../methods/flap/metrics.ts';
import { allocateFlap } from '../../methods/flap/allocate.ts';
import type { PlanContext, PruningMethod, StructuredMethod, TapStats } from '../../src/prune/method.ts';
import type { CausalLM } from '../../src/model/causal-lm.ts';
import type { ModelView } from '../../src/model/view.ts';
import { LLAMA } from '../../src/model/family.ts';
import { parseMethodOptions } from '../../src/prune/registry.ts';
import { pruneModel } from '../../src/prune/engine.ts';
import { loadModel, saveModel } from '../../src/io/load-model.ts';
import { readLinear, writeLinear } from '../../src/prune/linear-io.ts';
import { addBias } from '../../src/prune/surgery.ts';
import { loadTokenizer } from '../../src/tokenizer/load.ts';
import { readSafetensors } from '../../src/io/safetensors.ts';
import { perplexityOfText } from '../../src/eval/perplexity.ts';
import { ConfigError } from '../../src/util/errors.ts';

const close = (a: ArrayLike<number>, b: ArrayLike<number>, tol = 1e-9) => {
  assert.equal(a.length, b.length);
  for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i] - b[i]) <= tol, `index ${i}: ${a[i]} vs ${b[i]}`);
};

/** A plan context over a fake LLaMA whose only content is `down` weights and down-input stats. */
function fakeCtx<O>(method: PruningMethod<O>, rawOptions: Record<string, unknown>, sparsity: number,
  downs: { data: number[]; rows: number; cols: number }[], downIn: TapStats[] = []): { m: StructuredMethod<O>; ctx: PlanContext<O> } {
  const layers = downs.map((d) => ({ numHeads: 1, numKvHeads: 1, intermediateSize: d.cols }));
  const model = { config: { layers, numLayers: layers.length, hiddenSize: downs[0].rows, headDim: 2 }, spec: LLAMA, numLayers: layers.length } as unknown as ModelView;
  const options = parseMethodOptions(method, rawOptions);
  const ctx: PlanContext<O> = {
    model, options, target: { sparsity, pattern: { kind: 'unstructured' } }, log: () => {},
    stats: downs.map((_, i) => (downIn[i] ? { downIn: downIn[i] } : {})),
    weight: (layer, role) => {
      assert.equal(role, 'down');
      const d = downs[layer];
      return { data: Float32Array.from(d.data), rows: d.rows, cols: d.cols };
    },
  };
  return { m: method as StructuredMethod<O>, ctx };
}

describe('Magnitude-SP', () => {
  it('scores are the L2 norms of the down columns', () => {
    close(columnL2Norms(Float32Array.from([3, 0, 1, 4, 1, 0]), 2, 3), [5, 1, 1]);
  });

  it('keeps the same rounded count in every block, highest norms', () => {
    // Layer 0 column norms [5, 1, 2, 4]; layer 1 [1, 3, 2, 0.5]. p = 0.5 → keep 2 each.
    const { m, ctx } = fakeCtx(magnitudeSp, {}, 0.5, [
      { data: [3, 1, 0, 4, 4, 0, 2, 0], rows: 2, cols: 4 },
      { data: [1, 3, 2, 0.5], rows: 1, cols: 4 },
    ]);
    const plan = m.plan(ctx) as Awaited<ReturnType<typeof m.plan>>;
    assert.deepEqual(plan.layers.map((l) => l.keepChannels), [[0, 3], [1, 2]]);
    const { m: m3, ctx: c3 } = fakeCtx(magnitudeSp, { roundTo: 3 }, 0.5, [{ data: [5, 1, 2, 4, 3, 6], rows: 1, cols: 6 }]);
    // 6·0.5 = 3 → 3·⌊(3 + 1.5)/3⌋ = 3: top three norms 6, 5, 4.
    assert.deepEqual((m3.plan(c3) as Awaited<ReturnType<typeof m.plan>>).layers[0].keepChannels, [0, 3, 5]);
  });
});

describe('Wanda-SP', () => {
  it('score = √(Σx²/n) · mean_i |W_down,ij|', () => {
    // a = √([4, 1, 9, 16] / 4) = [1, 0.5, 1.5, 2]; mean |W| per column = [1, 2, 2, 2].
    const s = wandaSpScores(Float32Array.from([1, -2, 3, 0, -1, 2, 1, 4]), 2, 4, [4, 1, 9, 16], 4);
    close(s, [1, 1, 3, 4], 1e-12);
  });

  it('standardises per block and keeps a global fraction (counts differ per block)', () => {
    // |W| = 1, n = 1: scores are √colSqSum = [1,2,3,4] and [10,11,12,40] (see the helper test).
    const st = (sq: number[]): TapStats => ({ tokens: 1, inDim: 4, colSqSum: Float64Array.from(sq) });
    const { m, ctx } = fakeCtx(wandaSp, {}, 0.625, [
      { data: [1, 1, 1, 1], rows: 1, cols: 4 }, { data: [-1, 1, -1, 1], rows: 1, cols: 4 },
    ], [st([1, 4, 9, 16]), st([100, 121, 144, 1600])]);
    const plan = m.plan(ctx) as Awaited<ReturnType<typeof m.plan>>;
    assert.deepEqual(plan.layers.map((l) => l.keepChannels), [[2, 3], [3]]);
    assert.equal(plan.report?.removedFfnChannelFraction, 5 / 8);
  });
});

describe('FLAP metrics and allocation', () => {
  // Three features over N = 4 tokens: [1,1,1,1], [0,2,0,2], [1,3,1,3].
  const st: TapStats = { tokens: 4, inDim: 3, colSum: Float64Array.from([4, 4, 8]), colSqSum: Float64Array.from([4, 8, 20]) };
  const w = { data: Float32Array.from([1, 2, 0, 1, 0, 3]), rows: 2, cols: 3 }; // Σ_i W² per column = [2, 4, 9]

  it('IFV, WIFV and WIFN by hand', () => {
    close(featureVariance(st), [0, 1, 1]);
    close(flapFeatureMetric('IFV', w, st), [0, 1, 1]);
    close(flapFeatureMetric('WIFV', w, st), [0, 4, 9]);
    // mean_i |W| = [1, 1, 1.5]; √(Σx²/N) = [1, √2, √5].
    close(flapFeatureMetric('WIFN', w, st), [1, Math.SQRT2, 1.5 * Math.sqrt(5)], 1e-12);
  });

  it('bias compensation = W[:, P] · mean(x_P)', () => {
    // means [1, 1, 2]; P = {0, 1}: [1·1 + 2·1, 1·1 + 0·1] = [3, 1]; P = {2}: [0, 6].
    close(biasCompensation(w, [1, 1, 2], [0, 1]), [3, 1]);
    close(biasCompensation(w, [1, 1, 2], [2]), [0, 6]);
  });

  it('AL-AM cuts the parameter-weighted order where kept parameters are closest to (1 − p)', () => {
    // One layer: head groups with squared metric [1, 3] (1 feature each, 4 params each) → z
    // [−0.707, 0.707]; channels [1,2,3,4] (1 param each) → z [−1.162, −0.387, 0.387, 1.162].
    // Descending: c3 (cum 1), g1 (5), c2 (6), c1 (7), g0 (11), c0 (12); target 12·0.5 = 6 is met
    // at c2, and the reference keeps scores strictly above it: c3 and g1 stay.
    const a = allocateFlap([{ mlp: Float64Array.from([1, 2, 3, 4]), attn: Float64Array.from([1, 3]), groups: 2, featuresPerGroup: 1, groupParams: 4, channelParams: 1 }],
      { structure: 'AL-AM', sparsity: 0.5, removeHeads: 0, heads: true });
    assert.deepEqual(a.keepGroups, [[1]]);
    assert.deepEqual(a.keepChannels, [[3]]);
  });

  it('UL-UM removes ⌊p·n⌋ per layer and module; AL-AM guards emptied layers', () => {
    const layer = (mlp: number[], attn: number[]) => ({ mlp: Float64Array.from(mlp), attn: Float64Array.from(attn), groups: 2, featuresPerGroup: 2, groupParams: 8, channelParams: 1 });
    // Group sums: [1+1, 5+0] → group 0 is lowest.
    const u = allocateFlap([layer([4, 1, 3, 2], [1, 1, 5, 0])], { structure: 'UL-UM', sparsity: 0.5, removeHeads: 0, heads: true });
    assert.deepEqual(u.keepGroups, [[1]]);
    assert.deepEqual(u.keepChannels, [[0, 2]]);
    // p = 0.99: total 40 parameters, target 0.4; the first unit already overshoots (cum 1), so the
    // cut keeps nothing and each layer keeps its best group and channel. Layer 0 group z-means
    // are ∓0.75/s (group 1 best); layer 1's features [2,2,1,1] make group 0 best.
    const g = allocateFlap([layer([4, 1, 3, 2], [1, 1, 5, 0]), layer([1, 2, 3, 9], [2, 2, 1, 1])], { structure: 'AL-AM', sparsity: 0.99, removeHeads: 0, heads: true });
    assert.deepEqual(g.keepChannels, [[0], [3]]);
    assert.deepEqual(g.keepGroups, [[1], [0]]);
    assert.deepEqual(g.guarded, { attn: [0, 1], mlp: [0, 1] });
  });

  it('manual head allocation needs heads in scope; impossible head counts are refused', () => {
    const l = { mlp: Float64Array.from([1, 2]), attn: Float64Array.from([1, 2]), groups: 2, featuresPerGroup: 1, groupParams: 2, channelParams: 1 };
    assert.throws(() => allocateFlap([l], { structure: 'UL-MM', sparsity: 0.2, removeHeads: 0, heads: false }), ConfigError);
    assert.throws(() => allocateFlap([l], { structure: 'UL-MM', sparsity: 0.2, removeHeads: 2, heads: true }), /lose all 2 head groups/);
    assert.throws(() => allocateFlap([l], { structure: 'AL-MM', sparsity: 0.2, removeHeads: 2, heads: true }), ConfigError);
  });
});

const IDS = [[1, 47, 20, 50, 96, 29, 58, 94, 81, 25, 27, 89, 13, 5, 60, 33]];
const logits = (m: CausalLM) => { const t = m.forward(IDS); const d = t.dataSync().slice(); t.dispose(); return d; };

describe('FLAP bias compensation on a model', { skip: HAVE_SHARED ? false : NO_SHARED_REASON }, () => {
  before(setupBackend);

  /**
   * llama-tiny-bias-tied (GQA 6/2, attention biases) altered so that, in every layer, FFN
   * channels 0..39 have constant down inputs (zero gate/up rows, constant gate/up biases) and
   * KV group 0 has constant attention outputs (zero v rows, so every query head of the group
   * outputs the v bias). Their variance is 0, so FLAP UL-UM at p = 0.5 (⌊80·0.5⌋ = 40 channels,
   * ⌊2·0.5⌋ = 1 group) removes exactly them; with compensation the logits must not change.
   */
  function constantUnitsModel(): CausalLM {
    const { model } = loadModel(shared('golden', 'llama-tiny-bias-tied'));
    const hd = model.config.headDim;
    for (let i = 0; i < model.numLayers; i++) {
      const m = model.config.layers[i].intermediateSize;
      for (const [role, value] of [['gate', 0.7], ['up', -1.3]] as const) {
        const w = readLinear(model, i, role);
        w.data.fill(0, 0, 40 * w.cols);
        writeLinear(model, i, role, w.data, w.rows, w.cols);
        addBias(model, i, role, Float32Array.from({ length: m }, (_, j) => (j < 40 ? value + 0.01 * j : 0)));
      }
      const v = readLinear(model, i, 'v');
      v.data.fill(0, 0, hd * v.cols);
      writeLinear(model, i, 'v', v.data, v.rows, v.cols);
    }
    return model;
  }
  const windows = Array.from({ length: 4 }, (_, s) => Array.from({ length: 24 }, (_, t) => 3 + ((s * 31 + t * 17) % 90)));

  for (const comp of [true, false]) {
    it(`removing constant channels and a constant head group ${comp ? 'keeps' : 'changes'} the logits ${comp ? 'with' : 'without'} compensation`, async () => {
      const model = constantUnitsModel();
      const before = logits(model);
      const options = parseMethodOptions(flap, { structure: 'UL-UM', biasCompensation: comp });
      const report = await pruneModel(model, { method: flap, options, target: { sparsity: 0.5, pattern: { kind: 'unstructured' } }, windows });
      const mr = report.methodReport as { keptChannels: number[]; keptKvGroups: number[] };
      assert.deepEqual(mr.keptChannels, [40, 40, 40]);
      assert.deepEqual(mr.keptKvGroups, [1, 1, 1]);
      // The kept units are the non-constant ones: the surviving gate rows are the original rows 40..79.
      const diff = maxAbsDiff(logits(model), before);
      if (comp) assert.ok(diff < 2e-4, `logits moved by ${diff}`);
      else assert.ok(diff > 1e-2, `without compensation the logits should move (moved ${diff})`);
      model.dispose();
    });
  }
});

/**
 * Parameter counts recounted from a saved checkpoint: shapes from the safetensors header, read
 * by hand. HF configs switch biases on for all attention (q, k, v, o) or all MLP linears at
 * once, so a checkpoint with FLAP's o/down biases also stores all-zero q/k/v/gate/up biases;
 * those are storage padding, not parameters, and are counted separately.
 */
function recount(dir: string): { total: number; decoderLinears: number; ffn: number[]; biases: string[] } {
  const file = path.join(dir, 'model.safetensors');
  const buf = fs.readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, { shape: number[] }>;
  const biases = readSafetensors(file, (name) => name.endsWith('.bias'));
  let total = 0;
  let decoderLinears = 0;
  const ffn: number[] = [];
  const nonZeroBiases: string[] = [];
  for (const [name, e] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const size = e.shape.reduce((a, b) => a * b, 1);
    const b = biases.get(name);
    if (b && b.data.every((x) => x === 0)) continue;
    if (b) nonZeroBiases.push(name);
    total += size;
    if (/\.(q|k|v|o|gate|up|down)_proj\.weight$/.test(name)) decoderLinears += size;
    const g = /layers\.(\d+)\.mlp\.gate_proj\.weight$/.exec(name);
    if (g) ffn[Number(g[1])] = e.shape[0];
  }
  return { total, decoderLinears, ffn, biases: nonZeroBiases };
}

const TEXT = shared('text', 'tinystories-sample.txt');
const CALIB = ['--calib', TEXT, '--nsamples', '8', '--seqlen', '64', '--seed', '0'];

describe('structured baselines end to end from the CLI (stories260K)', { skip: HAVE_SHARED ? false : NO_SHARED_REASON }, () => {
  const runs = new Map<string, CliRun & { out: string }>();
  const cases = ['magnitude-sp', 'wanda-sp', 'flap', 'llm-pruner'].flatMap((m) => [0.2, 0.5].map((s) => ({ m, s })));
  const root = tmpDir('baselines-cli');

  let tok: Awaited<ReturnType<typeof loadTokenizer>>;
  const tokenizer = () => tok;
  before(async () => {
    await setupBackend();
    tok = await loadTokenizer(STORIES_TOK);
    // Two CLI processes at a time.
    const queue = [...cases];
    const worker = async () => {
      for (let c = queue.shift(); c; c = queue.shift()) {
        const out = path.join(root, `${c.m}-${c.s}`);
        const r = await runCliAsync(['prune', '--model', STORIES_BIN, '--method', c.m, '--sparsity', String(c.s), ...CALIB, '--out', out], { timeoutMs: 300_000 });
        runs.set(`${c.m}@${c.s}`, { ...r, out });
      }
    };
    await Promise.all([worker(), worker()]);
  });

  let densePpl = NaN;

  for (const { m, s } of cases) {
    it(`${m} at ${s}: prunes, reports what the checkpoint holds, finite perplexity`, async () => {
      const r = runs.get(`${m}@${s}`)!;
      assert.equal(r.status, 0, r.stderr);
      const report = r.json as unknown as {
        method: string; parameters: { before: { total: number; decoderLinears: number }; after: { total: number; decoderLinears: number } };
        removed: { allParameters: number; decoderLinears: number; ffnChannels: number }; methodReport: Record<string, unknown>;
        layers: { after: { numHeads: number; numKvHeads: number; intermediateSize: number } }[];
      };
      assert.equal(report.method, m);
      // stories260K: 260032 parameters; decoder linears 5 · (2·64·64 + 2·32·64 + 3·64·172) = 226560.
      assert.equal(report.parameters.before.total, 260032);
      assert.equal(report.parameters.before.decoderLinears, 226560);
      const rc = recount(r.out);
      if (m !== 'flap') assert.deepEqual(rc.biases, []);
      assert.equal(report.parameters.after.total, rc.total);
      assert.equal(report.parameters.after.decoderLinears, rc.decoderLinears);
      assert.ok(Math.abs(report.removed.allParameters - (1 - rc.total / 260032)) < 1e-12);
      assert.ok(Math.abs(report.removed.decoderLinears - (1 - rc.decoderLinears / 226560)) < 1e-12);
      const ffnRemoved = 1 - rc.ffn.reduce((a, b) => a + b, 0) / (5 * 172);
      assert.ok(Math.abs(report.removed.ffnChannels - ffnRemoved) < 1e-12);
      const mr = report.methodReport;
      if (m === 'magnitude-sp') {
        // roundTo 1: round(172·(1 − s)) in every block.
        assert.deepEqual(rc.ffn, Array(5).fill(Math.floor(172 * (1 - s) + 0.5)));
        assert.ok(Math.abs((mr.removedFfnChannelFraction as number) - ffnRemoved) < 1e-12);
      } else if (m === 'wanda-sp') {
        assert.equal(rc.ffn.reduce((a, b) => a + b, 0), Math.floor(860 * (1 - s) + 1e-9));
        assert.ok(Math.abs((mr.removedFfnChannelFraction as number) - ffnRemoved) < 1e-12);
      } else if (m === 'flap') {
        // Full FLAP: the budget is the fraction of decoder-linear weights, near the target.
        assert.ok(Math.abs((mr.removedFraction as number) - (1 - rc.decoderLinears / 226560)) < 1e-12);
        assert.ok(Math.abs((mr.removedFraction as number) - s) < 0.02, `removed ${mr.removedFraction}`);
        // Every stored bias that is not padding is FLAP's o or down compensation.
        assert.ok(rc.biases.length > 0 && rc.biases.every((nm) => /(o|down)_proj\.bias$/.test(nm)), rc.biases.join());
      } else {
        // Layers 1..4 pruned at ratio s: channels 172 − int(172·(1 − s)); head groups
        // ⌊(64 − int(64·(1 − s)))/16⌋ = 0 at 0.2, 2 at 0.5.
        const ch = 172 - Math.floor(172 * (1 - s));
        assert.deepEqual(rc.ffn, [172, ...Array(4).fill(172 - ch)]);
        assert.deepEqual(report.layers.map((l) => l.after.numKvHeads), [4, ...Array(4).fill(s === 0.5 ? 2 : 4)]);
      }
      for (const l of report.layers) assert.equal(l.after.numHeads % l.after.numKvHeads, 0);
      // The checkpoint reloads and gives a finite perplexity (within reason of the dense model).
      const { model } = loadModel(r.out);
      assert.deepEqual(model.config.layers.map((l) => l.intermediateSize), rc.ffn);
      for (const l of model.config.layers) assert.equal(l.numHeads / l.numKvHeads, 2);
      const ppl = (await perplexityOfText(model, tokenizer(), TEXT, { seqlen: 128, maxWindows: 8 })).ppl;
      model.dispose();
      if (Number.isNaN(densePpl)) {
        const { model: dense } = loadModel(STORIES_BIN);
        densePpl = (await perplexityOfText(dense, tokenizer(), TEXT, { seqlen: 128, maxWindows: 8 })).ppl;
        dense.dispose();
      }
      assert.ok(Number.isFinite(ppl) && ppl >= densePpl * 0.9, `ppl ${ppl} (dense ${densePpl})`);
    });
  }

  it('a ratio that would empty a layer is refused before anything is written', async () => {
    const out = path.join(root, 'refused');
    const r = await runCliAsync(['prune', '--model', STORIES_BIN, '--method', 'llm-pruner', '--sparsity', '0.99', ...CALIB, '--out', out]);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /would remove all 4 head groups of layer 1/);
    assert.equal(fs.existsSync(out), false);
    const r2 = await runCliAsync(['prune', '--model', STORIES_BIN, '--method', 'flap', '--sparsity', '0.2', '--option', 'structure=UL-MM', '--option', 'removeHeads=20', ...CALIB, '--out', out]);
    assert.notEqual(r2.status, 0);
    assert.match(r2.stderr, /would lose all 4 head groups/);
    assert.equal(fs.existsSync(out), false);
    assert.deepEqual(fs.readdirSync(root).filter((f) => f.startsWith('refused')), []);
  });
});

describe('FLAP on GQA (llama-tiny): reloadable, heads divisible by KV heads', { skip: HAVE_SHARED ? false : NO_SHARED_REASON }, () => {
  before(setupBackend);

  for (const structure of ['AL-AM', 'UL-UM'] as const) {
    it(`${structure} full FLAP`, async () => {
      const tensorsBefore = tf.memory().numTensors;
      const { model } = loadModel(shared('golden', 'llama-tiny'));
      const windows = Array.from({ length: 4 }, (_, s) => Array.from({ length: 24 }, (_, t) => 3 + ((s * 13 + t * 7) % 90)));
      const report = await pruneModel(model, { method: flap, options: parseMethodOptions(flap, { structure }), target: { sparsity: 0.5, pattern: { kind: 'unstructured' } }, windows });
      const kv = model.config.layers.map((l) => l.numKvHeads);
      assert.ok(kv.some((k) => k < 2), `some head group removed (${kv})`);
      for (const l of model.config.layers) assert.equal(l.numHeads, 3 * l.numKvHeads);
      const mr = report.methodReport as { removedFraction: number };
      assert.ok(Math.abs(mr.removedFraction - report.removed.decoderLinears) < 1e-12);
      const dir = tmpDir('flap-gqa');
      saveModel(model, dir);
      const { model: again } = loadModel(dir);
      assert.deepEqual(again.config.layers, model.config.layers);
      assert.ok(maxAbsDiff(logits(again), logits(model)) === 0);
      model.dispose(); again.dispose();
      assert.equal(tf.memory().numTensors, tensorsBefore, 'no tensor leaks');
    });
  }
});
