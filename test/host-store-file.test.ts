/**
 * Streamed weights left in their checkpoint file: a streamed HF checkpoint holds none of its
 * weights in host memory until a layer is changed, computes what the resident model computes,
 * keeps what pruning writes back (and only that) in memory, and saves / reloads to the resident
 * result — in f32 and in bf16.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setupBackend } from './support.ts';
import { syntheticLlamaConfig, syntheticLlamaTensors, type SyntheticLlamaOptions } from '../src/model/synthetic.ts';
import { CausalLM } from '../src/model/causal-lm.ts';
import { cloneConfig } from '../src/model/config.ts';
import { loadModel, openCheckpoint, saveModel, streamedNeed } from '../src/io/load-model.ts';
import { StreamedParams } from '../src/model/param-provider.ts';
import { setDeviceMemory } from '../src/backend/memory.ts';
import { meanTokenNll } from '../src/eval/perplexity.ts';
import { pruneModel } from '../src/prune/engine.ts';
import { parseMethodOptions, resolveMethod } from '../src/prune/registry.ts';
import { mulberry32 } from '../src/util/random.ts';
import { firstNonFinite } from '../src/io/stored-tensor.ts';
import { CheckpointError } from '../src/util/errors.ts';

const SHAPE: SyntheticLlamaOptions = { hidden: 32, layers: 3, heads: 4, kvHeads: 2, ffn: 64, vocab: 64, seed: 21 };

function windows(n: number, T: number, seed: number): number[][] {
  const r = mulberry32(seed);
  return Array.from({ length: n }, () => Array.from({ length: T }, () => Math.floor(r() * SHAPE.vocab)));
}

function storeOf(model: CausalLM) {
  assert.ok(model.weights instanceof StreamedParams, 'the model is streamed');
  return model.weights.store;
}

describe('streamed weights left in the checkpoint file', () => {
  let dir = '';
  before(async () => {
    await setupBackend();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'prunelab-file-store-'));
  });
  after(() => {
    setDeviceMemory(null);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  for (const dtype of ['f32', 'bf16'] as const) {
    it(`${dtype}: nothing in host memory after loading, the resident numbers, only pruned layers kept in memory, save → reload`, async () => {
      const config = syntheticLlamaConfig(SHAPE);
      const src = CausalLM.fromNamedTensors(cloneConfig(config), syntheticLlamaTensors(config, SHAPE.seed), 'synthetic');
      const ckptDir = path.join(dir, `${dtype}-in`);
      saveModel(src, ckptDir, { dtype });
      src.dispose();

      setDeviceMemory(null);
      const { model: resident } = loadModel(ckptDir);
      setDeviceMemory(streamedNeed(openCheckpoint(ckptDir)).backendBytes);
      const { model: streamed } = loadModel(ckptDir);
      assert.equal(resident.mode, 'resident');
      assert.equal(streamed.mode, 'streamed');
      const store = storeOf(streamed);
      const weightNames = store.names().filter((n) => !n.endsWith('.bias'));
      assert.ok(weightNames.length > 0 && weightNames.every((n) => store.inFile(n)), 'every weight stays in its file');
      assert.equal(store.bytes(), 0, 'no weight bytes in host memory');

      const ws = windows(3, 16, 5);
      const a = (await meanTokenNll(resident, ws, 2)).nll;
      assert.equal((await meanTokenNll(streamed, ws, 2)).nll, a, 'the same NLL, bit for bit');

      // Prune layers 0-1 only: their linears come back into memory, layer 2 stays in its file.
      const wanda = await resolveMethod('wanda');
      const req = { method: wanda, options: parseMethodOptions(wanda, {}), target: { sparsity: 0.5, pattern: { kind: 'unstructured' } } as const, windows: windows(4, 16, 9), layers: { first: 0, last: 1 } };
      await pruneModel(resident, req);
      await pruneModel(streamed, req);
      const layer2 = weightNames.filter((n) => n.includes('layers.2.'));
      const layer0 = weightNames.filter((n) => n.includes('layers.0.') && /proj\.weight$/.test(n));
      assert.ok(layer2.length > 0 && layer2.every((n) => store.inFile(n)), 'an unpruned layer stays in its file');
      assert.ok(layer0.length > 0 && layer0.every((n) => !store.inFile(n)), 'a pruned layer is kept in memory');
      if (dtype === 'bf16') assert.ok(layer0.every((n) => store.dtypeOf(n) === 'BF16'), 'masked bf16 weights stay 16-bit');
      assert.equal((await meanTokenNll(streamed, ws, 2)).nll, (await meanTokenNll(resident, ws, 2)).nll, 'the same pruned NLL');

      const outDir = path.join(dir, `${dtype}-out`);
      saveModel(streamed, outDir, { dtype });
      setDeviceMemory(null);
      const { model: back } = loadModel(outDir);
      const want = resident.toNamedTensors();
      const got = back.toNamedTensors();
      for (const [name, t] of want) assert.deepEqual([...got.get(name)!.data], [...t.data], `${name} after save → reload`);
      for (const m of [resident, streamed, back]) m.dispose();
    });
  }

  it('a non-finite weight is refused at load, naming the tensor and index, with the weights left in the file', () => {
    const config = syntheticLlamaConfig(SHAPE);
    for (const [dtype, bytes] of [['f32', [0x00, 0x00, 0xc0, 0x7f]], ['bf16', [0x80, 0x7f]]] as const) {
      const src = CausalLM.fromNamedTensors(cloneConfig(config), syntheticLlamaTensors(config, SHAPE.seed), 'synthetic');
      const ckptDir = path.join(dir, `${dtype}-nan`);
      saveModel(src, ckptDir, { dtype });
      src.dispose();
      const name = 'model.layers.1.mlp.up_proj.weight';
      const ref = openCheckpoint(ckptDir).tensors.get(name)!;
      const fd = fs.openSync(ref.file, 'r+');
      fs.writeSync(fd, Uint8Array.from(bytes), 0, bytes.length, ref.offset + 7 * bytes.length);
      fs.closeSync(fd);
      setDeviceMemory(streamedNeed(openCheckpoint(ckptDir)).backendBytes);
      assert.throws(() => loadModel(ckptDir), (e: Error) => e instanceof CheckpointError && e.message.includes(name) && e.message.includes('non-finite')
        && e.message.includes(dtype === 'f32' ? '(NaN) at flat index 7' : '(Infinity) at flat index 7'), dtype);
    }
  });
});

describe('firstNonFinite (bit patterns, by hand)', () => {
  const t = (dtype: 'F32' | 'F16' | 'BF16', values: number[]) => {
    const bytes = dtype === 'F32' ? new Uint8Array(Float32Array.from(values).buffer) : new Uint8Array(Uint16Array.from(values).buffer);
    return firstNonFinite({ dtype, shape: [values.length], bytes });
  };
  it('finds NaN / ±Infinity, and only those', () => {
    assert.equal(t('BF16', [0x3f80, 0x7f7f, 0xff7f]), null, '1, the largest finite bf16 and its negative');
    assert.deepEqual(t('BF16', [0x3f80, 0x7f80]), { index: 1, value: Infinity });
    assert.deepEqual(t('BF16', [0xff80]), { index: 0, value: -Infinity });
    assert.ok(Number.isNaN(t('BF16', [0, 0, 0x7fc1])!.value));
    assert.equal(t('F16', [0x3c00, 0x7bff, 0xfbff]), null, '1, ±65504');
    assert.deepEqual(t('F16', [0x3c00, 0xfc00]), { index: 1, value: -Infinity });
    assert.ok(Number.isNaN(t('F16', [0x7e00])!.value));
    assert.equal(t('F32', [1, -3.4e38, 1e-45]), null);
    assert.deepEqual(t('F32', [1, 2, Infinity]), { index: 2, value: Infinity });
  });
});
