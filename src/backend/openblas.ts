/**
 * Matrix products of the WebAssembly backend on OpenBLAS.
 *
 * XNNPACK's wasm GEMM reaches ~30 GFLOP/s on one core here (and ~3 with `transposeB`); OpenBLAS
 * reaches ~145 per core with every variant. So where the native addon `native/openblas-kernels.c`
 * is built (`scripts/build-native.sh`, run by `npm install`; it needs Debian's `libopenblas-dev`),
 * the wasm backend's `BatchMatMul` kernel is replaced by one that runs `cblas_sgemm` on the
 * operands in place in the WebAssembly heap: no copies, every other kernel unchanged, and every
 * caller (forward passes, gradients, the solvers' `LinAlg`) gets it without knowing.
 *
 * `--matmul xnnpack` (or PRUNELAB_MATMUL=xnnpack) keeps the wasm backend's own kernel, e.g. to
 * reproduce a figure computed without OpenBLAS; products differ from it by float32 rounding.
 */
import * as tf from '@tensorflow/tfjs';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import { isMainThread } from 'node:worker_threads';
import { ConfigError } from '../util/errors.ts';
import type { NativeKernels } from '../linalg/linalg.ts';
import { installNativeElementwise, nativeElementwiseInstalled, uninstallNativeElementwise, type ElementwiseAddon } from './native-elementwise.ts';

export const MATMUL_CHOICES = ['auto', 'openblas', 'xnnpack'] as const;
export type MatmulChoice = (typeof MATMUL_CHOICES)[number];
/** What the wasm backend's matrix products ran on. */
export type MatmulKernel = 'openblas' | 'xnnpack';

interface OpenBlasAddon extends Partial<ElementwiseAddon> {
  gemm(heap: ArrayBuffer, batch: number, m: number, n: number, k: number, aOff: number, aStride: number,
    transA: number, bOff: number, bStride: number, transB: number, cOff: number): void;
  setThreads(n: number): void;
  /** Products cut into one tile per thread where that gives the same values (native/openblas-kernels.c, wide tiles); returns the previous setting. Absent from an addon built before it. */
  setWideTiles?(on: boolean): boolean;
  /** minTiles: the fewest tiles a pool-sized product is cut into (one per core, at least 4; absent from an addon built before it). */
  describe(): { config: string; threads: number; wideTiles?: boolean; minTiles?: number };
  /** In place on JAJ at element offset `off` of the heap: U = J·(L⁻¹ of JAJ = LLᵀ)·J; [−1, 0] or [pivot, value]. */
  upperCholeskyOfInverse(heap: ArrayBuffer, off: number, n: number): [number, number];
  obsSweepBlock: NativeKernels['obsSweepBlock'];
  hostGemm(a: Float32Array, b: Float32Array, c: Float32Array, m: number, n: number, k: number, transA: number, transB: number): void;
  /** native/fista-kernels.c (absent from an addon built before it). */
  fistaAcceptStep?: NativeKernels['fistaAcceptStep'];
  fistaCutRows?: NativeKernels['fistaCutRows'];
  fistaChange?: NativeKernels['fistaChange'];
  fistaErrors?: NativeKernels['fistaErrors'];
  fistaPrepareGram?: NativeKernels['fistaPrepareGram'];
  maskRows?: NativeKernels['maskRows'];
  maskRowsScaled?: NativeKernels['maskRowsScaled'];
  maskedCopy?: NativeKernels['maskedCopy'];
  countZeros?: NativeKernels['countZeros'];
}

/** The environment variable the choice travels in (worker threads inherit it). */
export const MATMUL_ENV = 'PRUNELAB_MATMUL';
/**
 * PRUNELAB_ELEMENTWISE=wasm keeps the wasm backend's own elementwise kernels beside the OpenBLAS
 * products (to reproduce a figure computed before src/backend/native-elementwise.ts, or to time
 * it); anything else, or unset: the native ones wherever the products are on OpenBLAS.
 */
export const ELEMENTWISE_ENV = 'PRUNELAB_ELEMENTWISE';
const ADDON_PATH = new URL('../../native/build/openblas-kernels.node', import.meta.url);

let addon: OpenBlasAddon | null | undefined;
let addonError = '';

