/**
 * `npm run bench -- --only torch`: PruneLab (WebAssembly backend) side by side with a small PyTorch
 * reference (`bench/torch/*.py`) on the same machine, the same HF checkpoints and the same
 * operator, in one run. Each figure is taken alternately (PruneLab, PyTorch on 1 thread, PyTorch on
 * every core, repeated) so load changes on a shared machine hit both sides; the ratio is
 * PruneLab ÷ PyTorch at PyTorch's best thread setting, with its spread over the rounds. Both
 * sides' logits are compared first: a timing is only reported when they compute the same.
 */
import * as tf from '@tensorflow/tfjs';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { initBackend } from '../../src/backend/index.ts';
import { flopsPerToken, measureSpeed, median } from '../../src/eval/speed.ts';
import { writeHfCheckpoint } from '../../src/io/hf-checkpoint.ts';
import { loadModel, saveModel } from '../../src/io/load-model.ts';
import { syntheticLlamaConfig, syntheticLlamaTensors, type SyntheticLlamaOptions } from '../../src/model/synthetic.ts';
import { matmulGflops, table, type Cell } from '../util.ts';
import { TorchBridge, type TorchInfo } from './bridge.ts';
import { operatorData, prunelabSparsegpt, writeOperator, type OpCase, type SolveTimes } from './operator.ts';
import { modelLogits, prunelabLogits, relDiff, sparsegptParity, torchLogits } from './parity.ts';

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

interface ModelCase {
  name: string;
  /** Writes the HF checkpoint folder both sides load. */
  write: (dir: string) => void;
  tokens: number;
}

interface SpeedSample {
  prefillTps: number;
  decodeTps: number;
}

type Side<T> = { label: string; sample: () => Promise<T> };

const MAX_ROUNDS = 40;

/**
 * Rounds of every side in turn (one run each), so load changes on a shared machine hit all sides
 * alike: samples per side. With a budget, each side first runs once unmeasured, and short runs
 * get more rounds (up to MAX_ROUNDS) until a case takes about `budgetMs`.
 */
async function alternate<T>(sides: Side<T>[], minRounds: number, budgetMs: number): Promise<T[][]> {
  let rounds = minRounds;
  if (budgetMs > 0) {
    const t0 = performance.now();
    for (const s of sides) await s.sample();
    rounds = Math.min(MAX_ROUNDS, Math.max(minRounds, Math.ceil(budgetMs / (performance.now() - t0))));
  }
  const out: T[][] = sides.map(() => []);
  for (let r = 0; r < rounds; r++) {
    for (let i = 0; i < sides.length; i++) out[i].push(await sides[i].sample());
  }
  return out;
}

/** Linear-interpolated quantile of sorted values. */
function quantile(sorted: number[], q: number): number {
  const x = q * (sorted.length - 1);
  const i = Math.floor(x);
  return i + 1 < sorted.length ? sorted[i] + (x - i) * (sorted[i + 1] - sorted[i]) : sorted[i];
}

/** PruneLab ÷ PyTorch for one metric: the best PyTorch side by median, the ratio's spread over rounds. */
interface Versus {
  prunelab: number;
  torch: number[];
  best: number;
  ratio: number;
  /** min–max of the per-round ratios, the interquartile range from 5 rounds on. */
  lo: number;
  hi: number;
  rounds: number;
}

function versus<T>(samples: T[][], metric: (s: T) => number, higherIsBetter: boolean): Versus {
  const med = samples.map((ss) => median(ss.map(metric)));
  const torch = med.slice(1);
  const better = (a: number, b: number) => (higherIsBetter ? a > b : a < b);
  let best = 1;
  for (let i = 2; i < med.length; i++) if (better(med[i], med[best])) best = i;
  // Throughputs compare as PruneLab / PyTorch, times as PyTorch / PruneLab: > 1 = PruneLab faster.
  const rel = (p: number, t: number) => (higherIsBetter ? p / t : t / p);
  const perRound = samples[0].map((s, r) => rel(metric(s), metric(samples[best][r]))).sort((a, b) => a - b);
  const iqr = perRound.length >= 5;
  return {
    prunelab: med[0], torch, best: best - 1, ratio: rel(med[0], med[best]), rounds: perRound.length,
    lo: iqr ? quantile(perRound, 0.25) : perRound[0], hi: iqr ? quantile(perRound, 0.75) : perRound[perRound.length - 1],
  };
}

const fmtRatio = (v: Versus) => `${v.ratio.toFixed(2)}× (${v.lo.toFixed(2)}–${v.hi.toFixed(2)}, ${v.rounds} rounds)`;
const SPREAD_NOTE = 'The spread is the min–max of the ratios taken within each round (the interquartile range from 5 rounds on).';
const pct = (x: number) => `${(100 * x).toFixed(x < 0.1 ? 2 : 1)}%`;

function parityIds(vocab: number, T: number): number[] {
  return Array.from({ length: T }, (_, t) => 3 + ((t * 31 + 7) % (vocab - 3)));
}

