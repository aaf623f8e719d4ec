/**
 * One entry point for `--model PATH`: an HF checkpoint directory or a llama2.c `.bin` file.
 */
import fs from 'node:fs';
import { CausalLM } from '../model/causal-lm.ts';
import { CheckpointError } from '../util/errors.ts';
import { readHfCheckpoint, writeHfCheckpoint, assertFinite } from './hf-checkpoint.ts';
import { readLlama2cCheckpoint } from './llama2c.ts';
import { toHalfSplitLayout } from './rope-layout.ts';

export type CheckpointKind = 'hf' | 'llama2c';

export interface LoadedModel {
  model: CausalLM;
  path: string;
  kind: CheckpointKind;
}

export function checkpointKind(modelPath: string): CheckpointKind {
  if (!fs.existsSync(modelPath)) throw new CheckpointError('model path does not exist', modelPath);
  if (fs.statSync(modelPath).isDirectory()) return 'hf';
  if (modelPath.endsWith('.bin')) return 'llama2c';
  throw new CheckpointError('expected an HF checkpoint directory or a llama2.c .bin file', modelPath);
}

export function loadModel(modelPath: string): LoadedModel {
  const kind = checkpointKind(modelPath);
  let { config, tensors } = kind === 'hf' ? readHfCheckpoint(modelPath) : readLlama2cCheckpoint(modelPath);
  if (kind === 'llama2c') {
    assertFinite(tensors, modelPath);
    // Run llama2.c models in the HF layout, so an exported copy computes bit-identical logits.
    ({ config, tensors } = toHalfSplitLayout(config, tensors));
  }
  return { model: CausalLM.fromNamedTensors(config, tensors, modelPath), path: modelPath, kind };
}

/** Save any model as an HF directory (F32 or F16 weights). */
export function saveModel(model: CausalLM, dir: string, dtype: 'f32' | 'f16' = 'f32'): void {
  writeHfCheckpoint(dir, model.config, model.toNamedTensors(), dtype);
}
