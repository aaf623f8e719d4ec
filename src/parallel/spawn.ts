/**
 * Starting and stopping worker threads that run this project's TypeScript modules — shared by
 * the dense-parallel pruning executor (`src/prune/parallel.ts`) and the forward pool
 * (`forward-pool.ts`).
 */
import { Worker } from 'node:worker_threads';
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
  return new Worker(boot, { eval: true, workerData });
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
