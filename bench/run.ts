/**
 * `npm run bench`: everything measured in one run on this machine, reported with ratios taken
 * within the run (absolute times depend on the machine and its load; ratios much less).
 *
 *   npm run bench                      # all sections
 *   npm run bench -- --only forward    # matmul | forward | threads | wasm-threads | prune | prune-threads | parallel | solvers | torch (comma list)
 *   npm run bench -- --only solvers --float64   # also the solvers' host float64 reference (FISTAPruner's takes ~30 min on 512×8)
 *   npm run bench -- --only scale      # real model shapes from disk (writes gigabytes: only when named)
 *   npm run bench -- --quick           # fewer repeats, smaller synthetic model
 */
import * as tf from '@tensorflow/tfjs';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { initBackend, type ConcreteBackend } from '../src/backend/index.ts';
import { loadModel } from '../src/io/load-model.ts';
import { buildSyntheticLlama } from '../src/model/synthetic.ts';
import type { CausalLM } from '../src/model/causal-lm.ts';
import { loadTokenizer } from '../src/tokenizer/load.ts';
import { calibrationFromText } from '../src/prune/calibration.ts';
import { listMethods, parseMethodOptions } from '../src/prune/registry.ts';
import { pruneModel } from '../src/prune/engine.ts';
import type { PruneTarget } from '../src/prune/method.ts';
import { writeFileAtomic } from '../src/util/atomic.ts';
import { sharedDataDir } from '../src/util/paths.ts';
import { matmulGflops, SYNTHETIC_512X8, table, time } from './util.ts';
import { installWasmMatmul, noteWorkerThreads, openblasAddon, openblasUnavailable } from '../src/backend/openblas.ts';
import { runTorchSection } from './torch/section.ts';
import { runScaleSection } from './scale.ts';
import { runSolversSection } from './solvers.ts';
import { batchNllSum } from '../src/eval/perplexity.ts';
import { median } from '../src/eval/speed.ts';
import { ForwardPool } from '../src/parallel/forward-pool.ts';
import { defaultThreads } from '../src/parallel/threads.ts';
import { compareThreads } from './wasm-threads.ts';

const argv = process.argv.slice(2);
const quick = argv.includes('--quick');
const onlyArg = argv[argv.indexOf('--only') + 1];
const only = argv.includes('--only') && onlyArg ? new Set(onlyArg.split(',')) : null;
const want = (s: string) => only === null || only.has(s);

const SHARED = sharedDataDir();
const STORIES = path.join(SHARED, 'models/stories260K/stories260K.bin');
const TEXT = path.join(SHARED, 'text/tinystories-sample.txt');
const haveShared = fs.existsSync(STORIES);
const SYNTH = quick
  ? { hidden: 256, layers: 4, heads: 8, kvHeads: 4, ffn: 704, vocab: 512, seed: 1 }
  : SYNTHETIC_512X8;
const synthName = `synthetic-${SYNTH.hidden}x${SYNTH.layers}`;

async function use(backend: ConcreteBackend): Promise<void> {
  await initBackend(backend, true);
}

function forwardTps(model: CausalLM, B: number, T: number, repeats: number): number {
  const ids = Array.from({ length: B }, (_, b) => Array.from({ length: T }, (_, t) => 3 + ((b * 131 + t * 17) % (model.config.vocabSize - 3))));
  const ms = time(() => tf.tidy(() => { model.forward(ids).dataSync(); }), repeats);
  return (B * T) / (ms / 1000);
}

const models: { name: string; make: () => CausalLM; B: number; T: number }[] = [
  ...(haveShared ? [{ name: 'stories260K', make: () => loadModel(STORIES).model, B: 4, T: 256 }] : []),
  { name: synthName, make: () => buildSyntheticLlama(SYNTH), B: 1, T: 128 },
];

const out: string[] = [`# PruneLab benchmarks (${new Date().toISOString()}, ${quick ? 'quick' : 'full'})`, ''];
const print = (s: string) => { out.push(s); console.log(s); };

