/**
 * How much tensor memory the tfjs WebAssembly backend really holds (the figure behind
 * WASM_HEAP_BYTES in src/backend/memory.ts). Allocates tensors of CHUNK MiB until the heap stops
 * growing, printing the heap size after each; uses up to ~4 GiB of RAM for a minute.
 *
 *   node --import tsx bench/wasm-heap.ts [CHUNK_MIB=16]
 *
 * tfjs-wasm 4.22 does not report a failed allocation: the last tensor "fits" without the heap
 * growing, and the next write goes out of bounds (or the module aborts). So the capacity is the
 * largest heap size printed, not the "held" total of the last line.
 */
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/index.ts';

async function main(): Promise<void> {
  await initBackend('wasm', true);
  const heap = () => (tf.backend() as unknown as { wasm: { HEAPU8: Uint8Array } }).wasm.HEAPU8.buffer.byteLength;
  const chunk = Number(process.argv[2] ?? 16) * 2 ** 20;
  const held: tf.Tensor[] = [];
  let last = heap();
  try {
    for (;;) {
      held.push(tf.tensor1d(new Float32Array(chunk / 4)));
      const now = heap();
      console.log(`held ${(held.length * chunk) / 2 ** 20} MiB, heap ${now / 2 ** 20} MiB`);
      if (now === last && held.length * chunk > now) break; // allocation failed silently
      last = now;
    }
  } catch (e) {
    console.log(`failed: ${String(e).slice(0, 120)}`);
  }
  console.log(`largest heap: ${last} bytes (${(last / 2 ** 20).toFixed(2)} MiB)`);
}
void main();
