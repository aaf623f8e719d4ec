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
import { readSafetensorsHeader, writeSafetensors } from './safetensors.ts';
import { readAllF32, type TensorRefs } from './stored-tensor.ts';
import type { NamedTensors } from '../model/tensor-data.ts';
import { toHalfSplitLayout } from './rope-layout.ts';

export const INDEX_FILE = 'model.safetensors.index.json';

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
      if (!fs.existsSync(path.join(dir, s))) throw new CheckpointError(`missing shard '${s}' listed in ${INDEX_FILE}`, dir);
    }
    return shards.map((s) => path.join(dir, s));
  }
  const single = path.join(dir, 'model.safetensors');
  if (fs.existsSync(single)) return [single];
  throw new CheckpointError('no model.safetensors or model.safetensors.index.json (PyTorch .bin weights are not supported)', dir);
}

/** Reject weights with NaN/Inf: pruning statistics would silently become garbage. */
export function assertFinite(tensors: NamedTensors, source: string): void {
  for (const [name, t] of tensors) {
    for (let i = 0; i < t.data.length; i++) {
      if (!Number.isFinite(t.data[i])) {
        throw new CheckpointError(`tensor '${name}' contains a non-finite value (${t.data[i]}) at flat index ${i}`, source);
      }
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
        throw new CheckpointError(`tensor '${name}' listed in ${INDEX_FILE} is not in shard '${shard}'`, dir);
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

/**
 * Write a checkpoint directory, always in the HF half-split RoPE layout so standard tools load it.
 * LLaMA linears that gained a bias (FLAP's compensation) get zero biases on their siblings,
 * because HF's `attention_bias`/`mlp_bias` switch all projections of a module at once.
 */
export function writeHfCheckpoint(dir: string, config: ModelConfig, tensors: NamedTensors, dtype: 'f32' | 'f16' = 'f32'): void {
  const spec = familySpec(config.family);
  const half = toHalfSplitLayout(config, tensors);
  config = half.config;
  const out: NamedTensors = new Map(half.tensors);
  const biases = { attention: false, mlp: false };
  // Only LlamaConfig has these switches; Qwen2 carries q/k/v biases natively.
  if (config.family === 'llama' && config.hfConfig['model_type'] === 'llama') {
    for (const module of ['attn', 'mlp'] as const) {
      const linears = spec.linears.filter((l) => l.module === module);
      const anyBias = config.layers.some((_, i) => linears.some((l) => out.has(`${l.hfName(i)}.bias`)));
      if (!anyBias) continue;
      biases[module === 'attn' ? 'attention' : 'mlp'] = true;
      config.layers.forEach((shape, i) => {
        for (const l of linears) {
          const name = `${l.hfName(i)}.bias`;
          const dim = l.outDim(shape, config);
          if (!out.has(name)) out.set(name, { shape: [dim], data: new Float32Array(dim) });
        }
      });
    }
  }
  fs.mkdirSync(dir, { recursive: true });
  const hf = serializeHfConfig(config, dtype === 'f16' ? 'float16' : 'float32', biases);
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(hf, null, 2) + '\n');
  // A stale shard index from an earlier save would shadow the new single file.
  fs.rmSync(path.join(dir, INDEX_FILE), { force: true });
  writeSafetensors(path.join(dir, 'model.safetensors'), out, dtype === 'f16' ? 'F16' : 'F32');
}