if (want('matmul')) {
  // The wasm backend's products on each kernel it can use (src/backend/openblas.ts), and the plain JS cpu backend.
  const rows: (string | number)[][] = [];
  await use('wasm');
  const blas = openblasAddon();
  const sizes = [512, 2048];
  for (const n of sizes) {
    const res: Record<string, number> = {};
    installWasmMatmul('xnnpack');
    res.xnnpack = matmulGflops(n, n > 1000 ? 2 : 5);
    if (blas) {
      installWasmMatmul('openblas');
      blas.setThreads(1);
      res.openblas1 = matmulGflops(n, n > 1000 ? 3 : 10);
      noteWorkerThreads(0);
      res.openblas = matmulGflops(n, n > 1000 ? 3 : 10);
    }
    installWasmMatmul();
    rows.push([`${n}×${n} fp32 matMul GFLOP/s`, res.xnnpack, res.openblas1 ?? NaN, res.openblas ?? NaN, (res.openblas ?? NaN) / res.xnnpack]);
  }
  print('## matMul (wasm backend)\n');
  print(table(['', 'XNNPACK (1 thread)', 'OpenBLAS 1 thread', `OpenBLAS ${os.availableParallelism()} threads`, 'OpenBLAS / XNNPACK'], rows));
  print(blas
    ? `\nOpenBLAS: ${blas.describe().config}. Limited by: XNNPACK runs single-threaded WebAssembly SIMD (128-bit, no FMA); OpenBLAS runs its native kernels (the core named above) on tiles of C fixed by the shape (up to 512×2048; native/openblas-kernels.c), one tile per thread at a time.\n`
    : `\nOpenBLAS columns: not built (${openblasUnavailable()}).\n`);
}

if (want('forward')) {
  const rows: (string | number)[][] = [];
  for (const m of models) {
    const tps: Record<string, number> = {};
    for (const be of ['wasm', 'cpu'] as const) {
      await use(be);
      const model = m.make();
      // The cpu backend is ~30× slower: one short measurement is enough for the ratio.
      tps[be] = be === 'cpu' ? forwardTps(model, 1, 64, 1) : forwardTps(model, m.B, m.T, quick ? 2 : 5);
      model.dispose();
    }
    rows.push([`${m.name} forward tokens/s`, tps.wasm, tps.cpu, tps.wasm / tps.cpu]);
  }
  print('## Forward throughput\n');
  print(table(['', 'wasm', 'cpu', 'wasm / cpu'], rows));
  print('\nwasm: B×T = 4×256 (stories260K), 1×128 (synthetic); cpu: 1×64. Small models are limited by per-op overhead'
    + ' (tens of µs per kernel call, ~25 kernels per layer plus 6 per key/value group of attention), large ones by matMul.\n');
}

