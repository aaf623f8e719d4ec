/**
 * What `inspect` reports, from config and headers alone: parameter counts (the same as a loaded
 * model's) and how the weights are stored. Reads no weight except LLaMA bias vectors, to tell
 * real biases from the all-zero padding HF's module-wide switches force (tiny vectors).
 */
import fs from 'node:fs';
import { countParametersOf, type ParameterCount } from '../model/count.ts';
import { familySpec, linearSpec, type LinearRole } from '../model/family.ts';
import { isPaddingBias } from '../model/params.ts';
import type { Checkpoint } from './load-model.ts';
import { readF32, type StoredDtype } from './stored-tensor.ts';
import { numel } from '../model/tensor-data.ts';

export interface StorageSummary {
  files: number;
  /** Total size of the weight files. */
  bytes: number;
  /** Elements stored in each dtype. */
  dtypes: Partial<Record<StoredDtype, number>>;
}

export function checkpointParameters(ckpt: Checkpoint): ParameterCount {
  const { config, tensors } = ckpt;
  const spec = familySpec(config.family);
  const hasBias = (layer: number, role: LinearRole): boolean => {
    const ref = tensors.get(`${linearSpec(config.family, role).hfName(layer)}.bias`);
    return !!ref && !isPaddingBias(config, readF32(ref));
  };
  const positions = spec.positionsName ? tensors.get(spec.positionsName) : undefined;
  return countParametersOf(config, hasBias, positions ? positions.shape[0] : null);
}

export function checkpointStorage(ckpt: Checkpoint): StorageSummary {
  const files = new Set<string>();
  const dtypes: Partial<Record<StoredDtype, number>> = {};
  for (const ref of ckpt.tensors.values()) {
    files.add(ref.file);
    dtypes[ref.dtype] = (dtypes[ref.dtype] ?? 0) + numel(ref.shape);
  }
  const bytes = [...files].reduce((a, f) => a + fs.statSync(f).size, 0);
  return { files: files.size, bytes, dtypes };
}
