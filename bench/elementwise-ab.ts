/**
 * The wasm backend's own elementwise kernels against the native ones (src/backend/native-elementwise.ts)
 * inside a SmolLM-135M-shape prefill: rounds alternate the two in one process, every kernel timed
 * in the process's CPU time (the OpenBLAS pool's threads included, other processes' load not), plus
 * each prefill's CPU and wall time; medians over the rounds. `--alone`: instead, each kernel by
 * itself on [512, 1536] float32 operands (a SmolLM FFN activation), CPU-ms per call, best of 9 × 10
 * calls, the sides alternating.
 *
 *   node --import tsx bench/elementwise-ab.ts [--layers L] [--rounds R] [--threads N] [--alone]
 */
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/index.ts';
import { openblasAddon, openblasUnavailable } from '../src/backend/openblas.ts';
import { installNativeElementwise, uninstallNativeElementwise, type ElementwiseAddon } from '../src/backend/native-elementwise.ts';
import { buildSyntheticLlama } from '../src/model/synthetic.ts';
import { median } from '../src/eval/speed.ts';
import { SMOLLM_135M_SHAPE } from './torch/section.ts';
import { table } from './util.ts';

const argv = process.argv.slice(2);
const arg = (name: string, dflt: string) => (argv.includes(name) ? argv[argv.indexOf(name) + 1]! : dflt);
const layers = Number(arg('--layers', '8')), rounds = Number(arg('--rounds', '5')), threads = Number(arg('--threads', '2'));
const tokens = 512;
const KERNELS = ['Softmax', 'Multiply', 'Add', 'Sigmoid', 'Mean', 'Square', 'Rsqrt', 'BatchMatMul'];

await initBackend('wasm', true);
const lib = openblasAddon() as (ElementwiseAddon & { setThreads(n: number): void }) | null;
if (!lib || typeof lib.ewBinary !== 'function') throw new Error(lib ? 'the addon predates the elementwise kernels: npm run build-native' : openblasUnavailable());
lib.setThreads(threads);
const cpuMs = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1000; };
const sides = ['wasm', 'native'] as const;
if (argv.includes('--alone')) {
  alone(lib);
  process.exit(0);
}
const m = buildSyntheticLlama({ ...SMOLLM_135M_SHAPE, layers });
const ids = [Array.from({ length: tokens }, (_, t) => 3 + ((t * 17) % (m.config.vocabSize - 3)))];
const prefill = () => {
  const cache = m.newCache();
  tf.tidy(() => { tf.argMax(m.forward(ids, cache).reshape([1, tokens, -1]).gather([tokens - 1], 1), -1).dataSync(); });
  tf.dispose([...cache.k, ...cache.v].filter((t): t is tf.Tensor3D => t !== null));
};
const times: Record<string, Record<string, number[]>> = { wasm: {}, native: {} };
for (let r = 0; r <= rounds; r++) {
  for (const side of sides) {
    if (side === 'native') installNativeElementwise(lib); else uninstallNativeElementwise();
    const configs = KERNELS.map((n) => tf.getKernel(n, 'wasm')!);
    const acc: Record<string, number> = {};
    for (const c of configs) {
      tf.unregisterKernel(c.kernelName, 'wasm');
      tf.registerKernel({ ...c, kernelFunc: (a) => { const c0 = cpuMs(); const o = c.kernelFunc(a); acc[c.kernelName] = (acc[c.kernelName] ?? 0) + cpuMs() - c0; return o; } });
    }
    const c0 = cpuMs(), w0 = performance.now();
    try {
      prefill();
    } finally {
      for (const c of configs) { tf.unregisterKernel(c.kernelName, 'wasm'); tf.registerKernel(c); }
    }
    acc['prefill CPU'] = cpuMs() - c0;
    acc['prefill wall'] = performance.now() - w0;
    if (r === 0) continue; // warm-up round
    for (const [k, v] of Object.entries(acc)) (times[side]![k] ??= []).push(v);
  }
}
installNativeElementwise(lib);
const rows = [...KERNELS, 'prefill CPU', 'prefill wall'].map((k) => {
  const [w, n] = sides.map((s) => times[s]![k] ?? [0]);
  return [k, median(w!), median(n!), median(w!) / median(n!)];
});
console.log(`SmolLM-135M shape, ${layers} layers, 1 × ${tokens} tokens, ${threads} pool threads (${lib.ewSimd()}), medians of ${rounds} rounds (ms)`);
console.log(table(['kernel', 'wasm kernels', 'native', 'wasm ÷ native'], rows));

function alone(lib: ElementwiseAddon): void {
  const x = tf.randomNormal([512, 1536]), y = tf.randomNormal([512, 1536]), w = tf.randomNormal([1536]), c = tf.randomNormal([512, 1]);
  const ops: [string, () => tf.Tensor][] = [
    ['Multiply, same shape', () => tf.mul(x, y)], ['Multiply, a row over rows', () => tf.mul(x, w)], ['Multiply, a value per row', () => tf.mul(x, c)],
    ['Sigmoid', () => tf.sigmoid(x)], ['Square', () => tf.square(x)], ['Mean over the last axis', () => tf.mean(x, -1, true)], ['Softmax over the last axis', () => tf.softmax(x)],
  ];
  const rows = ops.map(([name, f]) => {
    const best = { wasm: Infinity, native: Infinity };
    for (let r = 0; r < 9; r++) {
      for (const side of sides) {
        if (side === 'native') installNativeElementwise(lib); else uninstallNativeElementwise();
        tf.tidy(() => { f(); });
        const c0 = cpuMs();
        for (let i = 0; i < 10; i++) tf.tidy(() => { f(); });
        best[side] = Math.min(best[side], (cpuMs() - c0) / 10);
      }
    }
    return [name, best.wasm, best.native, best.wasm / best.native];
  });
  installNativeElementwise(lib);
  console.log(`[512, 1536] float32, ${threads} pool threads (${lib.ewSimd()}), CPU-ms per call, best of 9`);
  console.log(table(['kernel', 'wasm kernels', 'native', 'wasm ÷ native'], rows));
}
