/**
 * Where a prefill's time goes on the active backend: one prefill forward (with a KV cache, reading
 * back the argmax of the last position, as `eval speed` runs it) with every wasm kernel timed in
 * the process's CPU time (which counts the OpenBLAS pool's threads and not other processes' load),
 * kernel times grouped into matMuls of the projections, attention, elementwise work and the rest,
 * against the whole forward's CPU time (the gap is per-call overhead outside the kernels:
 * dispatch, tidy, allocation, the mask and RoPE tables). The GEMM peak is the best plain 2-D matMul
 * of the same backend, per CPU-second.
 *
 * `--compare N` first times N prefills in each of two layouts, alternating in one process: the
 * layout the model code had at 60913a7 (products on OpenBLAS, attention as the per-group loop,
 * RoPE's swap as a reverse; its row gathers run as heap copies now, src/backend/wasm-copies.ts)
 * and the active one (src/backend/layout.ts); CPU and wall medians.
 *
 *   node --import tsx bench/prefill-profile.ts [--model smollm|stories|synth] [--tokens N] [--batch B] [--layers L] [--kernels] [--compare N]
 */
import * as tf from '@tensorflow/tfjs';
import path from 'node:path';
import { initBackend } from '../src/backend/index.ts';
import { loadModel } from '../src/io/load-model.ts';
import type { CausalLM } from '../src/model/causal-lm.ts';
import { buildSyntheticLlama } from '../src/model/synthetic.ts';
import { sharedDataDir } from '../src/util/paths.ts';
import { SMOLLM_135M_SHAPE } from './torch/section.ts';
import { SYNTHETIC_512X8, table } from './util.ts';
import { setModelLayout, type ModelLayout } from '../src/backend/layout.ts';
import { median } from '../src/eval/speed.ts';

const argv = process.argv.slice(2);
const arg = (name: string, dflt: string) => (argv.includes(name) ? argv[argv.indexOf(name) + 1]! : dflt);
const which = arg('--model', 'smollm');
const tokens = Number(arg('--tokens', which === 'smollm' ? '512' : '128'));
const layers = Number(arg('--layers', '0'));
const batch = Number(arg('--batch', '1'));
const compare = Number(arg('--compare', '0'));
/** The model's layout at 60913a7 under OpenBLAS (its head was already the plain product there). */
const LAYOUT_60913A7: Partial<ModelLayout> = { batchedAttention: false, keysByTransposeB: false, ropeByProduct: false, transposedHead: false };

