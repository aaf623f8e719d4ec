/**
 * Letting the event loop turn inside long loops. Node runs native finalizers (dawn.node's, which
 * free each WebGPU object a kernel made) only when the event loop turns, so a synchronous loop of
 * thousands of GPU kernels keeps every one of them alive. The WebGPU backend counts the kernels it
 * dispatched since the loop last turned (`noteKernel`); long loops call `yieldIfDue` once per step
 * (token, window, batch, layer), which yields only past YIELD_EVERY kernels. On every other
 * backend nothing is counted and the call returns at once (one resolved await).
 */

/** Kernels between two turns of the event loop: far below the software driver's ~63,000 mappings. */
export const YIELD_EVERY = 2_000;

let kernels = 0;
let resetScheduled = false;

/** Count one dispatched kernel (the WebGPU backend calls this per bind group). */
export function noteKernel(): number {
  if (!resetScheduled) {
    resetScheduled = true;
    // A plain JS immediate runs only once the event loop turns; it resets the count.
    setImmediate(() => { kernels = 0; resetScheduled = false; });
  }
  return ++kernels;
}

/** Kernels dispatched since the event loop last turned. */
export function kernelsSinceTurn(): number {
  return kernels;
}

/** Turn the event loop (so finalizers run) when enough kernels have piled up; else return at once. */
export async function yieldIfDue(): Promise<void> {
  if (kernels < YIELD_EVERY) return;
  await new Promise<void>((resolve) => setImmediate(() => resolve()));
}
