/**
 * Starting and stopping worker threads that run this project's TypeScript modules — shared by
 * the dense-parallel pruning executor (`src/prune/parallel.ts`) and the forward pool
 * (`forward-pool.ts`).
 */
import { Worker } from 'node:worker_threads';
import { noteWorkerThreads } from '../backend/openblas.ts';
import { ConfigError } from '../util/errors.ts';

/**
 * Start a worker on the module `entry` (a file URL). Node 20 does not apply
 * `execArgv: ['--import', 'tsx']` to a worker's entry module (it fails with
 * ERR_UNKNOWN_FILE_EXTENSION), so for a `.ts` entry a small bootstrap registers tsx in the worker
 * first and then imports the entry. An import failure is posted as `{ type: 'error', … }`, the
 * message shape both worker protocols use.
 */
export function spawnModuleWorker(entry: URL, workerData: unknown): Worker {
  const href = entry.href;
  const load = href.endsWith('.ts')
    ? `import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))}).then((m) => { m.register(); return import(${JSON.stringify(href)}); })`
    : `import(${JSON.stringify(href)})`;
  const boot = `${load}.catch((e) => { require('node:worker_threads').parentPort.postMessage({ type: 'error', `
    + `name: (e && e.name) || 'Error', message: String((e && e.message) || e), stack: e && e.stack }); });`;
  const worker = new Worker(boot, { eval: true, workerData });
  noteWorkerThreads(+1);
  worker.once('exit', () => noteWorkerThreads(-1));
  return worker;
}

/** What a worker posts when something throws in it. */
export interface WorkerErrorMessage {
  type: 'error';
  name: string;
  message: string;
  stack?: string;
}

export function errorMessage(e: unknown): WorkerErrorMessage {
  const err = e instanceof Error ? e : new Error(String(e));
  return { type: 'error', name: err.name, message: err.message, stack: err.stack };
}

/** The main-thread error for a worker's error message (user errors keep their class). */
export function errorFromWorker(m: { name: string; message: string; stack?: string }): Error {
  if (m.name === 'ConfigError') return new ConfigError(m.message);
  const e = new Error(`worker: ${m.message}`);
  e.name = m.name;
  if (m.stack) e.stack = `${e.name}: worker: ${m.stack}`;
  return e;
}

/**
 * Ask a worker to finish (`askToClose` posts its close message; it then closes its port and
 * exits on its own, a clean teardown of its backend and loader thread); terminate it if it has
 * not exited within `graceMs`, or at once when `askToClose` is null or `graceMs` is 0. Finally
 * unref it, so nothing left of it can keep the process alive. Resolves once it has exited.
 */
export async function closeWorker(worker: Worker, askToClose: (() => void) | null, graceMs = 2000): Promise<void> {
  const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
  if (worker.threadId === -1) return; // already exited
  let timer: NodeJS.Timeout | undefined;
  try {
    if (askToClose && graceMs > 0) {
      askToClose();
      const late = await Promise.race([exited.then(() => false), new Promise<boolean>((r) => { timer = setTimeout(() => r(true), graceMs); })]);
      if (!late) return;
    }
    await worker.terminate();
  } finally {
    clearTimeout(timer);
    worker.unref();
  }
}

/** What one message from a task worker means: start-up done, a task's result, or a failure. */
export type Routed<R> = { kind: 'ready' } | { kind: 'result'; id: number; value: R } | { kind: 'error'; error: Error } | { kind: 'other' };

/**
 * One worker thread running one task at a time — the plumbing both worker protocols share: the
 * start-up handshake, the pending task, the first failure (which rejects the pending task and
 * every later one), and a clean close. `route` reads a protocol's messages.
 */
export class TaskWorker<R> {
  exited = false;
  private readonly ready: Promise<void>;
  private onReady: { resolve: () => void; reject: (e: Error) => void } | null = null;
  private pending: { id: number; resolve: (v: R) => void; reject: (e: Error) => void } | null = null;
  private failure: Error | null = null;

  /** `prefix` starts the main thread's own error messages (e.g. `forward pool: `). */
  constructor(readonly worker: Worker, route: (m: unknown) => Routed<R>, prefix = '') {
    this.ready = new Promise((resolve, reject) => { this.onReady = { resolve, reject }; });
    this.ready.catch(() => {}); // observed through send()
    worker.on('message', (m: unknown) => {
      const r = route(m);
      if (r.kind === 'ready') this.onReady?.resolve();
      else if (r.kind === 'error') this.fail(r.error);
      else if (r.kind === 'result') {
        const p = this.pending;
        this.pending = null;
        if (p && p.id === r.id) p.resolve(r.value);
        else this.fail(new Error(`${prefix}unexpected result for task ${r.id}`));
      }
    });
    worker.on('error', (e) => this.fail(e));
    worker.on('exit', (code) => {
      this.exited = true;
      this.fail(new Error(`${prefix}worker thread exited (code ${code})`));
    });
  }

  private fail(e: Error): void {
    this.failure ??= e;
    this.onReady?.reject(this.failure);
    const p = this.pending;
    this.pending = null;
    p?.reject(this.failure);
  }

  /** Post task `id` (once the worker is ready) and wait for its result. */
  async send(id: number, message: unknown, transfer: ArrayBuffer[] = []): Promise<R> {
    await this.ready;
    if (this.failure) throw this.failure;
    return new Promise<R>((resolve, reject) => {
      this.pending = { id, resolve, reject };
      this.worker.postMessage(message, transfer);
    });
  }

  /** Let the worker finish and exit (`closeWorker`); `graceMs` 0 or a failed worker: terminate now. */
  async close(closeMessage: unknown, graceMs: number): Promise<void> {
    await closeWorker(this.worker, this.failure ? null : () => this.worker.postMessage(closeMessage), graceMs);
  }
}
