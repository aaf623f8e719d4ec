/**
 * `npm run bench -- --only solvers`: SparseGPT and FISTAPruner on the synthetic model (512×8,
 * 256×4 with --quick) with the solvers' numerics float32 (backend, the default): wall and CPU
 * seconds of each prune, FISTAPruner ÷ SparseGPT in the same run, FISTAPruner's products with G
 * and the rate they ran at, and the pruned model's perplexity on seeded held-out ids. With
 * `--float64` also the host float64 reference (FISTAPruner's takes about half an hour on 512×8).
 */
import type { CausalLM } from '../src/model/causal-lm.ts';
import { buildSyntheticLlama, type SyntheticLlamaOptions } from '../src/model/synthetic.ts';
import { listMethods, parseMethodOptions } from '../src/prune/registry.ts';
import { pruneModel } from '../src/prune/engine.ts';
import { readLinear } from '../src/prune/linear-io.ts';
import type { PruneReport } from '../src/prune/report.ts';
import { batchNllSum } from '../src/eval/perplexity.ts';
import type { Numerics } from '../src/linalg/linalg.ts';
import os from 'node:os';
import { noteWorkerThreads, openblasAddon } from '../src/backend/openblas.ts';
import { table } from './util.ts';

function ids(vocab: number, n: number, salt: number): number[][] {
  return Array.from({ length: n }, (_, w) => Array.from({ length: 128 }, (_, t) => 3 + ((w * 977 + t * 131 + salt) % (vocab - 3))));
}

function ppl(model: CausalLM, rows: number[][]): number {
  let nll = 0;
  for (const r of rows) nll += batchNllSum(model, [r]);
  return Math.exp(nll / (rows.length * 127));
}

/**
 * GFLOP of FISTAPruner's `[out, in]·[in, in]` products, counted from its report: per operator one
 * per iteration, one per round (the cut), one for H(W₀) and one for W·C (fista.ts); the products
 * W·H_d and W₀·G where they are not shared are left out, so this is a lower bound.
 */
function fistaProductGflop(model: CausalLM, report: PruneReport): number {
  let flop = 0;
  report.layers.forEach((l, i) => {
    const ops = (l.detail as { operators?: Record<string, { iterations?: number; rounds?: unknown[] }> }).operators ?? {};
    for (const [role, d] of Object.entries(ops)) {
      const { rows, cols } = readLinear(model, i, role as Parameters<typeof readLinear>[2]);
      flop += 2 * rows * cols * cols * ((d.iterations ?? 0) + (d.rounds?.length ?? 0) + 2);
    }
  });
  return flop / 1e9;
}

