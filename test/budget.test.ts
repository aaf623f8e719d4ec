/**
 * A common parameter budget for the structured methods (src/prune/budget.ts), on a synthetic model
 * whose counts are worked out by hand: hidden 32, 4 layers, 4 query / 2 key-value heads (head dim 8),
 * FFN 64, no biases. Per layer: q 1024 + k 512 + v 512 + o 1024 + gate/up/down 3·32·64 = 6144 +
 * norms 64 = 9280, so the decoder layers hold 37,120 parameters. One FFN channel is 3·32 = 96
 * parameters; one key-value head group (one k/v head, its two query heads, their o columns) is
 * 2·8·32 + 8·32 + 8·32 + 2·8·32 = 1536.
 */
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import { setupBackend } from './support.ts';
import { buildSyntheticLlama } from '../src/model/synthetic.ts';
import { modelView } from '../src/model/view.ts';
import { resolveMethod, parseMethodOptions } from '../src/prune/registry.ts';
import { pruneModel } from '../src/prune/engine.ts';
import { plannedFraction, type BudgetScope } from '../src/prune/budget.ts';
import { countParameters } from '../src/model/count.ts';
import { mulberry32 } from '../src/util/random.ts';
import { ConfigError } from '../src/util/errors.ts';
import { loadExperiment } from '../src/experiment/schema.ts';
import { gridOf, workspace, writeYaml, YAML_HEAD } from './experiment-fixtures.ts';

const SHAPE = { hidden: 32, layers: 4, heads: 4, kvHeads: 2, ffn: 64, vocab: 64, seed: 3 };
const DECODER = 37120;
const CHANNEL = 96;
const GROUP = 1536;

function windows(n: number, T: number): number[][] {
  const r = mulberry32(11);
  return Array.from({ length: n }, () => Array.from({ length: T }, () => Math.floor(r() * SHAPE.vocab)));
}

const range = (n: number, skip: number) => Array.from({ length: n }, (_, i) => i).filter((i) => i >= skip);

describe('parameter budgets for structured methods', () => {
  before(setupBackend);

  it('the synthetic model holds the hand-counted parameters', () => {
    const model = buildSyntheticLlama(SHAPE);
    try {
      assert.equal(countParameters(model).decoderLayers, DECODER);
    } finally {
      model.dispose();
    }
  });

  it('a plan is counted by hand: 10 channels and one head group removed, a new down bias added', () => {
    const model = buildSyntheticLlama(SHAPE);
    try {
      const view = modelView(model);
      const plan = {
        layers: [
          { keepChannels: range(64, 10) },
          { keepKvGroups: [1] },
          { biasDelta: { down: new Float32Array(32) } },
          {},
        ],
      };
      assert.equal(plannedFraction(view, plan, 'decoder-layers'), (10 * CHANNEL + GROUP - 32) / DECODER);
      const total = view.parameters.total;
      assert.equal(plannedFraction(view, plan, 'all-parameters'), 1 - (total - (10 * CHANNEL + GROUP - 32)) / total);
    } finally {
      model.dispose();
    }
  });

  /**
   * The largest change of removed parameters between two neighbouring settings of each method's
   * knob, so the closest reachable fraction lies within half of it of the budget:
   * - magnitude-sp: the same ratio in every layer, 64 channels each: 4 channels move together;
   * - llm-pruner: the same ratio in layers [1, 4) (its default range for 4 layers), and at a 0.2
   *   budget no head group is removed yet (⌊…⌋ of 2 groups needs a ratio ≥ 0.5): 3 channels;
   * - wanda-sp, cfsp: channels decided one by one (one global threshold; per-layer rounding);
   * - flap, saap: head groups and channels together, so one head group.
   */
  const STEP: Record<string, number> = {
    'magnitude-sp': 4 * CHANNEL, 'llm-pruner': 3 * CHANNEL, 'wanda-sp': CHANNEL, cfsp: CHANNEL, flap: GROUP, saap: GROUP,
  };
  const cases: [string, BudgetScope, number][] = [
    ...Object.keys(STEP).map((m) => [m, 'decoder-layers', 0.2] as [string, BudgetScope, number]),
    ['saap', 'all-parameters', 0.1],
    ['cfsp', 'all-parameters', 0.1],
  ];
  for (const [name, scope, fraction] of cases) {
    it(`${name}: a budget of ${fraction} of ${scope} is met within half a step of its knob`, async () => {
      const method = await resolveMethod(name);
      const model = buildSyntheticLlama(SHAPE);
      try {
        const before = countParameters(model);
        const report = await pruneModel(model, {
          method, options: parseMethodOptions(method, {}), target: { sparsity: fraction, pattern: { kind: 'unstructured' } },
          budget: { scope, fraction }, windows: windows(4, 16),
        });
        const denominator = scope === 'decoder-layers' ? before.decoderLayers : before.total;
        const measured = scope === 'decoder-layers' ? report.measured.decoderLayers : report.measured.allParameters;
        const off = Math.abs(measured - fraction) * denominator;
        assert.ok(off <= STEP[name] / 2 + 1e-6, `${name}: removed ${measured} of ${scope}, ${off.toFixed(1)} parameters from the budget (half step ${STEP[name] / 2})`);
        // The report records the budget, the knob it came to, and measures the run against the budget's scope.
        assert.equal(report.budget?.scope, scope);
        assert.equal(report.budget?.fraction, fraction);
        assert.equal(report.target.sparsity, report.budget?.knob);
        assert.ok(Math.abs((report.budget?.planned ?? -1) - measured) < 1e-12, 'the planned fraction is what the pruned model measures');
        assert.deepEqual(report.measured.scope, { name: scope, fraction: measured });
      } finally {
        model.dispose();
      }
    });
  }

  it('saap: a budget of all parameters is its own knob (same plan as --sparsity at the knob found, within a step)', async () => {
    const method = await resolveMethod('saap');
    const run = async (budget: boolean) => {
      const model = buildSyntheticLlama(SHAPE);
      try {
        return await pruneModel(model, {
          method, options: parseMethodOptions(method, {}), target: { sparsity: 0.1, pattern: { kind: 'unstructured' } },
          budget: budget ? { scope: 'all-parameters', fraction: 0.1 } : undefined, windows: windows(4, 16),
        });
      } finally {
        model.dispose();
      }
    };
    const [own, budgeted] = [await run(false), await run(true)];
    assert.ok(Math.abs(own.measured.allParameters - budgeted.measured.allParameters) * own.parameters.before.total <= GROUP);
  });

  it('a budget a method cannot reach names the method and its range, and changes nothing', async () => {
    const method = await resolveMethod('magnitude-sp');
    const model = buildSyntheticLlama(SHAPE);
    try {
      // At most 63 of 64 channels per layer go: 4 · 63 · 96 = 24,192 of 37,120 = 65.17%.
      await assert.rejects(pruneModel(model, {
        method, options: parseMethodOptions(method, {}), target: { sparsity: 0.9, pattern: { kind: 'unstructured' } },
        budget: { scope: 'decoder-layers', fraction: 0.9 }, windows: [],
      }), (e: unknown) => e instanceof ConfigError && /'magnitude-sp'/.test(e.message) && /0\.00%–65\.17%/.test(e.message));
      assert.deepEqual(model.config.layers.map((l) => l.intermediateSize), [64, 64, 64, 64]);
    } finally {
      model.dispose();
    }
  });

  it('a layer-wise method or a budget outside (0, 1) is refused before any work', async () => {
    const wanda = await resolveMethod('wanda');
    const magSp = await resolveMethod('magnitude-sp');
    const model = buildSyntheticLlama(SHAPE);
    try {
      const target = { sparsity: 0.5, pattern: { kind: 'unstructured' } } as const;
      await assert.rejects(pruneModel(model, { method: wanda, options: {}, target, budget: { scope: 'decoder-layers', fraction: 0.5 }, windows: [] }),
        (e: unknown) => e instanceof ConfigError && /structured methods/.test(e.message));
      await assert.rejects(pruneModel(model, { method: magSp, options: parseMethodOptions(magSp, {}), target, budget: { scope: 'decoder-layers', fraction: 0 }, windows: [] }),
        (e: unknown) => e instanceof ConfigError && /0 < budget < 1/.test(e.message));
    } finally {
      model.dispose();
    }
  });
});

