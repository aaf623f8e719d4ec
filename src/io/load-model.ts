/**
 * One entry point for `--model PATH`: an HF checkpoint directory or a llama2.c `.bin` file.
 * `openCheckpoint` reads headers only (any size, no weights); `loadModel` chooses where the
 * weights live from the backend memory budget — all on the backend (resident) when they fit,
 * else on the host with one layer at a time on the backend (streamed) — checks that this fits,
 * then reads every tensor.
 */
import fs from 'node:fs';
import * as tf from '@tensorflow/tfjs';
import { CausalLM } from '../model/causal-lm.ts';
import type { ModelConfig } from '../model/config.ts';
import { checkTensorShapes, expectedTensors, isPaddingBias } from '../model/params.ts';
import { assertLoadFits, backendOnHost, deviceMemoryBudget, gib, hostMemoryBytes, WASM_HEAP_BYTES as WASM_HEAP_LIMIT, type LoadNeed } from '../backend/memory.ts';
import { CheckpointError, ResourceError } from '../util/errors.ts';
import { openHfCheckpoint, writeHfCheckpoint, assertFinite, nonFiniteError, type CheckpointFormat } from './hf-checkpoint.ts';
import { assertTensorsFitWebGPU } from '../backend/webgpu.ts';
import { openLlama2cCheckpoint } from './llama2c.ts';
import { toHalfSplitLayout } from './rope-layout.ts';
import { dequantizePart, openQuantizedPart, type QuantizedPart } from './quantized-checkpoint.ts';
import { firstNonFinite, readAllF32, readF32, readStored, refsNumel, DTYPE_BYTES, type TensorRefs } from './stored-tensor.ts';
import { numel, type NamedTensors } from '../model/tensor-data.ts';
import { HostStore } from '../model/host-store.ts';
import { StreamedParams, type ExecutionMode } from '../model/param-provider.ts';

export type CheckpointKind = 'hf' | 'llama2c';

export interface LoadedModel {
  model: CausalLM;
  path: string;
  kind: CheckpointKind;
}

/** A checkpoint opened lazily: config and where each tensor lies, shapes checked, nothing read. */
export interface Checkpoint {
  path: string;
  kind: CheckpointKind;
  /** As stored (llama2.c: interleaved RoPE layout). */
  config: ModelConfig;
  tensors: TensorRefs;
  /** The codes of a quantised export (quantized-checkpoint.ts), else null. */
  quantized: QuantizedPart | null;
}

export function checkpointKind(modelPath: string): CheckpointKind {
  if (!fs.existsSync(modelPath)) throw new CheckpointError('model path does not exist', modelPath);
  if (fs.statSync(modelPath).isDirectory()) return 'hf';
  if (modelPath.endsWith('.bin')) return 'llama2c';
  throw new CheckpointError('expected an HF checkpoint directory or a llama2.c .bin file', modelPath);
}

/** Read a checkpoint's config and headers (no weights) and check every tensor shape against the config. */
export function openCheckpoint(modelPath: string): Checkpoint {
  const kind = checkpointKind(modelPath);
  const { config, tensors } = kind === 'hf' ? openHfCheckpoint(modelPath) : openLlama2cCheckpoint(modelPath);
  const quantized = kind === 'hf' ? openQuantizedPart(modelPath, config, tensors) : null;
  checkTensorShapes(config, (name) => quantized?.weights.get(name) ?? tensors.get(name)?.shape, modelPath);
  return { path: modelPath, kind, config, tensors, quantized };
}

/**
 * What loading needs, from headers alone: fp32 of every parameter on the backend (plus the tied
 * head's transposed copy and, transiently, the largest matrix twice while it is transposed) and,
 * on the host, fp32 copies of every tensor read (plus the backend when it lives in host memory).
 */
export function loadNeed(ckpt: Checkpoint, backend: string = tf.getBackend()): LoadNeed {
  const used = new Set(expectedTensors(ckpt.config).map((e) => e.name));
  const parameters = refsNumel(ckpt.tensors, (name) => used.has(name));
  let largest = 0;
  for (const [name, ref] of ckpt.tensors) if (used.has(name) && ref.shape.length === 2) largest = Math.max(largest, numel(ref.shape));
  const tiedHead = ckpt.config.tieWordEmbeddings ? ckpt.config.vocabSize * ckpt.config.hiddenSize : 0;
  const backendBytes = 4 * (parameters + tiedHead + largest);
  const hostBytes = 4 * refsNumel(ckpt.tensors) + (backendOnHost(backend) ? backendBytes : 0);
  return { parameters, backendBytes, hostBytes };
}

