/**
 * CFSP (methods/cfsp): the budget allocation against the worked vector of cfsp.md §4 and its
 * invariants, the channel-count rounding, both fine-grained scores on hand-computed cases, the
 * released formula's collapse to the activation norm, the IG-LoRA rank schedule, the plan on a
 * hand-made context, and the CLI end to end on stories260K.
 */
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import {
  allocateKeepRatios, applyMinKeepRatio, keepRatiosFromScores, keptChannelCount, type AllocationOptions,
} from '../../methods/cfsp/allocation.ts';
import { activationScores, relativeWeightScores } from '../../methods/cfsp/scores.ts';
import { cfspLoraRanks } from '../../methods/cfsp/ranks.ts';
import cfsp, { type CfspOptions } from '../../methods/cfsp/index.ts';
import { parseMethodOptions } from '../../src/prune/registry.ts';
import { LLAMA } from '../../src/model/family.ts';
import type { ModelView } from '../../src/model/view.ts';
import type { LayerStats, PlanContext, StructuralPlan } from '../../src/prune/method.ts';
import { ConfigError } from '../../src/util/errors.ts';
import { HAVE_SHARED, NO_SHARED_REASON, setupBackend, shared, STORIES_BIN, STORIES_TOK, tmpDir } from '../support.ts';
import { runCli } from '../cli-support.ts';
import { loadModel } from '../../src/io/load-model.ts';
import { loadTokenizer } from '../../src/tokenizer/load.ts';
import { perplexityOfText } from '../../src/eval/perplexity.ts';

const DEFAULTS: AllocationOptions = { a: 1, refTokens: 131072, clampMargin: 1.05, minKeepRatio: 0 };
const mean = (v: readonly number[]): number => v.reduce((s, x) => s + x, 0) / v.length;
const close = (got: number, want: number, tol: number, what: string): void =>
  assert.ok(Math.abs(got - want) <= tol, `${what}: got ${got}, want ${want} ± ${tol}`);

/** cfsp.md §4 test vector: block 0 = 0.35, blocks 1–30 = 0.09, block 31 = 0.30. */
const VECTOR = [0.35, ...Array<number>(30).fill(0.09), 0.3];

