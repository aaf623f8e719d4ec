/**
 * Hugging Face checkpoint directories: `config.json` plus `model.safetensors` or sharded
 * `*.safetensors` with `model.safetensors.index.json`.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { ModelConfig } from '../model/config.ts';
import { familySpec } from '../model/family.ts';
import { CheckpointError } from '../util/errors.ts';
import { parseHfConfig, serializeHfConfig } from './hf-config.ts';
import { readSafetensorsHeader } from './safetensors.ts';
import { INDEX_FILE, SINGLE_FILE, ShardedSafetensorsWriter, type WritableTensor } from './safetensors-writer.ts';
import { readAllF32, type TensorRefs } from './stored-tensor.ts';
import type { NamedTensors } from '../model/tensor-data.ts';
import { toHalfSplitLayout } from './rope-layout.ts';

export { INDEX_FILE };

export function readConfigJson(dir: string): Record<string, unknown> {
  const file = path.join(dir, 'config.json');
  if (!fs.existsSync(file)) throw new CheckpointError('config.json not found in the model directory', dir);
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  } catch (e) {
    throw new CheckpointError(`not valid JSON (${(e as Error).message})`, file);
  }
}

/** The shard index's `weight_map` (tensor name → shard file), or null for a single-file checkpoint. */
function readShardIndex(dir: string): Record<string, string> | null {
  const index = path.join(dir, INDEX_FILE);
  if (!fs.existsSync(index)) return null;
  let map: unknown;
  try {
    map = (JSON.parse(fs.readFileSync(index, 'utf8')) as { weight_map?: unknown }).weight_map;
  } catch (e) {
    throw new CheckpointError(`not a valid shard index (${(e as Error).message})`, index);
  }
  if (!map || typeof map !== 'object' || Array.isArray(map) || !Object.values(map).every((v) => typeof v === 'string')) {
    throw new CheckpointError("no 'weight_map' of tensor names to shard files in the shard index", index);
  }
  return map as Record<string, string>;
}

/** The weight files of a checkpoint directory, validated against the shard index if any. */
export function weightFiles(dir: string): string[] {
  const map = readShardIndex(dir);
  if (map) {
    const shards = [...new Set(Object.values(map))].sort();
    for (const s of shards) {
      if (!fs.existsSync(path.join(dir, s))) throw new CheckpointError(`missing shard '${s}' listed in ${INDEX_FILE}: the checkpoint is incomplete (download the shard again, or fix the index's weight_map)`, dir);
    }
    return shards.map((s) => path.join(dir, s));
  }
  const single = path.join(dir, SINGLE_FILE);
  if (fs.existsSync(single)) return [single];
  throw new CheckpointError('no model.safetensors or model.safetensors.index.json (PyTorch .bin weights are not supported)', dir);
}

/** Reject weights with NaN/Inf: pruning statistics would silently become garbage. */
export function nonFiniteError(name: string, value: number, index: number, source: string): CheckpointError {
  return new CheckpointError(`tensor '${name}' contains a non-finite value (${value}) at flat index ${index}`, source);
}

export function assertFinite(tensors: NamedTensors, source: string): void {
  for (const [name, t] of tensors) {
    for (let i = 0; i < t.data.length; i++) {
      if (!Number.isFinite(t.data[i])) throw nonFiniteError(name, t.data[i]!, i, source);
    }
  }
}

/** OPT checkpoints saved from `OPTModel` lack the `model.` prefix; normalise it. */
function normaliseName(name: string): string {
  return name.startsWith('decoder.') ? `model.${name}` : name;
}

/**
 * Open an HF checkpoint directory without reading any weight: config.json, the shard index and
 * every shard's header. No tensor may be stored twice, and every tensor the index lists must be
 * in the shard it names.
 */
export function openHfCheckpoint(dir: string): { config: ModelConfig; tensors: TensorRefs } {
  const config = parseHfConfig(readConfigJson(dir), path.join(dir, 'config.json'));
  const tensors: TensorRefs = new Map();
  for (const file of weightFiles(dir)) {
    for (const [name, ref] of readSafetensorsHeader(file).tensors) {
      const norm = normaliseName(name);
      const other = tensors.get(norm);
      if (other) {
        throw new CheckpointError(`tensor '${name}' is stored twice, in ${path.basename(other.file)} and ${path.basename(file)}`, dir);
      }
      tensors.set(norm, ref);
    }
  }
  const map = readShardIndex(dir);
  if (map) {
    for (const [name, shard] of Object.entries(map)) {
      const ref = tensors.get(normaliseName(name));
      if (!ref || path.resolve(ref.file) !== path.resolve(dir, shard)) {
        throw new CheckpointError(`tensor '${name}' listed in ${INDEX_FILE} is not in shard '${shard}': the index and the shards disagree (download the checkpoint again, or fix the index's weight_map)`, dir);
      }
    }
  }
  return { config, tensors };
}

/** Read a whole HF checkpoint as fp32 (every tensor checked finite). */
export function readHfCheckpoint(dir: string): { config: ModelConfig; tensors: NamedTensors } {
  const { config, tensors: refs } = openHfCheckpoint(dir);
  const tensors = readAllF32(refs);
  assertFinite(tensors, dir);
  return { config, tensors };
}

/** Weight dtypes a checkpoint can be written in (`--dtype`). */
export const WEIGHT_DTYPES = ['f32', 'f16', 'bf16'] as const;
export type WeightDtype = (typeof WEIGHT_DTYPES)[number];
const STORED: Record<WeightDtype, 'F32' | 'F16' | 'BF16'> = { f32: 'F32', f16: 'F16', bf16: 'BF16' };
const TORCH_DTYPE: Record<WeightDtype, string> = { f32: 'float32', f16: 'float16', bf16: 'bfloat16' };

