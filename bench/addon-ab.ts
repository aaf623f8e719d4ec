/**
 * Two builds of the native addon side by side in one process (e.g. before and after a change to
 * its gemm tiling): GFLOP/s in wall time and per CPU-second (which other processes' load distorts
 * less) of `hostGemm` on the forward pass's and the solvers' product shapes, best of 7 alternating
 * repeats, and how many entries of the two results differ.
 *
 *   git show REV:native/openblas-kernels.c > /tmp/old.c
 *   cc -O2 -shared -fPIC -DNODE_GYP_MODULE_NAME=openblas_kernels -I/usr/include/node -I/usr/include/x86_64-linux-gnu /tmp/old.c -lopenblas -o /tmp/old.node
 *   node --import tsx bench/addon-ab.ts /tmp/old.node native/build/openblas-kernels.node [threads]
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import { mulberry32 } from '../src/util/random.ts';

interface GemmAddon {
  setThreads(n: number): void;
  hostGemm(a: Float32Array, b: Float32Array, c: Float32Array, m: number, n: number, k: number, transA: number, transB: number): void;
}

const [oldPath, newPath, threadsArg] = process.argv.slice(2);
if (!oldPath || !newPath) {
  console.error('usage: node --import tsx bench/addon-ab.ts OLD.node NEW.node [threads]');
  process.exit(2);
}
const load = createRequire(import.meta.url);
const libs: Record<string, GemmAddon> = { old: load(path.resolve(oldPath)) as GemmAddon, new: load(path.resolve(newPath)) as GemmAddon };
const threads = Number(threadsArg ?? 2);
for (const l of Object.values(libs)) l.setThreads(threads);
// [m, n, k]: SmolLM-135M shape at 512 tokens (q/o, k/v, gate/up, down, head), the 512×8 model at 128 tokens, FISTAPruner's products, a square.
const shapes = [[512, 576, 576], [512, 192, 576], [512, 1536, 576], [512, 576, 1536], [512, 49152, 576], [128, 512, 512], [128, 1408, 512],
  [128, 512, 1408], [1408, 512, 512], [512, 1408, 1408], [2048, 2048, 2048]] as const;
const cpuS = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1e6; };
const rng = mulberry32(1);
for (const [m, n, k] of shapes) {
  const a = Float32Array.from({ length: m * k }, () => rng() - 0.5), b = Float32Array.from({ length: k * n }, () => rng() - 0.5);
  const c: Record<string, Float32Array> = { old: new Float32Array(m * n), new: new Float32Array(m * n) };
  const flop = 2 * m * n * k, reps = Math.ceil(3e8 / flop);
  const best: Record<string, [number, number]> = { old: [Infinity, Infinity], new: [Infinity, Infinity] };
  for (let r = 0; r < 7; r++) {
    for (const name of ['old', 'new']) {
      const w0 = performance.now(), c0 = cpuS();
      for (let q = 0; q < reps; q++) libs[name]!.hostGemm(a, b, c[name]!, m, n, k, 0, 0);
      const wall = (performance.now() - w0) / 1000 / reps, cpu = (cpuS() - c0) / reps;
      best[name] = [Math.min(best[name]![0], wall), Math.min(best[name]![1], cpu)];
    }
  }
  let differ = 0;
  for (let i = 0; i < m * n; i++) if (c.old![i] !== c.new![i]) differ++;
  const g = (t: number) => (flop / t / 1e9).toFixed(0);
  console.log(`${m}×${n}×${k}, ${threads} thread(s): GFLOP/s old ${g(best.old![0])} new ${g(best.new![0])}; per CPU-second old ${g(best.old![1])} new ${g(best.new![1])}; entries differing ${differ}`);
}
