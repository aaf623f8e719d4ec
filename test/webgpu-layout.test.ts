/**
 * The per-backend layout switch (src/backend/layout.ts): batched attention, the GPU's choice,
 * computes what the WebAssembly backend's per-group loop computes. Runs on wasm (any machine),
 * forcing each layout in turn on the real stories260K model: prefill logits (masked, grouped
 * query heads) and KV-cache decoding (one query, no mask).
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { HAVE_SHARED, NO_SHARED_REASON, STORIES_BIN, assertLogitsClose, logitsOf, setupBackend } from './support.ts';
import { loadModel } from '../src/io/load-model.ts';
import { generate } from '../src/model/generate.ts';
import * as tf from '@tensorflow/tfjs';
import { modelLayout, setModelLayout } from '../src/backend/layout.ts';
import { wasmMatmulKernel } from '../src/backend/openblas.ts';
import type { CausalLM } from '../src/model/causal-lm.ts';

describe('model layout: batched attention equals the per-group loop', { skip: HAVE_SHARED ? false : NO_SHARED_REASON }, () => {
  let model: CausalLM;
  before(async () => {
    await setupBackend();
    model = loadModel(STORIES_BIN).model;
  });
  after(() => {
    setModelLayout(null);
    model.dispose();
  });

  it('is per-group by default off WebGPU, except with the wasm products on OpenBLAS', () => {
    setModelLayout(null);
    assert.equal(modelLayout().batchedAttention, tf.getBackend() === 'wasm' && wasmMatmulKernel() === 'openblas');
  });

  it('prefill logits (two sequences, 8 query heads over 4 key/value heads) and greedy KV-cache decoding agree', async () => {
    const ids = [[1, 403, 407, 261, 378, 507, 5, 60, 70, 80, 90, 100], [1, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120]];
    setModelLayout({ batchedAttention: false, keysByTransposeB: false });
    const loop = logitsOf(model, ids);
    const loopTokens = (await generate(model, [1], { maxNewTokens: 12, greedy: true })).newIds;
    setModelLayout({ batchedAttention: true, keysByTransposeB: false });
    const batched = logitsOf(model, ids);
    const batchedTokens = (await generate(model, [1], { maxNewTokens: 12, greedy: true })).newIds;
    assertLogitsClose(batched, loop);
    assert.deepEqual(batchedTokens, loopTokens);
  });
});
