/**
 * Per-layer shapes: a model whose layers differ in FFN width and key/value heads saves with the
 * shapes in config.json and reloads with identical logits. The non-uniform model is built by
 * hand from the llama-tiny fixture (slicing channels and a KV group), independent of the
 * pruning code.
 */
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { HAVE_SHARED, NO_SHARED_REASON, setupBackend, shared, tmpDir } from './support.ts';
import { readHfCheckpoint } from '../src/io/hf-checkpoint.ts';
import { CausalLM } from '../src/model/causal-lm.ts';
import { loadModel, saveModel } from '../src/io/load-model.ts';
import type { HostTensor } from '../src/model/tensor-data.ts';

function rows(t: HostTensor, keep: number[]): HostTensor {
  const cols = t.shape[1] ?? 1;
  const data = new Float32Array(keep.length * cols);
  keep.forEach((r, i) => data.set(t.data.subarray(r * cols, (r + 1) * cols), i * cols));
  return { shape: t.shape.length === 1 ? [keep.length] : [keep.length, cols], data };
}
function cols(t: HostTensor, keep: number[]): HostTensor {
  const [r, c] = t.shape;
  const data = new Float32Array(r * keep.length);
  for (let i = 0; i < r; i++) keep.forEach((j, k) => { data[i * keep.length + k] = t.data[i * c + j]; });
  return { shape: [r, keep.length], data };
}
const range = (a: number, b: number) => Array.from({ length: b - a }, (_, i) => a + i);

describe('non-uniform per-layer shapes', { skip: HAVE_SHARED ? false : NO_SHARED_REASON }, () => {
  before(setupBackend);
  it('save → reload keeps shapes and logits', () => {
    const { config, tensors } = readHfCheckpoint(shared('golden', 'llama-tiny'));
    // Layer 1: keep 40 of 80 FFN channels. Layer 2: keep KV group 1 only (query heads 3..5).
    const ch = range(0, 80).filter((j) => j % 2 === 0);
    for (const n of ['gate_proj', 'up_proj']) {
      const k = `model.layers.1.mlp.${n}.weight`;
      tensors.set(k, rows(tensors.get(k)!, ch));
    }
    tensors.set('model.layers.1.mlp.down_proj.weight', cols(tensors.get('model.layers.1.mlp.down_proj.weight')!, ch));
    const qRows = range(24, 48);
    const kvRows = range(8, 16);
    tensors.set('model.layers.2.self_attn.q_proj.weight', rows(tensors.get('model.layers.2.self_attn.q_proj.weight')!, qRows));
    for (const n of ['k_proj', 'v_proj']) {
      const k = `model.layers.2.self_attn.${n}.weight`;
      tensors.set(k, rows(tensors.get(k)!, kvRows));
    }
    tensors.set('model.layers.2.self_attn.o_proj.weight', cols(tensors.get('model.layers.2.self_attn.o_proj.weight')!, qRows));
    config.layers[1].intermediateSize = 40;
    config.layers[2].numHeads = 3;
    config.layers[2].numKvHeads = 1;
    const model = CausalLM.fromNamedTensors(config, tensors, 'hand-sliced');
    const dir = tmpDir('nonuniform');
    saveModel(model, dir);
    const saved = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
    assert.deepEqual(saved.prunelab_layers.map((l: { intermediate_size: number }) => l.intermediate_size), [80, 40, 80]);
    assert.equal(saved.head_dim, 8);
    const { model: again } = loadModel(dir);
    assert.deepEqual(again.config.layers, config.layers);
    const ids = [[47, 20, 50, 96, 29, 58, 94]];
    const a = model.forward(ids);
    const b = again.forward(ids);
    assert.deepEqual(a.dataSync(), b.dataSync());
    tf.dispose([a, b]);
    model.dispose();
    again.dispose();
  });
});
