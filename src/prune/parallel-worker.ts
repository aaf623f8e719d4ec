/**
 * Worker-thread entry of the dense-parallel executor (`parallel.ts`): its own backend, the method
 * resolved by name, then one layer per message through `pruneLayerInPlace`, the in-process code
 * path.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { LinearRole } from '../model/family.ts';
import type { LayerwiseMethod } from './method.ts';
import { initBackend } from '../backend/index.ts';
import { resolveMethod } from './registry.ts';
import { pruneLayerInPlace } from './engine.ts';
import { backendLinAlg } from '../linalg/backend.ts';
import { readLinear } from './linear-io.ts';
import { viewFromData } from '../model/view.ts';
import { disposeLayerModel, layerModel, type LayerTask, type MainMessage, type OperatorResult, type WorkerInit, type WorkerMessage } from './parallel.ts';

const port = parentPort;
if (!port) throw new Error('parallel-worker.ts runs only as a worker thread');
const init = workerData as WorkerInit;

function post(m: WorkerMessage, transfer: ArrayBuffer[] = []): void {
  port!.postMessage(m, transfer);
}

await initBackend(init.backend, true);
const resolved = await resolveMethod(init.method);
if (resolved.kind !== 'layerwise') throw new Error(`method '${init.method}' is not layerwise; parallel layers apply to layerwise methods only`);
const method: LayerwiseMethod<unknown> = resolved;
const view = viewFromData(init.view);
const state = method.setup?.({ model: view, options: init.options, target: init.target, log: (msg) => post({ type: 'log', msg }), run: init.run });

async function run(task: LayerTask): Promise<void> {
  const t0 = performance.now();
  const i = task.layer;
  const model = layerModel(init.config, i, new Map(task.weights));
  try {
    const masks = new Map<LinearRole, Uint8Array>();
    const info = await pruneLayerInPlace(model, i, task.states, {
      method, options: init.options, target: init.target, view, state, linalg: backendLinAlg(init.run.numerics),
      log: (msg) => post({ type: 'log', msg }),
      onDecision: (d) => masks.set(d.role, d.mask),
    });
    const operators: OperatorResult[] = model.spec.linears.map((l) => {
      const h = readLinear(model, i, l.role);
      return { role: l.role, rows: h.rows, cols: h.cols, weight: h.data, mask: masks.get(l.role) ?? new Uint8Array(h.data.length).fill(1) };
    });
    const transfer = operators.flatMap((o) => [o.weight.buffer as ArrayBuffer, o.mask.buffer as ArrayBuffer]);
    post({ type: 'done', layer: i, info, operators, seconds: (performance.now() - t0) / 1000 }, transfer);
  } finally {
    disposeLayerModel(model, i);
  }
}

port.on('message', (msg: MainMessage) => {
  if (msg.type === 'close') {
    // Nothing else holds the event loop: the thread exits once the port is closed.
    port.close();
    return;
  }
  run(msg).catch((e: unknown) => {
    const err = e instanceof Error ? e : new Error(String(e));
    post({ type: 'error', name: err.name, message: err.message, stack: err.stack });
  });
});
post({ type: 'ready' });
