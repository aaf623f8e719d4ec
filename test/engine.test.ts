/**
 * The engine, observed through spy methods: the operator groups it visits and their order, the
 * inputs it hands a layer in sequential vs dense-parallel mode, per-run setup, and that a bad
 * structured plan is refused whole before any weight changes.
 */
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import { z } from 'zod';
import { setupBackend } from './support.ts';
import { buildSyntheticLlama } from '../src/model/synthetic.ts';
import type { CausalLM } from '../src/model/causal-lm.ts';
import type { LinearRole } from '../src/model/family.ts';
import { pruneModel } from '../src/prune/engine.ts';
import { defineMethod, type InputMode, type LayerPlan, type OperatorDecision, type PruningMethod } from '../src/prune/method.ts';
import { readLinear } from '../src/prune/linear-io.ts';
import { mulberry32 } from '../src/util/random.ts';
import { ConfigError, PruneLabError } from '../src/util/errors.ts';

const SHAPE = { hidden: 32, layers: 3, heads: 4, kvHeads: 2, ffn: 64, vocab: 64, seed: 5 };
const WINDOWS = (() => {
  const r = mulberry32(7);
  return Array.from({ length: 3 }, () => Array.from({ length: 12 }, () => Math.floor(r() * SHAPE.vocab)));
})();
const UNSTRUCTURED = { sparsity: 0, pattern: { kind: 'unstructured' } } as const;

interface Call { layer: number; roles: LinearRole[]; colSqSum: Record<string, number[]> }

/** A layer-wise spy: records each call; zeroes every operator of the layers in `zeroLayers`. */
function spy(order: 'together' | 'grouped', calls: Call[], zeroLayers: readonly number[] = [], setups: number[] = []): PruningMethod<Record<string, never>, Record<string, unknown>, { runs: number }> {
  return defineMethod({
    name: 'spy', description: 'records what the engine hands it', reference: 'test', granularity: ['unstructured'],
    options: z.object({}).strict() as z.ZodType<Record<string, never>>, kind: 'layerwise',
    stats: () => ({ colSqSum: ['attnIn', 'attnCtx', 'mlpIn', 'downIn'] }),
    operatorOrder: () => order,
    defaultMode: () => 'sequential',
    setup: () => { setups.push(1); return { runs: setups.length }; },
    pruneOperators: ({ layer, operators, stats, state }): OperatorDecision[] => {
      assert.equal(state.runs, setups.length, 'state comes from this run\'s setup');
      calls.push({
        layer, roles: operators.map((o) => o.role),
        colSqSum: Object.fromEntries(Object.entries(stats).map(([tap, st]) => [tap, Array.from(st!.colSqSum ?? [])])),
      });
      return operators.map((o) => ({ role: o.role, mask: new Uint8Array(o.rows * o.cols).fill(zeroLayers.includes(layer) ? 0 : 1) }));
    },
  });
}

async function run(model: CausalLM, method: PruningMethod<Record<string, never>, Record<string, unknown>, { runs: number }>, mode: InputMode): Promise<void> {
  await pruneModel(model, { method, options: {}, target: UNSTRUCTURED, windows: WINDOWS, mode });
}

function weightsOf(model: CausalLM): Float32Array[] {
  const out: Float32Array[] = [];
  for (let i = 0; i < model.numLayers; i++) for (const l of model.spec.linears) out.push(readLinear(model, i, l.role).data);
  return out;
}

function assertClose(a: number[], b: number[], what: string): void {
  assert.equal(a.length, b.length, what);
  const scale = Math.max(1, ...b.map(Math.abs));
  for (let k = 0; k < a.length; k++) assert.ok(Math.abs(a[k] - b[k]) <= 1e-5 * scale, `${what}[${k}]: ${a[k]} vs ${b[k]}`);
}

