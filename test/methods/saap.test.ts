/**
 * SAAP (methods/saap): closed-form vs Adam σ² on Taylor-sized scores, the fused score on a
 * hand-computed case, φ/ν/ν̃, exclusion and the c bisection on a hand-made 4-layer profile, the
 * GQA group layout on a hand-computed layer, option and budget errors, and on real checkpoints:
 * valid GQA shapes, identical logits after save/reload, the parameter budget met within one
 * group, and the CLI end to end on stories260K at 20 % and 50 %.
 */
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import saap, { type SaapOptions } from '../../methods/saap/index.ts';
import { fitLogSigma2Adam, fuseScores, type UnitScores } from '../../methods/saap/fusion.ts';
import {
  allocateRatios, allocateZscore, continuousRemoved, defaultExcludeCount, fixedExclusion, fluctuationOf, normalisedImportance,
  rankedExclusion, type AllocUnit,
} from '../../methods/saap/allocation.ts';
import { layerGroupScores, type LinearTaylorInput } from '../../src/prune/taylor.ts';
import { parseMethodOptions } from '../../src/prune/registry.ts';
import { pruneModel } from '../../src/prune/engine.ts';
import { calibrationFromText } from '../../src/prune/calibration.ts';
import { loadModel, saveModel } from '../../src/io/load-model.ts';
import { loadTokenizer } from '../../src/tokenizer/load.ts';
import { countParameters } from '../../src/model/count.ts';
import { perplexityOfText } from '../../src/eval/perplexity.ts';
import type { CausalLM } from '../../src/model/causal-lm.ts';
import type { LinearRole } from '../../src/model/family.ts';
import { LLAMA } from '../../src/model/family.ts';
import { ConfigError } from '../../src/util/errors.ts';
import { HAVE_SHARED, NO_SHARED_REASON, setupBackend, shared, STORIES_BIN, STORIES_TOK, tmpDir } from '../support.ts';
import { runCli } from '../cli-support.ts';

const close = (got: number, want: number, tol: number, what: string): void =>
  assert.ok(Math.abs(got - want) <= tol, `${what}: got ${got}, want ${want} ± ${tol}`);

