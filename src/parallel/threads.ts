/**
 * How many threads a data-parallel pass uses. Default: every core the process may use. Native
 * TensorFlow (tfjs-node, tfjs-node-gpu) runs its own intra-op thread pool (or the GPU), so it
 * gets one: a pool of workers would only duplicate the model. So does WebGPU (one device).
 */
import os from 'node:os';
import type { ConcreteBackend } from '../backend/index.ts';
import { wasmMatmulKernel } from '../backend/openblas.ts';
import { ConfigError } from '../util/errors.ts';

export function defaultThreads(): number {
  return os.availableParallelism();
}

/** Check a user's `--threads` (undefined: the default) and apply the backend rule above. */
export function resolveThreads(requested: number | undefined, backend: ConcreteBackend, what = '--threads'): number {
  if (requested !== undefined && (!Number.isInteger(requested) || requested < 1)) {
    throw new ConfigError(`${what} must be a positive integer (got ${requested}); omit it to use all ${defaultThreads()} cores`);
  }
  if (backend === 'node' || backend === 'node-gpu' || backend === 'webgpu') return 1;
  return requested ?? defaultThreads();
}

/**
 * Start-up of one pool worker (tsx, TensorFlow.js and its copy of the weights), in seconds: measured
 * 0.85–0.97 CPU-s per worker on stories260K and the 256×4 bench model (`bench/prefill-profile.ts`
 * notes in README "Every core"); with free cores the workers start side by side.
 */
export const POOL_START_SECONDS = 1;

/**
 * Whether `threads` workers pay for their start-up on work that takes `seconds` in process:
 * start-up + seconds/n < seconds, i.e. seconds > start-up × n / (n − 1) (2 s for two threads),
 * n being `threads` or, when fewer, the cores free to run them (`free`; default: all of them).
 */
export function poolPays(seconds: number, threads: number, free = threads): boolean {
  const n = Math.min(threads, free);
  return n > 1 && seconds > (POOL_START_SECONDS * n) / (n - 1);
}

/**
 * Cores other processes leave to this one: all cores less the 1-minute load average beyond this
 * process's own running thread, rounded, at least 1. On a shared machine a second thread gets no
 * more CPU while others keep the cores busy (measured: 0.40 cores obtained with 1 thread, 0.41
 * with 2, load ≈ 10 on 2 cores), so a pool would only add its start-up.
 */
export function coresFree(cores = defaultThreads(), load = os.loadavg()[0] ?? 0): number {
  return Math.max(1, Math.min(cores, Math.round(cores - Math.max(0, load - 1))));
}

/** The rule both automatic choices (`eval ppl`, `prune` without `--threads`) use: `poolPays` on the cores free now. */
export function poolPaysNow(seconds: number, threads: number): boolean {
  return poolPays(seconds, threads, coresFree());
}

/**
 * Threads for a model's passes: `threads` (already resolved), except for streamed weights, which
 * run in this process (each worker would need its own copy of the whole model): 1 by default,
 * and an explicit `--threads` above 1 is refused.
 */
export function threadsForModel(mode: 'resident' | 'streamed', threads: number, requested: number | undefined, what = '--threads'): number {
  if (mode === 'resident') return threads;
  if (requested !== undefined && requested > 1) {
    const cores = wasmMatmulKernel() === 'openblas'
      ? ' Streamed passes run in this process, and their matrix products already use every core (OpenBLAS).'
      : ' Streamed passes run in this process; with OpenBLAS installed (README, Install) their matrix products use every core.';
    throw new ConfigError(`${what} ${requested}: this model's weights are streamed (over the backend memory budget), and worker threads would each hold `
      + `a copy of the whole model. Omit ${what} (or pass 1), or raise --device-memory so the model is resident.${cores}`);
  }
  return 1;
}
