/**
 * Checkpoints over 2 GiB without writing gigabytes: a TinyLlama-1.1B-shaped bf16 checkpoint
 * (hidden 2048, 22 layers, 32/4 heads, FFN 5632, vocab 32000: 2.2 GB) as a SPARSE file — header,
 * `ftruncate`, and a few real values written beyond the 2 GiB offset. Its header and the tensors
 * beyond 2 GiB read correctly, `inspect` reads headers only (seconds), and loading it onto the
 * WebAssembly backend (4.4 GB of fp32) fails up front with a clear memory error, exit code 2.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { setupBackend, tmpDir } from './support.ts';
import { runCli } from './cli-support.ts';
import { readSafetensorsHeader } from '../src/io/safetensors.ts';
import { readF32, type TensorRef } from '../src/io/stored-tensor.ts';
import { chooseMode, loadModel, openCheckpoint } from '../src/io/load-model.ts';
import { checkpointParameters } from '../src/io/checkpoint-summary.ts';
import { assertLoadFits, setDeviceMemory, WASM_HEAP_BYTES } from '../src/backend/memory.ts';
import { ResourceError } from '../src/util/errors.ts';

const TWO_GIB = 2 ** 31;
const [D, L, H, KV, F, V] = [2048, 22, 32, 4, 5632, 32000];
const KV_DIM = (D / H) * KV;
/** TinyLlama-1.1B's count, by hand: 2 × 32000 × 2048 + 22 × (2 × 2048² + 2 × 2048 × 256 + 3 × 2048 × 5632 + 2 × 2048) + 2048. */
const TOTAL = 1_100_048_384;
const DECODER_LINEARS = 22 * (2 * D * D + 2 * D * KV_DIM + 3 * D * F);

/** bf16 bits of a value exactly representable in bf16 (so truncation is exact). */
function bf16(v: number): number {
  return new Uint32Array(new Float32Array([v]).buffer)[0] >>> 16;
}

/** Names and HF shapes of a TinyLlama-shaped checkpoint, written out by hand. */
function tinyLlamaTensors(): [string, number[]][] {
  const t: [string, number[]][] = [['model.embed_tokens.weight', [V, D]], ['lm_head.weight', [V, D]], ['model.norm.weight', [D]]];
  for (let i = 0; i < L; i++) {
    const p = `model.layers.${i}`;
    t.push([`${p}.self_attn.q_proj.weight`, [D, D]], [`${p}.self_attn.k_proj.weight`, [KV_DIM, D]],
      [`${p}.self_attn.v_proj.weight`, [KV_DIM, D]], [`${p}.self_attn.o_proj.weight`, [D, D]],
      [`${p}.mlp.gate_proj.weight`, [F, D]], [`${p}.mlp.up_proj.weight`, [F, D]], [`${p}.mlp.down_proj.weight`, [D, F]],
      [`${p}.input_layernorm.weight`, [D]], [`${p}.post_attention_layernorm.weight`, [D]]);
  }
  return t.sort((a, b) => (a[0] < b[0] ? -1 : 1));
}

interface Sparse {
  dir: string;
  file: string;
  size: number;
  /** Absolute byte ranges of each tensor, as this writer laid them out. */
  ranges: Map<string, { begin: number; end: number }>;
  /** Values written for real, by tensor: flat index → value. */
  written: Map<string, Map<number, number>>;
}

/** One sparse safetensors file holding `tensors` in this order (zeros but for what `fill` writes). */
function writeSparseFile(file: string, tensors: [string, number[]][], fill: (put: (name: string, index: number, value: number) => void,
  ranges: Map<string, { begin: number; end: number }>) => void = () => {}): { size: number; ranges: Map<string, { begin: number; end: number }> } {
  const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
  const rel = new Map<string, [number, number]>();
  let off = 0;
  for (const [name, shape] of tensors) {
    const bytes = 2 * shape.reduce((a, b) => a * b, 1);
    header[name] = { dtype: 'BF16', shape, data_offsets: [off, off + bytes] };
    rel.set(name, [off, off + bytes]);
    off += bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const dataStart = 8 + json.length;
  const ranges = new Map([...rel].map(([n, [b, e]]) => [n, { begin: dataStart + b, end: dataStart + e }]));
  const fd = fs.openSync(file, 'w');
  try {
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    fs.writeSync(fd, len, 0, 8, 0);
    fs.writeSync(fd, Buffer.from(json), 0, json.length, 8);
    fs.ftruncateSync(fd, dataStart + off);
    fill((name, index, value) => {
      const b = Buffer.alloc(2);
      b.writeUInt16LE(bf16(value));
      fs.writeSync(fd, b, 0, 2, (ranges.get(name) as { begin: number }).begin + 2 * index);
    }, ranges);
  } finally {
    fs.closeSync(fd);
  }
  return { size: dataStart + off, ranges };
}

/** A checkpoint folder with the TinyLlama config.json. */
function tinyLlamaDir(): string {
  const dir = tmpDir('tinyllama-sparse');
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({
    architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: D, intermediate_size: F,
    num_hidden_layers: L, num_attention_heads: H, num_key_value_heads: KV, vocab_size: V,
    max_position_embeddings: 2048, rms_norm_eps: 1e-5, rope_theta: 10000, tie_word_embeddings: false,
    hidden_act: 'silu', torch_dtype: 'bfloat16', bos_token_id: 1, eos_token_id: 2,
  }));
  return dir;
}

