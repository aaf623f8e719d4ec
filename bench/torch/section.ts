/**
 * `npm run bench -- --only torch`: PruneLab (WebAssembly backend) side by side with a small PyTorch
 * reference (`bench/torch/*.py`) on the same machine, the same HF checkpoints and the same
 * operator, in one run. Figures are taken in alternating rounds (PruneLab, PyTorch on 1 thread,
 * PyTorch on every core; `rounds.ts`); the ratio is PruneLab ÷ PyTorch at PyTorch's best thread
 * setting, with its spread over the rounds. Both sides' logits and SparseGPT results are compared
 * first: a timing is only reported when they compute the same.
 */
import * as tf from '@tensorflow/tfjs';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { initBackend } from '../../src/backend/index.ts';
import { flopsPerToken, measureSpeed } from '../../src/eval/speed.ts';
import { writeHfCheckpoint } from '../../src/io/hf-checkpoint.ts';
import { loadModel, saveModel } from '../../src/io/load-model.ts';
import { syntheticLlamaConfig, syntheticLlamaTensors, type SyntheticLlamaOptions } from '../../src/model/synthetic.ts';
import { matmulGflops, table, type Cell } from '../util.ts';
import { TorchBridge, type TorchInfo } from './bridge.ts';
import { operatorData, prunelabSparsegpt, writeOperator, type OpCase, type SolveTimes } from './operator.ts';
import { modelLogits, prunelabLogits, relDiff, sparsegptParity, torchLogits } from './parity.ts';
import { alternate, fmtRatio, SETTLE_MS, SPREAD_NOTE, versus, type Side } from './rounds.ts';

export interface TorchSectionOptions {
  quick: boolean;
  print: (s: string) => void;
  /** The bench's synthetic model (512×8, or 256×4 with --quick). */
  synth: SyntheticLlamaOptions;
  /** stories260K as llama2.c `.bin`, when the shared data is there. */
  stories: string | null;
  /** The shared golden HF fixtures folder, when there. */
  golden: string | null;
  /** Interpreters to try (default: `pythonCandidates()`). */
  pythons?: string[];
}

/** SmolLM-135M's shape (HuggingFaceTB/SmolLM-135M config.json), random weights. */
export const SMOLLM_135M_SHAPE: SyntheticLlamaOptions = {
  hidden: 576, layers: 30, heads: 9, kvHeads: 3, ffn: 1536, vocab: 49152, tied: true, maxPositions: 2048, seed: 2,
};

/** Relative logit difference (max |Δ| / max |logit|) above which two implementations disagree. */
const PARITY_TOL = 1e-4;

/** Markdown rendered once the run's GEMM peak is known (the "% of peak" columns need it). */
type Block = (peakGflops: number) => string;

interface Ctx {
  torch: TorchBridge;
  o: TorchSectionOptions;
  /** PyTorch thread settings tried: 1 and every core. */
  threads: number[];
  tmp: string;
  gemm: GemmProbes;
}

const pct = (x: number) => `${(100 * x).toFixed(x < 0.1 ? 2 : 1)}%`;

/**
 * The machine's fp32 GEMM peak: PyTorch's best thread setting, probed before every case and at
 * the end (load on a shared machine changes during a run; the best probe is the peak), and
 * PruneLab's wasm matMul once.
 */
class GemmProbes {
  readonly probes: { when: string; gflops: number }[] = [];
  first: Cell[][] = [];

  constructor(private readonly torch: TorchBridge, private readonly threads: number[], readonly n: number) {}

  async probe(when: string): Promise<void> {
    let best = 0;
    for (const t of this.threads) {
      const r = await this.torch.request<{ gflops: number }>({ cmd: 'gemm', n: this.n, threads: t, repeats: 3 });
      if (this.probes.length === 0) this.first.push([`PyTorch, ${t} thread${t > 1 ? 's' : ''}`, r.gflops]);
      best = Math.max(best, r.gflops);
    }
    if (this.probes.length === 0) this.first.push(['PruneLab (tf.matMul, wasm)', matmulGflops(this.n, 3)]);
    this.probes.push({ when, gflops: best });
  }