/** OpenBLAS reads its kernel choice from this variable once, when the library loads. */
export const OPENBLAS_CORETYPE_ENV = 'OPENBLAS_CORETYPE';

/**
 * The OpenBLAS core to name for an Intel CPU, from /proc/cpuinfo's vendor and feature flags; null
 * for other vendors or older CPUs (OpenBLAS's own detection stands).
 *
 * Why: a DYNAMIC_ARCH OpenBLAS picks its kernels by CPU family and model, and an Intel model it
 * does not know falls back to SSE3 "Prescott" kernels. On the 16-core Xeon of an H200 machine (a
 * VM reporting "Intel(R) Xeon(R) Processor", 2026-12-04) Debian's 0.3.21 did exactly that: 16.8
 * GFLOP/s on one thread and 56 on sixteen for a 256×2048×5632 product, where PyTorch made 97 and
 * 805. Reading: every Intel CPU with AVX-512 F/DQ/CD/BW/VL runs OpenBLAS's SkylakeX single-precision
 * kernels (its Cooperlake and SapphireRapids cores add bfloat16 kernels only), and every one with
 * AVX2 + FMA but not those its Haswell ones (OpenBLAS maps the client cores since Skylake there).
 * AMD is left to OpenBLAS: it detects Zen by family, which the VMs seen here did not hide.
 */
export function openblasCoreForCpu(cpuinfo: string): 'SkylakeX' | 'Haswell' | null {
  const vendor = /^vendor_id\s*:\s*(\S+)/m.exec(cpuinfo)?.[1];
  const flags = new Set((/^flags\s*:(.*)$/m.exec(cpuinfo)?.[1] ?? '').trim().split(/\s+/));
  if (vendor !== 'GenuineIntel') return null;
  if (['avx512f', 'avx512dq', 'avx512cd', 'avx512bw', 'avx512vl'].every((f) => flags.has(f))) return 'SkylakeX';
  if (flags.has('avx2') && flags.has('fma')) return 'Haswell';
  return null;
}

/** What `OPENBLAS_CORETYPE` was set to here before loading OpenBLAS (null: left to OpenBLAS or to the user). */
let coreSetHere: string | null = null;

/** Name the core for OpenBLAS (see openblasCoreForCpu) unless the user already did. Before the first load only. */
function chooseOpenblasCore(): void {
  if (process.env[OPENBLAS_CORETYPE_ENV] || process.platform !== 'linux' || process.arch !== 'x64') return;
  let cpuinfo = '';
  try {
    cpuinfo = fs.readFileSync('/proc/cpuinfo', 'utf8');
  } catch {
    return;
  }
  const core = openblasCoreForCpu(cpuinfo);
  if (core === null) return;
  // Node's process.env writes the C environment, which OpenBLAS's load-time getenv reads.
  process.env[OPENBLAS_CORETYPE_ENV] = core;
  coreSetHere = core;
}

/**
 * The core count the addon cuts products for (native/openblas-kernels.c, tile_cores): by default
 * the cores this process may use; set, another machine's, to reproduce its values (they depend on
 * the cut, not on the thread count). Read by the addon when it loads.
 */
export const TILE_CORES_ENV = 'PRUNELAB_TILE_CORES';

function checkTileCores(): void {
  const v = process.env[TILE_CORES_ENV];
  if (v === undefined || v === '') return;
  if (!/^[1-9][0-9]*$/.test(v) || Number(v) > 64) {
    throw new ConfigError(`${TILE_CORES_ENV}=${v} is not a core count: give an integer from 1 to 64 (the cores of the machine whose products to reproduce), or unset it`);
  }
}

/** The addon, or null (with `openblasUnavailable()` saying why). Loaded once. */
export function openblasAddon(): OpenBlasAddon | null {
  if (addon !== undefined) return addon;
  checkTileCores();
  chooseOpenblasCore();
  try {
    addon = createRequire(import.meta.url)(ADDON_PATH.pathname) as OpenBlasAddon;
  } catch (e) {
    addon = null;
    addonError = (e as Error).message.split('\n')[0] ?? String(e);
  }
  return addon;
}