/** Seeded LCG in [0, 1), so profiles are reproducible without a dependency. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
}

describe('cfsp budget allocation (cfsp.md §4)', () => {
  it('reproduces the worked test vector at p = 0.2 (clamp active) to 3 decimals', () => {
    const r = allocateKeepRatios(VECTOR, 0.2, DEFAULTS);
    assert.equal(r.clampActive, true);
    close(Math.min(...r.keepRatios), 0.788, 5e-4, 'min');
    close(Math.max(...r.keepRatios), 0.990, 5e-4, 'max');
    close(r.keepRatios[0], 0.990, 5e-4, 'block 0');
    close(r.keepRatios[31], 0.977, 5e-4, 'block 31');
    for (let l = 1; l <= 30; l++) close(r.keepRatios[l], 0.788, 5e-4, `block ${l}`);
    // The clamp puts the largest keep ratio at (1 − p) + p / 1.05 exactly.
    close(Math.max(...r.keepRatios), 0.8 + 0.2 / 1.05, 1e-12, 'clamped max');
  });

  it('reproduces the worked test vector at p = 0.5 (clamp inactive) to 3 decimals', () => {
    const r = allocateKeepRatios(VECTOR, 0.5, DEFAULTS);
    assert.equal(r.clampActive, false);
    close(Math.max(...r.sigmoid) / mean(r.sigmoid) * 0.5, 0.9956, 5e-5, 'clamp test value M/μ·(1 − p)');
    close(Math.min(...r.keepRatios), 0.468, 5e-4, 'min');
    close(Math.max(...r.keepRatios), 0.996, 5e-4, 'max');
    close(r.keepRatios[31], 0.961, 5e-4, 'block 31');
    assert.deepEqual(r.scores, r.sigmoid, 'an inactive clamp leaves the scores alone');
  });

  it('keeps a mean keep ratio of exactly 1 − p, and the rounded counts within a channel of (1 − p)·m', () => {
    const next = rng(7);
    for (const p of [0.1, 0.3, 0.5, 0.7, 0.9]) {
      for (let trial = 0; trial < 5; trial++) {
        const d = Array.from({ length: 12 }, () => 0.05 + 0.4 * next());
        const r = allocateKeepRatios(d, p, DEFAULTS);
        close(mean(r.keepRatios), 1 - p, 1e-12, `mean keep ratio at p = ${p}`);
        assert.ok(r.keepRatios.every((x) => x > 0 && x < 1), `ratios in (0, 1) at p = ${p}: ${r.keepRatios}`);
        const m = 1000;
        const k = r.keepRatios.map((x) => keptChannelCount(m, x, 1));
        r.keepRatios.forEach((x, l) => assert.ok(Math.abs(k[l] - m * x) <= 0.5, `block ${l} rounds to nearest`));
        assert.ok(Math.abs(mean(k) - (1 - p) * m) <= 1, `mean kept ${mean(k)} vs ${(1 - p) * m}`);
      }
    }
  });

  it('gives keep ratios monotone in block importance', () => {
    const next = rng(11);
    for (const p of [0.2, 0.5, 0.8]) {
      const d = Array.from({ length: 16 }, () => 0.3 * next());
      const r = allocateKeepRatios(d, p, DEFAULTS);
      const order = d.map((_, i) => i).sort((x, y) => d[x] - d[y]);
      for (let i = 1; i < order.length; i++) {
        assert.ok(r.keepRatios[order[i]] > r.keepRatios[order[i - 1]], `more distant block ${order[i]} keeps more at p = ${p}`);
      }
    }
  });

  it('slope a = 0 gives the uniform allocation', () => {
    const r = allocateKeepRatios(VECTOR, 0.3, { ...DEFAULTS, a: 0 });
    for (const x of r.keepRatios) assert.equal(x, 0.7);
  });

  it('the max clamp triggers on a crafted profile and keeps every ratio below 1', () => {
    // z_0 = 0.375·13.1072 → s_0 ≈ 0.9927, others ≈ 0.1627: (1 − p)·s_0/μ ≈ 1.34 without the clamp.
    const d = [0.5, 0, 0, 0];
    const r = allocateKeepRatios(d, 0.5, DEFAULTS);
    assert.ok(Math.max(...keepRatiosFromScores(r.sigmoid, 0.5)) > 1, 'unclamped block 0 would keep more than all');
    assert.equal(r.clampActive, true);
    assert.ok(r.keepRatios.every((x) => x < 1));
    close(r.keepRatios[0], 0.5 + 0.5 / 1.05, 1e-12, 'clamped block 0');
    close(mean(r.keepRatios), 0.5, 1e-12, 'mean');
    close(mean(r.scores), mean(r.sigmoid), 1e-15, 'the clamp keeps the mean score');
    // The margin is an option: at 1.25 the top becomes 0.5 + 0.5/1.25 = 0.9.
    close(allocateKeepRatios(d, 0.5, { ...DEFAULTS, clampMargin: 1.25 }).keepRatios[0], 0.9, 1e-12, 'margin 1.25');
  });

  it('refTokens sets the temperature: the released sum form equals the per-token mean at 131072 tokens', () => {
    // Released: z = (I − mean I)/10⁴ with I = N·d̄. At N = 65536 the released z is half the PruneLab z.
    const half = allocateKeepRatios(VECTOR, 0.5, { ...DEFAULTS, refTokens: 65536 });
    const full = allocateKeepRatios(VECTOR, 0.5, DEFAULTS);
    close(half.centred[0] * 2, full.centred[0], 1e-12, 'z scales with refTokens');
    close(full.centred[0], (0.35 - mean(VECTOR)) * 13.1072, 1e-12, 'z_0 by hand');
  });

  it('minKeepRatio: the hand-computed pass, the mean and the floor', () => {
    // D = 0.2, S = 0.2 + 0.6 = 0.8, factor 0.75: [0.4, 0.4 + 0.2·0.75, 0.4 + 0.6·0.75].
    const out = applyMinKeepRatio([0.2, 0.6, 1.0], 0.4);
    [0.4, 0.55, 0.85].forEach((want, i) => close(out[i], want, 1e-12, `ratio ${i}`));
    const r = allocateKeepRatios(VECTOR, 0.5, { ...DEFAULTS, minKeepRatio: 0.49 });
    close(mean(r.keepRatios), 0.5, 1e-12, 'mean kept');
    assert.ok(Math.min(...r.rawKeepRatios) < 0.49, 'the floor is binding in this case');
    assert.ok(r.keepRatios.every((x) => x >= 0.49 - 1e-12), `floor: ${Math.min(...r.keepRatios)}`);
    assert.deepEqual(r.scores, allocateKeepRatios(VECTOR, 0.5, DEFAULTS).scores, 'scores (for ranks) are before the floor');
    assert.throws(() => allocateKeepRatios(VECTOR, 0.5, { ...DEFAULTS, minKeepRatio: 0.51 }), /exceeds 1 − p/);
  });
});

describe('cfsp kept channel counts (cfsp.md §5)', () => {
  it('roundTo 128 on hand-picked numbers, with both clamps', () => {
    assert.equal(keptChannelCount(14336, 0.5, 128), 7168); // (7168 + 64)/128 = 56.5 → 56·128
    assert.equal(keptChannelCount(1000, 0.3, 128), 256); // (300 + 64)/128 = 2.84 → 2·128
    assert.equal(keptChannelCount(1000, 0.33, 128), 384); // (330 + 64)/128 = 3.08 → 3·128
    assert.equal(keptChannelCount(1000, 0.05, 128), 128); // (50 + 64)/128 = 0.89 → 0, lower clamp (released: keeps all)
    assert.equal(keptChannelCount(1000, 0.97, 128), 1000); // (970 + 64)/128 = 8.08 → 1024, capped at m
    assert.throws(() => keptChannelCount(100, 0.5, 128), ConfigError); // narrower than roundTo: no valid count
  });

  it('roundTo 1 is round-half-up to the nearest channel', () => {
    assert.equal(keptChannelCount(5, 0.5, 1), 3); // 2.5 + 0.5 = 3
    assert.equal(keptChannelCount(172, 0.7864848919202733, 1), 135); // 135.28
    assert.equal(keptChannelCount(172, 0.001, 1), 1); // never fewer than roundTo
  });
});

describe('cfsp fine-grained scores (cfsp.md §6)', () => {
  // m = 2 channels, D = 2 hidden units; a = [1, 2].
  const colSqSum = Float64Array.from([1, 4]);
  const down = { data: Float32Array.from([10, 1, 0, 3]), rows: 2, cols: 2 }; // [D, m]
  const up = { data: Float32Array.from([10, 10, 0, 0]), rows: 2, cols: 2 }; // [m, D]
  const gate = { data: Float32Array.from([2, 0, 1, 0]), rows: 2, cols: 2 }; // column 1 all zero

  it('activation is the L2 norm of the down_proj input', () => {
    assert.deepEqual(Array.from(activationScores(Float64Array.from([9, 16, 0]))), [3, 4, 0]);
  });

  it('relative-weight on a hand-computed case, where it must disagree with activation', () => {
    // i = 0: down [10·1, 1·2]/12, up [10, 0]/10, gate [2, 1]/3;  i = 1: down [0, 6]/6, up [1, 0], gate 0/0 → 0.
    // score_0 = ((10/12 + 1 + 2/3) + (0 + 1 + 0))/2 · 1 = 7/4;  score_1 = ((2/12 + 0 + 1/3) + (1 + 0 + 0))/2 · 2 = 3/2.
    const s = relativeWeightScores(colSqSum, down, [gate, up], 1, 1);
    close(s[0], 7 / 4, 1e-12, 'score_0');
    close(s[1], 3 / 2, 1e-12, 'score_1');
    const act = activationScores(colSqSum);
    assert.ok(act[1] > act[0] && s[0] > s[1], 'the two metrics keep different channels');
    // b = c = 0: pure relative weights. score_0 = (10/11 + 1 + 2/3 + 1)/2 = 59/33; score_1 = (1/11 + 1/3 + 1)/2 = 47/66.
    const w = relativeWeightScores(colSqSum, down, [gate, up], 0, 0);
    close(w[0], 59 / 33, 1e-12, 'b = c = 0 score_0');
    close(w[1], 47 / 66, 1e-12, 'b = c = 0 score_1');
  });

  it('the released three_w_one_wa formula collapses to 3·a_j^c / D (cfsp.md §6.3)', () => {
    // Replica of lib/prune.py: each term normalised over the weights of channel j itself.
    const next = rng(3);
    const m = 7;
    const D = 5;
    const a = Array.from({ length: m }, () => 0.1 + next());
    const wd = Array.from({ length: D * m }, () => next() - 0.5); // [D, m]
    const wu = Array.from({ length: m * D }, () => next() - 0.5); // [m, D]
    const wg = Array.from({ length: m * D }, () => next() - 0.5);
    const c = 1.7;
    for (let j = 0; j < m; j++) {
      let dsum = 0; let usum = 0; let gsum = 0;
      for (let i = 0; i < D; i++) {
        dsum += Math.abs(wd[i * m + j]) * a[j];
        usum += Math.abs(wu[j * D + i]);
        gsum += Math.abs(wg[j * D + i]);
      }
      let score = 0;
      for (let i = 0; i < D; i++) {
        score += (Math.abs(wd[i * m + j]) * a[j] / dsum + Math.abs(wu[j * D + i]) / usum + Math.abs(wg[j * D + i]) / gsum) * a[j] ** c;
      }
      close(score / D, (3 * a[j] ** c) / D, 1e-12, `channel ${j}`);
    }
  });
});

describe('cfsp IG-LoRA rank schedule (Decision 6)', () => {
  it('importance, uniform and inverse on a hand-computed case', () => {
    const s = [0.2, 0.4, 0.6, 0.8]; // mean 0.5
    assert.deepEqual(cfspLoraRanks(s, 8, 'importance'), [3, 6, 10, 13]); // 8·s/0.5 = 3.2, 6.4, 9.6, 12.8
    assert.deepEqual(cfspLoraRanks(s, 8, 'uniform'), [8, 8, 8, 8]);
    // 1/s = 5, 2.5, 5/3, 1.25 (mean 2.6041…): 8·w = 15.36, 7.68, 5.12, 3.84.
    assert.deepEqual(cfspLoraRanks(s, 8, 'inverse'), [15, 8, 5, 4]);
  });

  it('never assigns a rank below 1', () => {
    assert.deepEqual(cfspLoraRanks([0.01, 1, 1, 1.99], 2, 'importance'), [1, 2, 2, 4]); // 0.02 → 1
    assert.deepEqual(cfspLoraRanks([1, 1, 1, 100], 1, 'inverse'), [1, 1, 1, 1]); // 0.0133 → 1
  });
});

/** A context over a fake two-layer LLaMA with FFN width 6; the plan only reads shapes. */
function fakeContext(o: CfspOptions, colSqSum: number[][], distance: number[], sparsity: number,
  pattern: PlanContext<CfspOptions>['target']['pattern'] = { kind: 'unstructured' }): PlanContext<CfspOptions> {
  const model = { config: { layers: colSqSum.map((c) => ({ numHeads: 2, numKvHeads: 1, intermediateSize: c.length })) }, spec: LLAMA };
  const stats: LayerStats[] = colSqSum.map((c) => ({ downIn: { tokens: 10, inDim: c.length, colSqSum: Float64Array.from(c) } }));
  return {
    model: model as unknown as ModelView, options: o, target: { sparsity, pattern }, log: () => {}, stats,
    blockDistance: Float64Array.from(distance),
    weight: () => { throw new Error('activation scores must not read weights'); },
  };
}