/** The weights in `shards` sparse files with `model.safetensors.index.json`; returns the folder. */
function writeShardedSparseTinyLlama(shards: number): string {
  const dir = tinyLlamaDir();
  const all = tinyLlamaTensors();
  const per = Math.ceil(all.length / shards);
  const weightMap: Record<string, string> = {};
  for (let k = 0; k < shards; k++) {
    const name = `model-${String(k + 1).padStart(5, '0')}-of-${String(shards).padStart(5, '0')}.safetensors`;
    const part = all.slice(k * per, (k + 1) * per);
    writeSparseFile(path.join(dir, name), part);
    for (const [t] of part) weightMap[t] = name;
  }
  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
  return dir;
}

/** The weights in one sparse 2.2 GB file, with real values written beyond (and across) 2 GiB. */
function writeSparseTinyLlama(): Sparse {
  const dir = tinyLlamaDir();
  const all = tinyLlamaTensors();
  const written = new Map<string, Map<number, number>>();
  const file = path.join(dir, 'model.safetensors');
  const { size, ranges } = writeSparseFile(file, all, (write, r) => {
    const put = (name: string, index: number, value: number) => {
      write(name, index, value);
      if (!written.has(name)) written.set(name, new Map());
      (written.get(name) as Map<number, number>).set(index, value);
    };
    // The tensor that straddles the 2 GiB offset: values on both sides of it.
    const [straddler, s] = [...r].find(([, x]) => x.begin < TWO_GIB && x.end > TWO_GIB) as [string, { begin: number }];
    const at = (TWO_GIB - s.begin) / 2;
    for (let k = -3; k <= 3; k++) put(straddler, at + k, (k + 4) * 0.25);
    // The last tensor in the file, wholly beyond 2 GiB: every value set.
    for (let i = 0; i < D; i++) put('model.norm.weight', i, ((i % 64) - 32) / 4);
    // A large matrix beyond 2 GiB: its first and last values.
    put('model.layers.9.mlp.up_proj.weight', 0, -1.5);
    put('model.layers.9.mlp.up_proj.weight', F * D - 1, 3);
  });
  return { dir, file, size, ranges, written };
}

/** Bytes read through fs.readSync while `fn` runs (the readers all go through it). */
function bytesReadDuring(fn: () => void): number {
  const original = fs.readSync;
  let total = 0;
  (fs as { readSync: typeof fs.readSync }).readSync = ((...args: Parameters<typeof fs.readSync>) => {
    const n = (original as (...a: unknown[]) => number)(...args);
    total += n;
    return n;
  }) as typeof fs.readSync;
  try {
    fn();
  } finally {
    (fs as { readSync: typeof fs.readSync }).readSync = original;
  }
  return total;
}

