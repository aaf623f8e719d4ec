/**
 * How many threads a data-parallel pass uses. Default: every core the process may use. Native
 * TensorFlow (tfjs-node, tfjs-node-gpu) runs its own intra-op thread pool (or the GPU), so it
 * gets one: a pool of workers would only duplicate the model. So does WebGPU (one device).
 */
import os from 'node:os';
import type { ConcreteBackend } from '../backend/index.ts';
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
 * start-up + seconds/threads < seconds, i.e. seconds > start-up × threads / (threads − 1)
 * (2 s for two threads). Assumes free cores; on a busy machine a pool gains less.
 */
export function poolPays(seconds: number, threads: number): boolean {
  return threads > 1 && seconds > (POOL_START_SECONDS * threads) / (threads - 1);
}

/**
 * Threads for a model's passes: `threads` (already resolved), except for streamed weights, which
 * run in this process (each worker would need its own copy of the whole model): 1 by default,
 * and an explicit `--threads` above 1 is refused.
 */
export function threadsForModel(mode: 'resident' | 'streamed', threads: number, requested: number | undefined, what = '--threads'): number {
  if (mode === 'resident') return threads;
  if (requested !== undefined && requested > 1) {
    throw new ConfigError(`${what} ${requested}: this model's weights are streamed (over the backend memory budget), and worker threads would each hold `
      + `a copy of the whole model. Omit ${what} (or pass 1), or raise --device-memory so the model is resident.`);
  }
  return 1;
}
