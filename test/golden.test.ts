/**
 * Parity with the HF reference logits in ../shared/data/golden (computed in float64 by the
 * fixtures' authors), greedy continuations with and without the KV cache, and prefix consistency.
 */
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import * as tf from '@tensorflow/tfjs';
import { HAVE_SHARED, NO_SHARED_REASON, setupBackend, shared, maxAbsDiff } from './support.ts';
import { loadModel } from '../src/io/load-model.ts';
import { causalLmNllSum } from '../src/model/loss.ts';
import { greedyNoCache } from './greedy-reference.ts';
import { generate } from '../src/model/generate.ts';

interface Reference {
  sequences: { length: number; input_ids: number[]; logits: number[][]; mean_nll: number | null; greedy_continuation: number[] }[];
}

const FIXTURES: [string, number][] = [
  ['llama-tiny', 1e-4],
  ['opt-tiny', 1e-4],
  ['llama-tiny-sharded-f16', 1e-3],
  ['llama-tiny-bias-tied', 1e-3],
];

describe('golden HF fixtures', { skip: HAVE_SHARED ? false : NO_SHARED_REASON }, () => {
  before(setupBackend);
  for (const [name, tol] of FIXTURES) {
    it(`${name}: logits, mean NLL and greedy tokens match reference.json`, async () => {
      const dir = shared('golden', name);
      const ref = JSON.parse(fs.readFileSync(`${dir}/reference.json`, 'utf8')) as Reference;
      const { model } = loadModel(dir);
      const before = tf.memory().numTensors;
      const rows7: Float32Array[] = [];
      let rows33: Float32Array[] = [];
      for (const seq of ref.sequences) {
        const logits = model.forward([seq.input_ids]);
        const got = logits.arraySync() as number[][];
        assert.equal(got.length, seq.length);
        const diff = maxAbsDiff(got.flat(), seq.logits.flat());
        assert.ok(diff <= tol, `${name} T=${seq.length}: max |Δlogit| ${diff} > ${tol}`);
        if (seq.mean_nll !== null) {
          const { sum, count } = causalLmNllSum(logits, [seq.input_ids]);
          const nll = sum.dataSync()[0] / count;
          sum.dispose();
          assert.ok(Math.abs(nll - seq.mean_nll) <= tol, `${name} T=${seq.length}: mean NLL ${nll} vs ${seq.mean_nll}`);
        }
        const asRows = got.map((r) => Float32Array.from(r));
        if (seq.length === 7) rows7.push(...asRows);
        if (seq.length === 33) rows33 = asRows;
        logits.dispose();
        assert.deepEqual(greedyNoCache(model, seq.input_ids, 8), seq.greedy_continuation, `${name} greedy (no cache)`);
        const cached = await generate(model, seq.input_ids, { maxNewTokens: 8, greedy: true });
        assert.deepEqual(cached.newIds, seq.greedy_continuation, `${name} greedy (KV cache)`);
      }
      // Causality: the 7-token run equals the first 7 rows of the 33-token run (fp32 noise only).
      for (let t = 0; t < 7; t++) assert.ok(maxAbsDiff(rows7[t], rows33[t]) < 1e-5, `row ${t} differs`);
      assert.equal(tf.memory().numTensors, before, 'tensors leaked');
      model.dispose();
    });
  }
});
