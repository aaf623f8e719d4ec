/**
 * The pause long loops take (src/backend/yield.ts): nothing below YIELD_EVERY kernels since the
 * event loop last turned (so wasm, which counts none, never waits), one turn of the event loop
 * past it, after which the count starts again. No adapter needed: kernels are counted by hand.
 */
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { kernelsSinceTurn, noteKernel, yieldIfDue, YIELD_EVERY } from '../src/backend/yield.ts';

/** Whether `yieldIfDue` let an immediate scheduled just before it run (i.e. the loop turned). */
async function turned(): Promise<boolean> {
  let ran = false;
  setImmediate(() => { ran = true; });
  await yieldIfDue();
  return ran;
}

it('no kernels counted (every backend but WebGPU): returns without a turn of the event loop', async () => {
  await new Promise<void>((r) => setImmediate(() => r()));
  assert.equal(kernelsSinceTurn(), 0);
  assert.equal(await turned(), false);
});

it('below YIELD_EVERY kernels no turn; at YIELD_EVERY one turn, and the count starts again', async () => {
  await new Promise<void>((r) => setImmediate(() => r()));
  for (let i = 0; i < YIELD_EVERY - 1; i++) noteKernel();
  assert.equal(kernelsSinceTurn(), YIELD_EVERY - 1);
  assert.equal(await turned(), false);
  noteKernel();
  assert.equal(await turned(), true);
  assert.equal(kernelsSinceTurn(), 0);
});
