/**
 * LLM-Pruner (baselines.md §8, saap.md §2–3): Taylor / magnitude importances by hand on a 2×3
 * example, group folding and reduction, the prune_local counts and layer range, the plan on a
 * hand-built layer where the variants disagree, and GQA end to end on llama-tiny.
 */
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { HAVE_SHARED, NO_SHARED_REASON, maxAbsDiff, setupBackend, shared, tmpDir } from '../support.ts';
import { reduceGroups, sliceImportances, taylorGroupScores, type GroupMember, type SliceImportance } from '../../src/prune/taylor.ts';
import { unitsToRemove } from '../../methods/llm-pruner/groups.ts';
import llmPruner, { defaultLayerRange } from '../../methods/llm-pruner/index.ts';
import type { LinearGradient, PlanContext, StructuralPlan, StructuredMethod } from '../../src/prune/method.ts';
import type { CausalLM } from '../../src/model/causal-lm.ts';
import type { ModelView } from '../../src/model/view.ts';
import { LLAMA, type LinearRole } from '../../src/model/family.ts';
import { parseMethodOptions } from '../../src/prune/registry.ts';
import { pruneModel } from '../../src/prune/engine.ts';
import { loadModel, saveModel } from '../../src/io/load-model.ts';
import { readLinear, writeLinear } from '../../src/prune/linear-io.ts';
import { ConfigError } from '../../src/util/errors.ts';

const close = (a: ArrayLike<number>, b: ArrayLike<number>, tol = 1e-9) => {
  assert.equal(a.length, b.length);
  for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i] - b[i]) <= tol, `index ${i}: ${a[i]} vs ${b[i]}`);
};

// W, g = ∂L/∂W and the Fisher diagonal F of a 2×3 linear.
const W = Float32Array.from([1, -2, 3, 0.5, 1, -1]);
const G = Float32Array.from([0.1, 0.2, -0.3, -0.4, 0.5, 0.6]);
const F = Float32Array.from([0.5, 1, 2, 2, 1, 0.5]);
const member = (axis: 'out' | 'in'): GroupMember => ({ weight: W, grad: G, fisher: F, rows: 2, cols: 3, axis, per: 1 });

describe('Taylor importance (saap.md §3) on a 2×3 example', () => {
  // g·w = [[0.1, −0.4, −0.9], [−0.2, 0.5, −0.6]]; w·F·w = [[0.5, 4, 18], [0.5, 1, 0.5]];
  // g·w − ½wFw = [[−0.15, −2.4, −9.9], [−0.45, 0, −0.85]].
  const rows: Record<SliceImportance, number[]> = {
    vectorize: [1.2, 0.3], // |0.1 − 0.4 − 0.9|, |−0.2 + 0.5 − 0.6|
    param_first: [1.4, 1.3],
    param_second: [22.5, 2],
    param_mix: [12.45, 1.3],
    l1: [6, 2.5],
    l2: [14, 2.25],
  };
  const cols: Record<SliceImportance, number[]> = {
    vectorize: [0.1, 0.1, 1.5], // |0.1 − 0.2|, |−0.4 + 0.5|, |−0.9 − 0.6|
    param_first: [0.3, 0.9, 1.5],
    param_second: [1, 5, 18.5],
    param_mix: [0.6, 2.4, 10.75],
    l1: [1.5, 3, 4],
    l2: [1.25, 5, 10],
  };
  for (const kind of Object.keys(rows) as SliceImportance[]) {
    it(`${kind}: per row (output units) and per column (input features)`, () => {
      close(sliceImportances(member('out'), kind), rows[kind], 1e-6);
      close(sliceImportances(member('in'), kind), cols[kind], 1e-6);
    });
  }

  it('vectorize, param_first and param_mix rank the rows/columns differently', () => {
    // Columns: vectorize ties columns 0 and 1; param_first separates them (0.3 < 0.9).
    assert.notDeepEqual(Array.from(sliceImportances(member('in'), 'vectorize')), Array.from(sliceImportances(member('in'), 'param_first')));
  });

  it('missing gradients or Fisher are errors, not zeros', () => {
    assert.throws(() => sliceImportances({ ...member('out'), grad: undefined }, 'param_first'), /gradient/);
    assert.throws(() => sliceImportances({ ...member('out'), fisher: undefined }, 'param_mix'), /Fisher/);
    assert.doesNotThrow(() => sliceImportances({ ...member('out'), grad: undefined, fisher: undefined }, 'l2'));
  });
});

