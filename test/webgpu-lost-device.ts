/**
 * Child of test/webgpu.test.ts (the backend is per process): evaluate stories260K on WebGPU,
 * destroy the device half-way as a driver reset would lose it, and report on stdout, as one
 * JSON object, what the next read did: the error's class and message (it must not hang nor
 * return numbers).
 */
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/index.ts';
import { loadModel } from '../src/io/load-model.ts';
import { STORIES_BIN } from './support.ts';

await initBackend('webgpu', true);
const { model } = loadModel(STORIES_BIN);
const ids = [[1, 403, 407, 261, 378, 507, 5, 60, 70, 80]];
const first = model.forward(ids);
first.dataSync();
first.dispose();
(tf.backend() as unknown as { device: GPUDevice }).device.destroy();
let outcome: Record<string, unknown>;
try {
  const again = model.forward(ids);
  outcome = { returned: Array.from(again.dataSync().slice(0, 4)) };
} catch (e) {
  outcome = { error: e instanceof Error ? e.name : 'non-error', message: e instanceof Error ? e.message : String(e) };
}
process.stdout.write(JSON.stringify(outcome) + '\n');
process.exit(0);