export function openblasUnavailable(): string {
  return `the OpenBLAS kernels are not built (${addonError}): install Debian's libopenblas-dev and run 'npm run build-native'`;
}

/** The choice from the environment (`--matmul` sets it), checked. */
export function matmulChoice(): MatmulChoice {
  const v = process.env[MATMUL_ENV] ?? 'auto';
  if (!(MATMUL_CHOICES as readonly string[]).includes(v)) {
    throw new ConfigError(`${MATMUL_ENV}=${v} is not a matmul choice; valid: ${MATMUL_CHOICES.join(', ')}`);
  }
  return v as MatmulChoice;
}

let installed: MatmulKernel | null = null;
let original: tf.KernelConfig | undefined;

/** What the active wasm backend's products run on (null before `installWasmMatmul`). */
export function wasmMatmulKernel(): MatmulKernel | null {
  return installed;
}

interface WasmBackendInternals {
  dataIdMap: { get(id: object): { memoryOffset: number } | undefined };
  makeOutput(shape: number[], dtype: 'float32'): tf.TensorInfo;
  wasm: { HEAPU8: Uint8Array };
}

/**
 * Put the chosen kernel in place on the (already active) wasm backend. `openblas` fails loudly
 * when the addon is missing; `auto` falls back to XNNPACK.
 */
export function installWasmMatmul(choice: MatmulChoice = matmulChoice()): MatmulKernel {
  const lib = choice === 'xnnpack' ? null : openblasAddon();
  if (choice === 'openblas' && !lib) throw new ConfigError(`--matmul openblas: ${openblasUnavailable()}`);
  original ??= tf.getKernel(tf.BatchMatMul, 'wasm');
  if (!original) throw new Error('the wasm backend has no BatchMatMul kernel to replace');
  const want: MatmulKernel = lib ? 'openblas' : 'xnnpack';
  if (installed === want) return want;
  tf.unregisterKernel(tf.BatchMatMul, 'wasm');
  tf.registerKernel(lib ? { kernelName: tf.BatchMatMul, backendName: 'wasm', kernelFunc: openblasBatchMatMul(lib, original.kernelFunc) } : original);
  installed = want;
  // The elementwise kernels go with the products: `xnnpack` means the wasm backend as it ships.
  if (lib && hasElementwise(lib) && process.env[ELEMENTWISE_ENV] !== 'wasm') installNativeElementwise(lib);
  else uninstallNativeElementwise();
  // The thread count is one per process: the main thread sets it (noteWorkerThreads), not each worker.
  if (lib && isMainThread) setOpenblasThreads(defaultBlasThreads());
  return want;
}

let liveWorkers = 0;

/** OpenBLAS threads: every core, shared out among this process's worker threads while they run. */
function defaultBlasThreads(): number {
  return Math.max(1, Math.floor(os.availableParallelism() / Math.max(1, liveWorkers)));
}

function setOpenblasThreads(n: number): void {
  openblasAddon()?.setThreads(n);
}

/**
 * A worker thread with its own backend started (+1) or stopped (-1): OpenBLAS's thread count is
 * one per process, so with N workers each product gets cores / N threads instead of every
 * worker's product asking for all of them.
 */
export function noteWorkerThreads(delta: number): void {
  liveWorkers = Math.max(0, liveWorkers + delta);
  if (installed === 'openblas') setOpenblasThreads(defaultBlasThreads());
}

/**
 * Runs fn (on the main thread, while this process's worker threads wait for it) with OpenBLAS's
 * products on up to `n` threads instead of the share `noteWorkerThreads` leaves the main thread,
 * then back to that share. Results do not change: a product's tiles do not depend on the count.
 */
export async function withBlasThreads<T>(n: number, fn: () => Promise<T>): Promise<T> {
  if (installed !== 'openblas' || !isMainThread) return fn();
  setOpenblasThreads(Math.max(1, Math.min(n, os.availableParallelism())));
  try {
    return await fn();
  } finally {
    setOpenblasThreads(defaultBlasThreads());
  }
}

/** An addon built before native/elementwise-kernels.c lacks its entry points. */
function hasElementwise(lib: OpenBlasAddon): lib is OpenBlasAddon & ElementwiseAddon {
  return typeof lib.ewBinary === 'function';
}

