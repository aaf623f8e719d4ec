/**
 * A pool of worker threads for data-parallel forward passes: each worker has its own
 * TensorFlow.js backend and its own copy of the model, uploaded from one host copy in
 * SharedArrayBuffers (`shared-params.ts`). Tasks are independent batches of windows; results
 * come back indexed by task, so a caller that combines them in task order gets numbers that do
 * not depend on the number of workers or on which worker ran which task.
 *
 * Why workers and not the threaded WebAssembly build: see README "Performance" (the threaded
 * build needs patching to load under Node, and its XNNPACK pool slows the small kernels these
 * models are made of).
 */
import { assertResident } from '../model/param-provider.ts';
import type { Worker } from 'node:worker_threads';
import type { CausalLM } from '../model/causal-lm.ts';
import { activeBackend, type ConcreteBackend } from '../backend/index.ts';
import type { LinearRole } from '../model/family.ts';
import type { LayerStats, LayerStatsRequest, OperatorDecision, OperatorView, PruneTarget, RunSettings, StructuredStatsRequest } from '../prune/method.ts';
import { shareModel, type SharedModel } from './shared-params.ts';
import { errorFromWorker, spawnModuleWorker, TaskWorker, type WorkerErrorMessage } from './spawn.ts';
import { poolPaysNow } from './threads.ts';
import { yieldIfDue } from '../backend/yield.ts';

/** Sent once, as `workerData`. */
export interface ForwardWorkerInit {
  backend: ConcreteBackend;
  model: SharedModel;
}

/** A batch of hidden states `[B*T, D]` on the host (the engine's `HiddenStates` batch). */
export interface HostBatch {
  data: Float32Array;
  B: number;
}

/** A linear's weight as the device holds it (`[in, out]`) and its bias. */
export interface HostLinear {
  weight: Float32Array;
  shape: [number, number];
  bias: Float32Array | null;
}

/** The tasks a worker runs; each names the in-process function it calls. */
export type DistanceMetric = NonNullable<StructuredStatsRequest['blockDistance']>;

export type ForwardTask =
  /** `batchNllSum`: the summed next-token NLL of a batch of windows (one forward pass). */
  | { type: 'nll'; rows: number[][] }
  /** Replace layer i's linears (after pruning) and set its dense snapshot (null: none). */
  | { type: 'set-layer'; layer: number; linears: [LinearRole, HostLinear][]; dense: [LinearRole, HostLinear][] | null }
  /** `collectLayerStats` on one batch (`withDense`: with the dense snapshot set by `set-layer`). */
  | { type: 'layer-stats'; layer: number; batch: HostBatch; T: number; D: number; req: LayerStatsRequest; withDense: boolean }
  /** `runLayer` on one batch, and `blockDistanceSum` of its input and output when `distance` is set. */
  | { type: 'run-layer'; layer: number; batch: HostBatch; T: number; D: number; distance: DistanceMetric | null }
  /** A layer-wise method's `pruneOperators` on some operators of one group (`src/prune/parallel-operators.ts`). */
  | SolveTask;

/** What a worker needs to run a method's own per-operator decision as the main thread would. */
export interface SolveTask {
  type: 'solve';
  /** The method's module file (`moduleOf`), resolved and set up once per worker. */
  method: string;
  options: unknown;
  target: PruneTarget;
  /** The run's settings, as the main thread's `setup` saw them. */
  run: RunSettings;
  layer: number;
  operators: OperatorView[];
  /** The group's statistics for these operators' taps. */
  stats: LayerStats;
}

/** The decisions of a `solve` task, in its operators' order, and what the method logged meanwhile. */
export interface SolveResult {
  decisions: OperatorDecision[];
  logs: string[];
}

export interface ForwardResults {
  'nll': number;
  'set-layer': null;
  'layer-stats': LayerStats;
  'run-layer': { batch: HostBatch; distance: number };
  'solve': SolveResult;
}

export type TaskOf<K extends ForwardTask['type']> = Extract<ForwardTask, { type: K }>;

export type ForwardMainMessage = { type: 'task'; id: number; task: ForwardTask } | { type: 'close' };

export type ForwardWorkerMessage =
  | { type: 'ready' }
  | { type: 'result'; id: number; value: ForwardResults[ForwardTask['type']] }
  | WorkerErrorMessage;

function spawn(init: ForwardWorkerInit): Worker {
  const ts = import.meta.url.endsWith('.ts');
  return spawnModuleWorker(new URL(ts ? './forward-worker.ts' : './forward-worker.js', import.meta.url), init);
}

/** One worker thread, one task at a time (`TaskWorker` over the forward protocol). */
class PoolWorker {
  private readonly channel: TaskWorker<unknown>;

  constructor(init: ForwardWorkerInit) {
    this.channel = new TaskWorker<unknown>(spawn(init), (raw) => {
      const m = raw as ForwardWorkerMessage;
      if (m.type === 'ready') return { kind: 'ready' };
      if (m.type === 'result') return { kind: 'result', id: m.id, value: m.value };
      return { kind: 'error', error: errorFromWorker(m) };
    }, 'forward pool: ');
  }

  get exited(): boolean {
    return this.channel.exited;
  }