  get peak(): number {
    return Math.max(...this.probes.map((p) => p.gflops), ...this.first.map((r) => r[1] as number));
  }

  render(): string {
    return [`### fp32 GEMM ${this.n}×${this.n}, GFLOP/s\n`, table(['first probe', 'GFLOP/s'], this.first), '',
      `PyTorch's best, probed before each case: ${this.probes.map((p) => `${p.gflops.toFixed(1)} (${p.when})`).join(', ')}.`,
      `Peak for the "% of peak" columns: ${this.peak.toFixed(1)} GFLOP/s, the best of all probes in this run.\n`].join('\n');
  }
}

export async function runTorchSection(o: TorchSectionOptions): Promise<void> {
  const { print } = o;
  print('## PruneLab vs PyTorch (same machine, same checkpoints)\n');
  const started = TorchBridge.start(o.pythons);
  if ('skip' in started) {
    print(`Skipped: ${started.skip}.\n`);
    return;
  }
  const torch = started.bridge;
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'prunelab-bench-torch-'));
  try {
    await initBackend('wasm', true);
    const info = await torch.request<TorchInfo>({ cmd: 'info' });
    const cores = Math.max(1, info.cores);
    const threads = [...new Set([1, cores])];
    print(`PyTorch ${info.torch} (Python ${info.python}, ${info.executable}), numpy ${info.numpy}; BLAS: ${info.blas};`
      + ` OMP_WAIT_POLICY=${info.omp_wait_policy}.`);
    print(`${os.cpus()[0]?.model ?? 'unknown CPU'}, ${cores} cores; PruneLab on the ${tf.getBackend()} backend.`);
    // Measured (2026-12-02, Xeon, openblas-pthread): torch.set_num_threads(1) ran a 2048³ product at CPU/wall 2.0.
    print('"PyTorch n thr" is `torch.set_num_threads(n)`: PyTorch\'s own threads. Its matrix products go to the system BLAS, whose'
      + ' pthread build of OpenBLAS keeps its own thread count (every core unless OPENBLAS_NUM_THREADS says otherwise), so with'
      + ' that build "1 thr" still multiplies on every core; PruneLab\'s figures use every core too.');
    if (/\/blas\/libblas\.so/.test(info.blas)) {
      print('**Warning:** PyTorch runs on the reference (netlib) BLAS, ~50–100× slower than OpenBLAS; '
        + 'install `libopenblas0-openmp` for the figures a PyTorch user would see.');
    }
    print('');
    const ctx: Ctx = { torch, o, threads, tmp, gemm: new GemmProbes(torch, threads, o.quick ? 1024 : 2048) };
    const blocks = [...await modelBlocks(ctx), ...await sparsegptBlocks(ctx)];
    await ctx.gemm.probe('end');
    print(ctx.gemm.render());
    for (const b of blocks) print(b(ctx.gemm.peak));
  } finally {
    await torch.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

interface ModelCase {
  name: string;
  /** Writes the HF checkpoint folder both sides load. */
  write: (dir: string) => void;
  tokens: number;
}

function modelCases(o: TorchSectionOptions): ModelCase[] {
  const synthetic = (s: SyntheticLlamaOptions) => (dir: string) => {
    const config = syntheticLlamaConfig(s);
    writeHfCheckpoint(dir, config, syntheticLlamaTensors(config, s.seed, s.std ?? 0.02));
  };
  const cases: ModelCase[] = [];
  if (o.stories) {
    const src = o.stories;
    // What `prunelab convert` does: the llama2.c model as an HF folder (half-split RoPE layout).
    cases.push({ name: 'stories260K', tokens: 128, write: (dir) => { const { model } = loadModel(src); saveModel(model, dir); model.dispose(); } });
  }
  cases.push({ name: `synthetic ${o.synth.hidden}×${o.synth.layers}`, tokens: 128, write: synthetic(o.synth) });
  if (!o.quick) cases.push({ name: 'SmolLM-135M shape', tokens: 512, write: synthetic(SMOLLM_135M_SHAPE) });
  return cases;
}

function parityIds(vocab: number, T: number): number[] {
  return Array.from({ length: T }, (_, t) => 3 + ((t * 31 + 7) % (vocab - 3)));
}

interface SpeedSample {
  prefillTps: number;
  decodeTps: number;
}

/** A table row whose last two cells (PruneLab and PyTorch % of the GEMM peak) need the peak. */
type Row = (peakGflops: number) => Cell[];

async function modelBlocks(c: Ctx): Promise<Block[]> {
  const { torch, o, threads, tmp } = c;
  const minRounds = o.quick ? 1 : 3;
  const budgetMs = o.quick ? 2000 : 10_000;
  const newTokens = o.quick ? 8 : 16;
  const parity: Cell[][] = [];
  const prefill: Row[] = [];
  const decode: Row[] = [];

  // The golden fixtures check the PyTorch reference itself against independently computed logits.
  if (o.golden) {
    for (const name of ['llama-tiny', 'llama-tiny-sharded-f16', 'llama-tiny-bias-tied']) {
      const dir = path.join(o.golden, name);
      if (!fs.existsSync(dir)) continue;
      const ref = JSON.parse(fs.readFileSync(path.join(dir, 'reference.json'), 'utf8')) as { sequences: { input_ids: number[]; logits: number[][] }[] };
      const seq = ref.sequences[ref.sequences.length - 1];
      await torch.request({ cmd: 'load', key: name, model: dir });
      const pt = await torchLogits(torch, name, seq.input_ids, tmp);
      await torch.request({ cmd: 'unload', key: name });
      const pl = prunelabLogits(dir, seq.input_ids);
      parity.push([`golden ${name} (${seq.input_ids.length} tokens)`, relDiff(pt, seq.logits.flat()).toExponential(1), relDiff(pl, pt).toExponential(1)]);
    }
  }

  for (const mc of modelCases(o)) {
    const dir = path.join(tmp, mc.name.replace(/[^A-Za-z0-9]+/g, '-'));
    console.error(`bench: writing the ${mc.name} checkpoint`);
    mc.write(dir);
    await torch.request({ cmd: 'load', key: mc.name, model: dir });
    const model = loadModel(dir).model;
    try {
      const cfg = model.config;
      const ids = parityIds(cfg.vocabSize, 24);
      const diff = relDiff(modelLogits(model, ids), await torchLogits(torch, mc.name, ids, tmp));
      parity.push([`${mc.name} (${ids.length} tokens)`, '–', diff.toExponential(1)]);
      if (!(diff <= PARITY_TOL)) {
        prefill.push(() => [mc.name, mc.tokens, `not compared: logits differ (${diff.toExponential(1)} > ${PARITY_TOL})`]);
        continue;
      }
      await c.gemm.probe(`before ${mc.name}`);
      console.error(`bench: timing ${mc.name}, ${mc.tokens} tokens`);
      const sides: Side<SpeedSample>[] = [
        {
          label: 'PruneLab', sample: async () => {
            const r = await measureSpeed(model, { promptTokens: mc.tokens, newTokens, repeats: 1, warmup: 0 });
            return { prefillTps: r.prefill_tps, decodeTps: r.decode_tps };
          },
        },
        ...threads.map((t): Side<SpeedSample> => ({
          label: `PyTorch ${t}`, sample: async () => {
            const r = await torch.request<{ prefill_ms: number; decode_ms: number }>(
              { cmd: 'speed', key: mc.name, prompt_tokens: mc.tokens, new_tokens: newTokens, threads: t });
            return { prefillTps: mc.tokens / (r.prefill_ms / 1000), decodeTps: newTokens / (r.decode_ms / 1000) };
          },
        })),
      ];
      const samples = await alternate(sides, minRounds, budgetMs);
      // Prefill FLOPs: the mean attention context of a causal prompt of T tokens is (T + 1) / 2.
      const fPrefill = flopsPerToken(cfg, (mc.tokens + 1) / 2);
      const fDecode = flopsPerToken(cfg, mc.tokens + (newTokens + 1) / 2);
      for (const [rowsOut, metric, flops] of [[prefill, (s: SpeedSample) => s.prefillTps, fPrefill], [decode, (s: SpeedSample) => s.decodeTps, fDecode]] as const) {
        const v = versus(samples, metric, true);
        rowsOut.push((peak) => [mc.name, mc.tokens, v.prunelab, ...v.torch, fmtRatio(v), `${threads[v.best]}`,
          pct((v.prunelab * flops) / 1e9 / peak), pct((v.torch[v.best] * flops) / 1e9 / peak)]);
      }
    } finally {
      model.dispose();
      await torch.request({ cmd: 'unload', key: mc.name });
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }

  const heads = ['model', 'prompt tokens', 'PruneLab', ...threads.map((t) => `PyTorch ${t} thr`), 'PruneLab ÷ PyTorch (spread)',
    'PyTorch best thr', 'PruneLab % of peak', 'PyTorch % of peak'];
  return [
    () => ['### Same logits\n', table(['checkpoint', 'PyTorch vs reference.json', 'PruneLab vs PyTorch'], parity), '',
      `max |Δlogit| / max |logit| over every position; timings are only taken when PruneLab vs PyTorch ≤ ${PARITY_TOL}.`
      + ' The golden references were computed in float64 by the fixtures\' authors (F16/BF16 weights decoded exactly).\n'].join('\n'),
    (peak) => ['### Prefill tokens/s (one sequence, into a KV cache, logits of every position)\n', table(heads, prefill.map((r) => r(peak))),
      `\n### Decode tokens/s (${newTokens} greedy steps after the prompt, KV cache)\n`, table(heads, decode.map((r) => r(peak))), '',
      `Medians over rounds after a warm-up; in each round every side runs once, in turn (at least ${minRounds}, more for short`
      + ` runs, up to about ${budgetMs / 1000} s per model), each turn after a ${SETTLE_MS} ms pause and one unmeasured run of`
      + ' the same side (so neither side is timed while the other\'s threads still spin, nor on caches it left cold: rounds.ts).'
      + ` ${SPREAD_NOTE} % of peak: analytic FLOPs (eval/speed.ts flopsPerToken;`
      + ' attention context (T+1)/2 for prefill) per second ÷ the GEMM peak. Issue 12 targets PruneLab ÷ PyTorch ≥ 1.0× on'
      + ' prefill (SmolLM-135M shape, stories260K).\n'].join('\n'),
  ];
}

async function sparsegptBlocks(c: Ctx): Promise<Block[]> {
  const { torch, o, threads, tmp } = c;
  const sparsity = 0.5;
  const file = path.join(tmp, 'operator.safetensors');

  // Same result first: a small operator through both, PyTorch in float64 (PruneLab's precision) and float32 (what is timed).
  const pc: OpCase = { rows: 256, cols: 512, tokens: 1024 };
  const dtypes = ['float64', 'float32'] as const;
  const par = await sparsegptParity(torch, pc, operatorData(pc, 11), sparsity, dtypes, tmp);
  const parity = [`### SparseGPT, same result (${pc.rows}×${pc.cols} operator, ${pc.tokens} tokens, ${sparsity * 100}%)\n`,
    table(['PruneLab vs', 'same keep/prune decision', 'pruned (PyTorch / PruneLab)', '‖ΔW‖ / ‖W‖', 'loss, relative'],
      par.map((p, i) => [`PyTorch ${dtypes[i]}`, `${p.sameMask} of ${p.total}`, `${p.prunedTorch} / ${p.prunedPrunelab}`,
        p.relWeight.toExponential(1), p.relLoss.toExponential(1)])), ''].join('\n');

  const cases: OpCase[] = o.quick
    ? [{ rows: 576, cols: 1536, tokens: 1024 }]
    : [{ rows: 1536, cols: 576, tokens: 4096 }, { rows: 576, cols: 1536, tokens: 4096 }, { rows: 4096, cols: 4096, tokens: 4096 }];
  const rounds = o.quick ? 1 : 2;
  const rows: Row[] = [];
  for (const oc of cases) {
    const name = `${oc.rows}×${oc.cols}`;
    await c.gemm.probe(`before SparseGPT ${name}`);
    console.error(`bench: SparseGPT ${name}, ${oc.tokens} tokens, ${rounds} round(s)`);
    const data = operatorData(oc, 12);
    writeOperator(file, oc, data);
    const sides: Side<SolveTimes>[] = [
      {
        label: 'PruneLab', sample: async () => {
          const r = await prunelabSparsegpt(oc, data, sparsity);
          return { hessianS: r.hessianS, solveS: r.solveS };
        },
      },
      ...threads.map((t): Side<SolveTimes> => ({
        label: `PyTorch ${t}`, sample: async () => {
          const r = await torch.request<{ hessian_s: number; solve_s: number }>({ cmd: 'sparsegpt', file, sparsity, dtype: 'float32', threads: t });
          return { hessianS: r.hessian_s, solveS: r.solve_s };
        },
      })),
    ];
    // No warm-up: the same-result check above already ran both sides once.
    const samples = await alternate(sides, rounds, 0);
    const solve = versus(samples, (s) => s.solveS, false);
    const hess = versus(samples, (s) => s.hessianS, false);
    // Nominal solve FLOPs: one Cholesky and a triangular inverse (2/3·n³) plus the dense lazy-update sweep (rows·cols²).
    const gflop = ((2 / 3) * oc.cols ** 3 + oc.rows * oc.cols ** 2) / 1e9;
    rows.push((peak) => [`${name}, ${oc.tokens} tok`, solve.prunelab, ...solve.torch, fmtRatio(solve), `${threads[solve.best]}`,
      pct(gflop / solve.prunelab / peak), pct(gflop / solve.torch[solve.best] / peak), hess.prunelab, hess.torch[hess.best], fmtRatio(hess)]);
  }
  fs.rmSync(file, { force: true });
  return [
    () => parity,
    (peak) => [`### SparseGPT on one operator, ${sparsity * 100}% unstructured, blocksize 128\n`,
      table(['operator [out×in]', 'PruneLab solve s', ...threads.map((t) => `PyTorch ${t} thr s`), 'PyTorch ÷ PruneLab time (spread)',
        'PyTorch best thr', 'PruneLab % of peak', 'PyTorch % of peak', 'PruneLab H s', 'PyTorch H s', 'H: PyTorch ÷ PruneLab'], rows.map((r) => r(peak))),
      '', 'Solve = damped Hessian → Cholesky factor of its inverse → OBS sweep (PruneLab: the sparsegpt plug-in; PyTorch: fp32,'
      + ' lazy batch updates as one matmul per block). H = 2/N·XᵀX from N calibration tokens (PruneLab: tf.matMul on the backend'
      + ` as the engine's statistics; PyTorch: fp32 matmul). Median of ${rounds} round(s), sides alternating; ratio > 1 = PruneLab`
      + ` faster. ${SPREAD_NOTE} % of peak: nominal FLOPs 2/3·in³ + out·in² ÷ time ÷ the GEMM peak. Issue 12 targets ≥ 1.0× on 4096×4096.\n`].join('\n'),
  ];
}
