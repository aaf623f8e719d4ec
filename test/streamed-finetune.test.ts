/**
 * LoRA recovery on a streamed model (base weights on the host, one layer on the backend, adapters
 * on the backend; gradients through the layer-wise backward) against the same run resident: the
 * same loss curve, gradient norms and held-out NLL (≤ 1e-5 relative), the same merged weights
 * with pruned zeros kept, nothing left on the backend. Plain LoRA with dropout and gradient
 * accumulation on a 50 %-pruned model, and SAAP's fake-quantised base with QA-LoRA.
 */
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import * as tf from '@tensorflow/tfjs';
import { HAVE_SHARED, NO_SHARED_REASON, STORIES_BIN, setupBackend, shared } from './support.ts';
import { loadModel, streamedFromNamedTensors } from '../src/io/load-model.ts';
import { cloneConfig } from '../src/model/config.ts';
import { CausalLM } from '../src/model/causal-lm.ts';
import { findTokenizerForModel } from '../src/tokenizer/load.ts';
import { finetune, type FinetuneConfig, type FinetuneResult } from '../src/finetune/trainer.ts';
import type { NamedTensors } from '../src/model/tensor-data.ts';

/** Zero the smaller half (by magnitude) of every decoder linear, on the host copy. */
function prune50(tensors: NamedTensors): NamedTensors {
  const out: NamedTensors = new Map();
  for (const [name, t] of tensors) {
    const data = Float32Array.from(t.data);
    if (/layers\.\d+\.(self_attn|mlp)\..*weight$/.test(name)) {
      const thr = Float32Array.from(data, Math.abs).sort()[Math.floor(data.length / 2)]!;
      for (let i = 0; i < data.length; i++) if (Math.abs(data[i]!) <= thr) data[i] = 0;
    }
    out.set(name, { shape: t.shape, data });
  }
  return out;
}

function rel(a: number, b: number): number {
  return Math.abs(a - b) / Math.max(Math.abs(b), 1e-30);
}

function assertSameRun(s: FinetuneResult, r: FinetuneResult): void {
  assert.equal(s.log.length, r.log.length);
  s.log.forEach((e, i) => {
    const f = r.log[i]!;
    assert.equal(e.tokens, f.tokens);
    assert.ok(rel(e.loss, f.loss) <= 1e-5, `step ${i + 1} loss ${e.loss} vs ${f.loss}`);
    assert.ok(rel(e.gradNorm, f.gradNorm) <= 1e-5, `step ${i + 1} gradient norm ${e.gradNorm} vs ${f.gradNorm}`);
  });
  for (const k of ['before', 'start', 'after'] as const) {
    assert.ok(rel(s.heldOut[k]!, r.heldOut[k]!) <= 1e-5, `held-out ${k}: ${s.heldOut[k]} vs ${r.heldOut[k]}`);
  }
}

/** Same tensor names and zeros; values within 1e-5 of each tensor's largest. */
function assertSameWeights(a: NamedTensors, b: NamedTensors): void {
  assert.deepEqual([...a.keys()].sort(), [...b.keys()].sort());
  for (const [name, t] of a) {
    const x = t.data;
    const y = b.get(name)!.data;
    let scale = 0;
    for (const v of x) scale = Math.max(scale, Math.abs(v));
    for (let i = 0; i < x.length; i++) {
      assert.equal(y[i] === 0, x[i] === 0, `${name}[${i}]: zeros differ`);
      assert.ok(Math.abs(y[i]! - x[i]!) <= 1e-5 * scale, `${name}[${i}]: ${y[i]} vs ${x[i]}`);
    }
  }
}

describe('LoRA recovery on a streamed model (stories260K)', { skip: HAVE_SHARED ? false : NO_SHARED_REASON }, () => {
  before(setupBackend);
  const text = fs.readFileSync(shared('text/tinystories-sample.txt'), 'utf8').slice(0, 40_000);

  for (const [what, cfg] of [
    ['plain LoRA, dropout, 2 accumulated micro-batches, 50 %-pruned base', { rank: 4, dropout: 0.1, gradAccum: 2 }],
    ["SAAP's fake-quantised base + QA-LoRA", {
      schedule: { name: 'group-quant', ranks: [8, 8, 8, 8, 8], alphas: [16, 16, 16, 16, 16], quant: { bits: 4, groupSize: 4 }, allocation: 'uniform' },
    }],
  ] as [string, FinetuneConfig][]) {
    it(`${what}: the same losses, held-out NLL and merged weights as resident`, async () => {
      const { model: loaded } = loadModel(STORIES_BIN);
      const tokenizer = await findTokenizerForModel(STORIES_BIN);
      const pruned = what.includes('pruned');
      const named = pruned ? prune50(loaded.toNamedTensors()) : loaded.toNamedTensors();
      loaded.dispose();
      // The same host weights twice: streamed, and all uploaded (resident).
      const a = streamedFromNamedTensors(cloneConfig(loaded.config), named, 'host');
      const r = CausalLM.fromNamedTensors(cloneConfig(loaded.config), named, 'host');
      assert.equal(a.mode, 'streamed');
      assert.equal(r.mode, 'resident');
      const options = {
        ...cfg, data: { text, tokenizer }, steps: 4, lr: 5e-3, warmupSteps: 1, seqLen: 32, microBatchSize: 3, maxHeldOutWindows: 4, seed: 2,
      };
      const base = tf.memory().numTensors;
      const rs = await finetune(r, options);
      const afterResident = tf.memory().numTensors;
      const ss = await finetune(a, options);
      assert.equal(tf.memory().numTensors, afterResident, 'the streamed run leaves nothing on the backend');
      assert.ok(afterResident >= base);
      assertSameRun(ss, rs);
      assertSameWeights(r.toNamedTensors(), a.toNamedTensors());
      if (pruned) {
        for (const [name, t] of named) {
          if (!/layers\.\d+\.(self_attn|mlp)\..*weight$/.test(name)) continue;
          const w = a.toNamedTensors().get(name)!.data;
          for (let i = 0; i < w.length; i++) if (t.data[i] === 0) assert.equal(w[i], 0, `${name}[${i}] refilled`);
        }
      }
      r.dispose();
      a.dispose();
    });
  }
});