export async function runTorchSection(o: TorchSectionOptions): Promise<void> {
  const { print, quick } = o;
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
    if (/\/blas\/libblas\.so/.test(info.blas)) {
      print('**Warning:** PyTorch runs on the reference (netlib) BLAS, ~50–100× slower than OpenBLAS; '
        + 'install `libopenblas0-openmp` for the figures a PyTorch user would see.');
    }
    print('');

    const peak = await gemmPeak(torch, threads, quick, print);
    await modelRows(torch, o, threads, tmp, peak);
    await sparsegptRows(torch, o, threads, tmp, peak);
  } finally {
    await torch.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

/** The machine's fp32 GEMM peak as measured now: the best of PyTorch (each thread setting) and wasm. */
async function gemmPeak(torch: TorchBridge, threads: number[], quick: boolean, print: (s: string) => void): Promise<number> {
  const n = quick ? 1024 : 2048;
  const rows: Cell[][] = [];
  let peak = 0;
  for (const t of threads) {
    const r = await torch.request<{ gflops: number }>({ cmd: 'gemm', n, threads: t, repeats: 3 });
    rows.push([`PyTorch, ${t} thread${t > 1 ? 's' : ''}`, r.gflops]);
    peak = Math.max(peak, r.gflops);
  }
  const wasm = matmulGflops(n, 3);
  rows.push(['PruneLab (tf.matMul, wasm)', wasm]);
  peak = Math.max(peak, wasm);
  print(`### fp32 GEMM ${n}×${n}\n`);
  print(table(['', 'GFLOP/s'], rows));
  print(`\nMachine GEMM peak for the "% of peak" columns below: ${peak.toFixed(1)} GFLOP/s (best of the above, this run).\n`);
  return peak;
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

async function modelRows(torch: TorchBridge, o: TorchSectionOptions, threads: number[], tmp: string, peak: number): Promise<void> {
  const { print, quick } = o;
  const minRounds = quick ? 1 : 3;
  const budgetMs = quick ? 2000 : 10_000;
  const newTokens = quick ? 8 : 16;
  const parity: Cell[][] = [];
  const prefill: Cell[][] = [];
  const decode: Cell[][] = [];

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

  for (const c of modelCases(o)) {
    const dir = path.join(tmp, c.name.replace(/[^A-Za-z0-9]+/g, '-'));
    console.error(`bench: writing the ${c.name} checkpoint`);
    c.write(dir);
    await torch.request({ cmd: 'load', key: c.name, model: dir });
    const model = loadModel(dir).model;
    try {
      const cfg = model.config;
      const ids = parityIds(cfg.vocabSize, 24);
      const diff = relDiff(modelLogits(model, ids), await torchLogits(torch, c.name, ids, tmp));
      parity.push([`${c.name} (${ids.length} tokens)`, '–', diff.toExponential(1)]);
      if (!(diff <= PARITY_TOL)) {
        prefill.push([c.name, c.tokens, `not compared: logits differ (${diff.toExponential(1)} > ${PARITY_TOL})`]);
        continue;
      }
      console.error(`bench: timing ${c.name}, ${c.tokens} tokens`);
      const sides: Side<SpeedSample>[] = [
        {
          label: 'PruneLab', sample: async () => {
            const r = measureSpeed(model, { promptTokens: c.tokens, newTokens, repeats: 1, warmup: 0 });
            return { prefillTps: r.prefill_tps, decodeTps: r.decode_tps };
          },
        },
        ...threads.map((t): Side<SpeedSample> => ({
          label: `PyTorch ${t}`, sample: async () => {
            const r = await torch.request<{ prefill_ms: number; decode_ms: number }>(
              { cmd: 'speed', key: c.name, prompt_tokens: c.tokens, new_tokens: newTokens, threads: t });
            return { prefillTps: c.tokens / (r.prefill_ms / 1000), decodeTps: newTokens / (r.decode_ms / 1000) };
          },
        })),
      ];
      const samples = await alternate(sides, minRounds, budgetMs);
      // Prefill FLOPs: the mean attention context of a causal prompt of T tokens is (T + 1) / 2.
      const fPrefill = flopsPerToken(cfg, (c.tokens + 1) / 2);
      const fDecode = flopsPerToken(cfg, c.tokens + (newTokens + 1) / 2);
      for (const [rowsOut, metric, flops] of [[prefill, (s: SpeedSample) => s.prefillTps, fPrefill], [decode, (s: SpeedSample) => s.decodeTps, fDecode]] as const) {
        const v = versus(samples, metric, true);
        rowsOut.push([c.name, c.tokens, v.prunelab, ...v.torch, fmtRatio(v), `${threads[v.best]}`,
          pct((v.prunelab * flops) / 1e9 / peak), pct((v.torch[v.best] * flops) / 1e9 / peak)]);
      }
    } finally {
      model.dispose();
      await torch.request({ cmd: 'unload', key: c.name });
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }

  print('### Same logits\n');
  print(table(['checkpoint', 'PyTorch vs reference.json', 'PruneLab vs PyTorch'], parity));
  print(`\nmax |Δlogit| / max |logit| over every position; timings below are only taken when PruneLab vs PyTorch ≤ ${PARITY_TOL}.`
    + ' The golden references were computed in float64 by the fixtures\' authors (F16/BF16 weights decoded exactly).\n');
  const tHeads = threads.map((t) => `PyTorch ${t} thr`);
  const heads = ['model', 'prompt tokens', 'PruneLab', ...tHeads, 'PruneLab ÷ PyTorch (spread)', 'PyTorch best thr', 'PruneLab % of peak', 'PyTorch % of peak'];
  print('### Prefill tokens/s (one sequence, into a KV cache, logits of every position)\n');
  print(table(heads, prefill));
  print(`\n### Decode tokens/s (${newTokens} greedy steps after the prompt, KV cache)\n`);
  print(table(heads, decode));
  print(`\nMedians over rounds after a warm-up; in each round every side runs once, in turn (at least ${minRounds}, more for short`
    + ` runs, up to about ${budgetMs / 1000} s per model). ${SPREAD_NOTE}`
    + ' % of peak: analytic FLOPs (eval/speed.ts flopsPerToken; attention context (T+1)/2 for prefill) per second'
    + ' ÷ the GEMM peak above. Issue 12 targets PruneLab ÷ PyTorch ≥ 1.0× on prefill (SmolLM-135M shape, stories260K).\n');
}

async function sparsegptRows(torch: TorchBridge, o: TorchSectionOptions, threads: number[], tmp: string, peak: number): Promise<void> {
  const { print, quick } = o;
  const sparsity = 0.5;
  const file = path.join(tmp, 'operator.safetensors');

  // Same result first: a small operator through both, PyTorch in float64 (PruneLab's precision) and float32 (what is timed).
  const pc: OpCase = { rows: 256, cols: 512, tokens: 1024 };
  const dtypes = ['float64', 'float32'] as const;
  const par = await sparsegptParity(torch, pc, operatorData(pc, 11), sparsity, dtypes, tmp);
  print(`### SparseGPT, same result (${pc.rows}×${pc.cols} operator, ${pc.tokens} tokens, ${sparsity * 100}%)\n`);
  print(table(['PruneLab vs', 'same keep/prune decision', '‖ΔW‖ / ‖W‖', 'loss, relative'],
    par.map((p, i) => [`PyTorch ${dtypes[i]}`, `${p.sameMask} of ${p.total}`, p.relWeight.toExponential(1), p.relLoss.toExponential(1)])));
  print('');

  const cases: OpCase[] = quick
    ? [{ rows: 576, cols: 1536, tokens: 1024 }]
    : [{ rows: 1536, cols: 576, tokens: 4096 }, { rows: 576, cols: 1536, tokens: 4096 }, { rows: 4096, cols: 4096, tokens: 4096 }];
  const rounds = quick ? 1 : 2;
  const rows: Cell[][] = [];
  for (const c of cases) {
    console.error(`bench: SparseGPT ${c.rows}×${c.cols}, ${c.tokens} tokens, ${rounds} round(s)`);
    const data = operatorData(c, 12);
    writeOperator(file, c, data);
    const sides: Side<SolveTimes>[] = [
      {
        label: 'PruneLab', sample: async () => {
          const r = await prunelabSparsegpt(c, data, sparsity);
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
    const solveFlops = (2 / 3) * c.cols ** 3 + c.rows * c.cols ** 2;
    rows.push([`${c.rows}×${c.cols}, ${c.tokens} tok`, solve.prunelab, ...solve.torch, fmtRatio(solve), `${threads[solve.best]}`,
      pct(solveFlops / solve.prunelab / 1e9 / peak), pct(solveFlops / solve.torch[solve.best] / 1e9 / peak),
      hess.prunelab, hess.torch[hess.best], fmtRatio(hess)]);
  }
  fs.rmSync(file, { force: true });
  const tHeads = threads.map((t) => `PyTorch ${t} thr s`);
  print(`### SparseGPT on one operator, ${sparsity * 100}% unstructured, blocksize 128 (seconds)\n`);
  print(table(['operator [out×in]', 'PruneLab solve s', ...tHeads, 'PyTorch ÷ PruneLab time (spread)', 'PyTorch best thr',
    'PruneLab % of peak', 'PyTorch % of peak', 'PruneLab H s', 'PyTorch H s', 'H: PyTorch ÷ PruneLab'], rows));
  print(`\nSolve = damped Hessian → Cholesky factor of its inverse → OBS sweep (PruneLab: the sparsegpt plug-in; PyTorch: fp32,`
    + ' lazy batch updates as one matmul per block). H = 2/N·XᵀX from N calibration tokens (PruneLab: tf.matMul on the backend'
    + ` as the engine's statistics; PyTorch: fp32 matmul). Median of ${rounds} round(s), sides alternating; ratio > 1 = PruneLab faster. ${SPREAD_NOTE}`
    + ' % of peak: nominal FLOPs 2/3·in³ + out·in² ÷ time ÷ the GEMM peak. Issue 12 targets ≥ 1.0× on 4096×4096.\n');
}