/** Layer index of a decoder tensor name (`….layers.N.…`), or null for embeddings, final norm and head. */
function layerOf(name: string): number | null {
  const m = /\.layers\.(\d+)\./.exec(name);
  return m ? Number(m[1]) : null;
}

/**
 * What streaming needs, from headers alone. On the backend (fp32): the largest layer twice (the
 * engine keeps a dense copy of a layer's linears while pruning it) plus its largest matrix once
 * more (transposed on upload), and the larger of the embeddings and the head (a tied head is the
 * embedding transposed: twice). On the host: every weight as stored, plus the backend's working
 * set when it lives in host memory.
 */
export function streamedNeed(ckpt: Checkpoint, backend: string = tf.getBackend()): LoadNeed & { largestLayer: number } {
  const used = new Set(expectedTensors(ckpt.config).map((e) => e.name));
  const perLayer = new Map<number, number>();
  let largestMatrix = 0;
  let stored = 0;
  let outside = 0;
  for (const [name, ref] of ckpt.tensors) {
    if (!used.has(name)) continue;
    const n = numel(ref.shape);
    stored += n * (ref.dtype === 'U8' ? 4 : DTYPE_BYTES[ref.dtype]);
    const layer = layerOf(name);
    if (layer === null) outside += n;
    else perLayer.set(layer, (perLayer.get(layer) ?? 0) + n);
    if (ref.shape.length === 2) largestMatrix = Math.max(largestMatrix, n);
  }
  const largestLayer = Math.max(0, ...perLayer.values());
  const D = ckpt.config.hiddenSize;
  const embed = ckpt.config.vocabSize * D;
  const ends = ckpt.config.tieWordEmbeddings ? 2 * embed : Math.max(embed, outside - embed);
  const backendBytes = 4 * (2 * largestLayer + largestMatrix + ends);
  const parameters = refsNumel(ckpt.tensors, (name) => used.has(name));
  return { parameters, backendBytes, hostBytes: stored + (backendOnHost(backend) ? backendBytes : 0), largestLayer };
}

/** Resident when the weights fit the backend memory budget, else streamed (which must fit it). */
export function chooseMode(ckpt: Checkpoint, backend: string = tf.getBackend()): ExecutionMode {
  const budget = deviceMemoryBudget(backend);
  if (loadNeed(ckpt, backend).backendBytes <= budget.bytes) return 'resident';
  const need = streamedNeed(ckpt, backend);
  const params = need.parameters.toLocaleString('en-US');
  const what = budget.source === 'flag' ? 'the --device-memory budget' : `the ${backend} backend's default budget`;
  if (need.backendBytes > budget.bytes) {
    throw new ResourceError(
      `this model (${params} parameters) does not fit ${what} of ${gib(budget.bytes)}, even streamed: one decoder layer ` +
        `(${need.largestLayer.toLocaleString('en-US')} parameters) with its pruning copy and the embeddings or head need ` +
        `${gib(need.backendBytes)} on the backend. Options: a larger --device-memory (at least ${Math.ceil(need.backendBytes / 2 ** 20)}MiB)` +
        `${backend === 'wasm' ? `, up to the WebAssembly heap's ${gib(WASM_HEAP_LIMIT)}; or --backend node / node-gpu, whose memory is not bounded by that heap` : ''}.`,
      ckpt.path);
  }
  const host = hostMemoryBytes();
  if (need.hostBytes > host) {
    throw new ResourceError(
      `this model (${params} parameters) needs about ${gib(need.hostBytes)} of host memory streamed (its weights as stored` +
        `${backendOnHost(backend) ? `, plus the ${backend} backend's working set of one layer` : ''}), but this machine has ${gib(host)}. ` +
        `Options: a machine with more memory, or a checkpoint stored in bf16/f16 (the host keeps weights in their stored dtype).`,
      ckpt.path);
  }
  return 'streamed';
}

