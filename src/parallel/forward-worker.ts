/**
 * Worker-thread entry of the forward pool (`forward-pool.ts`): its own backend, the model
 * rebuilt from the shared host copy, then one task per message through the same functions the
 * in-process path calls.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { initBackend } from '../backend/index.ts';
import { batchNllSum } from '../eval/perplexity.ts';
import { modelFromShared } from './shared-params.ts';
import { errorMessage } from './spawn.ts';
import type { ForwardMainMessage, ForwardTask, ForwardWorkerInit, ForwardWorkerMessage } from './forward-pool.ts';

const port = parentPort;
if (!port) throw new Error('forward-worker.ts runs only as a worker thread');
const init = workerData as ForwardWorkerInit;

function post(m: ForwardWorkerMessage): void {
  port!.postMessage(m);
}

await initBackend(init.backend, true);
const model = modelFromShared(init.model);

function run(task: ForwardTask): number {
  switch (task.type) {
    case 'nll':
      return batchNllSum(model, task.rows);
  }
}

port.on('message', (msg: ForwardMainMessage) => {
  if (msg.type === 'close') {
    model.dispose();
    // Nothing else holds the event loop: the thread exits once the port is closed.
    port.close();
    return;
  }
  try {
    post({ type: 'result', id: msg.id, value: run(msg.task) });
  } catch (e) {
    post({ ...errorMessage(e) });
  }
});
post({ type: 'ready' });
