/**
 * The dense-parallel layer executor (fistapruner.md §7; design.md "Pruning"). With dense inputs
 * every decoder layer is an independent pruning unit, so the layer loop becomes: one dense pass
 * that stores every layer's input hidden states, then a pool of worker threads, each with its
 * own TensorFlow.js backend, that prune one layer at a time through the same code path as the
 * in-process loop (`pruneLayerInPlace`: grouped statistics, `pruneOperators`, decisions applied
 * in order) and send back the pruned weights, masks and the layer's report entry.
 */
import { modelViewData, type ModelViewData } from '../model/view.ts';
import type { RunSettings } from './method.ts';
import type { Numerics } from '../linalg/linalg.ts';
import type { Worker } from 'node:worker_threads';
import * as tf from '@tensorflow/tfjs';
import { CausalLM } from '../model/causal-lm.ts';
import type { ModelConfig } from '../model/config.ts';
import { familySpec, type LinearRole } from '../model/family.ts';
import type { LayerParams, NormParams } from '../model/params.ts';
import type { HostTensor } from '../model/tensor-data.ts';
import { activeBackend, type ConcreteBackend } from '../backend/index.ts';
import type { PruneTarget } from './method.ts';
import { embedWindows, runLayer, type HiddenStates } from './stats.ts';
import { readBias, readLinear, writeLinear } from './linear-io.ts';
import { TaskWorker, errorFromWorker, spawnModuleWorker } from '../parallel/spawn.ts';

/** Sent once, as `workerData`. */
export interface WorkerInit {
  backend: ConcreteBackend;
  /** Resolved in the worker with `resolveMethod` (a registered name or a module path). */
  method: string;
  options: unknown;
  target: PruneTarget;
  config: ModelConfig;
  /** What the method sees of the whole model (the worker's own model holds one layer). */
  view: ModelViewData;
  run: RunSettings;
}

/** Main → worker: a layer to prune, or `close` (finish and let the thread exit). */
export type MainMessage = ({ type: 'layer' } & LayerTask) | { type: 'close' };

export interface LayerTask {
  layer: number;
  /** The layer's tensors by HF name (linears `[out, in]`). */
  weights: [string, HostTensor][];
  /** The layer's dense input states (null for data-free methods). */
  states: HiddenStates | null;
}

export interface OperatorResult {
  role: LinearRole;
  rows: number;
  cols: number;
  /** The pruned weight as applied (`[out, in]`, masked entries 0). */
  weight: Float32Array;
  mask: Uint8Array;
}

export type WorkerMessage =
  | { type: 'ready' }
  | { type: 'log'; msg: string }
  | { type: 'done'; layer: number; info: Record<string, unknown>; operators: OperatorResult[]; seconds: number }
  | { type: 'error'; name: string; message: string; stack?: string };

export interface ParallelJob<O> {
  /** Method name (or module path) the workers resolve. */
  methodName: string;
  options: O;
  target: PruneTarget;
  /** Calibration windows, or null for a method that needs no statistics. */
  windows: number[][] | null;
  workers: number;
  numerics?: Numerics;
  log: (msg: string) => void;
  onLayer?: (done: number, total: number) => void;
}

function normNames(model: CausalLM, i: number): [string, NormParams][] {
  const s = model.spec;
  const lp = model.layer(i);
  return [[s.attnNorm.hfName(i), lp.attnNorm], [s.mlpNorm.hfName(i), lp.mlpNorm]];
}

/**
 * Copies of layer i's tensors by HF name (linear weights `[out, in]`), theirs to transfer: read
 * with the layer on the backend, so a streamed model's host store is never handed over.
 */
export function layerWeights(model: CausalLM, i: number): [string, HostTensor][] {
  return model.withParts([i], () => layerWeightsUploaded(model, i));
}

function layerWeightsUploaded(model: CausalLM, i: number): [string, HostTensor][] {
  const out: [string, HostTensor][] = [];
  for (const l of model.spec.linears) {
    const w = readLinear(model, i, l.role);
    out.push([`${l.hfName(i)}.weight`, { shape: [w.rows, w.cols], data: w.data }]);
    const b = readBias(model, i, l.role);
    if (b) out.push([`${l.hfName(i)}.bias`, { shape: [b.length], data: b }]);
  }
  for (const [name, p] of normNames(model, i)) {
    out.push([`${name}.weight`, { shape: [p.weight.size], data: Float32Array.from(p.weight.dataSync()) }]);
    if (p.bias) out.push([`${name}.bias`, { shape: [p.bias.size], data: Float32Array.from(p.bias.dataSync()) }]);
  }
  return out;
}

/**
 * A model holding only decoder layer i (the full config, so shapes and the layer index stay the
 * real ones); other layers are holes, so touching them fails loudly. Embeddings and head are
 * 1-element placeholders: only `runBlock(i)` and the layer's linears are meant to be used.
 * Dispose with `disposeLayerModel`.
 */
