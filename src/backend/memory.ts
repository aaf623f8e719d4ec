/**
 * Up-front memory limits: before a model's weights go onto a backend, compare what loading
 * needs with what the backend and the host can hold, and refuse with a clear message instead
 * of an `Aborted()` (or, worse, silent corruption) half-way through.
 */
import os from 'node:os';
import * as tf from '@tensorflow/tfjs';
import { ResourceError } from '../util/errors.ts';

/**
 * The WebAssembly backend's heap: memory32, 4 GiB of address space at most. Measured with
 * tfjs-backend-wasm 4.22 by holding 16 MiB tensors until failure (bench/wasm-heap.ts): the heap grows to
 * 4 GiB - 64 KiB and 4080 MiB of tensors fit; past that tfjs-wasm does not detect the failed
 * allocation (the next write is out of bounds, or the module aborts).
 */
export const WASM_HEAP_BYTES = 2 ** 32 - 2 ** 16;

/** What loading a model needs: bytes on the backend and on the host (fp32 copies while loading). */
export interface LoadNeed {
  parameters: number;
  /** Bytes the backend holds once loaded, plus transients of the load itself. */
  backendBytes: number;
  /** Bytes of host memory at the peak of loading. */
  hostBytes: number;
}

export function gib(bytes: number): string {
  return `${(bytes / 2 ** 30).toFixed(2)} GiB`;
}

/** Backends whose tensors live in this process's memory (so they count against the host too). */
export function backendOnHost(backend: string): boolean {
  return backend === 'wasm' || backend === 'cpu';
}

/** Host memory this process may use: physical memory, or the cgroup limit when lower. */
export function hostMemoryBytes(): number {
  const limit = process.constrainedMemory?.() ?? 0;
  return limit > 0 && limit < os.totalmem() ? limit : os.totalmem();
}

const STREAMING_NOTE = 'a model over the backend memory budget is streamed (weights on the host, one layer on the backend; --device-memory sets the budget)';

/**
 * Room the wasm default budget leaves for activations, logits and statistics beside the
 * weights: a 4096-token batch of a 32,000-word vocabulary alone is 0.5 GiB of logits.
 */
export const WASM_ACTIVATION_HEADROOM = 2 ** 30;

let deviceMemoryFlag: number | null = null;

/** `--device-memory` of this process (null: the backend's default). */
export function setDeviceMemory(bytes: number | null): void {
  deviceMemoryFlag = bytes;
}

/**
 * Bytes of weights the backend may hold: `--device-memory` when given (on wasm never above the
 * heap), else for wasm the heap minus room for activations, and no limit for the other backends
 * (their memory is not known up front: native TensorFlow, plain JS on the host).
 */
export function deviceMemoryBudget(backend: string = tf.getBackend()): { bytes: number; source: 'flag' | 'default' } {
  if (deviceMemoryFlag !== null) {
    return { bytes: backend === 'wasm' ? Math.min(deviceMemoryFlag, WASM_HEAP_BYTES) : deviceMemoryFlag, source: 'flag' };
  }
  return { bytes: backend === 'wasm' ? WASM_HEAP_BYTES - WASM_ACTIVATION_HEADROOM : Infinity, source: 'default' };
}

/**
 * Throw a ResourceError when `need` cannot fit: the WebAssembly heap for the wasm backend, the
 * host's memory for every backend. Other backends' device memory (CUDA) is not known up front.
 */
export function assertLoadFits(need: LoadNeed, source: string, backend: string = tf.getBackend()): void {
  const params = need.parameters.toLocaleString('en-US');
  if (backend === 'wasm' && need.backendBytes > WASM_HEAP_BYTES) {
    throw new ResourceError(
      `loading this model (${params} parameters) needs ${gib(need.backendBytes)} of backend memory ` +
        `(fp32 weights plus load-time copies), but the wasm backend holds at most ${gib(WASM_HEAP_BYTES)} ` +
        `(the WebAssembly heap's 4 GiB address space). Options: --backend node or node-gpu (install ` +
        `@tensorflow/tfjs-node or @tensorflow/tfjs-node-gpu) keeps tensors outside that heap; ` +
        `\`prunelab inspect\` reads any size; ${STREAMING_NOTE}.`,
      source);
  }
  const host = hostMemoryBytes();
  if (need.hostBytes > host) {
    throw new ResourceError(
      `loading this model (${params} parameters) needs about ${gib(need.hostBytes)} of host memory ` +
        `(fp32 copies of the weights while loading${backendOnHost(backend) ? ` plus the ${backend} backend's tensors` : ''}), ` +
        `but this machine has ${gib(host)}. Options: a machine with more memory` +
        `${backendOnHost(backend) ? ', or --backend node-gpu so the weights live in GPU memory' : ''}; ` +
        `\`prunelab inspect\` reads any size; ${STREAMING_NOTE}.`,
      source);
  }
}

/**
 * The WebAssembly module aborts (`RuntimeError: Aborted()`, after XNNPACK's "status 6", out of
 * memory) when its heap cannot grow past 4 GiB mid-computation; nothing can be caught earlier and
 * the module is unusable afterwards. Say what ran out and what helps instead.
 */
export function wasmAbortAsResourceError(e: Error): ResourceError | null {
  if (e.name !== 'RuntimeError' || !/^Aborted\(/.test(e.message)) return null;
  return new ResourceError(
    `the WebAssembly backend's heap (${gib(WASM_HEAP_BYTES)} at most) ran out during the computation: one layer's weights ` +
      'and the activations of one batch of windows did not fit beside what the command holds. Use fewer or shorter windows ' +
      '(--nsamples, --seqlen, --max-windows, --limit), or a backend without this limit (--backend node, node-gpu or webgpu).');
}