export async function runSolversSection(o: { synth: SyntheticLlamaOptions; name: string; float64: boolean; print: (s: string) => void }): Promise<void> {
  const methods = await listMethods();
  const vocab = o.synth.vocab;
  const calib = ids(vocab, 8, 0);
  const heldOut = ids(vocab, 4, 7919);
  const rows: (string | number)[][] = [];
  const secs: Record<string, number> = {};
  let fistaRate = '';
  // float32 first: the ratio in the same stretch of machine load, then (on request) the float64 reference.
  const load0 = os.loadavg()[0]!;
  // float32 on 1 and 2 threads (a group's operators solved side by side on the passes' pool), float64 on 1.
  const runs: [Numerics, number][] = [['float32', 1], ['float32', 2], ...(o.float64 ? [['float64', 1] as [Numerics, number]] : [])];
  for (const [numerics, threads] of runs) {
    for (const name of ['sparsegpt', 'fistapruner']) {
      const method = methods.find((m) => m.name === name);
      if (!method) continue;
      const model = buildSyntheticLlama(o.synth);
      // One thread means one core: OpenBLAS's products on one thread too (every core again after, as bench/run.ts).
      if (threads === 1) openblasAddon()?.setThreads(1);
      const t0 = performance.now();
      const c0 = process.cpuUsage();
      let report: PruneReport;
      try {
        report = await pruneModel(model, {
          method, options: parseMethodOptions(method, {}), target: { sparsity: 0.5, pattern: { kind: 'unstructured' } }, windows: calib, numerics, threads,
        });
      } finally {
        if (threads === 1) noteWorkerThreads(0);
      }
      const c = process.cpuUsage(c0);
      const s = (performance.now() - t0) / 1000;
      const cpu = (c.user + c.system) / 1e6;
      const key = threads === 1 ? `${name} ${numerics}` : `${name} ${numerics} ${threads}`;
      secs[key] = s;
      secs[`${key} cpu`] = cpu;
      rows.push([name, numerics, threads, s, cpu, ppl(model, heldOut)]);
      if (name === 'fistapruner' && numerics === 'float32' && threads === 1) {
        const gf = fistaProductGflop(model, report);
        fistaRate = `FISTAPruner's products with G: ≥ ${gf.toFixed(0)} GFLOP, ${(gf / cpu).toFixed(1)} GFLOP per CPU-second of the whole prune.`;
      }
      console.error(`bench: solvers ${rows[rows.length - 1]!.join(' ')}`);
      model.dispose();
    }
  }
  o.print(`## Solvers on the backend: SparseGPT and FISTAPruner on ${o.name}\n`);
  o.print(table(['method', 'numerics', 'threads', 'wall s', 'CPU s (all threads)', 'perplexity (held-out ids)'], rows));
  const ratio = (n: Numerics, k = '') => secs[`fistapruner ${n}${k}`]! / secs[`sparsegpt ${n}${k}`]!;
  const speedUp = (name: string) => secs[`${name} float32`]! / secs[`${name} float32 2`]!;
  const best = (name: string) => Math.min(secs[`${name} float32`]!, secs[`${name} float32 2`]!);
  o.print(`\n2 threads vs 1 (float32, wall): SparseGPT ${speedUp('sparsegpt').toFixed(2)}×, FISTAPruner ${speedUp('fistapruner').toFixed(2)}×;`
    + ` FISTAPruner ÷ SparseGPT on 2 threads ${ratio('float32', ' 2').toFixed(2)}×, each at its best ${(best('fistapruner') / best('sparsegpt')).toFixed(2)}×.`
    + ` Load average ${load0.toFixed(1)} at the start, ${os.loadavg()[0]!.toFixed(1)} at the end, ${os.availableParallelism()} cores.`
    + ' Masks and weights do not depend on the threads (test/operator-threads.test.ts). 2 threads: one calibration batch, so the'
    + ' passes run in process with the native products and elementwise kernels on both cores; both methods declare'
    + ' `threadedSolve: \'within\'`, so with the native kernels their solves run in process too, every product, sweep block,'
    + ' accepted step and cut split by tiles or rows over both cores. Limited by the single-threaded host work left (SparseGPT\'s'
    + ' factor: LAPACK on one thread, so that it does not depend on the thread count; applying the decisions; TensorFlow.js'
    + ' dispatch), memory bandwidth in the float64 passes, and the cores the machine gives (see `cores obtained` in the threads'
    + ' section).');
  o.print(`\nFISTAPruner ÷ SparseGPT (same run): ${ratio('float32').toFixed(2)}× wall, ${ratio('float32', ' cpu').toFixed(2)}× CPU with float32`
    + (o.float64 ? `, ${ratio('float64').toFixed(2)}× wall with float64` : ' (float64 reference: --float64)')
    + ' (issue 12 target: ≤ 5× with float32, perplexity unchanged). 50% unstructured, 8 × 128 seeded ids of calibration, each'
    + ' method\'s default options and mode, calibration passes included. float32: the products on the WebAssembly backend;'
    + ` float64: the host reference kernels. 1 thread: one core, OpenBLAS's products on one thread too. ${fistaRate} Limited by:`
    + ' FISTAPruner\'s product count (3 rounds × 20 iterations plus the cuts: ≈ 65 `[out, in]·[in, in]` products per operator,'
    + ' against SparseGPT\'s one factorisation and one sweep) at OpenBLAS\'s rate on one core, the float64 host work of every'
    + ' iteration (one fused pass: prox step, momentum, objective; bound by memory traffic), the exact cuts, and its calibration'
    + ' passes (intra-layer correction: four statistics passes per layer, each up to the group\'s tap, with the dense layer once'
    + ' one of its operators is pruned).\n');
}
