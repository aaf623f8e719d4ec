/** Helpers shared by the benchmark sections: timing, the GEMM probe and Markdown tables. */
import * as tf from '@tensorflow/tfjs';
import { median } from '../src/eval/speed.ts';
import type { SyntheticLlamaOptions } from '../src/model/synthetic.ts';

/** The benchmarks' synthetic 512×8 LLaMA (solvers, threads, profiles, gpu-check): products and statistics of real size in seconds. */
export const SYNTHETIC_512X8: SyntheticLlamaOptions = { hidden: 512, layers: 8, heads: 8, kvHeads: 4, ffn: 1408, vocab: 512, seed: 1 };

/** Median milliseconds of `repeats` calls after one unmeasured warm-up call. */
export function time(fn: () => void, repeats: number): number {
  fn();
  const ms: number[] = [];
  for (let i = 0; i < repeats; i++) {
    const t0 = performance.now();
    fn();
    ms.push(performance.now() - t0);
  }
  return median(ms);
}

export type Cell = string | number;

/** A Markdown table; numbers get 3 significant digits (integers from 100 up). */
export function table(headers: string[], rows: Cell[][]): string {
  const fmt = (v: Cell) => (typeof v === 'number' ? (Number.isNaN(v) ? '–' : Math.abs(v) >= 100 ? v.toFixed(0) : v.toPrecision(3)) : v);
  return [`| ${headers.join(' | ')} |`, `|${headers.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.map(fmt).join(' | ')} |`)].join('\n');
}

/** fp32 n×n matMul GFLOP/s on the active TensorFlow.js backend (median of `repeats`). */
export function matmulGflops(n: number, repeats: number): number {
  const a = tf.randomNormal([n, n]);
  const b = tf.randomNormal([n, n]);
  // The callback returns nothing: tidy would otherwise walk a returned typed array element by element.
  const ms = time(() => tf.tidy(() => { tf.matMul(a, b).dataSync(); }), repeats);
  tf.dispose([a, b]);
  return (2 * n ** 3) / (ms * 1e6);
}
