/** Run the real `prunelab` CLI (through bin/prunelab.js) and parse its one JSON object. */
import { spawn, spawnSync } from 'node:child_process';
import path from 'node:path';
import { REPO_ROOT } from './support.ts';

export interface CliRun {
  status: number | null;
  stdout: string;
  stderr: string;
  json: Record<string, unknown> | null;
}

/** The node arguments of one CLI call (`--json --backend wasm` unless another backend is named). */
function cliArgs(args: string[], backend = 'wasm'): string[] {
  return [path.join(REPO_ROOT, 'bin/prunelab.js'), ...args, '--json', '--backend', backend];
}

function parsed(status: number | null, stdout: string, stderr: string): CliRun {
  let json: Record<string, unknown> | null = null;
  const lines = stdout.trim().split('\n').filter((l) => l.length > 0);
  if (lines.length === 1) json = JSON.parse(lines[0]) as Record<string, unknown>;
  return { status, stdout, stderr, json };
}

/**
 * `wrap`: a command line the CLI runs under, e.g. `['unshare', '-rm', 'sh', '-c', 'mount … && exec "$0" "$@"']`
 * (node and the CLI arguments follow it).
 */
export function runCli(args: string[], timeoutMs = 120_000, wrap: string[] = []): CliRun {
  return runCliOn('wasm', args, { timeoutMs, wrap });
}

/** `runCli` on another backend, with extra environment variables. */
export function runCliOn(backend: string, args: string[], opts: { timeoutMs?: number; wrap?: string[]; env?: Record<string, string> } = {}): CliRun {
  const argv = [process.execPath, ...cliArgs(args, backend)];
  const [cmd, ...rest] = [...(opts.wrap ?? []), ...argv];
  const r = spawnSync(cmd, rest, {
    cwd: REPO_ROOT, encoding: 'utf8', timeout: opts.timeoutMs ?? 120_000, maxBuffer: 256 << 20, env: { ...process.env, ...opts.env },
  });
  return parsed(r.status, r.stdout, r.stderr);
}

export interface RunningCli {
  pid: number;
  /** stderr so far. */
  stderr(): string;
  kill(signal: NodeJS.Signals): void;
}

/**
 * The same CLI call as `runCli`, asynchronously: `whileRunning` may act on the process (send it a
 * signal); `readDelayMs` leaves stdout unread that long, as a slow reader of a pipe would.
 */
export async function runCliAsync(args: string[], opts: {
  timeoutMs?: number; readDelayMs?: number; whileRunning?: (p: RunningCli) => Promise<void>;
} = {}): Promise<CliRun> {
  const child = spawn(process.execPath, cliArgs(args), { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  const out: Buffer[] = [];
  let err = '';
  child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
  child.stdout.pause();
  const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
  const closed = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  setTimeout(() => {
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stdout.resume();
  }, opts.readDelayMs ?? 0);
  if (opts.whileRunning) await opts.whileRunning({ pid: child.pid!, stderr: () => err, kill: (s) => child.kill(s) });
  const status = await closed;
  clearTimeout(timer);
  return parsed(status, Buffer.concat(out).toString('utf8'), err);
}
