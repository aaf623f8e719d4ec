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
  for (const numerics of (o.float64 ? ['float32', 'float64'] : ['float32']) as Numerics[]) {
    for (const name of ['sparsegpt', 'fistapruner']) {
      const method = methods.find((m) => m.name === name);
      if (!method) continue;
      const model = buildSyntheticLlama(o.synth);
      const t0 = performance.now();
      const c0 = process.cpuUsage();
      const report = await pruneModel(model, { method, options: parseMethodOptions(method, {}), target: { sparsity: 0.5, pattern: { kind: 'unstructured' } }, windows: calib, numerics });
      const c = process.cpuUsage(c0);
      const s = (performance.now() - t0) / 1000;
      const cpu = (c.user + c.system) / 1e6;
      secs[`${name} ${numerics}`] = s;
      secs[`${name} ${numerics} cpu`] = cpu;
      rows.push([name, numerics, s, cpu, ppl(model, heldOut)]);
      if (name === 'fistapruner' && numerics === 'float32') {
        const gf = fistaProductGflop(model, report);
        fistaRate = `FISTAPruner's products with G: ≥ ${gf.toFixed(0)} GFLOP, ${(gf / cpu).toFixed(1)} GFLOP per CPU-second of the whole prune.`;
      }
      console.error(`bench: solvers ${rows[rows.length - 1]!.join(' ')}`);
      model.dispose();
    }
  }
  o.print(`## Solvers on the backend: SparseGPT and FISTAPruner on ${o.name}\n`);
  o.print(table(['method', 'numerics', 'wall s', 'CPU s', 'perplexity (held-out ids)'], rows));
  const ratio = (n: Numerics, k = '') => secs[`fistapruner ${n}${k}`]! / secs[`sparsegpt ${n}${k}`]!;
  o.print(`\nFISTAPruner ÷ SparseGPT (same run): ${ratio('float32').toFixed(2)}× wall, ${ratio('float32', ' cpu').toFixed(2)}× CPU with float32`
    + (o.float64 ? `, ${ratio('float64').toFixed(2)}× wall with float64` : ' (float64 reference: --float64)')
    + ' (issue 12 target: ≤ 5× with float32, perplexity unchanged). 50% unstructured, 8 × 128 seeded ids of calibration, each'
    + ' method\'s default options and mode, calibration passes included. float32: the products on the WebAssembly backend;'
    + ` float64: the host reference kernels. ${fistaRate} Limited by: FISTAPruner's product count (3 rounds × 20 iterations plus`
    + ' the cuts: ≈ 65 `[out, in]·[in, in]` products per operator, against SparseGPT\'s one factorisation and one sweep), each on'
    + ' one WebAssembly thread (XNNPACK, 20–30 GFLOP/s), the float64 host work of every iteration (prox step, objective), and'
    + ' its calibration passes (intra-layer correction: four statistics passes per layer, each running the dense and the'
    + ' corrected layer).\n');
}
