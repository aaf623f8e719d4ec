/**
 * Writing checkpoints tensor by tensor: fp32 → bf16 rounding against hand-computed bits, bf16
 * round trips bit-exactly, shards split and indexed as HF lays them out (and read back), the
 * streamed `convert` path equal byte for byte to loading and saving the model, and the CLI's
 * `--dtype` / `--shard-size`.
 */
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { HAVE_SHARED, NO_SHARED_REASON, setupBackend, shared, tmpDir, STORIES_BIN, logitsOf } from './support.ts';
import { runCli } from './cli-support.ts';
import {
  f32ToBf16, planShards, ShardedSafetensorsWriter, INDEX_FILE, SINGLE_FILE, type PlannedTensor,
} from '../src/io/safetensors-writer.ts';
import { readSafetensorsHeader } from '../src/io/safetensors.ts';
import { readStored, widenToF32, type TensorRef } from '../src/io/stored-tensor.ts';
import { openHfCheckpoint, readHfCheckpoint, writeHfCheckpoint, writeHfCheckpointFrom, storedWeightDtype } from '../src/io/hf-checkpoint.ts';
import { checkpointSource } from '../src/io/checkpoint-source.ts';
import { loadModel, openCheckpoint, saveModel } from '../src/io/load-model.ts';
import { checkpointFormat, parseByteSize } from '../src/cli/common.ts';

