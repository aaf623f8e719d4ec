/**
 * One entry point for `--model PATH`: an HF checkpoint directory or a llama2.c `.bin` file.
 * `openCheckpoint` reads headers only (any size, no weights); `loadModel` checks that the model
 * fits, then reads every tensor and puts the model on the backend.
 */
import fs from 'node:fs';
import * as tf from '@tensorflow/tfjs';
import { CausalLM } from '../model/causal-lm.ts';
import type { ModelConfig } from '../model/config.ts';
import { checkTensorShapes, expectedTensors } from '../model/params.ts';
import { assertLoadFits, backendOnHost, type LoadNeed } from '../backend/memory.ts';
import { assertTensorsFitWebGPU } from '../backend/webgpu.ts';
import { CheckpointError } from '../util/errors.ts';
import { openHfCheckpoint, writeHfCheckpoint, assertFinite } from './hf-checkpoint.ts';
import { openLlama2cCheckpoint } from './llama2c.ts';
import { toHalfSplitLayout } from './rope-layout.ts';
import { dequantizePart, openQuantizedPart, type QuantizedPart } from './quantized-checkpoint.ts';
import { readAllF32, refsNumel, type TensorRefs } from './stored-tensor.ts';
import { numel } from '../model/tensor-data.ts';

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

export function loadModel(modelPath: string): LoadedModel {
  const ckpt = openCheckpoint(modelPath);
  // Before any weight is read: a model that cannot fit fails in seconds with what would help.
  assertLoadFits(loadNeed(ckpt), modelPath);
  assertTensorsFitWebGPU(ckpt.tensors, modelPath);
  let config = ckpt.config;
  let tensors = readAllF32(ckpt.tensors);
  assertFinite(tensors, modelPath);
  // Run llama2.c models in the HF layout, so an exported copy computes bit-identical logits.
  if (ckpt.kind === 'llama2c') ({ config, tensors } = toHalfSplitLayout(config, tensors));
  if (ckpt.quantized) ({ config, tensors } = dequantizePart(ckpt.quantized, config, tensors, modelPath));
  return { model: CausalLM.fromNamedTensors(config, tensors, modelPath), path: modelPath, kind: ckpt.kind };
}

/** Save any model as an HF directory (F32 or F16 weights). */
export function saveModel(model: CausalLM, dir: string, dtype: 'f32' | 'f16' = 'f32'): void {
  writeHfCheckpoint(dir, model.config, model.toNamedTensors(), dtype);
}