function model(): CausalLM {
  if (which === 'stories') return loadModel(path.join(sharedDataDir(), 'models/stories260K/stories260K.bin')).model;
  if (which === 'synth') return buildSyntheticLlama({ ...SYNTHETIC_512X8, layers: layers || SYNTHETIC_512X8.layers });
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
    if (b?.length === 2 && b[0] === c.headDim && b[1] === c.headDim) return 'matMul: RoPE swap';
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
    // As `eval speed` (and the PyTorch reference) does: the argmax of each row's last position is read back.
    tf.tidy(() => { tf.argMax(m.forward(ids, cache).reshape([batch, tokens, -1]).gather([tokens - 1], 1), -1).dataSync(); });
    tf.dispose([...cache.k, ...cache.v].filter((t): t is tf.Tensor3D => t !== null));
  };
  // CPU time (one busy thread) is what a shared, loaded machine lets us measure reliably.
  const cpuMs = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1000; };
  prefill();
  if (compare > 0) {
    const runs: Record<string, { cpu: number[]; wall: number[] }> = { '60913a7 layout': { cpu: [], wall: [] }, 'active layout': { cpu: [], wall: [] } };
    const layouts: [string, Partial<ModelLayout> | null][] = [['60913a7 layout', LAYOUT_60913A7], ['active layout', null]];
    for (const [, l] of layouts) { setModelLayout(l); prefill(); }
    for (let r = 0; r < compare; r++) {
      for (const [name, l] of layouts) {
        setModelLayout(l);
        const c0 = cpuMs(), w0 = performance.now();
        prefill();
        runs[name]!.cpu.push(cpuMs() - c0);
        runs[name]!.wall.push(performance.now() - w0);
      }
    }
    setModelLayout(null);
    console.log(table(['layout', 'CPU-ms (median)', 'wall-ms (median)', 'tokens per CPU-s', 'tokens/s (wall)'], Object.entries(runs).map(([name, r]) => [
      name, median(r.cpu), median(r.wall), (batch * tokens) / (median(r.cpu) / 1000), (batch * tokens) / (median(r.wall) / 1000),
    ])));
  }
  const cpu: number[] = [];
  for (let r = 0; r < 3; r++) { const c0 = cpuMs(); prefill(); cpu.push(cpuMs() - c0); }
  const cpuMedian = [...cpu].sort((a, b) => a - b)[1]!;
  // Kernel times in CPU time too: each wasm kernel is wrapped by a timer on the process's CPU
  // clock (which counts the OpenBLAS pool's threads), so other processes' load does not enter.
  const kernels = profileKernelsCpu(prefill, cpuMs);
  const wallMs = kernels.totalMs;
  const byCat = new Map<string, { ms: number; calls: number; flops: number }>();
  let kernelMs = 0;
  for (const k of kernels.calls) {
    const ms = k.ms;
    kernelMs += ms;
    const cat = category(k, m);
    const e = byCat.get(cat) ?? { ms: 0, calls: 0, flops: 0 };
    e.ms += ms;
    e.calls++;
    if (k.name === 'BatchMatMul' || k.name === '_FusedMatMul') e.flops += k.flops;
    byCat.set(cat, e);
  }
  const info = { kernels: kernels.calls.map((k) => ({ ...k, kernelTimeMs: k.ms })) };
  const peak = Math.max(...[512, 1024].map((n) => {
    const a = tf.randomNormal([n, n]);
    const b = tf.randomNormal([n, n]);
    const run = () => tf.tidy(() => { tf.matMul(a, b).dataSync(); });
    run();
    const c0 = cpuMs();
    for (let r = 0; r < 5; r++) run();
    const ms = (cpuMs() - c0) / 5;
    tf.dispose([a, b]);
    return (2 * n ** 3) / (ms * 1e6);
  }));
  const rows = [...byCat.entries()].sort((x, y) => y[1].ms - x[1].ms).map(([cat, e]) => [
    cat, e.calls, e.ms, `${((100 * e.ms) / wallMs).toFixed(1)}%`, e.flops ? e.flops / (e.ms * 1e6) : NaN,
  ]);
  rows.push(['per-call overhead (CPU outside kernels)', '', wallMs - kernelMs, `${((100 * (wallMs - kernelMs)) / wallMs).toFixed(1)}%`, NaN]);
  console.log(`${which}: prefill ${batch} × ${tokens} tokens, ${m.numLayers} layers: ${cpuMedian.toFixed(1)} CPU-ms (${((batch * tokens) / (cpuMedian / 1000)).toFixed(1)} tokens per CPU-second, median of 3); profiled run ${wallMs.toFixed(1)} CPU-ms, ${info.kernels.length} kernel calls; wasm GEMM peak (square 512/1024 matMul) ${peak.toFixed(1)} GFLOP per CPU-second`);
  console.log(table(['part', 'calls', 'CPU-ms', '% of CPU', 'GFLOP/CPU-s'], rows));
  if (argv.includes('--kernels')) {
    const byName = new Map<string, { ms: number; calls: number }>();
    for (const k of info.kernels) {
      const e = byName.get(k.name) ?? { ms: 0, calls: 0 };
      e.ms += Number(k.kernelTimeMs) || 0;
      e.calls++;
      byName.set(k.name, e);
    }
    console.log(table(['kernel', 'calls', 'CPU-ms', '% of CPU'], [...byName.entries()].sort((x, y) => y[1].ms - x[1].ms)
      .map(([n, e]) => [n, e.calls, e.ms, `${((100 * e.ms) / wallMs).toFixed(1)}%`])));
  }
  m.dispose();
}

interface KernelCall { name: string; inputShapes: number[][]; ms: number; flops: number }

/**
 * Run `fn` once with every wasm kernel wrapped by a CPU-time clock. Nested kernel calls (a kernel
 * running another through the registry) count in both; the wasm kernels here call each other
 * directly, not through the registry.
 */
function profileKernelsCpu(fn: () => void, cpuMs: () => number): { calls: KernelCall[]; totalMs: number } {
  const configs = tf.getKernelsForBackend('wasm');
  const calls: KernelCall[] = [];
  for (const c of configs) {
    tf.unregisterKernel(c.kernelName, 'wasm');
    tf.registerKernel({ ...c, kernelFunc: (args) => {
      const inputs = Object.values(args.inputs) as tf.TensorInfo[];
      const c0 = cpuMs();
      const out = c.kernelFunc(args);
      const ms = cpuMs() - c0;
      const inputShapes = inputs.map((t) => t.shape);
      let flops = 0;
      if (c.kernelName === 'BatchMatMul' || c.kernelName === '_FusedMatMul') {
        const [a, b] = inputShapes;
        const { transposeA, transposeB } = args.attrs as { transposeA?: boolean; transposeB?: boolean };
        const ra = a!.length, rb = b!.length;
        const batch = Math.max(tf.util.sizeFromShape(a!.slice(0, -2)), tf.util.sizeFromShape(b!.slice(0, -2)));
        const mm = transposeA ? a![ra - 1]! : a![ra - 2]!, kk = transposeA ? a![ra - 2]! : a![ra - 1]!;
        const nn = transposeB ? b![rb - 2]! : b![rb - 1]!;
        flops = 2 * batch * mm * kk * nn;
      }
      calls.push({ name: c.kernelName, inputShapes, ms, flops });
      return out;
    } });
  }
  const c0 = cpuMs();
  try {
    fn();
  } finally {
    for (const c of configs) {
      tf.unregisterKernel(c.kernelName, 'wasm');
      tf.registerKernel(c);
    }
  }
  return { calls, totalMs: cpuMs() - c0 };
}

await main();