const withDir = async (prefix: string, fn: (dir: string) => void | Promise<void>) => {
  const dir = tmpDir(prefix);
  try {
    await fn(dir);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
};

/** Every file of folder `a` equal, byte for byte, to the same file in `b` (and the same file names). */
function sameFolders(a: string, b: string): void {
  assert.deepEqual(fs.readdirSync(a).sort(), fs.readdirSync(b).sort());
  for (const f of fs.readdirSync(a)) assert.ok(fs.readFileSync(path.join(a, f)).equals(fs.readFileSync(path.join(b, f))), `${f} differs`);
}

describe('fp32 → bf16 rounding', () => {
  it('hand-computed bit patterns: exact values, ties to even, overflow, zeros, infinities, NaN', () => {
    const cases: [number, number][] = [
      [1, 0x3f80], [-5, 0xc0a0],
      [1 + 2 ** -8, 0x3f80], // halfway between 0x3f80 and 0x3f81: the even one
      [1 + 3 * 2 ** -8, 0x3f82], // halfway between 0x3f81 and 0x3f82: the even one
      [1 + 2 ** -8 + 2 ** -20, 0x3f81], // just above halfway: up
      [1 + 2 ** -9, 0x3f80], // below halfway: down
      [3.4028234663852886e38, 0x7f80], // largest fp32 rounds to infinity
      [0, 0x0000], [-0, 0x8000], [Infinity, 0x7f80], [-Infinity, 0xff80],
    ];
    for (const [v, bits] of cases) assert.equal(f32ToBf16(v), bits, `${v}`);
    assert.equal(f32ToBf16(NaN) & 0x7fc0, 0x7fc0, 'NaN stays a quiet NaN');
  });

  it('every bf16 value widens and narrows back to the same bits', () => {
    const halves = new Uint16Array(65536).map((_, i) => i);
    const wide = widenToF32({ dtype: 'BF16', shape: [65536], bytes: new Uint8Array(halves.buffer) });
    for (let i = 0; i < 65536; i++) {
      if (Number.isNaN(wide[i])) assert.ok(Number.isNaN(widenToF32({ dtype: 'BF16', shape: [1], bytes: new Uint8Array(Uint16Array.of(f32ToBf16(wide[i])).buffer) })[0]));
      else assert.equal(f32ToBf16(wide[i]), i, `bits 0x${i.toString(16)}`);
    }
  });
});

describe('--shard-size and --dtype values', () => {
  it('sizes: decimal units as HF writes them, binary ones, plain bytes', () => {
    const cases: [string, number][] = [['2GB', 2e9], ['1.5GB', 1.5e9], ['500mb', 5e8], ['1GiB', 2 ** 30], ['64 KiB', 65536], ['123', 123], ['7B', 7]];
    for (const [v, bytes] of cases) assert.equal(parseByteSize(v, '--shard-size'), bytes, v);
    for (const bad of ['', '0', '-1GB', '2XB', 'GB', '0.1']) assert.throws(() => parseByteSize(bad, '--shard-size'), /expected a size such as 2GB/, bad);
  });

  it('the dtype: --dtype when given, else the fallback (the input\'s stored dtype)', () => {
    assert.deepEqual(checkpointFormat({ dtype: undefined, 'shard-size': '2GB' }, 'bf16'), { dtype: 'bf16', shardBytes: 2e9 });
    assert.deepEqual(checkpointFormat({ dtype: 'f16', 'shard-size': '1GiB' }, 'bf16'), { dtype: 'f16', shardBytes: 2 ** 30 });
  });

  it('the stored dtype: the one the float weights share (quantised U8 codes aside), else f32', () => {
    const refs = (...dtypes: TensorRef['dtype'][]) => new Map(dtypes.map((dtype, i) => [`t${i}`, { name: `t${i}`, dtype, shape: [1], file: 'x', offset: 0, byteLength: 2 }]));
    assert.equal(storedWeightDtype(refs('BF16', 'BF16')), 'bf16');
    assert.equal(storedWeightDtype(refs('F16', 'U8')), 'f16');
    assert.equal(storedWeightDtype(refs('F32')), 'f32');
    assert.equal(storedWeightDtype(refs('BF16', 'F32')), 'f32');
  });
});

describe('shards', () => {
  const t = (name: string, n: number): PlannedTensor => ({ name, shape: [n], dtype: 'F32' });

  it('split in order, at most the limit each, an oversized tensor alone', () => {
    // 16 + 16 bytes fit 32; then 16 opens a new shard; 40 > 32 stands alone; 4 after it opens another.
    const shards = planShards([t('a', 4), t('b', 4), t('c', 4), t('d', 10), t('e', 1)], 32);
    assert.deepEqual(shards.map((s) => s.map((x) => x.name)), [['a', 'b'], ['c'], ['d'], ['e']]);
    assert.deepEqual(planShards([], 32), [[]]);
  });

  it('written in any order, indexed like HF (total_size, weight_map), read back exactly', () => withDir('shards', (dir) => {
    const planned = [t('z.w', 3), t('a.w', 5), t('m.w', 2), t('b.w', 7)];
    const w = new ShardedSafetensorsWriter(dir, planned, 40);
    const values = new Map(planned.map((p, k) => [p.name, Float32Array.from({ length: p.shape[0] }, (_, i) => k * 10 + i + 0.5)]));
    for (const p of [...planned].reverse()) w.put(p.name, { shape: [...p.shape], data: values.get(p.name) as Float32Array });
    const files = w.finish();
    // 12 + 20 + 8 bytes fill the first shard exactly; 28 more open the second.
    const names = ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors'];
    assert.deepEqual(files, [...names, INDEX_FILE]);
    const index = JSON.parse(fs.readFileSync(path.join(dir, INDEX_FILE), 'utf8')) as { metadata: { total_size: number }; weight_map: Record<string, string> };
    assert.equal(index.metadata.total_size, 4 * (3 + 5 + 2 + 7));
    assert.deepEqual(index.weight_map, { 'a.w': names[0], 'b.w': names[1], 'm.w': names[0], 'z.w': names[0] });
    const map: Record<string, string> = index.weight_map;
    for (const [k, f] of names.entries()) {
      const h = readSafetensorsHeader(path.join(dir, f));
      for (const [name, ref] of h.tensors) {
        assert.equal(map[name], names[k]);
        assert.deepEqual(widenToF32(readStored(ref)), values.get(name));
      }
    }
  }));

  it('a single model.safetensors and no index when everything fits', () => withDir('single', (dir) => {
    const w = new ShardedSafetensorsWriter(dir, [t('a', 2)], 8);
    w.put('a', { shape: [2], data: Float32Array.of(1, 2) });
    assert.deepEqual(w.finish(), [SINGLE_FILE]);
    assert.ok(!fs.existsSync(path.join(dir, INDEX_FILE)));
  }));

  it('a tensor never written, written twice or of the wrong shape is a bug, not a silent file', () => withDir('bugs', (dir) => {
    const w = new ShardedSafetensorsWriter(dir, [t('a', 2), t('b', 2)], 100);
    w.put('a', { shape: [2], data: Float32Array.of(1, 2) });
    assert.throws(() => w.put('a', { shape: [2], data: Float32Array.of(1, 2) }), /written twice/);
    assert.throws(() => w.put('b', { shape: [3], data: new Float32Array(3) }), /shape \[3\], planned \[2\]/);
    assert.throws(() => w.put('c', { shape: [1], data: new Float32Array(1) }), /not planned/);
    assert.throws(() => w.finish(), /never written/);
  }));
});

describe('HF checkpoints written sharded and in 16-bit dtypes', { skip: HAVE_SHARED ? false : NO_SHARED_REASON }, () => {
  before(async () => {
    await setupBackend();
  });

  it('sharded llama-tiny loads to the same logits as the single file', () => withDir('hf-shards', (dir) => {
    const { config, tensors } = readHfCheckpoint(shared('golden', 'llama-tiny'));
    const files = writeHfCheckpoint(dir, config, tensors, { shardBytes: 40_000 });
    assert.ok(files.length > 3 && files.at(-1) === INDEX_FILE, files.join(', '));
    const single = path.join(dir, 'single');
    writeHfCheckpoint(single, config, tensors);
    const ids = [[1, 5, 9, 30, 2, 7]];
    const { model: a } = loadModel(dir);
    const { model: b } = loadModel(single);
    assert.deepEqual(logitsOf(a, ids), logitsOf(b, ids));
    a.dispose();
    b.dispose();
  }));

  it('bf16: every value is the rounded fp32 one, and a second bf16 save is byte-identical (bit-exact round trip)', () => withDir('bf16', (dir) => {
    const { config, tensors } = readHfCheckpoint(shared('golden', 'llama-tiny'));
    const first = path.join(dir, 'first');
    writeHfCheckpoint(first, config, tensors, { dtype: 'bf16' });
    assert.equal(JSON.parse(fs.readFileSync(path.join(first, 'config.json'), 'utf8')).torch_dtype, 'bfloat16');
    const opened = openHfCheckpoint(first);
    assert.equal(storedWeightDtype(opened.tensors), 'bf16');
    for (const [name, t] of tensors) {
      const ref = opened.tensors.get(name) as TensorRef;
      const bits = new Uint16Array(readStored(ref).bytes.buffer);
      for (let i = 0; i < t.data.length; i++) if (bits[i] !== f32ToBf16(t.data[i])) assert.fail(`${name}[${i}]`);
    }
    const again = path.join(dir, 'again');
    const reread = readHfCheckpoint(first);
    writeHfCheckpoint(again, reread.config, reread.tensors, { dtype: 'bf16' });
    sameFolders(first, again);
  }));

  for (const [label, src] of [['stories260K (llama2.c)', STORIES_BIN], ...['llama-tiny', 'llama-tiny-bias-tied', 'llama-tiny-sharded-f16', 'opt-tiny']
    .map((f) => [f, shared('golden', f)])]) {
    it(`${label}: written tensor by tensor from the files = loaded and saved (byte for byte)`, () => withDir('stream', async (dir) => {
      const viaModel = path.join(dir, 'model');
      const { model } = loadModel(src);
      saveModel(model, viaModel, { dtype: 'f32' });
      model.dispose();
      const streamed = path.join(dir, 'streamed');
      const s = checkpointSource(openCheckpoint(src));
      await writeHfCheckpointFrom(streamed, s.config, s.entries, s.tensors, { dtype: 'f32' });
      sameFolders(viaModel, streamed);
    }));
  }
});

describe('convert --dtype / --shard-size (CLI)', { skip: HAVE_SHARED ? false : NO_SHARED_REASON }, () => {
  it('bf16 in shards, then back to one file in the stored dtype by default: same bytes per tensor', () => withDir('cli-convert', (dir) => {
    const src = shared('golden', 'llama-tiny');
    const sharded = path.join(dir, 'sharded');
    let r = runCli(['convert', '--model', src, '--out', sharded, '--dtype', 'bf16', '--shard-size', '40KB']);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.json?.dtype, 'bf16');
    assert.ok((r.json?.files as string[]).includes(INDEX_FILE));
    const single = path.join(dir, 'single');
    r = runCli(['convert', '--model', sharded, '--out', single]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.json?.dtype, 'bf16', 'the input is bf16, so is the default output');
    assert.deepEqual(fs.readdirSync(single).filter((f) => f.endsWith('.safetensors')), [SINGLE_FILE]);
    const a = openHfCheckpoint(sharded).tensors;
    const b = openHfCheckpoint(single).tensors;
    assert.equal(a.size, b.size);
    for (const [name, ref] of a) assert.ok(Buffer.from(readStored(ref).bytes).equals(Buffer.from(readStored(b.get(name) as TensorRef).bytes)), name);
  }));

  it('a bad --shard-size: exit 2, what was expected, nothing written', () => withDir('cli-bad-size', (dir) => {
    const out = path.join(dir, 'out');
    for (const bad of ['0', 'big', '2XB', '0.5']) {
      const r = runCli(['convert', '--model', shared('golden', 'llama-tiny'), '--out', out, '--shard-size', bad]);
      assert.equal(r.status, 2, r.stderr);
      assert.match(r.stderr, /--shard-size .*expected a size such as 2GB/);
      assert.deepEqual(fs.readdirSync(dir), []);
    }
  }));
});