/** Read the weights for streaming: 16-bit checkpoints stay 16-bit on the host; padding biases are dropped. */
function hostStoreOf(ckpt: Checkpoint | null, config: ModelConfig, tensors: NamedTensors | null): HostStore {
  const store = new HostStore();
  const keep = (name: string, data: Float32Array) => !(name.endsWith('.bias') && layerOf(name) !== null && isPaddingBias(config, data));
  if (tensors) {
    for (const [name, t] of tensors) if (keep(name, t.data)) store.putF32(name, t);
    return store;
  }
  if (!ckpt) throw new Error('hostStoreOf: neither a checkpoint nor tensors');
  const used = new Set(expectedTensors(config).map((e) => e.name));
  for (const [name, ref] of ckpt.tensors) {
    if (!used.has(name)) continue;
    if (!name.endsWith('.bias') && (ref.dtype === 'F32' || ref.dtype === 'F16' || ref.dtype === 'BF16')) {
      // Checked once here, then left in the file: read again whenever its layer is uploaded.
      const bad = firstNonFinite(readStored(ref));
      if (bad) throw nonFiniteError(name, bad.value, bad.index, ckpt.path);
      store.putFile(name, ref);
    } else if (ref.dtype === 'F16' || ref.dtype === 'BF16') {
      const bytes = readStored(ref).bytes;
      const halves = new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2);
      const wide = new HostStore();
      wide.putStored(name, ref.shape, ref.dtype, halves);
      const t = wide.get(name)!;
      assertFinite(new Map([[name, t]]), ckpt.path);
      if (keep(name, t.data)) store.putStored(name, ref.shape, ref.dtype, halves);
    } else {
      const t = { shape: ref.shape.slice(), data: readF32(ref) };
      assertFinite(new Map([[name, t]]), ckpt.path);
      if (keep(name, t.data)) store.putF32(name, t);
    }
  }
  return store;
}

export function loadModel(modelPath: string): LoadedModel {
  const ckpt = openCheckpoint(modelPath);
  // Before any weight is read: a model that cannot fit fails in seconds with what would help.
  const mode = chooseMode(ckpt);
  if (mode === 'resident') assertLoadFits(loadNeed(ckpt), modelPath);
  assertTensorsFitWebGPU(ckpt.tensors, modelPath);
  let config = ckpt.config;
  // Streamed 16-bit HF weights are read tensor by tensor in their dtype; everything else through fp32.
  const eager = mode === 'resident' || ckpt.kind === 'llama2c' || ckpt.quantized !== null;
  let tensors: NamedTensors | null = null;
  if (eager) {
    tensors = readAllF32(ckpt.tensors);
    assertFinite(tensors, modelPath);
    // Run llama2.c models in the HF layout, so an exported copy computes bit-identical logits.
    if (ckpt.kind === 'llama2c') ({ config, tensors } = toHalfSplitLayout(config, tensors));
    if (ckpt.quantized) ({ config, tensors } = dequantizePart(ckpt.quantized, config, tensors, modelPath));
  }
  if (mode === 'resident') return { model: CausalLM.fromNamedTensors(config, tensors!, modelPath), path: modelPath, kind: ckpt.kind };
  const model = tensors ? streamedFromNamedTensors(config, tensors, modelPath) : new CausalLM(config, new StreamedParams(config, hostStoreOf(ckpt, config, null)));
  return { model, path: modelPath, kind: ckpt.kind };
}

/** A streamed model from fp32 checkpoint tensors (shapes checked; tensors the model does not use are left out). */
export function streamedFromNamedTensors(config: ModelConfig, tensors: NamedTensors, source: string): CausalLM {
  checkTensorShapes(config, (name) => tensors.get(name)?.shape, source);
  const used = new Set(expectedTensors(config).map((e) => e.name));
  const kept: NamedTensors = new Map([...tensors].filter(([name]) => used.has(name)));
  return new CausalLM(config, new StreamedParams(config, hostStoreOf(null, config, kept)));
}

/** Save any model as an HF directory (F32 by default; sharded beyond the shard size); returns the weight files. */
export function saveModel(model: CausalLM, dir: string, format: Partial<CheckpointFormat> = {}): string[] {
  return writeHfCheckpoint(dir, model.config, model.toNamedTensors(), format);
}