if (want('threads')) {
  await use('wasm');
  const cores = defaultThreads();
  const counts = [...new Set([2, cores])].filter((n) => n >= 2);
  const repeats = quick ? 2 : 3;
  const rows: (string | number)[][] = [];
  const cpuSeconds = (u: NodeJS.CpuUsage) => (u.user + u.system) / 1e6;
  const load0 = os.loadavg()[0]!;
  for (const m of models) {
    const model = m.make();
    const T = m.name === 'stories260K' ? 256 : 128;
    const perBatch = m.name === 'stories260K' ? Math.floor(4096 / T) : 4;
    for (const n of counts) {
      // 2 batches per thread, the perplexity protocol's batches: the same work on 1 and n threads.
      const batches = Array.from({ length: 2 * n }, (_, b) => Array.from({ length: perBatch }, (_, w) =>
        Array.from({ length: T }, (_, t) => 3 + ((b * 7919 + w * 131 + t * 17) % (model.config.vocabSize - 3)))));
      const tasks = batches.map((rows) => ({ type: 'nll' as const, rows }));
      const t0 = performance.now();
      const pool = ForwardPool.start(model, n);
      let pooled: number[] = [];
      try {
        pooled = await pool.run(tasks); // includes starting the workers
        const startS = (performance.now() - t0) / 1000;
        const one: number[] = [];
        const many: number[] = [];
        // Cores this process obtained (CPU time of all its threads ÷ wall time): the ceiling of any speed-up.
        const cores1: number[] = [];
        const blasAll: number[] = [];
        const coresN: number[] = [];
        let local: number[] = [];
        for (let r = 0; r < repeats; r++) {
          let t = performance.now();
          let cpu = process.cpuUsage();
          // One core: OpenBLAS's products on one thread too (while the pool is up each thread gets cores ÷ n).
          openblasAddon()?.setThreads(1);
          local = batches.map((rows) => batchNllSum(model, rows));
          one.push((performance.now() - t) / 1000);
          cores1.push(cpuSeconds(process.cpuUsage(cpu)) / one[r]!);
          noteWorkerThreads(0);
          if (openblasAddon()) {
            // In process with OpenBLAS on every core: what a run without --threads gets.
            openblasAddon()!.setThreads(cores);
            const tb = performance.now();
            batches.forEach((rows) => batchNllSum(model, rows));
            blasAll.push((performance.now() - tb) / 1000);
            noteWorkerThreads(0);
          }
          t = performance.now();
          cpu = process.cpuUsage();
          pooled = await pool.run(tasks);
          many.push((performance.now() - t) / 1000);
          coresN.push(cpuSeconds(process.cpuUsage(cpu)) / many[r]!);
        }
        const ratios = one.map((s, i) => s / many[i]!);
        // CPU seconds of the 1-thread pass ÷ those of the n-thread pass: the overhead of splitting the work, whatever the load.
        const efficiency = one.map((s, i) => (s * cores1[i]!) / (many[i]! * coresN[i]!));
        const tokens = 2 * n * perBatch * T;
        rows.push([m.name, n, tokens, median(one), median(many), median(ratios),
          `${Math.min(...ratios).toFixed(2)}–${Math.max(...ratios).toFixed(2)}`, median(one) / startS,
          `${median(cores1).toFixed(2)} / ${median(coresN).toFixed(2)}`, median(efficiency),
          blasAll.length ? median(one) / median(blasAll) : NaN, local.every((v, i) => v === pooled[i]) ? 'yes' : 'NO']);
      } finally {
        await pool.close();
      }
    }
    model.dispose();
  }
  print(`## Data-parallel forward passes: worker threads vs one thread (${cores} cores)\n`);
  print(table(['model', 'threads', 'tokens', '1 thread s', 'n threads s', 'speed-up', 'range', 'incl. start', 'cores obtained 1 / n', 'CPU efficiency', 'in process, OpenBLAS on every core: speed-up', 'same sums'], rows));
  print(`\nThe perplexity pass (\`eval ppl --threads n\`): 2 batches per thread, ${repeats} alternating repeats; speed-up = 1-thread`
    + ' time ÷ n-thread time in the same repeat, median and range; "incl. start" counts starting the workers (each loads'
    + ' tsx, TensorFlow.js and its copy of the weights) in the n-thread time. Limited by: free cores (on a shared machine the'
    + ' other jobs take their share), the main thread idling while it waits, batches not divisible among threads, and,'
    + ' for short passes, worker start-up. "cores obtained" is the CPU time all the process\'s threads got ÷ wall time:'
    + ' under Linux\'s autogroup scheduling each busy session gets an equal share of the machine, so on a loaded machine n'
    + ' threads obtain little more than one. "CPU efficiency" = CPU time of the 1-thread pass ÷ CPU time of the n-thread pass'
    + ' (1.0: splitting costs nothing); speed-up ≈ CPU efficiency × cores obtained with n ÷ with 1.'
    + ` Load average ${load0.toFixed(1)} at the start, ${os.loadavg()[0]!.toFixed(1)} at the end.\n`);
}