describe('group reduction with folding (GQA groups)', () => {
  it('members of unequal length fold onto the shortest, then reduce position by position', () => {
    // One group: q has 4 slices (2 query heads × head_dim 2), k has 2 (head_dim 2).
    // Fold q: d0 = 1 + 3 = 4, d1 = 2 + 4 = 6. k: [5, 0].
    const members = [{ scores: Float64Array.from([1, 2, 3, 4]), per: 4 }, { scores: Float64Array.from([5, 0]), per: 2 }];
    close(reduceGroups(members, 1, 'sum'), [15]);
    close(reduceGroups(members, 1, 'mean'), [(4 + 5) / 2 + (6 + 0) / 2]);
    close(reduceGroups(members, 1, 'max'), [5 + 6]);
  });

  it('groups own consecutive slices', () => {
    const members = [{ scores: Float64Array.from([1, 2]), per: 1 }, { scores: Float64Array.from([3, 4, 5, 6]), per: 2 }];
    close(reduceGroups(members, 2, 'sum'), [1 + 3 + 4, 2 + 5 + 6]);
    assert.throws(() => reduceGroups([{ scores: Float64Array.from([1, 2, 3]), per: 3 }, { scores: Float64Array.from([1, 2]), per: 2 }], 1, 'sum'), /fold/);
  });

  it('taylorGroupScores with sum = sum of every slice importance of the group', () => {
    // Rows of W as two groups of one slice, plus the same W's columns can't join (3 ≠ 2 groups).
    close(taylorGroupScores([member('out'), { ...member('out') }], 2, 'param_first'), [2.8, 2.6], 1e-6);
  });
});

describe('prune_local counts and layer range', () => {
  it('units removed follow n = C − int(C·(1 − r)) channels, whole units only', () => {
    assert.equal(unitsToRemove(32, 128, 0.25), 8); // LLaMA-7B: 24 of 32 heads kept
    assert.equal(11008 - unitsToRemove(11008, 1, 0.25), 8256); // and 8256 of 11008 channels
    assert.equal(unitsToRemove(4, 16, 0.2), 0); // stories260K heads at 20 %: 13 channels < one group
    assert.equal(unitsToRemove(4, 16, 0.5), 2);
    assert.equal(unitsToRemove(172, 1, 0.2), 35); // 172 − int(137.6)
    assert.equal(unitsToRemove(4, 16, 0.99), 4);
  });

  it('default layer range scales 4…30 of 32 layers', () => {
    assert.deepEqual(defaultLayerRange(32), [4, 30]);
    assert.deepEqual(defaultLayerRange(5), [1, 5]);
    assert.deepEqual(defaultLayerRange(3), [0, 3]);
    assert.deepEqual(defaultLayerRange(40), [5, 37]);
  });
});

/**
 * Two hand-built LLaMA layers, D = 2, head_dim 1, 2 heads / 2 KV heads, 2 FFN channels; all
 * weights 1. Gradients are zero except q (heads) and gate (channels):
 * row 0: g = [1, −1], F = [0, 0]; row 1: g = [0.5, 0.5], F = [4, 4].
 * Head/channel 0: vectorize 0, param_first 2, param_mix 2.
 * Head/channel 1: vectorize 1, param_first 1, param_mix |0.5 − 2|·2 = 3.
 * At ratio 0.5 one unit of each goes: vectorize drops unit 0, param_first unit 1, param_mix unit 0.
 */
