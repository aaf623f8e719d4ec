/**
 * Structural surgery equivalence: physically removing FFN channels or key/value head groups
 * gives the same logits as zeroing the corresponding weights in the unpruned model.
 */
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import * as tf from '@tensorflow/tfjs';
import { HAVE_SHARED, NO_SHARED_REASON, setupBackend, shared, tmpDir, maxAbsDiff } from './support.ts';
import { loadModel, saveModel } from '../src/io/load-model.ts';
import { readLinear, writeLinear } from '../src/prune/linear-io.ts';
import { removeFfnChannels, removeKvGroups, addBias } from '../src/prune/surgery.ts';
import { queryFeaturesOfGroups } from '../src/prune/coupling.ts';
import type { CausalLM } from '../src/model/causal-lm.ts';
import type { LinearRole } from '../src/model/family.ts';
import { ConfigError } from '../src/util/errors.ts';

const IDS = [[47, 20, 50, 96, 29, 58, 94, 81, 25, 27, 89, 13]];

function zeroRows(m: CausalLM, layer: number, role: LinearRole, rows: number[]): void {
  const w = readLinear(m, layer, role);
  for (const r of rows) w.data.fill(0, r * w.cols, (r + 1) * w.cols);
  writeLinear(m, layer, role, w.data, w.rows, w.cols);
  const b = m.linearParams(layer, role).bias;
  if (b) {
    const d = Float32Array.from(b.dataSync());
    for (const r of rows) d[r] = 0;
    m.setLinear(layer, role, m.linearParams(layer, role).weight, tf.tensor1d(d));
  }
}
function zeroCols(m: CausalLM, layer: number, role: LinearRole, cols: number[]): void {
  const w = readLinear(m, layer, role);
  for (let r = 0; r < w.rows; r++) for (const c of cols) w.data[r * w.cols + c] = 0;
  writeLinear(m, layer, role, w.data, w.rows, w.cols);
}
const logits = (m: CausalLM) => { const t = m.forward(IDS); const d = t.dataSync().slice(); t.dispose(); return d; };

describe('surgery', { skip: HAVE_SHARED ? false : NO_SHARED_REASON }, () => {
  before(setupBackend);

  for (const fixture of ['llama-tiny', 'opt-tiny', 'llama-tiny-bias-tied']) {
    it(`${fixture}: removing FFN channels = zeroing them`, () => {
      const { model: cut } = loadModel(shared('golden', fixture));
      const { model: zeroed } = loadModel(shared('golden', fixture));
      const width = cut.config.layers[1].intermediateSize;
      const keep = Array.from({ length: width }, (_, j) => j).filter((j) => j % 3 !== 1);
      const drop = Array.from({ length: width }, (_, j) => j).filter((j) => j % 3 === 1);
      removeFfnChannels(cut, 1, keep);
      const { outputsOf, inputsOf } = zeroed.spec.ffnChannel;
      for (const r of outputsOf) zeroRows(zeroed, 1, r, drop);
      zeroCols(zeroed, 1, inputsOf, drop);
      assert.equal(cut.config.layers[1].intermediateSize, keep.length);
      assert.ok(maxAbsDiff(logits(cut), logits(zeroed)) <= 1e-5);
      cut.dispose(); zeroed.dispose();
    });

    it(`${fixture}: removing a key/value head group = zeroing its heads`, () => {
      const { model: cut } = loadModel(shared('golden', fixture));
      const { model: zeroed } = loadModel(shared('golden', fixture));
      const s = cut.config.layers[2];
      const g = s.numHeads / s.numKvHeads;
      const dropGroup = 0;
      const keepGroups = Array.from({ length: s.numKvHeads }, (_, k) => k).filter((k) => k !== dropGroup);
      removeKvGroups(cut, 2, keepGroups);
      // Zeroing the dropped group's query rows makes its heads attend uniformly; zeroing its v
      // rows and o columns removes their contribution entirely — the same function as removal.
      const qDrop = queryFeaturesOfGroups([dropGroup], g, cut.config.headDim);
      const kvDrop = queryFeaturesOfGroups([dropGroup], 1, cut.config.headDim);
      zeroRows(zeroed, 2, 'v', kvDrop);
      zeroCols(zeroed, 2, 'o', qDrop);
      assert.equal(cut.config.layers[2].numKvHeads, s.numKvHeads);
      assert.equal(cut.config.layers[2].numHeads, keepGroups.length * g);
      assert.ok(maxAbsDiff(logits(cut), logits(zeroed)) <= 1e-5);
      // Saved and reloaded, the pruned checkpoint gives identical logits and is smaller on disk.
      const dir = tmpDir('surgery');
      const denseDir = tmpDir('surgery-dense');
      saveModel(cut, dir);
      saveModel(zeroed, denseDir);
      const { model: again } = loadModel(dir);
      assert.deepEqual(logits(again), logits(cut));
      assert.ok(fs.statSync(`${dir}/model.safetensors`).size < fs.statSync(`${denseDir}/model.safetensors`).size);
      cut.dispose(); zeroed.dispose(); again.dispose();
    });
  }

  it('bias compensation adds a bias where there was none, and it survives save/reload', () => {
    const { model } = loadModel(shared('golden', 'llama-tiny'));
    const delta = Float32Array.from({ length: 48 }, (_, i) => (i - 24) / 100);
    addBias(model, 0, 'down', delta);
    const dir = tmpDir('bias');
    saveModel(model, dir);
    const cfg = JSON.parse(fs.readFileSync(`${dir}/config.json`, 'utf8'));
    assert.equal(cfg.mlp_bias, true);
    const { model: again } = loadModel(dir);
    assert.deepEqual(logits(again), logits(model));
    model.dispose(); again.dispose();
  });

  it('removing every channel or head group is refused', () => {
    const { model } = loadModel(shared('golden', 'llama-tiny'));
    assert.throws(() => removeFfnChannels(model, 0, []), ConfigError);
    assert.throws(() => removeKvGroups(model, 0, []), ConfigError);
    model.dispose();
  });
});