// Part of `threads` and of `prune` (prune-threads alone: just this).
if (want('threads') || want('prune') || want('prune-threads')) {
  // Pruning with its calibration passes and operator solves on n threads, in process on every core, and the default.
  await use('wasm');
  const cores = defaultThreads();
  const tok = haveShared ? await loadTokenizer(path.join(SHARED, 'models/stories260K/tok512.bin')) : null;
  const methods = await listMethods();
  const rows: (string | number)[][] = [];
  const cpuSeconds = (u: NodeJS.CpuUsage) => (u.user + u.system) / 1e6;
  // stories260K: 2 batches of 16 × 256 tokens per thread (tiny products: start-up and per-call bound);
  // the synthetic model: 32 × 128 seeded ids (products and statistics of real size).
  const cases = [
    ...(tok ? [{ name: 'stories260K', make: () => loadModel(STORIES).model,
      windows: (n: number) => calibrationFromText(tok, { text: TEXT, nsamples: 32 * n, seqlen: 256, seed: 0 }).windows }] : []),
    { name: synthName, make: () => buildSyntheticLlama(SYNTH),
      windows: () => Array.from({ length: quick ? 8 : 32 }, (_, w) => Array.from({ length: 128 }, (_, t) => 3 + ((w * 977 + t * 131) % (SYNTH.vocab - 3)))) },
  ];
  interface Combo {
    c: (typeof cases)[number];
    name: string;
    method: (typeof methods)[number];
    n: number;
    windows: number[][];
    secs: Record<string, number[]>;
    obtained: Record<string, number[]>;
    autoUsed: number[];
  }
  const combos: Combo[] = [];
  for (const c of cases) {
    for (const name of ['wanda', 'sparsegpt']) {
      const method = methods.find((x) => x.name === name);
      if (!method) continue;
      for (const n of [...new Set([2, cores])].filter((k) => k >= 2)) combos.push({ c, name, method, n, windows: c.windows(n), secs: {}, obtained: {}, autoUsed: [] });
    }
  }
  // '1': one core (OpenBLAS's products on one thread too); 'blas': in process, one thread of
  // passes, OpenBLAS's products on n threads; 'auto': the CLI's default (no --threads), at most n
  // threads, a pool only where it pays; 'pool': `--threads n`. Each phase runs for every case
  // before the next: 'auto' may start a worker pool and 'pool' does, and after a pool prune the
  // in-process prunes in the same process ran slower (stories260K Wanda on 2 threads 0.68–1.08 s
  // against 0.64–0.67 s; README, session 15), which a CLI user (one prune per process) never
  // sees. Round r of each mode is compared with round r of '1'.
  const rounds = quick ? 1 : 2;
  const phases = [['1', ...(openblasAddon() ? ['blas'] : [])], ['auto'], ['pool']] as const;
  for (const phase of phases) {
    for (const k of combos) {
      for (let r = 0; r < rounds; r++) {
        for (const mode of phase) {
          const model = k.c.make();
          if (mode === '1') openblasAddon()?.setThreads(1);
          if (mode === 'blas') openblasAddon()!.setThreads(k.n);
          const t0 = performance.now();
          const cpu = process.cpuUsage();
          const report = await pruneModel(model, {
            method: k.method, options: parseMethodOptions(k.method, {}), target: { sparsity: 0.5, pattern: { kind: 'unstructured' } },
            windows: k.windows, threads: mode === 'pool' || mode === 'auto' ? k.n : 1, autoThreads: mode === 'auto',
          });
          const s = (performance.now() - t0) / 1000;
          (k.secs[mode] ??= []).push(s);
          (k.obtained[mode] ??= []).push(cpuSeconds(process.cpuUsage(cpu)) / s);
          if (mode === 'auto') k.autoUsed.push(report.threadsUsed ?? 1);
          noteWorkerThreads(0);
          model.dispose();
        }
      }
    }
  }
  for (const { c, name, n, windows, secs, obtained, autoUsed } of combos) {
    const ratio = (mode: string) => median(secs['1']!.map((s, i) => s / secs[mode]![i]!));
    const ratios = secs['1']!.map((s, i) => s / secs.pool![i]!);
    const efficiency = secs['1']!.map((s, i) => (s * obtained['1']![i]!) / (secs.pool![i]! * obtained.pool![i]!));
    rows.push([c.name, name, n, windows.length * windows[0]!.length, median(secs['1']!), median(secs.pool!), median(ratios),
      `${Math.min(...ratios).toFixed(2)}–${Math.max(...ratios).toFixed(2)}`, `${median(obtained['1']!).toFixed(2)} / ${median(obtained.pool!).toFixed(2)}`,
      median(efficiency), `${autoUsed.join(', ')}: ${ratio('auto').toFixed(2)}`, secs.blas ? ratio('blas') : NaN]);
  }
  print('## Pruning with the calibration passes on n threads\n');
  print(table(['model', 'method', 'threads', 'calibration tokens', '1 thread s', 'n threads s', 'speed-up', 'range', 'cores obtained 1 / n', 'CPU efficiency',
    'default: threads used: speed-up', 'in process, OpenBLAS on n threads: speed-up'], rows));
  print('\n`prune --threads n` at 50%, the method\'s default mode, pool start included; speed-up = the one-core time (one thread, OpenBLAS on one'
    + ' thread) ÷ the n-thread time of the same round (the modes that may start a worker pool run after all in-process ones: a pool prune slowed the in-process prunes after it in the same process); "default" is `prune` without `--threads` (the first layer\'s passes timed in process, a pool'
    + ' for the rest only where `poolPaysNow` says it pays on the cores free); "in process" keeps one thread of passes with OpenBLAS\'s products'
    + ' on n threads. Limited by: the per-operator solvers and mask selection, solved side by side on the workers only within a group of operators'
    + ' (the largest one sets its time), the weights of each layer sent to every worker after it is pruned, starting the workers (each loads tsx,'
    + ' TensorFlow.js and the weights), in process the one-threaded non-product kernels and host work, and the cores the machine actually gives.\n');
}

if (want('wasm-threads')) {
  const c = compareThreads(quick ? 2 : 3);
  print('## Threaded WebAssembly build (XNNPACK threads) vs single-threaded\n');
  print(table(['', 'single ms', '2 threads: speed-up per repeat', 'bit-identical'],
    c.rows.map((r) => [r.label, r.singleMs, r.threadedMs.map((t) => (r.singleMs / t).toFixed(2)).join(', '), r.identical ? 'yes' : 'NO'])));
  print(`\nXNNPACK threads: ${c.stockThreads} with the threaded build as shipped (its cap is logical cores ÷ 2), ${c.xnnpackThreads} with`
    + ' the cap lifted (bench/wasm-threads.ts, which also explains the changes needed to load it under Node). Separate processes,'
    + ' alternating. Limited by: a thread barrier per kernel (small kernels pay it in full), and single-threaded non-matMul kernels.\n');
}