function handCtx(raw: Record<string, unknown>, sparsity: number): { m: StructuredMethod<unknown>; ctx: PlanContext<unknown> } {
  const layers = [0, 1].map(() => ({ numHeads: 2, numKvHeads: 2, intermediateSize: 2 }));
  const model = { config: { layers, numLayers: 2, hiddenSize: 2, headDim: 1 }, spec: LLAMA, numLayers: 2 } as unknown as ModelView;
  const ones = () => new Float32Array(4).fill(1);
  const special: LinearGradient = { grad: Float32Array.from([1, -1, 0.5, 0.5]), fisher: Float32Array.from([0, 0, 4, 4]) };
  const gradients = layers.map(() => {
    const g: Partial<Record<LinearRole, LinearGradient>> = {};
    for (const r of LLAMA.linears) g[r.role] = r.role === 'q' || r.role === 'gate' ? special : { grad: new Float32Array(4), fisher: new Float32Array(4) };
    return g;
  });
  const options = parseMethodOptions(llmPruner, raw);
  const m = llmPruner as StructuredMethod<unknown>;
  const weight = () => ({ data: ones(), rows: 2, cols: 2 });
  // As the engine does: each layer's gradients reduced by layerScores, then one plan from the scores.
  const layerScores = m.stats(options).gradients ? gradients.map((g, layer) => m.layerScores!({
    model, options, log: () => {}, layer,
    linears: Object.fromEntries(Object.entries(g).map(([role, lg]) => [role, { ...lg, weight: ones(), rows: 2, cols: 2 }])),
  })) : undefined;
  return {
    m,
    ctx: { model, options, target: { sparsity, pattern: { kind: 'unstructured' } }, log: () => {}, stats: [{}, {}], layerScores, weight },
  };
}

describe('LLM-Pruner plan', () => {
  for (const [taylor, dropped] of [['vectorize', 0], ['param_first', 1], ['param_mix', 0]] as const) {
    it(`${taylor}: removes unit ${dropped} of heads and channels in every pruned layer`, async () => {
      const { m, ctx } = handCtx({ taylor }, 0.5);
      const plan = (await m.plan(ctx)) as StructuralPlan;
      for (const l of plan.layers) {
        assert.deepEqual(l.keepKvGroups, [1 - dropped]);
        assert.deepEqual(l.keepChannels, [1 - dropped]);
      }
    });
  }

  it('only the Fisher-based variants ask for the Fisher diagonal; l2/random need no gradients', () => {
    const req = (o: Record<string, unknown>) => (llmPruner as StructuredMethod<unknown>).stats(parseMethodOptions(llmPruner, o));
    assert.deepEqual(req({}).gradients, { fisher: false });
    assert.deepEqual(req({ taylor: 'param_mix' }).gradients, { fisher: true });
    assert.deepEqual(req({ taylor: 'param_second' }).gradients, { fisher: true });
    assert.equal(req({ importance: 'l2' }).gradients, undefined);
    assert.equal(req({ importance: 'random' }).gradients, undefined);
  });

  it('layers outside the range are untouched; impossible ranges and ratios are refused', async () => {
    const { m, ctx } = handCtx({ mlpLayerStart: 1, attnLayerEnd: 1 }, 0.5);
    const plan = (await m.plan(ctx)) as StructuralPlan;
    assert.deepEqual(plan.layers.map((l) => [l.keepKvGroups, l.keepChannels]), [[[0], undefined], [undefined, [0]]]);
    const bad = handCtx({ attnLayerStart: 2, attnLayerEnd: 1 }, 0.5);
    assert.throws(() => bad.m.plan(bad.ctx), ConfigError);
    const all = handCtx({}, 0.99);
    assert.throws(() => all.m.plan(all.ctx), /would remove all 2 head groups of layer 0/);
  });
});

const IDS = [[1, 47, 20, 50, 96, 29, 58, 94, 81, 25, 27, 89, 13, 5, 60, 33]];
const logits = (m: CausalLM) => { const t = m.forward(IDS); const d = t.dataSync().slice(); t.dispose(); return d; };
const windows = Array.from({ length: 4 }, (_, s) => Array.from({ length: 24 }, (_, t) => 3 + ((s * 29 + t * 11) % 90)));
const target = (sparsity: number) => ({ sparsity, pattern: { kind: 'unstructured' as const } });

