/**
 * Random bf16 LLaMA checkpoints of real model shapes for `bench --only scale`, written tensor by
 * tensor with the project's own sharded writer (one tensor in memory at a time) and cached: a
 * folder is reused when its marker file says it was completed with the same shape and layout.
 *
 * Values: uniform in ±0.02·√3 (standard deviation 0.02, LLaMA's initialiser range), norm weights
 * 1, so forward passes stay finite. A pool of random bf16 values is tiled at random offsets: as
 * good as fresh values for timing, and the build runs at disk speed.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseHfConfig } from '../src/io/hf-config.ts';
import { expectedTensors } from '../src/model/params.ts';
import { numel } from '../src/model/tensor-data.ts';
import { f32ToBf16, plannedBytes, ShardedSafetensorsWriter, type PlannedTensor } from '../src/io/safetensors-writer.ts';
import { mulberry32 } from '../src/util/random.ts';
import type { SyntheticLlamaOptions } from '../src/model/synthetic.ts';

/** A real model's shape, in the synthetic model's terms. */
export interface ScaleShape extends Pick<SyntheticLlamaOptions, 'hidden' | 'layers' | 'heads' | 'kvHeads' | 'ffn' | 'vocab'> {
  /** Folder-name stem. */
  name: string;
  label: string;
}

export const TINYLLAMA: ScaleShape = { name: 'tinyllama-1.1b', label: 'TinyLlama-1.1B', hidden: 2048, layers: 22, heads: 32, kvHeads: 4, ffn: 5632, vocab: 32000 };
export const LLAMA2_7B: ScaleShape = { name: 'llama2-7b', label: 'LLaMA-2-7B', hidden: 4096, layers: 32, heads: 32, kvHeads: 32, ffn: 11008, vocab: 32000 };

/** The embedded model's tokenizer (4,096 tokens) serves every shape: a smaller tokenizer than the vocabulary is allowed. */
const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json'].map((f) => path.resolve(import.meta.dirname, '../data/brown-llama', f));

const MARKER = 'bench-complete.json';

export function cacheRoot(): string {
  return process.env.PRUNELAB_BENCH_CACHE ?? path.join(os.tmpdir(), 'prunelab-bench-cache');
}

function hfConfig(s: ScaleShape): Record<string, unknown> {
  return {
    architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: s.hidden, intermediate_size: s.ffn,
    num_hidden_layers: s.layers, num_attention_heads: s.heads, num_key_value_heads: s.kvHeads, vocab_size: s.vocab,
    max_position_embeddings: 2048, rms_norm_eps: 1e-5, rope_theta: 10000, tie_word_embeddings: false,
    hidden_act: 'silu', torch_dtype: 'bfloat16', bos_token_id: 1, eos_token_id: 2,
  };
}

/** The checkpoint's tensors in model order, as bf16. */
export function plannedTensors(s: ScaleShape): PlannedTensor[] {
  const config = parseHfConfig(hfConfig(s), `${s.name}/config.json`);
  return expectedTensors(config).filter((e) => e.required).map((e) => ({ name: e.name, shape: e.shape, dtype: 'BF16' as const }));
}

/** Bytes of tensor data (the files add a header of a few kilobytes each). */
export function checkpointDataBytes(s: ScaleShape): number {
  return plannedTensors(s).reduce((a, t) => a + plannedBytes(t), 0);
}

/** bf16 values of one tensor: pool slices at random offsets, or ones for a norm weight. */
function tensorBytes(t: PlannedTensor, pool: Uint16Array, rand: () => number): Uint8Array {
  const n = numel(t.shape);
  const out = new Uint16Array(n);
  if (t.name.endsWith('norm.weight')) {
    out.fill(f32ToBf16(1));
  } else {
    const slice = 1 << 16;
    for (let i = 0; i < n; i += slice) {
      const len = Math.min(slice, n - i);
      const from = Math.floor(rand() * (pool.length - len));
      out.set(pool.subarray(from, from + len), i);
    }
  }
  return new Uint8Array(out.buffer);
}

function randomPool(seed: number): Uint16Array {
  const rand = mulberry32(seed);
  const pool = new Uint16Array(1 << 22);
  const a = 0.02 * Math.sqrt(3);
  for (let i = 0; i < pool.length; i++) pool[i] = f32ToBf16((2 * rand() - 1) * a);
  return pool;
}

export interface CachedCheckpoint {
  dir: string;
  /** Bytes of the weight files. */
  bytes: number;
  files: number;
  /** Seconds spent building it in this run (0 when reused from the cache). */
  buildSeconds: number;
}

function weightFilesOf(dir: string): { bytes: number; files: number } {
  const files = fs.readdirSync(dir).filter((f) => f.endsWith('.safetensors'));
  return { files: files.length, bytes: files.reduce((a, f) => a + fs.statSync(path.join(dir, f)).size, 0) };
}

function layoutOf(s: ScaleShape, shardBytes: number): { dir: string; spec: string } {
  const layout = Number.isFinite(shardBytes) ? `shards-${(shardBytes / 1e9).toFixed(1)}GB` : 'one-file';
  const spec = JSON.stringify({ shape: s, shardBytes: Number.isFinite(shardBytes) ? shardBytes : 'one file', seed: 1, version: 1 });
  return { dir: path.join(cacheRoot(), `${s.name}-bf16-${layout}`), spec };
}

/** Whether the cache holds this checkpoint complete (built with the same shape and layout). */
export function isCached(s: ScaleShape, shardBytes: number): boolean {
  const { dir, spec } = layoutOf(s, shardBytes);
  const marker = path.join(dir, MARKER);
  return fs.existsSync(marker) && fs.readFileSync(marker, 'utf8') === spec;
}

/**
 * The checkpoint of shape `s` with shards of at most `shardBytes` (Infinity: one file), from the
 * cache or built now (into a temporary sibling folder, renamed when complete).
 */
export function cachedCheckpoint(s: ScaleShape, shardBytes: number, log: (m: string) => void): CachedCheckpoint {
  const { dir, spec } = layoutOf(s, shardBytes);
  if (isCached(s, shardBytes)) return { dir, ...weightFilesOf(dir), buildSeconds: 0 };
  const work = `${dir}.partial-${process.pid}`;
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(work, { recursive: true });
  const t0 = performance.now();
  try {
    fs.writeFileSync(path.join(work, 'config.json'), JSON.stringify(hfConfig(s), null, 2) + '\n');
    for (const f of TOKENIZER_FILES) fs.copyFileSync(f, path.join(work, path.basename(f)));
    const planned = plannedTensors(s);
    const pool = randomPool(1);
    const rand = mulberry32(2);
    const w = new ShardedSafetensorsWriter(work, planned, Number.isFinite(shardBytes) ? shardBytes : Number.MAX_SAFE_INTEGER);
    try {
      planned.forEach((t, k) => {
        w.put(t.name, { dtype: 'BF16', shape: [...t.shape], bytes: tensorBytes(t, pool, rand) });
        if (k % 50 === 0) log(`scale: building ${path.basename(dir)}: tensor ${k + 1}/${planned.length}`);
      });
    } catch (e) {
      w.abandon();
      throw e;
    }
    w.finish();
    fs.writeFileSync(path.join(work, MARKER), spec);
    fs.renameSync(work, dir);
  } catch (e) {
    fs.rmSync(work, { recursive: true, force: true });
    throw e;
  }
  return { dir, ...weightFilesOf(dir), buildSeconds: (performance.now() - t0) / 1000 };
}