  async run<K extends ForwardTask['type']>(id: number, task: TaskOf<K>): Promise<ForwardResults[K]> {
    const msg: ForwardMainMessage = { type: 'task', id, task };
    return (await this.channel.send(id, msg)) as ForwardResults[K];
  }

  async close(graceMs: number): Promise<void> {
    const msg: ForwardMainMessage = { type: 'close' };
    await this.channel.close(msg, graceMs);
  }
}

export class ForwardPool {
  private closed = false;

  private constructor(private readonly workers: PoolWorker[]) {}

  /**
   * Start `threads` workers holding a snapshot of `model`'s weights (later changes to `model`
   * are not seen). A model with a linear hook cannot be copied into workers (a hook is code).
   */
  static start(model: CausalLM, threads: number, backend?: ConcreteBackend): ForwardPool {
    if (model.linearHook) throw new Error('forward pool: a model with a linear hook cannot run in worker threads');
    assertResident(model.mode, 'worker threads (--threads N, each with its own copy of the model)');
    if (!Number.isInteger(threads) || threads < 1) throw new Error(`forward pool: threads must be a positive integer (got ${threads})`);
    const init: ForwardWorkerInit = { backend: backend ?? activeBackend(), model: shareModel(model) };
    return new ForwardPool(Array.from({ length: threads }, () => new PoolWorker(init)));
  }

  get size(): number {
    return this.workers.length;
  }

  /** Worker threads that have not exited yet. */
  get running(): number {
    return this.workers.filter((w) => !w.exited).length;
  }

  /**
   * Run every task; `results[i]` is task i's value. Workers take the next task as they finish
   * (dynamic scheduling); the first error stops every worker loop and is thrown.
   */
  async run<K extends ForwardTask['type']>(tasks: readonly TaskOf<K>[], onDone?: (done: number, total: number) => void): Promise<ForwardResults[K][]> {
    if (this.closed) throw new Error('forward pool: already closed');
    const results = new Array<ForwardResults[K]>(tasks.length);
    let next = 0;
    let done = 0;
    let failed = false;
    await Promise.all(this.workers.map(async (w) => {
      while (next < tasks.length && !failed) {
        const id = next++;
        try {
          results[id] = await w.run<K>(id, tasks[id]!);
        } catch (e) {
          failed = true;
          throw e;
        }
        onDone?.(++done, tasks.length);
      }
    }));
    return results;
  }

  /** Run `task` once on every worker (state every later task relies on, e.g. `set-layer`). */
  async broadcast<K extends ForwardTask['type']>(task: TaskOf<K>): Promise<void> {
    if (this.closed) throw new Error('forward pool: already closed');
    await Promise.all(this.workers.map((w) => w.run<K>(-1, task)));
  }

  /** Stop every worker and wait until all have exited (`graceMs` 0: terminate at once). */
  async close(graceMs = 2000): Promise<void> {
    this.closed = true;
    await Promise.all(this.workers.map((w) => w.close(graceMs)));
  }
}

/** Start a pool, run `fn` with it, always close it (at once after an error). */
export async function withForwardPool<T>(model: CausalLM, threads: number, fn: (pool: ForwardPool) => Promise<T>): Promise<T> {
  const pool = ForwardPool.start(model, threads);
  let ok = false;
  try {
    const r = await fn(pool);
    ok = true;
    return r;
  } finally {
    await pool.close(ok ? 2000 : 0);
  }
}

/**
 * Run independent tasks, `results[i]` being task i's value wherever it ran, on at most `threads`
 * threads (never more than tasks). With `auto` the first task runs in process and is timed; the
 * others go to a pool only when their estimated in-process time pays for its start-up
 * on the cores free now (`poolPaysNow`; `pays` replaces it in tests), else they run in process too. `inProcess(task)` must compute what a worker computes
 * for it (the tasks' in-process functions), so the results do not depend on where they ran.
 */
export async function runBatches<K extends ForwardTask['type']>(model: CausalLM, tasks: readonly TaskOf<K>[], threads: number, auto: boolean,
  inProcess: (task: TaskOf<K>) => ForwardResults[K], onDone?: (done: number) => void,
  pays: (seconds: number, threads: number) => boolean = poolPaysNow): Promise<{ results: ForwardResults[K][]; threadsUsed: number }> {
  const results: ForwardResults[K][] = [];
  const local = async (from: number) => {
    for (let i = from; i < tasks.length; i++) {
      results.push(inProcess(tasks[i]!));
      onDone?.(i + 1);
      await yieldIfDue();
    }
    return { results, threadsUsed: 1 };
  };
  if (Math.min(threads, tasks.length) <= 1) return await local(0);
  let first = 0;
  if (auto) {
    const t0 = performance.now();
    results.push(inProcess(tasks[0]!));
    onDone?.(1);
    first = 1;
    if (!pays(((performance.now() - t0) / 1000) * (tasks.length - 1), Math.min(threads, tasks.length - 1))) return await local(1);
  }
  const n = Math.min(threads, tasks.length - first);
  // Progress counts finished tasks, in whatever order they finish.
  const rest = await withForwardPool(model, n, (pool) => pool.run(tasks.slice(first), (done) => onDone?.(first + done)));
  return { results: [...results, ...rest], threadsUsed: n };
}
