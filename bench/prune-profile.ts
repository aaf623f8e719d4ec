/**
 * Where a prune's time goes on the wasm backend: every wasm kernel timed in the process's CPU time
 * (which counts the native pools' threads and not other processes' load), grouped by kernel with
 * its costliest input shapes, and the CPU time outside kernels (host work: scores, mask
 * selection, decisions, TensorFlow.js dispatch), for one method on the bench's synthetic 512×8
 * model with 32 × 128 seeded calibration ids, in process.
 *
 *   node --import tsx bench/prune-profile.ts [--method wanda] [--blas-threads N]
 */
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/index.ts';
import { openblasAddon } from '../src/backend/openblas.ts';
import { buildSyntheticLlama } from '../src/model/synthetic.ts';
import { listMethods, parseMethodOptions } from '../src/prune/registry.ts';
import { pruneModel } from '../src/prune/engine.ts';
import { SYNTHETIC_512X8 } from './util.ts';

const argv = process.argv.slice(2);
const arg = (name: string, dflt: string) => (argv.includes(name) ? argv[argv.indexOf(name) + 1]! : dflt);
const methodName = arg('--method', 'wanda');

await initBackend('wasm', true);
const method = (await listMethods()).find((m) => m.name === methodName);
if (!method) {
  console.error(`prune-profile: no method '${methodName}'`);
  process.exit(2);
}
const calib = Array.from({ length: 32 }, (_, w) => Array.from({ length: 128 }, (_, t) => 3 + ((w * 977 + t * 131) % 509)));
const model = buildSyntheticLlama(SYNTHETIC_512X8);
openblasAddon()?.setThreads(Number(arg('--blas-threads', '1')));
const cpuMs = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1000; };
const stats = new Map<string, { ms: number; calls: number; shapes: Map<string, number> }>();
for (const c of tf.getKernelsForBackend('wasm')) {
  tf.unregisterKernel(c.kernelName, 'wasm');
  tf.registerKernel({ ...c, kernelFunc: (args) => {
    const c0 = cpuMs();
    const out = c.kernelFunc(args);
    const ms = cpuMs() - c0;
    const e = stats.get(c.kernelName) ?? { ms: 0, calls: 0, shapes: new Map<string, number>() };
    e.ms += ms;
    e.calls++;
    const shapes = (Object.values(args.inputs) as tf.TensorInfo[]).map((t) => t.shape.join('×')).join(', ');
    e.shapes.set(shapes, (e.shapes.get(shapes) ?? 0) + ms);
    stats.set(c.kernelName, e);
    return out;
  } });
}
const w0 = performance.now(), c0 = cpuMs();
await pruneModel(model, { method, options: parseMethodOptions(method, {}), target: { sparsity: 0.5, pattern: { kind: 'unstructured' } }, windows: calib, threads: 1 });
const total = cpuMs() - c0;
console.log(`${methodName} on the 512×8 model: ${((performance.now() - w0) / 1000).toFixed(2)} s wall, ${(total / 1000).toFixed(2)} CPU-s`);
let inKernels = 0;
for (const [name, e] of [...stats.entries()].sort((a, b) => b[1].ms - a[1].ms)) {
  inKernels += e.ms;
  if (e.ms < 1) continue;
  const top = [...e.shapes.entries()].sort((a, b) => b[1] - a[1]).slice(0, 3).map(([s, ms]) => `${s}: ${ms.toFixed(0)}`).join('; ');
  console.log(`${name.padEnd(14)} ${String(e.calls).padStart(6)} calls ${e.ms.toFixed(0).padStart(7)} CPU-ms   ${top}`);
}
console.log(`outside kernels ${(total - inKernels).toFixed(0)} CPU-ms`);
model.dispose();