/** Seeded LCG in [0, 1). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
}

const f64 = (xs: number[]) => Float64Array.from(xs);

describe('saap: fusion', () => {
  it('Adam-fitted σ² agrees with the closed form on Taylor-sized scores (~1e-6)', () => {
    const r = rng(7);
    const units: UnitScores[] = [];
    for (let l = 0; l < 4; l++) {
      units.push({ layer: l, type: 'attn', vec: f64(Array.from({ length: 8 }, () => 1e-6 * (0.2 + r()))), elem: f64(Array.from({ length: 8 }, () => 3e-5 * (0.2 + r()))) });
      units.push({ layer: l, type: 'mlp', vec: f64(Array.from({ length: 40 }, () => 2e-8 * (0.2 + r()))), elem: f64(Array.from({ length: 40 }, () => 5e-7 * (0.2 + r()))) });
    }
    for (const scope of ['module_type', 'global', 'layer'] as const) {
      const closed = fuseScores(units, scope, 'closed');
      const adam = fuseScores(units, scope, 'adam');
      assert.equal(adam.sigmas.length, closed.sigmas.length);
      closed.sigmas.forEach((c, i) => {
        const a = adam.sigmas[i];
        assert.equal(a.scope, c.scope);
        for (const m of ['vec', 'elem'] as const) {
          assert.ok(Math.abs(a.sigma2[m] / c.sigma2[m] - 1) < 1e-3, `${scope}/${c.scope}/${m}: adam ${a.sigma2[m]} vs closed ${c.sigma2[m]}`);
        }
        assert.ok((a.adamSteps ?? 0) > 200, 'log 1e-6 ≈ −13.8 is out of reach of 200 steps');
      });
    }
    // The closed form is the mean over the scope: attention vec over 4 layers × 8 groups.
    const attnVec = units.filter((u) => u.type === 'attn').flatMap((u) => Array.from(u.vec));
    const want = attnVec.reduce((a, b) => a + b, 0) / attnVec.length;
    close(fuseScores(units, 'module_type', 'closed').sigmas.find((s) => s.scope === 'attn')!.sigma2.vec, want, 1e-18, 'σ²_vec(attn)');
  });

  it('the proposed 200 Adam steps at lr 1e-2 cannot reach log 1e-6, and the cap is an error', () => {
    assert.throws(() => fitLogSigma2Adam([1e-6], { lr: 1e-2, maxSteps: 200, decaySteps: Infinity }), /did not converge in 200 steps/);
    const ok = fitLogSigma2Adam([1e-6, 250]);
    close(Math.exp(ok.logSigma2[0]) / 1e-6, 1, 1e-4, 'σ² / mean (tiny)');
    close(Math.exp(ok.logSigma2[1]) / 250, 1, 1e-4, 'σ² / mean (large)');
  });

  it('fused score = I_vec / (2σ²_vec) + I_elem / (2σ²_elem) with σ² the scope mean (hand-computed)', () => {
    const units: UnitScores[] = [
      { layer: 0, type: 'attn', vec: f64([1, 3]), elem: f64([2, 2]) },
      { layer: 0, type: 'mlp', vec: f64([4, 0, 2]), elem: f64([1, 1, 4]) },
      { layer: 1, type: 'attn', vec: f64([2, 6]), elem: f64([4, 0]) },
      { layer: 1, type: 'mlp', vec: f64([1, 1, 1]), elem: f64([3, 3, 3]) },
    ];
    // module_type: attn σ²_vec = mean(1,3,2,6) = 3, σ²_elem = mean(2,2,4,0) = 2;
    // mlp σ²_vec = mean(4,0,2,1,1,1) = 1.5, σ²_elem = mean(1,1,4,3,3,3) = 2.5.
    const { fused, sigmas } = fuseScores(units, 'module_type', 'closed');
    assert.deepEqual(sigmas.map((s) => [s.scope, s.sigma2.vec, s.sigma2.elem]), [['attn', 3, 2], ['mlp', 1.5, 2.5]]);
    const want = [[1 / 6 + 2 / 4, 3 / 6 + 2 / 4], [4 / 3 + 1 / 5, 0 + 1 / 5, 2 / 3 + 4 / 5], [2 / 6 + 4 / 4, 6 / 6 + 0], [1 / 3 + 3 / 5, 1 / 3 + 3 / 5, 1 / 3 + 3 / 5]];
    fused.forEach((f, u) => f.forEach((x, i) => close(x, want[u][i], 1e-12, `unit ${u} group ${i}`)));
    // global: σ²_vec = mean of all 10 = 21/10, σ²_elem = 23/10.
    const g = fuseScores(units, 'global', 'closed');
    close(g.fused[1][0], 4 / 4.2 + 1 / 4.6, 1e-12, 'global fused');
    // Mean-normalised: within one scope the mean fused score is exactly 1.
    const lay = fuseScores(units, 'layer', 'closed');
    for (const f of lay.fused) close(f.reduce((a, b) => a + b, 0) / f.length, 1, 1e-12, 'layer-scope mean');
  });

  it('an all-zero metric uses σ² = 1e-12 and says so', () => {
    const logs: string[] = [];
    const { sigmas } = fuseScores([{ layer: 0, type: 'mlp', vec: f64([0, 0]), elem: f64([1, 3]) }], 'module_type', 'closed', (m) => logs.push(m));
    assert.equal(sigmas[0].sigma2.vec, 1e-12);
    assert.equal(sigmas[0].sigma2.elem, 2);
    assert.match(logs.join('\n'), /metric vec is zero/);
  });
});

describe('saap: allocation', () => {
  // Fused scores per layer: ν = μ/(1+φ) = 1, 4/3, 1/2, 7/6 (mean 1, so ν̃ = ν).
  const PROFILE = [[1, 1, 1, 1], [3, 1, 3, 1], [0, 2, 0, 2], [7 / 6, 7 / 6, 7 / 6, 7 / 6]];

  it('φ = std/mean, ν = μ/(1+φ), ν̃ = ν/mean ν on a hand-made profile', () => {
    const fl = PROFILE.map((p) => fluctuationOf(p, 'cv'));
    const want = [{ mu: 1, sd: 0, phi: 0, nu: 1 }, { mu: 2, sd: 1, phi: 0.5, nu: 4 / 3 }, { mu: 1, sd: 1, phi: 1, nu: 0.5 }, { mu: 7 / 6, sd: 0, phi: 0, nu: 7 / 6 }];
    fl.forEach((f, l) => {
      for (const k of ['mu', 'sd', 'phi', 'nu'] as const) close(f[k], want[l][k], 1e-12, `layer ${l} ${k}`);
    });
    const nt = normalisedImportance(fl.map((f) => f.nu));
    [1, 4 / 3, 0.5, 7 / 6].forEach((v, l) => close(nt[l], v, 1e-12, `ν̃ ${l}`));
    assert.deepEqual(fluctuationOf([0, 0], 'cv'), { mu: 0, sd: 0, phi: 0, nu: 0 }, 'μ = 0 ⇒ φ = 0');
    assert.equal(fluctuationOf([3, 1, 3, 1], 'none').nu, 2);
    assert.deepEqual(rankedExclusion(nt, 1), [1]);
    assert.deepEqual(rankedExclusion(nt, 2), [1, 3]);
    assert.deepEqual(fixedExclusion(8, 4, 2), [0, 1, 2, 3, 6, 7]);
    assert.equal(defaultExcludeCount(32), 6);
    assert.equal(defaultExcludeCount(40), 8);
    assert.equal(defaultExcludeCount(5), 1);
  });

  it('bisection finds the c of a known answer; rounding keeps one group; ν̃ = 0 ⇒ rMax', () => {
    // 10 groups of 1 parameter per layer, layer 1 excluded. At c = 0.5: r = 0.5, 0, min(0.9, 1.0), 3/7,
    // so Σ r·N = 10·(0.5 + 0.9 + 3/7) = 128/7.
    const nuT = [1, 4 / 3, 0.5, 7 / 6];
    const units: AllocUnit[] = nuT.map((nuTilde, layer) => ({ layer, type: 'mlp', groups: 10, groupParams: 1, nuTilde, excluded: layer === 1 }));
    const a = allocateRatios(units, 128 / 7, 0.9);
    close(a.cContinuous, 0.5, 1e-12, 'c');
    close(continuousRemoved(units, a.cContinuous, 0.9), 128 / 7, 1e-9, 'Σ r·N');
    // Rounded: 5 + 0 + 9 (round(9) ≤ 10 − 1) + round(4.29) = 18, the whole-group count nearest 18.29.
    assert.deepEqual(a.removeCounts, [5, 0, 9, 4]);
    assert.equal(a.removedParams, 18);
    assert.equal(a.ratios[1], 0);
    close(a.ratios[2], 0.9, 0, 'clipped at rMax');
    // At least one group kept even at rMax close to 1.
    const two: AllocUnit[] = [{ layer: 0, type: 'attn', groups: 2, groupParams: 5, nuTilde: 1, excluded: false }];
    assert.deepEqual(allocateRatios(two, 6, 0.95).removeCounts, [1]);
    // ν̃ = 0 ⇒ r = rMax whatever c is.
    const zero: AllocUnit[] = [{ layer: 0, type: 'mlp', groups: 10, groupParams: 1, nuTilde: 0, excluded: false },
      { layer: 1, type: 'mlp', groups: 10, groupParams: 1, nuTilde: 2, excluded: false }];
    assert.equal(allocateRatios(zero, 0, 0.9).removedParams, 0, 'a zero budget removes nothing');
    const z = allocateRatios(zero, 10, 0.9);
    assert.equal(z.ratios[0], 0.9);
    close(z.cContinuous, 0.2, 1e-12, 'c with a zero unit');
  });

  it('meets the budget within one group across random mixed profiles', () => {
    const r = rng(11);
    for (let t = 0; t < 60; t++) {
      const units: AllocUnit[] = [];
      for (let l = 0; l < 6; l++) {
        units.push({ layer: l, type: 'attn', groups: 4 + Math.floor(r() * 8), groupParams: 3072, nuTilde: 0.3 + 1.4 * r(), excluded: l === 0 });
        units.push({ layer: l, type: 'mlp', groups: 100 + Math.floor(r() * 100), groupParams: 192, nuTilde: 0.3 + 1.4 * r(), excluded: l === 5 });
      }
      const total = units.reduce((a, u) => a + u.groups * u.groupParams, 0) * 1.2;
      const budget = (0.1 + 0.4 * r()) * total;
      const a = allocateRatios(units, budget, 0.9);
      assert.ok(Math.abs(a.removedParams - budget) <= 3072, `trial ${t}: removed ${a.removedParams} vs budget ${budget}`);
      const fused = units.map((u) => f64(Array.from({ length: u.groups }, () => r())));
      const zs = allocateZscore(units, fused, budget, 0.9);
      assert.ok(Math.abs(zs.removedParams - budget) <= 3072, `trial ${t} zscore: removed ${zs.removedParams} vs budget ${budget}`);
      zs.removeSets.forEach((s, k) => assert.ok(s.length < units[k].groups && (!units[k].excluded || s.length === 0)));
    }
  });

  it('zscore-global removes the lowest z first, within each unit the lowest fused scores', () => {
    const units: AllocUnit[] = [
      { layer: 0, type: 'mlp', groups: 4, groupParams: 1, nuTilde: 1, excluded: false },
      { layer: 1, type: 'mlp', groups: 4, groupParams: 1, nuTilde: 1, excluded: false },
    ];
    // z of unit 0: −1.342, −0.447, …; unit 1 (μ 25.25, s 11.519): −1.324, −0.456, … Budget 3 takes
    // (0:0), (1:0), (1:1) although group 1 of unit 0 has the much smaller fused score.
    const fused = [f64([1, 2, 3, 4]), f64([10, 20, 30, 41])];
    assert.deepEqual(allocateZscore(units, fused, 3, 0.9).removeSets, [[0], [0, 1]]);
  });

  it('an unreachable budget is a ConfigError that says so', () => {
    const units: AllocUnit[] = [
      { layer: 0, type: 'mlp', groups: 10, groupParams: 1, nuTilde: 1, excluded: false },
      { layer: 1, type: 'mlp', groups: 10, groupParams: 1, nuTilde: 1, excluded: true },
    ];
    assert.throws(() => allocateRatios(units, 9.5, 0.9), (e: Error) => e instanceof ConfigError && /unreachable.*rMax = 0\.9.*at most 9 /.test(e.message));
    assert.throws(() => allocateZscore(units, [f64(Array(10).fill(1)), f64(Array(10).fill(1))], 9.5, 0.9), ConfigError);
    assert.equal(allocateRatios(units, 9, 0.9).removedParams, 9);
  });
});

describe('saap: groups and options', () => {
  it('GQA group layout: KV group k = q rows of its g heads, its k/v rows, the o columns (hand-computed)', () => {
    // hidden 2, 4 query heads / 2 KV heads of head_dim 1 (g = 2), FFN 2; all weights 1, Fisher 2.
    const lin = (rows: number, cols: number, grad: number[]): LinearTaylorInput =>
      ({ weight: new Float32Array(rows * cols).fill(1), grad: Float32Array.from(grad), fisher: new Float32Array(rows * cols).fill(2), rows, cols });
    const linears: Partial<Record<LinearRole, LinearTaylorInput>> = {
      q: lin(4, 2, [1, 1, 1, -1, 2, 0, 0, -3]),
      k: lin(2, 2, [0.5, 0.5, -1, 0]),
      v: lin(2, 2, [1, 0, 0, 0]),
      o: lin(2, 4, [1, 0, 1, 0, 1, 1, -1, 0]),
      gate: lin(2, 2, [1, 2, 0, 1]),
      up: lin(2, 2, [-1, 0, 3, 0]),
      down: lin(2, 2, [1, 0, 1, 1]),
    };
    const layout = { ffn: LLAMA.ffnChannel, kv: LLAMA.kvGroup, numHeads: 4, numKvHeads: 2, headDim: 1, intermediateSize: 2 };
    // vectorize |Σg|: q rows 2,0,2,3; k 1,1; v 1,0; o cols 2,1,0,0 → group 0 = 2+0+1+1+2+1, group 1 = 2+3+1+0+0+0.
    assert.deepEqual(Array.from(layerGroupScores(linears, layout, 'vectorize').attn), [7, 6]);
    // param_first Σ|g|: q 2,2,2,3; k 1,1; v 1,0; o cols 2,1,2,0.
    assert.deepEqual(Array.from(layerGroupScores(linears, layout, 'param_first').attn), [9, 8]);
    // param_mix Σ|g − ½·1·2·1|: q 0,2,2,5; k 1,3; v 1,2; o cols 0,1,2,2.
    assert.deepEqual(Array.from(layerGroupScores(linears, layout, 'param_mix').attn), [5, 16]);
    // FFN vectorize: gate rows 3,1; up rows 1,3; down cols 2,1.
    assert.deepEqual(Array.from(layerGroupScores(linears, layout, 'vectorize').mlp), [6, 5]);
  });

  it('options: defaults, layer scope with ratio allocation rejected with the reason, recovery defaults', () => {
    const o = parseMethodOptions(saap, {});
    assert.deepEqual(o, {
      vec: 'vectorize', elem: 'param_mix', groupReduction: 'sum', sigmaScope: 'module_type', sigmaFit: 'closed', fluctuation: 'cv',
      allocation: 'ratio', exclude: 'ranked', excludeFirst: 4, excludeLast: 2, rMax: 0.9,
    } satisfies Omit<SaapOptions, 'excludeCount'>);
    assert.throws(() => parseMethodOptions(saap, { sigmaScope: 'layer' }), (e: Error) => e instanceof ConfigError && /no cross-layer information/.test(e.message));
    assert.equal(parseMethodOptions(saap, { sigmaScope: 'layer', allocation: 'zscore-global' }).sigmaScope, 'layer');
    assert.throws(() => parseMethodOptions(saap, { bogus: 1 }), ConfigError);
    assert.throws(() => parseMethodOptions(saap, { rMax: 1 }), ConfigError);
    assert.deepEqual(saap.stats(o), { perLayer: {}, gradients: { fisher: true } });
    assert.deepEqual(saap.kind === 'structured' && saap.stats({ ...o, elem: 'param_first' }).gradients, { fisher: false });
  });
});

const logitsOf = (m: CausalLM, ids: number[][]) => { const t = m.forward(ids); const d = Array.from(t.dataSync()); t.dispose(); return d; };
const IDS = [[1, 47, 20, 50, 96, 29, 58, 94, 81, 25, 27, 89, 13]];
type Report = Awaited<ReturnType<typeof pruneModel>>;
interface SaapReport { realised: { removedParams: number }; target: { budgetParams: number }; perLayer: { attn: { groupParams: number } }[] }

/** GQA shapes valid and g unchanged; the removed parameters (recounted) within one group of the budget. */
function checkPruned(m: CausalLM, g: number, removed: number, budget: number, group: number, what: string): void {
  for (const s of m.config.layers) {
    assert.equal(s.numHeads % s.numKvHeads, 0, `${what}: ${s.numHeads} heads / ${s.numKvHeads} KV heads`);
    assert.equal(s.numHeads / s.numKvHeads, g, `${what}: query heads per KV head`);
  }
  assert.ok(Math.abs(removed - budget) <= group, `${what}: removed ${removed} vs budget ${budget} (one group = ${group})`);
}

