/**
 * Lazy checkpoint reading: dtype widening against hand-computed values, lazy reads bit-identical
 * to an independent whole-file decode on the real fixtures, header validation, and inspect's
 * header-only parameter counts equal to a loaded model's.
 */
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { HAVE_SHARED, NO_SHARED_REASON, setupBackend, shared, tmpDir, STORIES_BIN } from './support.ts';
import { readSafetensorsHeader, writeSafetensors } from '../src/io/safetensors.ts';
import { readF32, readStored, widenToF32, type StoredTensor, type TensorRef } from '../src/io/stored-tensor.ts';
import { openHfCheckpoint, readHfCheckpoint, writeHfCheckpoint } from '../src/io/hf-checkpoint.ts';
import { openLlama2cCheckpoint } from '../src/io/llama2c.ts';
import { loadModel, openCheckpoint } from '../src/io/load-model.ts';
import { checkpointParameters } from '../src/io/checkpoint-summary.ts';
import { countParameters } from '../src/model/count.ts';
import { CheckpointError } from '../src/util/errors.ts';

const FIXTURES = ['llama-tiny', 'llama-tiny-sharded-f16', 'llama-tiny-bias-tied', 'opt-tiny'];

function bitsEqual(a: Float32Array, b: Float32Array, what: string): void {
  assert.equal(a.length, b.length, `${what}: length`);
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < ua.length; i++) if (ua[i] !== ub[i]) assert.fail(`${what}: element ${i} differs (${a[i]} vs ${b[i]})`);
}

function stored(dtype: StoredTensor['dtype'], halves: number[]): StoredTensor {
  return { dtype, shape: [halves.length], bytes: new Uint8Array(Uint16Array.from(halves).buffer) };
}

/** A safetensors file from a raw header object and data bytes (for malformed headers). */
function writeRaw(file: string, header: unknown, data: Uint8Array): void {
  const h = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(h.length));
  fs.writeFileSync(file, Buffer.concat([len, h, data]));
}

function rejects(fn: () => unknown, ...fragments: string[]): void {
  assert.throws(fn, (e: Error) => {
    assert.ok(e instanceof CheckpointError, `expected CheckpointError, got ${e.name}: ${e.message}`);
    for (const f of fragments) assert.ok(e.message.includes(f), `message ${JSON.stringify(e.message)} lacks ${JSON.stringify(f)}`);
    return true;
  });
}