async function planOf(ctx: PlanContext<CfspOptions>): Promise<StructuralPlan> {
  if (cfsp.kind !== 'structured') throw new Error('cfsp must be a structured method');
  return cfsp.plan(ctx);
}

describe('cfsp plan', () => {
  const defaults = parseMethodOptions(cfsp, {});

  it('has the spec defaults and rejects unknown options', () => {
    assert.deepEqual(defaults, {
      globalMetric: 'angular', localMetric: 'activation', a: 1, b: 1, c: 1, roundTo: 1, refTokens: 131072,
      clampMargin: 1.05, minKeepRatio: 0, rankAllocation: 'importance', rank: 8,
    });
    assert.throws(() => parseMethodOptions(cfsp, { alpha: 1 }), /unknown option/);
    assert.equal(cfsp.kind, 'structured');
    if (cfsp.kind === 'structured') assert.deepEqual(cfsp.stats(defaults), { perLayer: { colSqSum: ['downIn'] }, blockDistance: 'angular' });
  });

  it('keeps the top-k channels by activation norm, ties to the lower index', async () => {
    // Equal distances → uniform 50 % → k = 3 of 6.  Layer 0: 9 at 5, then the tie of 4s at 1, 2, 3 → 1, 2.
    const ctx = fakeContext(defaults, [[1, 4, 4, 4, 0, 9], [6, 5, 4, 3, 2, 1]], [0.2, 0.2], 0.5);
    const plan = await planOf(ctx);
    assert.deepEqual(plan.layers.map((l) => l.keepChannels), [[1, 2, 5], [0, 1, 2]]);
    const report = plan.report as { perLayer: { kept: number; keepRatio: number }[]; lora: { ranks: number[] } };
    assert.deepEqual(report.perLayer.map((r) => r.kept), [3, 3]);
    assert.deepEqual(report.lora.ranks, [8, 8]);
  });

  it('rejects minKeepRatio above 1 − p (N:M patterns are refused by the engine: see contract.test.ts)', async () => {
    const rows = [[1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6]];
    await assert.rejects(async () => planOf(fakeContext({ ...defaults, minKeepRatio: 0.6 }, rows, [0.1, 0.2], 0.5)), ConfigError);
  });
});