async function pruneSaveReload(model: CausalLM, windows: number[][], sparsity: number, what: string): Promise<{ report: Report; again: CausalLM }> {
  const g = model.config.layers[0].numHeads / model.config.layers[0].numKvHeads;
  const before = countParameters(model).total;
  const tensors = tf.memory().numTensors;
  const report = await pruneModel(model, { method: saap, options: parseMethodOptions(saap, {}), target: { sparsity, pattern: { kind: 'unstructured' } }, windows });
  assert.equal(tf.memory().numTensors, tensors, `${what}: tensors leaked`);
  const mr = report.methodReport as unknown as SaapReport;
  const dir = tmpDir('saap');
  saveModel(model, dir);
  const { model: again } = loadModel(dir);
  assert.deepEqual(logitsOf(again, IDS), logitsOf(model, IDS), `${what}: reloaded logits`);
  const removed = before - countParameters(again).total;
  assert.equal(removed, mr.realised.removedParams, `${what}: reported vs recounted`);
  close(mr.target.budgetParams, sparsity * before, 1e-6, `${what}: budget`);
  checkPruned(again, g, removed, sparsity * before, mr.perLayer[0].attn.groupParams, what);
  return { report, again };
}

describe('saap: real checkpoints', { skip: HAVE_SHARED ? false : NO_SHARED_REASON }, () => {
  before(setupBackend);

  it('llama-tiny (6q/2kv): KV groups removed whole, valid checkpoint, identical logits after reload', async () => {
    const { model } = loadModel(shared('golden', 'llama-tiny'));
    const r = rng(3);
    const windows = Array.from({ length: 10 }, () => Array.from({ length: 64 }, () => Math.floor(r() * 97)));
    const { report, again } = await pruneSaveReload(model, windows, 0.3, 'llama-tiny');
    assert.ok(again.config.layers.some((s) => s.numKvHeads === 1), `a KV group should go: ${JSON.stringify(again.config.layers)}`);
    const excluded = (report.methodReport as { excludedLayers: Record<string, number[]> }).excludedLayers;
    assert.deepEqual([excluded.attn.length, excluded.mlp.length], [1, 1], 'round(6·3/32) = round(0.5625) = 1 layer per type');
    model.dispose();
    again.dispose();
  });

  it('stories260K (8q/4kv) in process: identical logits after reload, budget met', async () => {
    const tok = await loadTokenizer(STORIES_TOK);
    const calib = calibrationFromText(tok, { text: shared('text/tinystories-sample.txt'), nsamples: 10, seqlen: 64, seed: 42 });
    const { model } = loadModel(STORIES_BIN);
    const { again } = await pruneSaveReload(model, calib.windows, 0.2, 'stories260K 20%');
    model.dispose();
    again.dispose();
  });

  it('CLI end to end on stories260K at 20 % and 50 %: budget met on the reloaded checkpoint, finite perplexity', async () => {
    const tok = await loadTokenizer(STORIES_TOK);
    const text = shared('text/tinystories-sample.txt');
    const ppl = async (m: CausalLM) => (await perplexityOfText(m, tok, text, { seqlen: 256, maxWindows: 8 })).ppl;
    const { model: dense } = loadModel(STORIES_BIN);
    const total = countParameters(dense).total;
    const densePpl = await ppl(dense);
    dense.dispose();
    for (const p of [0.2, 0.5]) {
      const out = path.join(tmpDir('saap-cli'), 'pruned');
      const r = runCli(['prune', '--model', STORIES_BIN, '--method', 'saap', '--sparsity', String(p), '--calib', text,
        '--nsamples', '10', '--seqlen', '64', '--seed', '42', '--out', out]);
      assert.equal(r.status, 0, r.stderr);
      const rep = r.json as unknown as { method: string; methodReport: SaapReport; seconds: number };
      assert.equal(rep.method, 'saap');
      const { model } = loadModel(out);
      const removed = total - countParameters(model).total;
      assert.equal(removed, rep.methodReport.realised.removedParams);
      checkPruned(model, 2, removed, p * total, rep.methodReport.perLayer[0].attn.groupParams, `CLI ${p}`);
      const pruned = await ppl(model);
      model.dispose();
      assert.ok(Number.isFinite(pruned) && pruned > densePpl, `ppl ${pruned} (dense ${densePpl})`);
      console.log(`saap stories260K p=${p}: removed ${(removed / total * 100).toFixed(2)}% of ${total}, ppl ${pruned.toFixed(3)} (dense ${densePpl.toFixed(3)}), ${rep.seconds.toFixed(2)} s`);
    }
  });
});
