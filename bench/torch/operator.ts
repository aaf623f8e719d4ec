/**
 * One SparseGPT operator for the side-by-side benchmark: seeded data written to a safetensors
 * file both sides read, and PruneLab's solve through the sparsegpt plug-in.
 */
import * as tf from '@tensorflow/tfjs';
import { writeSafetensors } from '../../src/io/safetensors.ts';
import { buildSyntheticLlama } from '../../src/model/synthetic.ts';
import { modelView } from '../../src/model/view.ts';
import type { OperatorContext } from '../../src/prune/method.ts';
import { backendLinAlg } from '../../src/linalg/backend.ts';
import { parseMethodOptions, resolveMethod } from '../../src/prune/registry.ts';
import { gaussian } from '../../src/util/random.ts';

/** A weight `[rows, cols]` (HF `[out, in]`) and `tokens` calibration inputs of width cols. */
export interface OpCase {
  rows: number;
  cols: number;
  tokens: number;
}

export interface OpData {
  W: Float32Array;
  X: Float32Array;
}

export interface SolveTimes {
  /** Seconds for H = XᵀX from the calibration inputs. */
  hessianS: number;
  /** Seconds for the solve: damping, the inverse-Hessian factor and the OBS sweep. */
  solveS: number;
}

/** Seeded weights (std 0.02) and inputs whose per-column scales spread over ~2 decades, as activations do. */
export function operatorData(c: OpCase, seed: number): OpData {
  const g = gaussian(seed);
  const W = new Float32Array(c.rows * c.cols);
  for (let i = 0; i < W.length; i++) W[i] = 0.02 * g();
  const scale = Float64Array.from({ length: c.cols }, () => Math.exp(1.2 * g()));
  const X = new Float32Array(c.tokens * c.cols);
  for (let i = 0; i < X.length; i++) X[i] = scale[i % c.cols] * g();
  return { W, X };
}

/** The file `server.py`'s `sparsegpt` command reads: tensors `weight` and `x`. */
export function writeOperator(file: string, c: OpCase, d: OpData): void {
  writeSafetensors(file, new Map([['weight', { shape: [c.rows, c.cols], data: d.W }], ['x', { shape: [c.tokens, c.cols], data: d.X }]]));
}

/**
 * PruneLab's SparseGPT on one operator: the Gram matrix on the active backend (as the engine's
 * statistics compute it), then the sparsegpt plug-in's `pruneOperators`, timed separately.
 */
export async function prunelabSparsegpt(c: OpCase, d: OpData, sparsity: number): Promise<SolveTimes & { weight: Float32Array; loss: number }> {
  const method = await resolveMethod('sparsegpt');
  if (method.kind !== 'layerwise') throw new Error('sparsegpt is expected to be a layer-wise method');
  const t0 = performance.now();
  let gram = new Float64Array(0);
  tf.tidy(() => {
    const x = tf.tensor2d(d.X, [c.tokens, c.cols]);
    gram = Float64Array.from(tf.matMul(tf.transpose(x), x).dataSync());
  });
  const t1 = performance.now();
  // The plug-in reads no model field; any view satisfies the contract.
  const tiny = buildSyntheticLlama({ hidden: 8, layers: 1, heads: 2, kvHeads: 1, ffn: 8, vocab: 8, seed: 0 });
  const view = modelView(tiny);
  tiny.dispose();
  const ctx: OperatorContext<unknown> = {
    model: view, options: parseMethodOptions(method, {}), target: { sparsity, pattern: { kind: 'unstructured' } },
    log: () => {}, layer: 0, state: undefined, linalg: backendLinAlg(),
    operators: [{ role: 'gate', weight: d.W, rows: c.rows, cols: c.cols, input: 'mlpIn' }],
    stats: { mlpIn: { tokens: c.tokens, inDim: c.cols, gram } },
  };
  const t2 = performance.now();
  const [dec] = await method.pruneOperators(ctx);
  const t3 = performance.now();
  const weight = dec.weight ?? d.W.map((w, i) => (dec.mask[i] ? w : 0));
  return { hessianS: (t1 - t0) / 1000, solveS: (t3 - t2) / 1000, weight, loss: Number(dec.info?.loss ?? NaN) };
}
