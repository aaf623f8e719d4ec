/**
 * Do PruneLab and the PyTorch reference compute the same thing? Logits of a checkpoint folder on
 * both sides, and SparseGPT's result on one operator, compared element by element.
 */
import * as tf from '@tensorflow/tfjs';
import fs from 'node:fs';
import path from 'node:path';
import { loadModel } from '../../src/io/load-model.ts';
import type { CausalLM } from '../../src/model/causal-lm.ts';
import type { TorchBridge } from './bridge.ts';
import { prunelabSparsegpt, writeOperator, type OpCase, type OpData } from './operator.ts';

export function readF32(file: string): Float32Array {
  const b = fs.readFileSync(file);
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
}

/** max |a − b| / max |b| (Infinity when the lengths differ). */
export function relDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let d = 0;
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    d = Math.max(d, Math.abs(a[i] - b[i]));
    m = Math.max(m, Math.abs(b[i]));
  }
  return d / Math.max(m, 1e-30);
}

/** Logits `[T, vocab]` (flat) of one sequence through a loaded PruneLab model. */
export function modelLogits(model: CausalLM, ids: number[]): Float32Array {
  let out: Float32Array = new Float32Array(0);
  tf.tidy(() => { out = model.forward([ids]).dataSync() as Float32Array; });
  return out;
}

/** PruneLab's logits of a checkpoint folder (loaded and disposed here). */
export function prunelabLogits(dir: string, ids: number[]): Float32Array {
  const { model } = loadModel(dir);
  try {
    return modelLogits(model, ids);
  } finally {
    model.dispose();
  }
}

/** The reference's logits of a model it has loaded under `key`; `tmp` is a scratch folder. */
export async function torchLogits(torch: TorchBridge, key: string, ids: number[], tmp: string): Promise<Float32Array> {
  const file = path.join(tmp, 'logits.f32');
  await torch.request({ cmd: 'logits', key, ids, out: file });
  return readF32(file);
}

export interface SolveParity {
  /** Entries whose keep/prune decision agrees, of `total`. */
  sameMask: number;
  total: number;
  /** ‖W_PruneLab − W_PyTorch‖ / ‖W‖ over the updated weights. */
  relWeight: number;
  /** |loss_PyTorch / loss_PruneLab − 1|. */
  relLoss: number;
  /** Pruned entries on each side. */
  prunedTorch: number;
  prunedPrunelab: number;
}

/** SparseGPT on one operator through both sides, the reference in `dtype`. */
export async function sparsegptParity(torch: TorchBridge, c: OpCase, d: OpData, sparsity: number,
  dtypes: readonly ('float32' | 'float64')[], tmp: string): Promise<SolveParity[]> {
  const file = path.join(tmp, 'parity-operator.safetensors');
  const out = path.join(tmp, 'parity-weight.f32');
  writeOperator(file, c, d);
  const pl = await prunelabSparsegpt(c, d, sparsity);
  const res: SolveParity[] = [];
  for (const dtype of dtypes) {
    const r = await torch.request<{ loss: number; pruned: number }>({ cmd: 'sparsegpt', file, sparsity, dtype, threads: 1, out });
    const pt = readF32(out);
    let same = 0;
    let num = 0;
    let den = 0;
    for (let i = 0; i < pt.length; i++) {
      // Pruned entries are exactly 0 on both sides (a kept weight that is exactly 0 does not occur here).
      if ((pt[i] === 0) === (pl.weight[i] === 0)) same++;
      num += (pt[i] - pl.weight[i]) ** 2;
      den += d.W[i] ** 2;
    }
    res.push({
      sameMask: same, total: pt.length, relWeight: Math.sqrt(num / den), relLoss: Math.abs(r.loss / pl.loss - 1),
      prunedTorch: r.pruned, prunedPrunelab: pl.weight.reduce((n, w) => n + (w === 0 ? 1 : 0), 0),
    });
  }
  fs.rmSync(file, { force: true });
  fs.rmSync(out, { force: true });
  return res;
}
