/**
 * Pruning a layer range (`--layers A-B`): in dense-parallel mode every layer's input comes from
 * the dense model, so the layers in the range come out exactly as in a run over all layers, and
 * the layers outside it are untouched. Bad ranges are refused before any work.
 */
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import { setupBackend } from './support.ts';
import { buildSyntheticLlama } from '../src/model/synthetic.ts';
import type { CausalLM } from '../src/model/causal-lm.ts';
import { pruneModel } from '../src/prune/engine.ts';
import { parseMethodOptions, resolveMethod } from '../src/prune/registry.ts';
import { readLinear } from '../src/prune/linear-io.ts';
import { mulberry32 } from '../src/util/random.ts';
import { ConfigError } from '../src/util/errors.ts';

const SHAPE = { hidden: 32, layers: 4, heads: 4, kvHeads: 2, ffn: 64, vocab: 64, seed: 3 };
const WINDOWS = (() => {
  const r = mulberry32(11);
  return Array.from({ length: 4 }, () => Array.from({ length: 16 }, () => Math.floor(r() * SHAPE.vocab)));
})();
const TARGET = { sparsity: 0.5, pattern: { kind: 'unstructured' } } as const;

function weights(model: CausalLM, layer: number): Float32Array[] {
  return model.spec.linears.map((l) => readLinear(model, layer, l.role).data);
}

async function wanda(model: CausalLM, layers?: { first: number; last: number }, workers = 1) {
  const method = await resolveMethod('wanda');
  return pruneModel(model, { method, options: parseMethodOptions(method, {}), target: TARGET, windows: WINDOWS, mode: 'dense-parallel', layers, workers });
}

describe('prune a layer range', () => {
  before(async () => {
    await setupBackend();
  });

  it('layers 1-2 equal a full dense-parallel run\'s; layers 0 and 3 stay dense', async () => {
    const full = buildSyntheticLlama(SHAPE);
    const part = buildSyntheticLlama(SHAPE);
    const dense = buildSyntheticLlama(SHAPE);
    await wanda(full);
    const report = await wanda(part, { first: 1, last: 2 });
    for (let i = 0; i < SHAPE.layers; i++) {
      const want = i === 1 || i === 2 ? weights(full, i) : weights(dense, i);
      weights(part, i).forEach((w, k) => assert.deepEqual(w, want[k], `layer ${i} operator ${k}`));
    }
    assert.deepEqual(report.layers.map((l) => (l.detail as { pruned?: boolean }).pruned), [false, undefined, undefined, false]);
    [full, part, dense].forEach((m) => m.dispose());
  });

  it('a range outside the model, or with workers, or for a structured method, is refused', async () => {
    const model = buildSyntheticLlama(SHAPE);
    await assert.rejects(wanda(model, { first: 2, last: 4 }), (e: Error) => e instanceof ConfigError && /0-3/.test(e.message));
    await assert.rejects(wanda(model, { first: 0, last: 1 }, 2), ConfigError);
    const flap = await resolveMethod('flap');
    await assert.rejects(pruneModel(model, {
      method: flap, options: parseMethodOptions(flap, {}), target: { sparsity: 0.2, pattern: { kind: 'unstructured' } }, windows: WINDOWS, layers: { first: 0, last: 0 },
    }), (e: Error) => e instanceof ConfigError && /a layer range does not apply/.test(e.message));
    model.dispose();
  });
});
