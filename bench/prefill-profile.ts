/**
 * Where a prefill's time goes on the active backend: `tf.profile` of one prefill forward (with a
 * KV cache, as `eval speed` runs it), kernel times grouped into matMuls of the projections,
 * attention, elementwise work and the rest, against the whole forward's wall time (the gap is
 * per-call overhead outside the kernels: dispatch, tidy, allocation). The GEMM peak is the best
 * plain 2-D matMul of the same backend. Shares are of the profiled run's wall time; the
 * throughput is per CPU-second (the process's CPU time), which a loaded machine distorts less.
 *
 *   node --import tsx bench/prefill-profile.ts [--model smollm|stories|synth] [--tokens N] [--batch B] [--layers L] [--kernels]
 */
import * as tf from '@tensorflow/tfjs';
import path from 'node:path';
import { initBackend } from '../src/backend/index.ts';
import { loadModel } from '../src/io/load-model.ts';
import type { CausalLM } from '../src/model/causal-lm.ts';
import { buildSyntheticLlama } from '../src/model/synthetic.ts';
import { sharedDataDir } from '../src/util/paths.ts';
import { SMOLLM_135M_SHAPE } from './torch/section.ts';
import { table, time } from './util.ts';

const argv = process.argv.slice(2);
const arg = (name: string, dflt: string) => (argv.includes(name) ? argv[argv.indexOf(name) + 1]! : dflt);
const which = arg('--model', 'smollm');
const tokens = Number(arg('--tokens', which === 'smollm' ? '512' : '128'));
const layers = Number(arg('--layers', '0'));
const batch = Number(arg('--batch', '1'));

function model(): CausalLM {
  if (which === 'stories') return loadModel(path.join(sharedDataDir(), 'models/stories260K/stories260K.bin')).model;
  if (which === 'synth') return buildSyntheticLlama({ hidden: 512, layers: layers || 8, heads: 8, kvHeads: 4, ffn: 1408, vocab: 512, seed: 1 });
  return buildSyntheticLlama({ ...SMOLLM_135M_SHAPE, layers: layers || SMOLLM_135M_SHAPE.layers });
}

/** Kernel → the part of the block it belongs to (by name and by the shapes it ran on). */
function category(k: { name: string; inputShapes: number[][] }, m: CausalLM): string {
  const c = m.config;
  if (k.name === 'BatchMatMul' || k.name === '_FusedMatMul') {
    const [a, b] = k.inputShapes;
    const inner = a?.[1];
    const out = b?.[1];
    if (out === c.vocabSize || a?.[0] === c.vocabSize) return 'matMul: head';
    const widths = new Set([c.hiddenSize, c.layers[0]!.intermediateSize, c.layers[0]!.numHeads * c.headDim, c.layers[0]!.numKvHeads * c.headDim]);
    if (widths.has(inner ?? -1) && widths.has(out ?? -1) && b?.[0] === inner && (a?.[0] ?? 0) >= tokens * batch) return 'matMul: projections';
    return 'matMul: attention';
  }
  if (['Softmax', 'Max', 'Exp', 'Sum', 'Sub'].includes(k.name)) return 'attention softmax';
  if (['Transpose', 'Slice', 'Concat', 'Reshape', 'GatherV2', 'Identity'].includes(k.name)) return 'layout (transpose/slice/concat/gather)';
  return 'elementwise (norm, SiLU, RoPE, residual, mask)';
}

async function main(): Promise<void> {
  await initBackend('wasm', true);
  const m = model();
  const ids = Array.from({ length: batch }, (_, b) => Array.from({ length: tokens }, (_, t) => 3 + ((b * 131 + t * 17) % (m.config.vocabSize - 3))));
  const prefill = () => {
    const cache = m.newCache();
    tf.tidy(() => { m.forward(ids, cache).dataSync(); });
    tf.dispose([...cache.k, ...cache.v].filter((t): t is tf.Tensor3D => t !== null));
  };
  // CPU time (one busy thread) is what a shared, loaded machine lets us measure reliably.
  const cpuMs = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1000; };
  prefill();
  const cpu: number[] = [];
  for (let r = 0; r < 3; r++) { const c0 = cpuMs(); prefill(); cpu.push(cpuMs() - c0); }
  const cpuMedian = [...cpu].sort((a, b) => a - b)[1]!;
  const t0 = performance.now();
  const info = await tf.profile(prefill);
  const wallMs = performance.now() - t0;
  const byCat = new Map<string, { ms: number; calls: number; flops: number }>();
  let kernelMs = 0;
  for (const k of info.kernels) {
    const ms = Number(k.kernelTimeMs) || 0;
    kernelMs += ms;
    const cat = category(k, m);
    const e = byCat.get(cat) ?? { ms: 0, calls: 0, flops: 0 };
    e.ms += ms;
    e.calls++;
    if (k.name === 'BatchMatMul' || k.name === '_FusedMatMul') {
      const [a, b] = k.inputShapes;
      e.flops += 2 * (a![0]! * a![1]! * b![1]!);
    }
    byCat.set(cat, e);
  }
  const peak = Math.max(...[512, 1024].map((n) => {
    const a = tf.randomNormal([n, n]);
    const b = tf.randomNormal([n, n]);
    const ms = time(() => tf.tidy(() => { tf.matMul(a, b).dataSync(); }), 3);
    tf.dispose([a, b]);
    return (2 * n ** 3) / (ms * 1e6);
  }));
  const rows = [...byCat.entries()].sort((x, y) => y[1].ms - x[1].ms).map(([cat, e]) => [
    cat, e.calls, e.ms, `${((100 * e.ms) / wallMs).toFixed(1)}%`, e.flops ? e.flops / (e.ms * 1e6) : NaN,
  ]);
  rows.push(['per-call overhead (wall − kernels)', '', wallMs - kernelMs, `${((100 * (wallMs - kernelMs)) / wallMs).toFixed(1)}%`, NaN]);
  console.log(`${which}: prefill ${batch} × ${tokens} tokens, ${m.numLayers} layers: ${cpuMedian.toFixed(1)} CPU-ms (${((batch * tokens) / (cpuMedian / 1000)).toFixed(1)} tokens per CPU-second, median of 3); profiled run ${wallMs.toFixed(1)} ms wall, ${info.kernels.length} kernel calls; wasm GEMM peak (square 512/1024 matMul) ${peak.toFixed(1)} GFLOP/s`);
  console.log(table(['part', 'calls', 'ms', '% of wall', 'GFLOP/s'], rows));
  if (argv.includes('--kernels')) {
    const byName = new Map<string, { ms: number; calls: number }>();
    for (const k of info.kernels) {
      const e = byName.get(k.name) ?? { ms: 0, calls: 0 };
      e.ms += Number(k.kernelTimeMs) || 0;
      e.calls++;
      byName.set(k.name, e);
    }
    console.log(table(['kernel', 'calls', 'ms', '% of wall'], [...byName.entries()].sort((x, y) => y[1].ms - x[1].ms)
      .map(([n, e]) => [n, e.calls, e.ms, `${((100 * e.ms) / wallMs).toFixed(1)}%`])));
  }
  m.dispose();
}

await main();
