/**
 * Worker-thread entry of the forward pool (`forward-pool.ts`): its own backend, the model
 * rebuilt from the shared host copy, then one task per message through the same functions the
 * in-process path calls.
 */
import * as tf from '@tensorflow/tfjs';
import { parentPort, workerData } from 'node:worker_threads';
import { initBackend } from '../backend/index.ts';
import { batchNllSum } from '../eval/perplexity.ts';
import type { LinearRole } from '../model/family.ts';
import { blockDistanceSum, collectLayerStats, runLayer } from '../prune/stats.ts';
import { modelFromShared } from './shared-params.ts';
import { solveTask } from '../prune/parallel-operators.ts';
import { errorMessage } from './spawn.ts';
import type { ForwardMainMessage, ForwardResults, ForwardTask, ForwardWorkerInit, ForwardWorkerMessage, HostLinear } from './forward-pool.ts';

const port = parentPort;
if (!port) throw new Error('forward-worker.ts runs only as a worker thread');
const init = workerData as ForwardWorkerInit;

await initBackend(init.backend, true);
const model = modelFromShared(init.model);
/** The dense snapshot of the layer being pruned (for X vs X* statistics). */
let dense: Partial<Record<LinearRole, tf.Tensor2D>> | undefined;

const weight = (l: HostLinear): tf.Tensor2D => tf.tensor2d(l.weight, l.shape);

async function run(task: ForwardTask): Promise<ForwardResults[ForwardTask['type']]> {
  switch (task.type) {
    case 'solve':
      return await solveTask(model, task);
    case 'nll':
      return batchNllSum(model, task.rows);
    case 'set-layer': {
      for (const [role, l] of task.linears) model.setLinear(task.layer, role, weight(l), l.bias ? tf.tensor1d(l.bias) : null);
      if (dense) tf.dispose(Object.values(dense));
      dense = task.dense ? Object.fromEntries(task.dense.map(([role, l]) => [role, weight(l)])) : undefined;
      return null;
    }
    case 'layer-stats':
      return collectLayerStats(model, task.layer, { batches: [task.batch], T: task.T, D: task.D }, task.req, task.withDense ? dense : undefined);
    case 'run-layer': {
      let distance = 0;
      const metric = task.distance;
      const out = runLayer(model, task.layer, { batches: [task.batch], T: task.T, D: task.D },
        metric ? (x, y) => { distance += blockDistanceSum(x, y, metric); } : undefined)!;
      return { batch: out.batches[0]!, distance };
    }
  }
}

/** Buffers of a result that can move to the main thread instead of being copied. */
function transferables(v: ForwardResults[ForwardTask['type']]): ArrayBuffer[] {
  if (v === null || typeof v === 'number') return [];
  if ('batch' in v && 'distance' in v && typeof v.distance === 'number') return [v.batch.data.buffer as ArrayBuffer];
  if ('decisions' in v && 'logs' in v) {
    // A method may return views of one buffer; each buffer is listed once, and shared memory is not transferable.
    const bufs = new Set<ArrayBuffer>();
    for (const d of v.decisions as { mask: Uint8Array; weight?: Float32Array }[]) {
      for (const a of [d.mask, d.weight]) if (a && a.buffer instanceof ArrayBuffer) bufs.add(a.buffer);
    }
    return [...bufs];
  }
  const out: ArrayBuffer[] = [];
  for (const t of Object.values(v)) {
    for (const x of Object.values(t ?? {})) if (x instanceof Float64Array) out.push(x.buffer as ArrayBuffer);
  }
  return out;
}

port.on('message', (msg: ForwardMainMessage) => {
  if (msg.type === 'close') {
    if (dense) tf.dispose(Object.values(dense));
    model.dispose();
    // Nothing else holds the event loop: the thread exits once the port is closed.
    port.close();
    return;
  }
  run(msg.task).then((value) => {
    const m: ForwardWorkerMessage = { type: 'result', id: msg.id, value };
    port.postMessage(m, transferables(value));
  }, (e: unknown) => port.postMessage(errorMessage(e)));
});
port.postMessage({ type: 'ready' } satisfies ForwardWorkerMessage);
