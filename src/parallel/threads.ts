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
