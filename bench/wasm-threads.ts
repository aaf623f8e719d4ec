/**
 * Probe: does `@tensorflow/tfjs-backend-wasm`'s threaded SIMD build use more than one core under
 * Node? (README "Performance" has the findings.) Each configuration runs in its own process — the
 * backend's kernels keep module-level state, so two wasm modules cannot share one process — and
 * the processes alternate, so both see the same machine load.
 *
 *   node --import tsx bench/wasm-threads.ts [--repeats R]      # compare, print a table
 *   node --import tsx bench/wasm-threads.ts --child single|threaded THREADS   # one measurement (JSON)
 *
 * Why the stock package cannot do it under Node, and what this probe changes (bench only):
 * 1. `WASM_HAS_MULTITHREAD_SUPPORT` is hard-coded false when `IS_NODE` (tfjs issue #3830), so the
 *    single-threaded SIMD binary loads. The probe registers its own `wasm` factory instead.
 * 2. The pthread worker script and the main script are handed to Emscripten as Blob URLs, which
 *    Node's `worker_threads` cannot start; the probe writes the worker script to a temporary file
 *    and passes the package's own main-script path.
 * 3. Even then XNNPACK reports one thread on a 2-core machine: `init_with_threads_count` caps the
 *    count at `emscripten_num_logical_cores() / 2` (it assumes two hyperthreads per core), i.e.
 *    `os.cpus().length / 2` under Node, whatever `setThreadsCount` asked for. With
 *    `--report-double-cores` the probe makes `os.cpus()` report twice the cores while the module
 *    initialises, which lifts the cap.
 */
import * as tf from '@tensorflow/tfjs';
import { BackendWasm, getThreadsCount, setThreadsCount, setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
import type { BackendWasmModule } from '@tensorflow/tfjs-backend-wasm/wasm-out/tfjs-backend-wasm.js';
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadModel } from '../src/io/load-model.ts';
import { buildSyntheticLlama } from '../src/model/synthetic.ts';
import type { CausalLM } from '../src/model/causal-lm.ts';
import { sharedDataDir } from '../src/util/paths.ts';
import { median } from '../src/eval/speed.ts';
import { SYNTHETIC_512X8, time } from './util.ts';
import { fnv1a } from '../src/util/fnv.ts';

const require = createRequire(import.meta.url);
const PKG = path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json'));

interface ThreadedModule extends BackendWasmModule {
  PThread: { terminateAllThreads(): void };
  cwrap(name: string, ret: string | null, args: string[]): (...a: number[]) => number;
}
type Factory = (config: { locateFile(p: string): string; mainScriptUrlOrBlob: string }) => Promise<ThreadedModule>;

/** Register a `wasm` backend on the threaded SIMD binary, loadable under Node (see the header). */
function registerThreadedWasm(threads: number, doubleCores: boolean): void {
  const factory = require(path.join(PKG, 'wasm-out/tfjs-backend-wasm-threaded-simd.js')) as Factory;
  const { wasmWorkerContents } = require(path.join(PKG, 'wasm-out/tfjs-backend-wasm-threaded-simd.worker.js')) as { wasmWorkerContents: string };
  const workerFile = path.join(os.tmpdir(), `prunelab-tfjs-pthread-${process.pid}.cjs`);
  // The contents are a template literal: its "\n" escapes became newlines; restore them.
  fs.writeFileSync(workerFile, wasmWorkerContents.replace(/\n/g, '\\n'));
  process.on('exit', () => fs.rmSync(workerFile, { force: true }));
  tf.removeBackend('wasm');
  tf.registerBackend('wasm', async () => {
    const cpus = os.cpus;
    if (doubleCores) os.cpus = () => { const c = cpus(); return [...c, ...c]; };
    try {
      const mod = await factory({
        locateFile: (p) => (p.endsWith('.worker.js') ? workerFile : p.endsWith('.wasm') ? path.join(PKG, 'dist', 'tfjs-backend-wasm-threaded-simd.wasm') : p),
        mainScriptUrlOrBlob: path.join(PKG, 'wasm-out/tfjs-backend-wasm-threaded-simd.js'),
      });
      // What tfjs-backend-wasm's own init() adds to the module.
      mod.tfjs = {
        init: mod.cwrap('init', null, []),
        initWithThreadsCount: mod.cwrap('init_with_threads_count', null, ['number']),
        getThreadsCount: mod.cwrap('get_threads_count', 'number', []),
        registerTensor: mod.cwrap('register_tensor', null, ['number', 'number', 'number']),
        disposeData: mod.cwrap('dispose_data', null, ['number']),
        dispose: mod.cwrap('dispose', null, []),
      } as BackendWasmModule['tfjs'];
      setThreadsCount(threads);
      return new BackendWasm(mod);
    } finally {
      os.cpus = cpus;
    }
  }, 2);
}

/** The project's FNV-1a over the result's bits: equal hashes ⇒ bit-identical results across configurations. */
function bitsHash(x: Float32Array): string {
  return fnv1a(new Uint32Array(x.buffer, x.byteOffset, x.length));
}

