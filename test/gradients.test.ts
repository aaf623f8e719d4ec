/**
 * LM-loss gradients w.r.t. decoder linears (the input of Taylor importances) agree with central
 * finite differences, in HF orientation; the Fisher diagonal is the mean of per-sample squares
 * (each sample's gradient taken alone, over the whole model).
 */
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { HAVE_SHARED, NO_SHARED_REASON, setupBackend, shared } from './support.ts';
import { loadModel } from '../src/io/load-model.ts';
import { layerGradients, type LayerGradients } from '../src/prune/gradients.ts';
import { defineMethod, type GradientRequest } from '../src/prune/method.ts';
import { pruneModel } from '../src/prune/engine.ts';
import { buildSyntheticLlama } from '../src/model/synthetic.ts';
import { z } from 'zod';
import { readLinear, writeLinear } from '../src/prune/linear-io.ts';
import { causalLmNllSum } from '../src/model/loss.ts';
import type { CausalLM } from '../src/model/causal-lm.ts';

const WINDOWS = [[47, 20, 50, 96, 29, 58, 94, 81], [5, 91, 36, 63, 28, 21, 73, 50], [90, 66, 82, 76, 33, 29, 5, 77]];

/** Every layer's gradients at once (the engine keeps one layer's at a time; the test wants them all). */
function linearGradients(model: CausalLM, windows: number[][], req: GradientRequest, batchSize = 8): LayerGradients[] {
  const out: LayerGradients[] = [];
  layerGradients(model, windows, req, (layer, g) => { out[layer] = g; }, batchSize);
  return out;
}

function meanLoss(model: CausalLM, rows: number[][]): number {
  const logits = model.forward(rows);
  const { sum, count } = causalLmNllSum(logits, rows);
  const v = sum.dataSync()[0] / count;
  tf.dispose([logits, sum]);
  return v;
}

describe('gradients', { skip: HAVE_SHARED ? false : NO_SHARED_REASON }, () => {
  before(setupBackend);
  it('match central finite differences and the per-sample Fisher definition', () => {
    const { model } = loadModel(shared('golden', 'llama-tiny'));
    const before = tf.memory().numTensors;
    const g = linearGradients(model, WINDOWS, { fisher: true }, 2);
    assert.equal(tf.memory().numTensors, before, 'gradients leaked tensors');
    for (const [layer, role] of [[0, 'q'], [1, 'down'], [2, 'v']] as const) {
      const w = readLinear(model, layer, role);
      const grad = g[layer][role]!.grad;
      // The entry with the largest gradient: its finite difference is well above fp32 noise.
      let idx = 0;
      for (let i = 1; i < grad.length; i++) if (Math.abs(grad[i]) > Math.abs(grad[idx])) idx = i;
      const eps = 1e-2;
      const orig = w.data[idx];
      w.data[idx] = orig + eps;
      writeLinear(model, layer, role, w.data, w.rows, w.cols);
      const up = meanLoss(model, WINDOWS);
      w.data[idx] = orig - eps;
      writeLinear(model, layer, role, w.data, w.rows, w.cols);
      const down = meanLoss(model, WINDOWS);
      w.data[idx] = orig;
      writeLinear(model, layer, role, w.data, w.rows, w.cols);
      const fd = (up - down) / (2 * eps);
      assert.ok(Math.abs(fd - grad[idx]) <= 0.03 * Math.abs(grad[idx]) + 1e-5, `layer ${layer} ${role}: fd ${fd} vs grad ${grad[idx]}`);
      // Fisher: mean over samples of the squared per-sample gradient.
      const per = WINDOWS.map((row) => linearGradients(model, [row], { fisher: false })[layer][role]!.grad[idx]);
      const fisher = per.reduce((a, x) => a + x * x, 0) / WINDOWS.length;
      assert.ok(Math.abs(fisher - g[layer][role]!.fisher![idx]) <= 1e-4 * fisher + 1e-9);
    }
    model.dispose();
  });
});

describe('gradient methods (contract)', () => {
  before(setupBackend);
  it('a structured method asking for gradients without layerScores is refused before any pass, saying what to add', async () => {
    const model = buildSyntheticLlama({ hidden: 16, layers: 2, heads: 2, kvHeads: 1, ffn: 32, vocab: 32, seed: 1 });
    const method = defineMethod({
      name: 'no-scores', description: 'asks for gradients, reduces none', reference: 'test', granularity: ['ffn-channels'],
      options: z.object({}).strict(), kind: 'structured',
      stats: () => ({ perLayer: {}, gradients: { fisher: false } }),
      plan: () => ({ layers: [{}, {}] }),
    });
    const before = tf.memory().numTensors;
    await assert.rejects(pruneModel(model, { method, options: {}, target: { sparsity: 0.2, pattern: { kind: 'unstructured' } }, windows: [[1, 2, 3, 4]] }),
      /asks for gradients in stats\(\) but defines no layerScores/);
    assert.equal(tf.memory().numTensors, before);
    model.dispose();
  });
});