if (want('prune')) {
  await use('wasm');
  const methods = await listMethods();
  const rows: (string | number)[][] = [];
  const tok = haveShared ? await loadTokenizer(path.join(SHARED, 'models/stories260K/tok512.bin')) : null;
  for (const m of models) {
    const probe = m.make();
    const vocab = probe.config.vocabSize;
    probe.dispose();
    // Calibration: real text for stories260K, seeded random ids for the synthetic model.
    const windows = tok && m.name === 'stories260K'
      ? calibrationFromText(tok, { text: TEXT, nsamples: 16, seqlen: 128, seed: 0 }).windows
      : Array.from({ length: 8 }, (_, w) => Array.from({ length: 128 }, (_, t) => 3 + ((w * 977 + t * 131) % (vocab - 3))));
    const times: Record<string, number> = {};
    for (const method of methods) {
      const target: PruneTarget = { sparsity: 0.5, pattern: { kind: 'unstructured' } };
      const model = m.make();
      const t0 = performance.now();
      try {
        await pruneModel(model, { method, options: parseMethodOptions(method, {}), target, windows });
        times[method.name] = (performance.now() - t0) / 1000;
        console.error(`bench: ${m.name} ${method.name} ${times[method.name].toFixed(1)} s`);
      } catch (e) {
        times[method.name] = NaN;
        console.error(`bench: ${method.name} on ${m.name} failed: ${(e as Error).message}`);
      }
      model.dispose();
    }
    const ref = times['wanda'];
    for (const [name, s] of Object.entries(times)) rows.push([m.name, name, s, s / ref]);
  }
  print('## Pruning wall time at 50% (wasm backend)\n');
  print(table(['model', 'method', 'seconds', '× Wanda'], rows));
  print('\nCalibration: 16 × 128 tokens of TinyStories text (stories260K), 8 × 128 seeded ids (synthetic). Includes the'
    + ' calibration forward passes and statistics. Limited by: per-operator host work (sorting, OBS/FISTA loops in JS) for'
    + ' SparseGPT/FISTAPruner; gradient passes for LLM-Pruner/SAAP.\n');
}

if (want('parallel')) {
  await use('wasm');
  const methods = await listMethods();
  const fista = methods.find((m) => m.name === 'fistapruner');
  if (!fista) {
    print('## FISTAPruner parallel speed-up\n\n(fistapruner is not installed)\n');
  } else {
    const rows: (string | number)[][] = [];
    const m = models[models.length - 1];
    const probe = m.make();
    const vocab = probe.config.vocabSize;
    probe.dispose();
    const windows = Array.from({ length: 8 }, (_, w) => Array.from({ length: 128 }, (_, t) => 3 + ((w * 977 + t * 131) % (vocab - 3))));
    const secs: number[] = [];
    for (const workers of [1, 2]) {
      const model = m.make();
      const t0 = performance.now();
      await pruneModel(model, {
        method: fista, options: parseMethodOptions(fista, { warmStart: 'wanda' }), workers,
        target: { sparsity: 0.5, pattern: { kind: 'unstructured' } }, windows, mode: 'dense-parallel',
      });
      secs.push((performance.now() - t0) / 1000);
      model.dispose();
    }
    rows.push([m.name, secs[0], secs[1], secs[0] / secs[1]]);
    print('## FISTAPruner parallel speed-up (dense-parallel mode)\n');
    print(table(['model', '1 worker s', '2 workers s', 'speed-up'], rows));
    print('\nLimited by: the machine\'s cores (2 in CI) and the serial dense pass that captures every layer\'s inputs.\n');
  }
}

if (want('solvers')) {
  await use('wasm');
  await runSolversSection({ synth: SYNTH, name: synthName, float64: argv.includes('--float64'), print });
}

if (want('torch')) {
  await runTorchSection({
    quick, print, synth: SYNTH, stories: haveShared ? STORIES : null,
    golden: fs.existsSync(path.join(SHARED, 'golden')) ? path.join(SHARED, 'golden') : null,
  });
}

// Builds multi-gigabyte checkpoints on disk: never part of a plain run.
if (only?.has('scale')) await runScaleSection({ quick, print });

const file = path.join(process.cwd(), 'bench', 'last-run.md');
writeFileAtomic(file, out.join('\n') + '\n');
console.error(`bench: written to ${path.relative(process.cwd(), file)}`);