describe('parameter budgets in experiments', () => {
  const YAML = `${YAML_HEAD}  - name: magnitude-sp
  - name: wanda-sp
    budget: decoder-layers
sparsities: [0.2]
`;

  it('a method entry\'s budget is part of its runs (id and spec); entries without one keep their ids', () => {
    const root = workspace('budget');
    const plain = gridOf(loadExperiment(writeYaml(root, 'a.yaml', YAML.replace('    budget: decoder-layers\n', ''))));
    const runs = gridOf(loadExperiment(writeYaml(root, 'b.yaml', YAML)));
    const byMethod = (rs: typeof runs, m: string) => rs.find((r) => r.method?.name === m)!;
    assert.equal(byMethod(runs, 'magnitude-sp').id, byMethod(plain, 'magnitude-sp').id);
    assert.notEqual(byMethod(runs, 'wanda-sp').id, byMethod(plain, 'wanda-sp').id);
    assert.equal(byMethod(runs, 'wanda-sp').method?.budget, 'decoder-layers');
    assert.match(byMethod(runs, 'wanda-sp').id, /\.b0\.2\./);
  });

  it('bad budgets: an unknown scope, a zero budget (located), a layer-wise method', () => {
    const root = workspace('budget-bad');
    const load = (text: string) => () => gridOf(loadExperiment(writeYaml(root, 'x.yaml', text)));
    assert.throws(load(YAML.replace('budget: decoder-layers', 'budget: ffn')), (e: unknown) => e instanceof ConfigError && /11:13: methods\[1\]\.budget/.test(e.message));
    assert.throws(load(YAML.replace('sparsities: [0.2]', 'sparsities: [0]')),
      (e: unknown) => e instanceof ConfigError && /sparsities\[0\]: methods\[1\] \(wanda-sp\) takes its sparsities as budgets, which must be > 0/.test(e.message));
    assert.throws(load(YAML.replace('name: wanda-sp', 'name: wanda')), (e: unknown) => e instanceof ConfigError && /budget applies to structured methods/.test(e.message));
  });
});