describe('engine', () => {
  before(setupBackend);

  it('grouped order: q,k,v → o → gate,up → down in every layer; together: all at once; setup once per run', async () => {
    const calls: Call[] = [];
    const setups: number[] = [];
    const model = buildSyntheticLlama(SHAPE);
    await run(model, spy('grouped', calls, [], setups), 'sequential');
    const expected = [['q', 'k', 'v'], ['o'], ['gate', 'up'], ['down']];
    assert.deepEqual(calls.map((c) => [c.layer, c.roles]), [0, 1, 2].flatMap((l) => expected.map((r) => [l, r])));
    // A group receives only its own input tap's statistics.
    assert.deepEqual(calls.slice(0, 4).map((c) => Object.keys(c.colSqSum)), [['attnIn'], ['attnCtx'], ['mlpIn'], ['downIn']]);
    const together: Call[] = [];
    await run(model, spy('together', together, [], setups), 'sequential');
    assert.deepEqual(together.map((c) => c.roles.length), [7, 7, 7]);
    assert.equal(setups.length, 2);
    model.dispose();
  });

  it('sequential inputs come from the pruned earlier layers, dense-parallel inputs from the dense model', async () => {
    // Layer 0 zeroed: in sequential mode layer 1 sees the embeddings (the block adds nothing to the residual).
    const seq: Call[] = [];
    const a = buildSyntheticLlama(SHAPE);
    await run(a, spy('together', seq, [0]), 'sequential');
    const par: Call[] = [];
    const b = buildSyntheticLlama(SHAPE);
    await run(b, spy('together', par, [0]), 'dense-parallel');
    const dense: Call[] = [];
    const c = buildSyntheticLlama(SHAPE);
    await run(c, spy('together', dense), 'sequential');
    // Dense-parallel = what the unpruned model gives; sequential differs from layer 1 on.
    for (const l of [1, 2]) assertClose(par[l].colSqSum.attnIn, dense[l].colSqSum.attnIn, `dense-parallel layer ${l}`);
    assert.ok(seq[1].colSqSum.attnIn.some((v, k) => Math.abs(v - dense[1].colSqSum.attnIn[k]) > 1e-3), 'sequential layer 1 saw dense inputs');
    // Equivalence: sequential = statistics of a model whose layer 0 was already zeroed.
    const zeroed: Call[] = [];
    const d = buildSyntheticLlama(SHAPE);
    await run(d, spy('together', [], [0]), 'sequential');
    await run(d, spy('together', zeroed), 'sequential');
    for (const l of [1, 2]) assertClose(seq[l].colSqSum.attnIn, zeroed[l].colSqSum.attnIn, `sequential layer ${l}`);
    for (const m of [a, b, c, d]) m.dispose();
  });

  it('a bad structured plan is refused whole: nothing changes', async () => {
    const bad: { what: string; plan: LayerPlan[]; error: RegExp }[] = [
      { what: 'unsorted indices in the last layer', plan: [{ keepChannels: [0, 1] }, { keepChannels: [0, 1] }, { keepChannels: [5, 3] }], error: /ascending/ },
      { what: 'an index out of range', plan: [{ keepChannels: [0, 1] }, { keepKvGroups: [0, 2] }, {}], error: /0\.\.1/ },
      { what: 'a bias delta of the wrong length', plan: [{ keepChannels: [0] }, {}, { biasDelta: { down: new Float32Array(3) } }], error: /32 entries/ },
      { what: 'every channel removed', plan: [{ keepChannels: [0] }, { keepChannels: [] }, {}], error: /every FFN channel/ },
      { what: 'too few layers', plan: [{ keepChannels: [0] }], error: /covers 1 of 3 layers/ },
    ];
    for (const { what, plan, error } of bad) {
      const model = buildSyntheticLlama(SHAPE);
      const before = weightsOf(model);
      const shapes = structuredClone(model.config.layers);
      const method = defineMethod({
        name: 'bad-plan', description: 'returns a broken plan', reference: 'test', granularity: ['ffn-channels', 'attention-heads'],
        options: z.object({}).strict(), kind: 'structured', stats: () => ({ perLayer: {} }), plan: () => ({ layers: plan }),
      });
      await assert.rejects(pruneModel(model, { method, options: {}, target: { sparsity: 0.2, pattern: { kind: 'unstructured' } }, windows: [] }),
        (e: Error) => e instanceof PruneLabError && error.test(e.message), what);
      assert.deepEqual(model.config.layers, shapes, `${what}: shapes changed`);
      weightsOf(model).forEach((w, k) => assert.deepEqual(w, before[k], `${what}: weights changed`));
      model.dispose();
    }
  });

  it('structured methods refuse sequential mode and workers; N:M is refused before any work', async () => {
    const model = buildSyntheticLlama(SHAPE);
    const method = defineMethod({
      name: 'never', description: 'must not be called', reference: 'test', granularity: ['ffn-channels'],
      options: z.object({}).strict(), kind: 'structured', stats: () => ({ perLayer: {} }),
      plan: () => { throw new Error('plan called'); },
    });
    const target = { sparsity: 0.2, pattern: { kind: 'unstructured' } } as const;
    await assert.rejects(pruneModel(model, { method, options: {}, target, windows: [], mode: 'sequential' }), ConfigError);
    await assert.rejects(pruneModel(model, { method, options: {}, target, windows: [], workers: 2 }), ConfigError);
    await assert.rejects(pruneModel(model, { method, options: {}, target: { sparsity: 0.5, pattern: { kind: 'nm', n: 2, m: 4 } }, windows: [] }),
      (e: Error) => e instanceof ConfigError && /does not take N:M/.test(e.message));
    model.dispose();
  });
});
