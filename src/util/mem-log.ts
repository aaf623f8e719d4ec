/**
 * Memory attribution for long runs: with `PRUNELAB_MEMLOG=1` each call prints the process's RSS,
 * V8 heap, ArrayBuffers and the WebAssembly heap's size to stderr; otherwise it does nothing.
 */
import * as tf from '@tensorflow/tfjs';

const enabled = process.env.PRUNELAB_MEMLOG === '1';
const mb = (n: number): string => `${(n / 1e6).toFixed(0)} MB`;

/** The WebAssembly heap's current size in bytes (0 when the backend is not wasm). */
function wasmHeapBytes(): number {
  try {
    const b = tf.backend() as unknown as { wasm?: { HEAPU8?: Uint8Array } };
    return b.wasm?.HEAPU8?.length ?? 0;
  } catch {
    return 0;
  }
}

export function memLog(label: string): void {
  if (!enabled) return;
  const m = process.memoryUsage();
  process.stderr.write(`[mem] ${label}: rss ${mb(m.rss)} heapUsed ${mb(m.heapUsed)} arrayBuffers ${mb(m.arrayBuffers)} external ${mb(m.external)} wasm ${mb(wasmHeapBytes())} tensors ${mb(tf.memory().numBytes)}\n`);
}