/** HF's usual shard limit is a decimal size too ("5GB"); PruneLab's default is 2 GB. */
export const DEFAULT_SHARD_BYTES = 2e9;

export interface CheckpointFormat {
  dtype: WeightDtype;
  /** Most bytes of tensor data per shard; everything in one `model.safetensors` when it fits. */
  shardBytes: number;
}

const DEFAULT_FORMAT: CheckpointFormat = { dtype: 'f32', shardBytes: DEFAULT_SHARD_BYTES };

/** A tensor the checkpoint will hold, in the order shards are filled (the model's order). */
export interface TensorEntry {
  name: string;
  shape: readonly number[];
}

/** The dtype a checkpoint's floating-point weights are stored in: the one dtype they share, else F32's. */
export function storedWeightDtype(refs: TensorRefs): WeightDtype {
  const seen = new Set<string>();
  for (const ref of refs.values()) if (ref.dtype !== 'U8') seen.add(ref.dtype);
  if (seen.size !== 1) return 'f32';
  const only = [...seen][0];
  return only === 'BF16' ? 'bf16' : only === 'F16' ? 'f16' : 'f32';
}

/** Old weight files in `dir`: a stale index or shard set would shadow or mix with the new one. */
function removeOldWeights(dir: string): void {
  for (const f of fs.readdirSync(dir)) {
    if (f === INDEX_FILE || f === SINGLE_FILE || /^model-\d{5}-of-\d{5}\.safetensors$/.test(f)) fs.rmSync(path.join(dir, f), { force: true });
  }
}

/** A checkpoint being written: `put` each tensor of its entries once (any order), then `finish`. */
interface HfCheckpointSink {
  put(name: string, t: WritableTensor): void;
  /** Returns the weight files written (and the index if any). */
  finish(): string[];
  abandon(): void;
}

/**
 * Start writing an HF checkpoint directory: config.json now, the weight files laid out from
 * `entries` (plus padding biases), ready for the tensors. LLaMA linears that gained a bias
 * (FLAP's compensation) get zero biases on their siblings, because HF's `attention_bias` /
 * `mlp_bias` switch all projections of a module at once.
 */
function beginHfCheckpoint(dir: string, config: ModelConfig, entries: readonly TensorEntry[], format: CheckpointFormat): HfCheckpointSink {
  const spec = familySpec(config.family);
  const present = new Set(entries.map((e) => e.name));
  const padding: TensorEntry[] = [];
  const biases = { attention: false, mlp: false };
  // Only LlamaConfig has these switches; Qwen2 carries q/k/v biases natively.
  if (config.family === 'llama' && config.hfConfig['model_type'] === 'llama') {
    for (const module of ['attn', 'mlp'] as const) {
      const linears = spec.linears.filter((l) => l.module === module);
      const anyBias = config.layers.some((_, i) => linears.some((l) => present.has(`${l.hfName(i)}.bias`)));
      if (!anyBias) continue;
      biases[module === 'attn' ? 'attention' : 'mlp'] = true;
      config.layers.forEach((shape, i) => {
        for (const l of linears) {
          const name = `${l.hfName(i)}.bias`;
          if (!present.has(name)) padding.push({ name, shape: [l.outDim(shape, config)] });
        }
      });
    }
  }
  fs.mkdirSync(dir, { recursive: true });
  const hf = serializeHfConfig(config, TORCH_DTYPE[format.dtype], biases);
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(hf, null, 2) + '\n');
  removeOldWeights(dir);
  const dtype = STORED[format.dtype];
  const writer = new ShardedSafetensorsWriter(dir, [...entries, ...padding].map((e) => ({ name: e.name, shape: e.shape, dtype })), format.shardBytes);
  return {
    put: (name, t) => writer.put(name, t),
    finish: () => {
      for (const p of padding) writer.put(p.name, { shape: p.shape.slice(), data: new Float32Array(p.shape[0]) });
      return writer.finish();
    },
    abandon: () => writer.abandon(),
  };
}

/**
 * Write a checkpoint directory, always in the HF half-split RoPE layout so standard tools load it
 * (F32 by default; sharded when the weights exceed the shard size).
 */
export function writeHfCheckpoint(dir: string, config: ModelConfig, tensors: NamedTensors, format: Partial<CheckpointFormat> = {}): string[] {
  const half = toHalfSplitLayout(config, tensors);
  const sink = beginHfCheckpoint(dir, half.config, [...half.tensors].map(([name, t]) => ({ name, shape: t.shape })), { ...DEFAULT_FORMAT, ...format });
  try {
    for (const [name, t] of half.tensors) sink.put(name, t);
  } catch (e) {
    sink.abandon();
    throw e;
  }
  return sink.finish();
}

/**
 * Write a checkpoint from tensors that arrive one at a time (a model streamed layer by layer, or
 * another checkpoint read tensor by tensor): `entries` lists them all up front, in model order,
 * and `source` yields each once, in any order. `config` must already be in the half-split layout.
 */
export async function writeHfCheckpointFrom(dir: string, config: ModelConfig, entries: readonly TensorEntry[],
  source: AsyncIterable<readonly [string, WritableTensor]>, format: Partial<CheckpointFormat> = {}): Promise<string[]> {
  if (config.family === 'llama' && config.ropeLayout !== 'half') throw new Error('writeHfCheckpointFrom: the config must be in the half-split RoPE layout');
  const sink = beginHfCheckpoint(dir, config, entries, { ...DEFAULT_FORMAT, ...format });
  try {
    for await (const [name, t] of source) sink.put(name, t);
  } catch (e) {
    sink.abandon();
    throw e;
  }
  return sink.finish();
}
