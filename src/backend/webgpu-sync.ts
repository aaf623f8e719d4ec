/**
 * Synchronous reads on the WebGPU backend in Node. PruneLab reads tensors with `dataSync()`
 * throughout; tfjs-backend-webgpu implements that with an OffscreenCanvas, which Node lacks.
 * dawn.node resolves a buffer mapping when its event processing runs, and it schedules that
 * processing with the global `setImmediate` (a native callback). Capturing those callbacks lets
 * a read run them itself until the mapping completes, without returning to the event loop.
 */
import { ResourceError } from '../util/errors.ts';

/** Native callbacks dawn.node scheduled and the event loop has not run yet. */
const pendingNative = new Set<() => void>();
let hooked = false;

function isNative(fn: unknown): boolean {
  return typeof fn === 'function' && /\{\s*\[native code\]\s*\}\s*$/.test(Function.prototype.toString.call(fn));
}

/**
 * Wrap `setImmediate` once, before dawn.node is created: native callbacks (only dawn.node
 * schedules those) are remembered so `pumpDawnEvents` can run them early; each still runs at
 * most once. JavaScript callbacks pass through untouched.
 */
export function hookDawnScheduling(): void {
  if (hooked) return;
  hooked = true;
  const original = globalThis.setImmediate;
  const schedule = original as unknown as (fn: (...a: unknown[]) => void, ...args: unknown[]) => NodeJS.Immediate;
  const wrapped = (fn: (...a: unknown[]) => void, ...args: unknown[]): NodeJS.Immediate => {
    if (!isNative(fn)) return schedule(fn, ...args);
    const once = () => fn(...args);
    pendingNative.add(once);
    return schedule(() => { if (pendingNative.delete(once)) once(); });
  };
  globalThis.setImmediate = Object.assign(wrapped, original) as unknown as typeof setImmediate;
}

/** Run dawn.node's pending event processing now (it reschedules itself while work is pending). */
function pumpDawnEvents(): void {
  const due = [...pendingNative];
  pendingNative.clear();
  for (const f of due) f();
}

const napCell = new Int32Array(new SharedArrayBuffer(4));

/** Sleep about `ms` milliseconds without returning to the event loop. */
function nap(ms: number): void {
  Atomics.wait(napCell, 0, 0, ms);
}

/** What a lost device said, for messages; set by the device's `lost` promise and by failed maps. */
export interface LossRecord { reason: string; message: string }

/**
 * Map `staging` (MAP_READ, already copied into and submitted) and return a copy of its bytes.
 * Throws a ResourceError when the device is lost (the mapping then fails) instead of hanging.
 */
export function mapReadSync(staging: GPUBuffer, lost: () => LossRecord | null): ArrayBuffer {
  let failure: unknown = null;
  staging.mapAsync(GPUMapMode.READ).catch((e: unknown) => { failure = e; });
  let wait = 0.02;
  while (staging.mapState === 'pending') {
    pumpDawnEvents();
    if (staging.mapState !== 'pending') break;
    nap(wait);
    wait = Math.min(wait * 2, 2);
  }
  if (staging.mapState !== 'mapped') {
    const loss = lost();
    // The device's own `lost` report arrives through the event loop, so it may not be in yet.
    throw deviceLostError(loss ?? { reason: 'a read from the GPU failed', message: failure instanceof Error ? failure.message : '' });
  }
  const bytes = staging.getMappedRange().slice(0);
  staging.unmap();
  return bytes;
}

export function deviceLostError(loss: LossRecord): ResourceError {
  return new ResourceError(
    `the WebGPU device was lost (${loss.reason}${loss.message ? `: ${loss.message.trim()}` : ''}); results computed since cannot be trusted, ` +
      'so the run stops here and writes nothing. Causes: the GPU driver reset (a kernel ran too long, or the GPU ran out of memory), ' +
      'or the GPU was removed. Run again; if it recurs, try a smaller model or --backend wasm.');
}