describe('stored dtypes widen exactly', () => {
  it('F16 bit patterns (normals, subnormals, signed zero, infinities, NaN)', () => {
    const got = widenToF32(stored('F16', [0x3c00, 0xc000, 0x3555, 0x7bff, 0x0001, 0x0400, 0x8000, 0x7c00, 0xfc00, 0x7e00]));
    const want = [1, -2, 0.333251953125, 65504, 2 ** -24, 2 ** -14, -0, Infinity, -Infinity, NaN];
    want.forEach((w, i) => assert.ok(Object.is(got[i], w), `F16 #${i}: ${got[i]} ≠ ${w}`));
  });

  it('BF16 bit patterns are the top halves of fp32', () => {
    const got = widenToF32(stored('BF16', [0x3f80, 0xc0a0, 0x3eab, 0x7f7f, 0x0001, 0xff80, 0x7fc0, 0x8000]));
    // 0x3eab: 2^-2 × (1 + 43/128); 0x7f7f: 2^127 × (1 + 127/128); 0x0001: 2^16 × 2^-149.
    const want = [1, -5, 0.333984375, 2 ** 127 * (1 + 127 / 128), 2 ** -133, -Infinity, NaN, -0];
    want.forEach((w, i) => assert.ok(Object.is(got[i], w), `BF16 #${i}: ${got[i]} ≠ ${w}`));
  });

  it('bytes at an odd offset widen the same, and the stored bytes are left untouched', () => {
    const raw = new Uint8Array(7);
    raw.set([0x00, 0x3c, 0x00, 0xc0, 0x55, 0x35], 1); // F16 1, -2, 0.333251953125 little-endian from byte 1
    const t: StoredTensor = { dtype: 'F16', shape: [3], bytes: raw.subarray(1) };
    assert.deepEqual([...widenToF32(t)], [1, -2, 0.333251953125]);
    const f32: StoredTensor = { dtype: 'F32', shape: [1], bytes: new Uint8Array(new Float32Array([1.5]).buffer) };
    const out = widenToF32(f32);
    out[0] = 7;
    assert.equal(new Float32Array(f32.bytes.buffer)[0], 1.5);
  });

  it('a file mixing F32, F16 and BF16 at unaligned positions reads lazily in the stored dtype', () => {
    const dir = tmpDir('dtypes');
    try {
      const file = path.join(dir, 'mixed.safetensors');
      // 2 + 4 + 4 bytes: the F32 tensor starts at data byte 6 (not 4-aligned).
      const data = Buffer.from([0x80, 0x3f, 0x00, 0x3c, 0x00, 0xc0, 0x00, 0x00, 0x20, 0xc1]);
      writeRaw(file, {
        b: { dtype: 'BF16', shape: [1], data_offsets: [0, 2] },
        h: { dtype: 'F16', shape: [2], data_offsets: [2, 6] },
        f: { dtype: 'F32', shape: [1, 1], data_offsets: [6, 10] },
      }, data);
      const { tensors } = readSafetensorsHeader(file);
      const ref = (n: string) => tensors.get(n) as TensorRef;
      assert.deepEqual([...readF32(ref('b'))], [1]);
      assert.deepEqual([...readF32(ref('h'))], [1, -2]);
      assert.deepEqual([...readF32(ref('f'))], [-10]);
      const s = readStored(ref('h'));
      assert.equal(s.dtype, 'F16');
      assert.deepEqual([...s.bytes], [0x00, 0x3c, 0x00, 0xc0]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

/** Independent oracle: the whole file read at once, each value decoded with DataView. */
function eagerOracle(file: string): Map<string, Float32Array> {
  const buf = fs.readFileSync(file);
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const n = Number(view.getBigUint64(0, true));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const out = new Map<string, Float32Array>();
  const tmp = new DataView(new ArrayBuffer(4));
  for (const [name, e] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const start = 8 + n + e.data_offsets[0];
    const size = e.dtype === 'F32' ? 4 : 2;
    const vals = new Float32Array((e.data_offsets[1] - e.data_offsets[0]) / size);
    for (let i = 0; i < vals.length; i++) {
      const p = start + i * size;
      if (e.dtype === 'F32') vals[i] = view.getFloat32(p, true);
      else if (e.dtype === 'BF16') {
        tmp.setUint32(0, view.getUint16(p, true) * 65536);
        vals[i] = tmp.getFloat32(0);
      } else {
        const h = view.getUint16(p, true);
        const exp = (h >> 10) & 31;
        const mag = exp === 0 ? (h & 1023) / 1024 * 2 ** -14 : exp === 31 ? ((h & 1023) ? NaN : Infinity) : (1 + (h & 1023) / 1024) * 2 ** (exp - 15);
        vals[i] = h & 0x8000 ? -mag : mag;
      }
    }
    out.set(name, vals);
  }
  return out;
}

describe('lazy reads on the real fixtures', { skip: HAVE_SHARED ? false : NO_SHARED_REASON }, () => {
  before(setupBackend);

  for (const fixture of FIXTURES) {
    it(`${fixture}: every tensor read by its byte range equals a whole-file decode, bit for bit`, () => {
      const dir = shared('golden', fixture);
      const { tensors } = openHfCheckpoint(dir);
      const oracle = new Map<string, Float32Array>();
      for (const f of new Set([...tensors.values()].map((r) => r.file))) {
        for (const [name, v] of eagerOracle(f)) oracle.set(name.startsWith('decoder.') ? `model.${name}` : name, v);
      }
      assert.equal(tensors.size, oracle.size);
      for (const [name, ref] of tensors) bitsEqual(readF32(ref), oracle.get(name) as Float32Array, `${fixture} ${name}`);
      // The eager API (built on the lazy one) gives the same tensors.
      for (const [name, t] of readHfCheckpoint(dir).tensors) bitsEqual(t.data, oracle.get(name) as Float32Array, `eager ${name}`);
    });
  }

  it('the F16 shards hold llama-tiny rounded to fp16 (within half an fp16 ulp)', () => {
    const f32 = readHfCheckpoint(shared('golden', 'llama-tiny')).tensors;
    const f16 = readHfCheckpoint(shared('golden', 'llama-tiny-sharded-f16')).tensors;
    for (const [name, t] of f32) {
      const h = (f16.get(name) as { data: Float32Array }).data;
      t.data.forEach((v, i) => {
        const ulp = 2 ** (Math.max(Math.floor(Math.log2(Math.abs(v) || 2 ** -14)), -14) - 10);
        assert.ok(Math.abs(h[i] - v) <= ulp / 2, `${name}[${i}]: ${h[i]} vs ${v}`);
      });
    }
  });

  it('stories260K.bin: the byte ranges tile the file (header, tensors, RoPE tables) and read as the raw floats', () => {
    const { config, tensors } = openLlama2cCheckpoint(STORIES_BIN);
    const buf = fs.readFileSync(STORIES_BIN);
    let pos = 28;
    const ropeTables = config.maxPositionEmbeddings * config.headDim * 4;
    for (const [name, ref] of tensors) {
      if (name === 'lm_head.weight') pos += ropeTables;
      assert.equal(ref.offset, pos, `${name} starts where the previous tensor ended`);
      pos += ref.byteLength;
      const raw = new Float32Array(buf.buffer.slice(buf.byteOffset + ref.offset, buf.byteOffset + ref.offset + ref.byteLength));
      bitsEqual(readF32(ref), raw, name);
    }
    if (!tensors.has('lm_head.weight')) pos += ropeTables;
    assert.equal(pos, buf.byteLength);
  });

  for (const p of [...FIXTURES.map((f) => shared('golden', f)), STORIES_BIN]) {
    it(`${path.basename(p)}: parameter counts from headers equal the loaded model's`, () => {
      const { model } = loadModel(p);
      assert.deepEqual(checkpointParameters(openCheckpoint(p)), countParameters(model));
      model.dispose();
    });
  }

  it('zero-bias padding (HF module-wide bias switch) is not counted from headers either', () => {
    const dir = tmpDir('padded');
    try {
      const { config, tensors } = readHfCheckpoint(shared('golden', 'llama-tiny'));
      tensors.set('model.layers.0.self_attn.o_proj.bias', { shape: [48], data: Float32Array.from({ length: 48 }, (_, i) => i / 10) });
      writeHfCheckpoint(dir, config, tensors);
      const ckpt = openCheckpoint(dir);
      assert.ok(ckpt.tensors.has('model.layers.1.self_attn.q_proj.bias'), 'writer padded the sibling biases');
      const { model } = loadModel(dir);
      const counts = checkpointParameters(ckpt);
      assert.deepEqual(counts, countParameters(model));
      assert.equal(counts.total, 62640 + 48);
      model.dispose();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('header and shard validation', () => {
  const withDir = (fn: (dir: string) => void) => {
    const dir = tmpDir('headers');
    try {
      fn(dir);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  };
  const f32 = (n: number) => new Uint8Array(4 * n);

  it('overlapping offsets', () => withDir((dir) => {
    const file = path.join(dir, 'x.safetensors');
    writeRaw(file, { a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] }, b: { dtype: 'F32', shape: [2], data_offsets: [8, 16] } }, f32(4));
    rejects(() => readSafetensorsHeader(file), 'x.safetensors', "'a'", "'b'", 'overlap');
  }));

  it('offsets past the end of the file', () => withDir((dir) => {
    const file = path.join(dir, 'x.safetensors');
    writeRaw(file, { a: { dtype: 'F32', shape: [8], data_offsets: [0, 32] } }, f32(4));
    rejects(() => readSafetensorsHeader(file), 'x.safetensors', "'a'", 'truncated');
  }));

  it('a dtype PruneLab does not read', () => withDir((dir) => {
    const file = path.join(dir, 'x.safetensors');
    writeRaw(file, { a: { dtype: 'I8', shape: [4], data_offsets: [0, 4] } }, f32(1));
    rejects(() => readSafetensorsHeader(file), "'a'", 'unsupported dtype I8', 'F32, F16, BF16');
  }));

  it('malformed entries: negative or reversed offsets, non-integer shapes', () => withDir((dir) => {
    const file = path.join(dir, 'x.safetensors');
    for (const bad of [{ dtype: 'F32', shape: [1], data_offsets: [-4, 0] }, { dtype: 'F32', shape: [1], data_offsets: [4, 0] },
      { dtype: 'F32', shape: [1.5], data_offsets: [0, 4] }, { dtype: 'F32', shape: [1] }]) {
      writeRaw(file, { a: bad }, f32(1));
      rejects(() => readSafetensorsHeader(file), "'a'", 'malformed');
    }
  }));

  it('a header length beyond the format limit (not a safetensors file)', () => withDir((dir) => {
    const file = path.join(dir, 'x.safetensors');
    const fd = fs.openSync(file, 'w');
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(200n * 2n ** 20n);
    fs.writeSync(fd, len, 0, 8, 0);
    fs.ftruncateSync(fd, 300 * 2 ** 20); // sparse
    fs.closeSync(fd);
    rejects(() => readSafetensorsHeader(file), 'not a safetensors file');
  }));

  it('index names a shard that lacks the tensor; a tensor stored in two shards', () => withDir((dir) => {
    const cfg = { model_type: 'llama', vocab_size: 4, hidden_size: 4, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 4 };
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(cfg));
    const t = { shape: [2], data: new Float32Array(2) };
    writeSafetensors(path.join(dir, 'a.safetensors'), new Map([['x', t]]));
    writeSafetensors(path.join(dir, 'b.safetensors'), new Map([['y', t]]));
    const index = (map: Record<string, string>) =>
      fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: map }));
    index({ x: 'a.safetensors', y: 'a.safetensors' });
    rejects(() => openHfCheckpoint(dir), "'y'", "not in shard 'a.safetensors'");
    writeSafetensors(path.join(dir, 'b.safetensors'), new Map([['x', t]]));
    index({ x: 'a.safetensors', z: 'b.safetensors' });
    rejects(() => openHfCheckpoint(dir), "'x'", 'stored twice', 'a.safetensors', 'b.safetensors');
  }));
});