export function layerModel(config: ModelConfig, i: number, weights: Map<string, HostTensor>): CausalLM {
  const spec = familySpec(config.family);
  const get = (name: string): HostTensor | undefined => weights.get(name);
  const need = (name: string): HostTensor => {
    const t = get(name);
    if (!t) throw new Error(`parallel: layer ${i} tensor '${name}' was not sent`);
    return t;
  };
  const norm = (base: string): NormParams => {
    const b = get(`${base}.bias`);
    return { weight: tf.tensor1d(need(`${base}.weight`).data), bias: b ? tf.tensor1d(b.data) : null };
  };
  const linears: LayerParams['linears'] = {};
  for (const l of spec.linears) {
    const w = need(`${l.hfName(i)}.weight`);
    const b = get(`${l.hfName(i)}.bias`);
    const weight = tf.tidy(() => tf.transpose(tf.tensor2d(w.data, [w.shape[0]!, w.shape[1]!])) as tf.Tensor2D);
    linears[l.role] = { weight, bias: b ? tf.tensor1d(b.data) : null };
  }
  const layers = new Array<LayerParams>(config.numLayers);
  layers[i] = { linears, attnNorm: norm(spec.attnNorm.hfName(i)), mlpNorm: norm(spec.mlpNorm.hfName(i)) };
  return new CausalLM(config, {
    embed: tf.zeros([1, 1]), positions: null, layers,
    finalNorm: { weight: tf.ones([1]), bias: null }, lmHead: tf.zeros([1, 1]),
  });
}

export function disposeLayerModel(model: CausalLM, i: number): void {
  const p = model.params;
  const lp = p.layers[i];
  const ts: (tf.Tensor | null | undefined)[] = [p.embed, p.finalNorm.weight, p.lmHead];
  if (lp) {
    for (const l of Object.values(lp.linears)) ts.push(l?.weight, l?.bias);
    ts.push(lp.attnNorm.weight, lp.attnNorm.bias, lp.mlpNorm.weight, lp.mlpNorm.bias);
  }
  for (const t of ts) if (t && !t.isDisposed) t.dispose();
}

/** Start a worker on parallel-worker.ts (tsx bootstrap: `src/parallel/spawn.ts`). */
function spawn(init: WorkerInit): Worker {
  const ts = import.meta.url.endsWith('.ts');
  return spawnModuleWorker(new URL(ts ? './parallel-worker.ts' : './parallel-worker.js', import.meta.url), init);
}

type Done = Extract<WorkerMessage, { type: 'done' }>;

/** One worker thread running one layer at a time (`TaskWorker` over the layer protocol). */
class LayerWorker {
  private readonly channel: TaskWorker<Done>;

  constructor(init: WorkerInit, log: (msg: string) => void) {
    this.channel = new TaskWorker<Done>(spawn(init), (raw) => {
      const m = raw as WorkerMessage;
      if (m.type === 'ready') return { kind: 'ready' };
      if (m.type === 'log') { log(m.msg); return { kind: 'other' }; }
      if (m.type === 'done') return { kind: 'result', id: m.layer, value: m };
      return { kind: 'error', error: errorFromWorker(m) };
    });
  }

  async run(task: LayerTask): Promise<Done> {
    const transfer: ArrayBuffer[] = task.weights.map(([, t]) => t.data.buffer as ArrayBuffer);
    for (const b of task.states?.batches ?? []) transfer.push(b.data.buffer as ArrayBuffer);
    const msg: MainMessage = { type: 'layer', ...task };
    return this.channel.send(task.layer, msg, transfer);
  }

  /** Let the worker finish and exit; `graceMs` 0 or a failed worker: terminate now. */
  async close(graceMs = 2000): Promise<void> {
    const msg: MainMessage = { type: 'close' };
    await this.channel.close(msg, graceMs);
  }
}

/**
 * Every layer's dense input: embeddings, then each dense layer's output (one layer on the backend
 * at a time for streamed weights). All of them stay on the host until their layer is sent.
 */
function denseInputs(model: CausalLM, windows: number[][]): HiddenStates[] {
  const inputs: HiddenStates[] = [embedWindows(model, windows)];
  for (let i = 0; i + 1 < model.numLayers; i++) inputs.push(model.withParts([i], () => runLayer(model, i, inputs[i]!)!));
  return inputs;
}

/** Prune all layers of `model` on `job.workers` threads; pushes the report entries in layer order. */
export async function pruneLayersParallel<O>(model: CausalLM, job: ParallelJob<O>, perLayer: Record<string, unknown>[]): Promise<void> {
  const N = model.numLayers;
  const inputs: (HiddenStates | null)[] = job.windows ? denseInputs(model, job.windows) : new Array<null>(N).fill(null);
  let backend: ConcreteBackend;
  try { backend = activeBackend(); } catch { backend = 'wasm'; }
  const init: WorkerInit = { backend, method: job.methodName, options: job.options, target: job.target, config: model.config, view: modelViewData(model), run: { mode: 'dense-parallel', workers: job.workers, numerics: job.numerics } };
  const n = Math.min(job.workers, N);
  job.log(`dense pass done; pruning ${N} layers on ${n} worker threads (${backend})`);
  const pool = Array.from({ length: n }, () => new LayerWorker(init, job.log));
  const results = new Array<Record<string, unknown>>(N);
  let next = 0;
  let done = 0;
  let failed = false;
  try {
    await Promise.all(pool.map(async (w, k) => {
      // Any error (a worker's, or applying its result) stops every loop.
      while (next < N && !failed) {
        const i = next++;
        try {
          const task: LayerTask = { layer: i, weights: layerWeights(model, i), states: inputs[i]! };
          inputs[i] = null; // transferred to the worker
          const r = await w.run(task);
          for (const op of r.operators) writeLinear(model, i, op.role, op.weight, op.rows, op.cols);
          results[i] = r.info;
          done++;
          job.onLayer?.(done, N);
          job.log(`layer ${i + 1}/${N} pruned (worker ${k}, ${r.seconds.toFixed(2)} s)`);
        } catch (e) {
          failed = true;
          throw e;
        }
      }
    }));
  } finally {
    // After a failure the others may be mid-layer: stop them at once.
    await Promise.all(pool.map((w) => w.close(failed ? 0 : 2000)));
  }
  perLayer.push(...results);
}