interface CliReport {
  removed: { ffnChannels: number };
  layers: { before: { intermediateSize: number }; after: { intermediateSize: number } }[];
  methodReport: { clampActive: boolean; perLayer: { kept: number; keepRatio: number }[]; lora: { ranks: number[]; total: number } };
  seconds: number;
  out: string;
}

describe('cfsp end to end on stories260K (CLI)', { skip: HAVE_SHARED ? false : NO_SHARED_REASON }, () => {
  before(setupBackend);
  const text = shared('text/tinystories-sample.txt');
  const ppl = async (dir: string): Promise<number> => {
    const { model } = loadModel(dir);
    const tok = await loadTokenizer(STORIES_TOK); // the pruned checkpoint keeps the model's tokenizer
    const before = tf.memory().numTensors;
    const r = await perplexityOfText(model, tok, text, { seqlen: 256, maxWindows: 6 });
    model.dispose();
    assert.ok(tf.memory().numTensors <= before, 'tensors leaked');
    return r.ppl;
  };
  let dense = 0;

  for (const p of [0.2, 0.5]) {
    it(`prunes at ${p}: per-layer widths differ, counts match the budget, the checkpoint reloads with finite perplexity`, async () => {
      dense ||= await ppl(STORIES_BIN);
      const out = path.join(tmpDir('cfsp'), 'pruned');
      const r = runCli(['prune', '--model', STORIES_BIN, '--method', 'cfsp', '--sparsity', String(p),
        '--calib', text, '--nsamples', '8', '--seqlen', '256', '--out', out]);
      assert.equal(r.status, 0, r.stderr);
      const rep = r.json as unknown as CliReport;
      const widths = rep.layers.map((l) => l.after.intermediateSize);
      assert.ok(new Set(widths).size > 1, `widths should differ per layer: ${widths}`);
      const m = rep.layers[0].before.intermediateSize;
      assert.deepEqual(widths, rep.methodReport.perLayer.map((l) => l.kept));
      rep.methodReport.perLayer.forEach((l, i) => assert.ok(Math.abs(l.kept - m * l.keepRatio) <= 0.5, `layer ${i} count`));
      assert.ok(Math.abs(mean(widths) - (1 - p) * m) <= 1, `mean width ${mean(widths)} vs ${(1 - p) * m}`);
      assert.equal(rep.methodReport.lora.ranks.length, widths.length);
      const { model } = loadModel(out);
      assert.deepEqual(model.config.layers.map((l) => l.intermediateSize), widths, 'reloaded widths');
      model.dispose();
      const pruned = await ppl(out);
      assert.ok(Number.isFinite(pruned) && pruned > dense, `ppl ${pruned} (dense ${dense})`);
      console.log(`cfsp stories260K p=${p}: widths ${widths.join(',')}, ppl ${pruned.toFixed(3)} (dense ${dense.toFixed(3)}), ${rep.seconds.toFixed(2)} s`);
    });
  }
});