describe('LLM-Pruner on llama-tiny (GQA 6/2)', { skip: HAVE_SHARED ? false : NO_SHARED_REASON }, () => {
  before(setupBackend);

  it('l2 importance removes the group and channels that were made small, in layer 1 only', async () => {
    const { model } = loadModel(shared('golden', 'llama-tiny'));
    const hd = model.config.headDim;
    const scale = (role: LinearRole, pick: (r: number, c: number) => boolean) => {
      const w = readLinear(model, 1, role);
      for (let r = 0; r < w.rows; r++) for (let c = 0; c < w.cols; c++) if (pick(r, c)) w.data[r * w.cols + c] *= 0.01;
      writeLinear(model, 1, role, w.data, w.rows, w.cols);
    };
    // KV group 1 = query heads 3..5 (q rows / o columns 3·hd … 6·hd) and k/v rows hd … 2·hd.
    scale('q', (r) => r >= 3 * hd);
    scale('k', (r) => r >= hd);
    scale('v', (r) => r >= hd);
    scale('o', (_, c) => c >= 3 * hd);
    for (const role of ['gate', 'up'] as const) scale(role, (r) => r < 40);
    scale('down', (_, c) => c < 40);
    const gate = readLinear(model, 1, 'gate');
    const layer0 = readLinear(model, 0, 'gate').data;
    const options = parseMethodOptions(llmPruner, { importance: 'l2', attnLayerStart: 1, attnLayerEnd: 2, mlpLayerStart: 1, mlpLayerEnd: 2 });
    const report = await pruneModel(model, { method: llmPruner, options, target: target(0.5), windows: [] });
    assert.deepEqual(model.config.layers.map((l) => [l.numHeads, l.numKvHeads, l.intermediateSize]), [[6, 2, 80], [3, 1, 40], [6, 2, 80]]);
    assert.deepEqual(Array.from(readLinear(model, 1, 'gate').data), Array.from(gate.data.subarray(40 * gate.cols)));
    assert.deepEqual(Array.from(readLinear(model, 0, 'gate').data), Array.from(layer0));
    assert.equal((report.methodReport as { groupReduction: string }).groupReduction, 'mean');
    model.dispose();
  });

  for (const taylor of ['param_first', 'param_mix'] as const) {
    it(`${taylor}: pruned checkpoint reloads, heads stay a multiple of the KV heads`, async () => {
      const tensors0 = tf.memory().numTensors;
      const { model } = loadModel(shared('golden', 'llama-tiny'));
      const options = parseMethodOptions(llmPruner, { taylor });
      const report = await pruneModel(model, { method: llmPruner, options, target: target(0.5), windows });
      // Default range for 3 layers is [0, 3): every layer loses one of 2 groups (⌊24/24⌋) and
      // 80 − int(40) = 40 channels.
      assert.deepEqual(model.config.layers.map((l) => [l.numHeads, l.numKvHeads, l.intermediateSize]), Array(3).fill([3, 1, 40]));
      assert.ok(report.removed.allParameters > 0);
      const dir = tmpDir('llm-pruner');
      saveModel(model, dir);
      const { model: again } = loadModel(dir);
      for (const l of again.config.layers) assert.equal(l.numHeads % l.numKvHeads, 0);
      assert.equal(maxAbsDiff(logits(again), logits(model)), 0);
      model.dispose(); again.dispose();
      assert.equal(tf.memory().numTensors, tensors0, 'no tensor leaks');
    });
  }

  it('a ratio that would remove every head group is refused and leaves the model untouched', async () => {
    const { model } = loadModel(shared('golden', 'llama-tiny'));
    const before = logits(model);
    await assert.rejects(pruneModel(model, { method: llmPruner, options: parseMethodOptions(llmPruner, { importance: 'l2' }), target: target(0.99), windows: [] }), ConfigError);
    assert.deepEqual(model.config.layers.map((l) => l.numKvHeads), [2, 2, 2]);
    assert.deepEqual(logits(model), before);
    model.dispose();
  });
});
