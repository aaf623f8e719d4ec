/**
 * Backend selection: `auto` takes the fastest backend that loads — native TensorFlow with CUDA,
 * WebGPU on a hardware adapter, native TensorFlow on CPU (optional dependencies all three),
 * WebAssembly, then plain JS. A software WebGPU adapter (llvmpipe) only when asked for by name.
 */
import * as tf from '@tensorflow/tfjs';
import { setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { ConfigError } from '../util/errors.ts';
import { describeWasmMatmul, installWasmMatmul } from './openblas.ts';
import { installWasmCopies } from './wasm-copies.ts';
import { describeAdapter, loadWebGPU, webgpuAdapter, type WebGPUAdapter } from './webgpu.ts';

export const BACKEND_CHOICES = ['auto', 'node-gpu', 'webgpu', 'node', 'wasm', 'cpu'] as const;
export type BackendChoice = (typeof BACKEND_CHOICES)[number];
export type ConcreteBackend = Exclude<BackendChoice, 'auto'>;

const require = createRequire(import.meta.url);
let active: ConcreteBackend | null = null;
/** Why an explicitly requested backend did not load, for its error message. */
let whyNot: string | null = null;

async function tryNative(pkg: string): Promise<boolean> {
  try {
    await import(pkg);
    return tf.findBackend('tensorflow') !== undefined && (await tf.setBackend('tensorflow'));
  } catch {
    return false;
  }
}

async function tryWasm(): Promise<boolean> {
  try {
    // The .wasm binaries ship inside the npm package; point the loader at them (works offline).
    const pkgDir = path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json'));
    setWasmPaths(path.join(pkgDir, 'dist') + path.sep);
    if (!(await tf.setBackend('wasm'))) return false;
  } catch {
    return false;
  }
  installWasmMatmul();
  installWasmCopies();
  return true;
}

async function tryWebGPU(explicit: boolean): Promise<boolean> {
  const r = await loadWebGPU(explicit);
  if (typeof r === 'string') {
    whyNot = r;
    return false;
  }
  return true;
}

async function load(choice: ConcreteBackend, explicit: boolean): Promise<boolean> {
  switch (choice) {
    case 'webgpu':
      return tryWebGPU(explicit);
    case 'node-gpu':
      return tryNative('@tensorflow/tfjs-node-gpu');
    case 'node':
      return tryNative('@tensorflow/tfjs-node');
    case 'wasm':
      return tryWasm();
    case 'cpu':
      return tf.setBackend('cpu');
  }
}

/**
 * Activate a backend. Explicit choices fail loudly when they cannot load; `auto` falls through
 * the list. The choice is logged to stderr (stdout is reserved for JSON results).
 */
export async function initBackend(choice: BackendChoice = 'auto', quiet = false): Promise<ConcreteBackend> {
  if (!(BACKEND_CHOICES as readonly string[]).includes(choice)) {
    throw new ConfigError(`unknown backend '${choice}'; valid: ${BACKEND_CHOICES.join(', ')}`);
  }
  // tfjs prints a "use tfjs-node" banner through its warn hook in non-production mode.
  tf.enableProdMode();
  const order: ConcreteBackend[] = choice === 'auto' ? ['node-gpu', 'webgpu', 'node', 'wasm', 'cpu'] : [choice];
  for (const candidate of order) {
    if (active === candidate) {
      if (candidate === 'wasm') installWasmMatmul(); // the --matmul choice may have changed
      return candidate;
    }
    if (await load(candidate, choice !== 'auto')) {
      await tf.ready();
      active = candidate;
      const adapter = webgpuAdapter();
      const products = candidate === 'wasm' ? describeWasmMatmul() : null;
      const on = adapter ? ` on ${describeAdapter(adapter)}` : products ? ` (matrix products: ${products.kernel}${products.elementwise ? `; elementwise: ${products.elementwise}` : ''})` : '';
      if (!quiet) process.stderr.write(`prunelab: backend ${candidate}${on}\n`);
      return candidate;
    }
  }
  throw new ConfigError(
    choice === 'node' || choice === 'node-gpu'
      ? `backend '${choice}' could not be loaded: install @tensorflow/tfjs-${choice === 'node' ? 'node' : 'node-gpu'}@4.22.0`
      : `backend '${choice}' could not be loaded${whyNot ? `: ${whyNot}` : ''}`,
  );
}

/** The WebGPU adapter in use (null on other backends), for results: what `backend` ran on. */
export function activeAdapter(): WebGPUAdapter | null {
  return active === 'webgpu' ? webgpuAdapter() : null;
}

/** What the computation ran on, in words: the WebGPU adapter, or the CPU. */
export function deviceDescription(): string {
  const adapter = activeAdapter();
  if (adapter) return describeAdapter(adapter);
  const cpus = os.cpus();
  return `${cpus[0]?.model ?? 'unknown cpu'} (${cpus.length} logical cores)`;
}

export function activeBackend(): ConcreteBackend {
  if (active === null) throw new Error('initBackend() has not been called');
  return active;
}

export type { WebGPUAdapter } from './webgpu.ts';