/** For results: the kernel and, with OpenBLAS, its build and threads, and the elementwise kernels' vector width. */
export function describeWasmMatmul(): { kernel: MatmulKernel; openblas?: string; threads?: number; minTiles?: number; elementwise?: string } | null {
  if (installed === null) return null;
  if (installed === 'xnnpack') return { kernel: 'xnnpack' };
  const lib = openblasAddon()!;
  const d = lib.describe();
  const ew = nativeElementwiseInstalled() && hasElementwise(lib) ? { elementwise: `native ${lib.ewSimd()}` } : {};
  const core = coreSetHere === null ? '' : ` (${OPENBLAS_CORETYPE_ENV}=${coreSetHere} from the CPU's flags)`;
  const tiles = d.minTiles === undefined ? {} : { minTiles: d.minTiles };
  return { kernel: 'openblas', openblas: d.config + core, threads: d.threads, ...tiles, ...ew };
}

/** For output batch entry i (row-major over `outer`), the entry of an operand with batch dims `dims`. */
function batchIndexer(dims: number[], outer: number[]): (i: number) => number {
  const lead = outer.length - dims.length;
  return (i) => {
    let index = 0, stride = 1;
    for (let d = outer.length - 1; d >= 0; d--) {
      const pos = i % outer[d]!;
      i = Math.floor(i / outer[d]!);
      if (d >= lead) {
        const size = dims[d - lead]!;
        if (size !== 1) index += pos * stride;
        stride *= size;
      }
    }
    return index;
  };
}

function openblasBatchMatMul(lib: OpenBlasAddon, fallback: tf.KernelFunc): tf.KernelFunc {
  return (args) => {
    const { a, b } = args.inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
    const { transposeA, transposeB } = args.attrs as { transposeA: boolean; transposeB: boolean };
    const backend = args.backend as unknown as WasmBackendInternals;
    if (a.dtype !== 'float32' || b.dtype !== 'float32') return fallback(args);
    const ra = a.shape.length, rb = b.shape.length;
    const m = transposeA ? a.shape[ra - 1]! : a.shape[ra - 2]!;
    const k = transposeA ? a.shape[ra - 2]! : a.shape[ra - 1]!;
    const kb = transposeB ? b.shape[rb - 1]! : b.shape[rb - 2]!;
    const n = transposeB ? b.shape[rb - 2]! : b.shape[rb - 1]!;
    const outer = tf.broadcast_util.assertAndGetBroadcastShape(a.shape.slice(0, -2), b.shape.slice(0, -2));
    const batchA = tf.util.sizeFromShape(a.shape.slice(0, -2)), batchB = tf.util.sizeFromShape(b.shape.slice(0, -2));
    const batch = tf.util.sizeFromShape(outer);
    if (k !== kb) return fallback(args); // let the wasm kernel word the shape error
    const out = backend.makeOutput([...outer, m, n], 'float32');
    if (batch * m * n === 0) return out;
    const offset = (t: tf.TensorInfo): number => backend.dataIdMap.get(t.dataId)!.memoryOffset / 4;
    const [aOff, bOff, cOff] = [offset(a), offset(b), offset(out)];
    // The heap's buffer is read after makeOutput: an allocation may have grown (replaced) it.
    const heap = backend.wasm.HEAPU8.buffer as ArrayBuffer;
    const ta = transposeA ? 1 : 0, tb = transposeB ? 1 : 0;
    if ((batchA === batch || batchA === 1) && (batchB === batch || batchB === 1)) {
      lib.gemm(heap, batch, m, n, k, aOff, batchA === 1 ? 0 : m * k, ta, bOff, batchB === 1 ? 0 : k * n, tb, cOff);
    } else {
      // A partial broadcast ([2,1] with [1,3]): one product per output batch entry.
      const aIdx = batchIndexer(a.shape.slice(0, -2), outer), bIdx = batchIndexer(b.shape.slice(0, -2), outer);
      for (let i = 0; i < batch; i++) {
        lib.gemm(heap, 1, m, n, k, aOff + aIdx(i) * m * k, 0, ta, bOff + bIdx(i) * k * n, 0, tb, cOff + i * m * n);
      }
    }
    return out;
  };
}