export const MATMULS: [number, number, number][] = [[512, 512, 512], [1024, 64, 64], [1024, 64, 512], [128, 512, 1408], [512, 576, 1536]];

export interface ChildResult {
  mode: string;
  xnnpackThreads: number;
  /** Milliseconds per call, by label. */
  ms: Record<string, number>;
  hash: Record<string, string>;
}

async function child(mode: 'single' | 'threaded', threads: number): Promise<ChildResult> {
  tf.enableProdMode();
  if (mode === 'threaded') registerThreadedWasm(threads, process.argv.includes('--report-double-cores'));
  else setWasmPaths(path.join(PKG, 'dist') + path.sep);
  await tf.setBackend('wasm');
  await tf.ready();
  const res: ChildResult = { mode, xnnpackThreads: getThreadsCount(), ms: {}, hash: {} };
  for (const [m, k, n] of MATMULS) {
    const a = tf.randomNormal([m, k], 0, 1, 'float32', 1);
    const b = tf.randomNormal([k, n], 0, 1, 'float32', 2);
    const label = `matMul ${m}×${k}×${n}`;
    res.ms[label] = time(() => tf.tidy(() => { tf.matMul(a, b).dataSync(); }), m * k * n < 1e7 ? 50 : 10);
    res.hash[label] = bitsHash(tf.tidy(() => tf.matMul(a, b).dataSync() as Float32Array));
    tf.dispose([a, b]);
  }
  const stories = path.join(sharedDataDir(), 'models/stories260K/stories260K.bin');
  const models: [string, () => CausalLM, number, number][] = [
    ...(fs.existsSync(stories) ? [['stories260K forward 4×256', () => loadModel(stories).model, 4, 256] as [string, () => CausalLM, number, number]] : []),
    ['synthetic 512×8 forward 1×128', () => buildSyntheticLlama(SYNTHETIC_512X8), 1, 128],
  ];
  for (const [label, make, B, T] of models) {
    const model = make();
    const ids = Array.from({ length: B }, (_, r) => Array.from({ length: T }, (_, t) => 3 + ((r * 131 + t * 17) % (model.config.vocabSize - 3))));
    res.ms[label] = time(() => tf.tidy(() => { model.forward(ids).dataSync(); }), 5);
    res.hash[label] = bitsHash(tf.tidy(() => model.forward(ids).dataSync() as Float32Array));
    model.dispose();
  }
  // Emscripten's pthreads are ref'ed while they run: stop them or the process never exits.
  (tf.findBackend('wasm') as unknown as { wasm: Partial<ThreadedModule> }).wasm.PThread?.terminateAllThreads();
  return res;
}

function runChild(args: string[]): ChildResult {
  const r = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', ...args], { encoding: 'utf8', timeout: 600_000 });
  if (r.status !== 0) throw new Error(`wasm-threads child ${args.join(' ')} failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as ChildResult;
}

export interface ThreadsComparison {
  rows: { label: string; singleMs: number; threadedMs: number[]; identical: boolean }[];
  xnnpackThreads: number;
  stockThreads: number;
}

/**
 * Alternate single-threaded and threaded (2 XNNPACK threads, cap lifted) processes `repeats`
 * times; per label, the single-threaded median and each threaded/single ratio.
 */
export function compareThreads(repeats: number): ThreadsComparison {
  const singles: ChildResult[] = [];
  const threaded: ChildResult[] = [];
  const stock = runChild(['threaded', '2']); // the cap, without the os.cpus() change
  for (let i = 0; i < repeats; i++) {
    singles.push(runChild(['single', '1']));
    threaded.push(runChild(['threaded', '2', '--report-double-cores']));
  }
  const rows = Object.keys(singles[0]!.ms).map((label) => ({
    label,
    singleMs: median(singles.map((s) => s.ms[label]!)),
    threadedMs: threaded.map((t) => t.ms[label]!),
    identical: [...singles, ...threaded].every((r) => r.hash[label] === singles[0]!.hash[label]),
  }));
  return { rows, xnnpackThreads: threaded[0]!.xnnpackThreads, stockThreads: stock.xnnpackThreads };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const argv = process.argv.slice(2);
  if (argv[0] === '--child') {
    const r = await child(argv[1] === 'threaded' ? 'threaded' : 'single', Number(argv[2] ?? 2));
    process.stdout.write(JSON.stringify(r) + '\n');
  } else {
    const repeats = argv.includes('--repeats') ? Number(argv[argv.indexOf('--repeats') + 1]) : 3;
    const c = compareThreads(repeats);
    console.log(`XNNPACK threads: stock threaded build ${c.stockThreads}, cap lifted ${c.xnnpackThreads}; ${os.cpus().length} logical CPUs`);
    for (const r of c.rows) {
      const ratios = r.threadedMs.map((t) => (r.singleMs / t).toFixed(2)).join(', ');
      console.log(`${r.label}: single ${r.singleMs.toFixed(2)} ms; speed-up with 2 threads ${ratios}; bit-identical ${r.identical}`);
    }
  }
}