describe('a checkpoint over 2 GiB (sparse TinyLlama-1.1B-shaped bf16 file)', () => {
  let ck: Sparse;
  before(async () => {
    await setupBackend();
    ck = writeSparseTinyLlama();
  });
  after(() => {
    if (ck) fs.rmSync(ck.dir, { recursive: true, force: true });
  });

  it('the header reads and validates; sizes and offsets are exact beyond 2 GiB', () => {
    assert.ok(ck.size > TWO_GIB, `file is ${ck.size} bytes`);
    const h = readSafetensorsHeader(ck.file);
    assert.equal(h.size, ck.size);
    assert.equal(h.tensors.size, 3 + 9 * L);
    for (const [name, r] of ck.ranges) {
      const ref = h.tensors.get(name) as TensorRef;
      assert.equal(ref.offset, r.begin, name);
      assert.equal(ref.byteLength, r.end - r.begin, name);
      assert.equal(ref.dtype, 'BF16');
    }
    assert.ok((h.tensors.get('model.norm.weight') as TensorRef).offset > TWO_GIB);
  });

  it('tensors beyond (and across) the 2 GiB offset read their real values', () => {
    const { tensors } = readSafetensorsHeader(ck.file);
    const beyond = [...ck.written.keys()].filter((n) => (ck.ranges.get(n) as { begin: number }).begin > TWO_GIB);
    assert.deepEqual(beyond.sort(), ['model.layers.9.mlp.up_proj.weight', 'model.norm.weight']);
    for (const [name, values] of ck.written) {
      const data = readF32(tensors.get(name) as TensorRef);
      for (const [i, v] of values) assert.equal(data[i], v, `${name}[${i}]`);
      // Everything else is the file's hole: zeros.
      let nonzero = 0;
      for (let i = 0; i < data.length; i++) if (data[i] !== 0 && !values.has(i)) nonzero++;
      assert.equal(nonzero, 0, `${name}: values read where none were written`);
    }
  });

  it('inspect reads headers only: same counts as by hand, well under a megabyte read', () => {
    let counts: ReturnType<typeof checkpointParameters> | undefined;
    const read = bytesReadDuring(() => { counts = checkpointParameters(openCheckpoint(ck.dir)); });
    assert.ok(read < 2 ** 20, `read ${read} bytes`);
    assert.equal(counts?.total, TOTAL);
    assert.equal(counts?.decoderLinears, DECODER_LINEARS);
  });

  it('`prunelab inspect` on the folder succeeds in seconds', () => {
    const t0 = performance.now();
    const r = runCli(['inspect', '--model', ck.dir]);
    const seconds = (performance.now() - t0) / 1000;
    assert.equal(r.status, 0, r.stderr);
    const p = r.json?.parameters as { total: number; decoderLinears: number };
    assert.equal(p.total, TOTAL);
    assert.equal(p.decoderLinears, DECODER_LINEARS);
    assert.deepEqual((r.json?.storage as { dtypes: unknown }).dtypes, { BF16: TOTAL });
    // Process start-up dominates; reading 2.2 GB would take far longer on a CI machine.
    assert.ok(seconds < 30, `inspect took ${seconds.toFixed(1)} s`);
  });

  it('on the wasm backend it is streamed (chosen from headers); a budget below one layer fails up front, before reading any weight', () => {
    // fp32 of 1,100,048,384 parameters plus the 32000 × 2048 embedding's load-time copy (4.34 GiB) is over the wasm budget.
    let mode: string | undefined;
    const chosen = bytesReadDuring(() => { mode = chooseMode(openCheckpoint(ck.dir)); });
    assert.equal(mode, 'streamed');
    assert.ok(chosen < 2 ** 20, `read ${chosen} bytes to choose`);
    let err: unknown;
    setDeviceMemory(2 ** 20);
    const read = bytesReadDuring(() => {
      try {
        loadModel(ck.dir);
      } catch (e) {
        err = e;
      } finally {
        setDeviceMemory(null);
      }
    });
    assert.ok(err instanceof ResourceError, `expected ResourceError, got ${String(err)}`);
    const m = (err as Error).message;
    for (const f of [ck.dir, '1,100,048,384 parameters', 'one decoder layer', '--device-memory', 'WebAssembly heap', '--backend node']) {
      assert.ok(m.includes(f), `message ${JSON.stringify(m)} lacks ${JSON.stringify(f)}`);
    }
    assert.ok(read < 2 ** 20, `read ${read} bytes before failing`);
  });

  it('`prunelab eval ppl --device-memory 1MiB` on it exits 2 with that message and no stack trace', () => {
    const text = path.join(ck.dir, 'text.txt');
    fs.writeFileSync(text, 'Once upon a time.');
    const r = runCli(['eval', 'ppl', '--model', ck.dir, '--text', text, '--seqlen', '8', '--device-memory', '1MiB']);
    assert.equal(r.status, 2, r.stderr);
    assert.equal(r.json?.kind, 'ResourceError');
    assert.match(r.stderr, /does not fit the --device-memory budget of 0\.00 GiB, even streamed/);
    assert.doesNotMatch(r.stderr, /^\s+at /m);
    assert.doesNotMatch(r.stderr, /Aborted/);
  });
});

describe('the same weights in three sparse shards with an index', () => {
  it('inspect counts them from headers; they are streamed, and too small a budget fails up front', async () => {
    await setupBackend();
    const dir = writeShardedSparseTinyLlama(3);
    try {
      let counts: ReturnType<typeof checkpointParameters> | undefined;
      const read = bytesReadDuring(() => { counts = checkpointParameters(openCheckpoint(dir)); });
      assert.ok(read < 2 ** 20, `read ${read} bytes`);
      assert.equal(counts?.total, TOTAL);
      assert.equal(chooseMode(openCheckpoint(dir)), 'streamed');
      setDeviceMemory(2 ** 20);
      try {
        assert.throws(() => loadModel(dir), (e: Error) => e instanceof ResourceError && e.message.includes('one decoder layer'));
      } finally {
        setDeviceMemory(null);
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('memory limits', () => {
  it('wasm: more than the 4 GiB heap is refused; the same need on another backend is not', () => {
    const need = { parameters: 1, backendBytes: WASM_HEAP_BYTES + 1, hostBytes: 0 };
    assert.throws(() => assertLoadFits(need, 'm', 'wasm'), ResourceError);
    assert.doesNotThrow(() => assertLoadFits({ ...need, backendBytes: WASM_HEAP_BYTES }, 'm', 'wasm'));
    assert.doesNotThrow(() => assertLoadFits(need, 'm', 'tensorflow'));
  });

  it('host: more than the machine has is refused, naming both amounts', () => {
    const need = { parameters: 7e9, backendBytes: 0, hostBytes: 2 ** 60 };
    assert.throws(() => assertLoadFits(need, 'm', 'tensorflow'), (e: Error) =>
      e instanceof ResourceError && /needs about \d+\.\d\d GiB of host memory/.test(e.message) && /this machine has \d+\.\d\d GiB/.test(e.message));
  });
});
