/**
 * `npm run bench -- --only solvers`: SparseGPT and FISTAPruner on the synthetic model (512×8,
 * 256×4 with --quick) with the solvers' numerics float32 (backend, the default) and float64 (the
 * host reference): wall and CPU seconds of each prune, FISTAPruner ÷ SparseGPT in the same run,
 * and the pruned model's perplexity on seeded held-out ids under both numerics.
 */
import type { CausalLM } from '../src/model/causal-lm.ts';
import { buildSyntheticLlama, type SyntheticLlamaOptions } from '../src/model/synthetic.ts';
import { listMethods, parseMethodOptions } from '../src/prune/registry.ts';
import { pruneModel } from '../src/prune/engine.ts';
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

export async function runSolversSection(o: { synth: SyntheticLlamaOptions; name: string; print: (s: string) => void }): Promise<void> {
  const methods = await listMethods();
  const vocab = o.synth.vocab;
  const calib = ids(vocab, 8, 0);
  const heldOut = ids(vocab, 4, 7919);
  const rows: (string | number)[][] = [];
  const secs: Record<string, number> = {};
  // float32 first: the ratio in the same stretch of machine load, then the float64 reference.
  for (const numerics of ['float32', 'float64'] as Numerics[]) {
    for (const name of ['sparsegpt', 'fistapruner']) {
      const method = methods.find((m) => m.name === name);
      if (!method) continue;
      const model = buildSyntheticLlama(o.synth);
      const t0 = performance.now();
      const c0 = process.cpuUsage();
      await pruneModel(model, { method, options: parseMethodOptions(method, {}), target: { sparsity: 0.5, pattern: { kind: 'unstructured' } }, windows: calib, numerics });
      const c = process.cpuUsage(c0);
      const s = (performance.now() - t0) / 1000;
      secs[`${name} ${numerics}`] = s;
      rows.push([name, numerics, s, (c.user + c.system) / 1e6, ppl(model, heldOut)]);
      console.error(`bench: solvers ${rows[rows.length - 1]!.join(' ')}`);
      model.dispose();
    }
  }
  o.print(`## Solvers on the backend: SparseGPT and FISTAPruner on ${o.name}\n`);
  o.print(table(['method', 'numerics', 'wall s', 'CPU s', 'perplexity (held-out ids)'], rows));
  const ratio = (n: Numerics) => secs[`fistapruner ${n}`]! / secs[`sparsegpt ${n}`]!;
  o.print(`\nFISTAPruner ÷ SparseGPT (wall, same run): ${ratio('float32').toFixed(2)}× with float32, ${ratio('float64').toFixed(2)}× with float64`
    + ' (issue 12 target: ≤ 5× with float32, perplexity unchanged). 50% unstructured, 8 × 128 seeded ids of calibration, each'
    + ' method\'s default options and mode, calibration passes included. float32: the products on the WebAssembly backend;'
    + ' float64: the host reference kernels.\n');
}
