/**
 * The `prunelab` process itself only supervises: the command runs in a child process, because a
 * command busy in a long synchronous computation cannot run a signal handler, and a process that
 * dies cannot report its own death. The supervisor
 * - forwards SIGINT/SIGTERM/SIGHUP to the child (in its own process group, so a terminal's ^C
 *   reaches it once), and when the child dies of it prints one line (and with `--json` one JSON
 *   object) saying what was done, removes the temporary folders the child registered and names the
 *   resumable ones it keeps; exit code 128 + the signal number;
 * - with `--json`, guarantees exactly one JSON object on stdout for every failing exit, whatever
 *   the child managed to print;
 * - relays stdout completely, however slowly the reader drains the pipe, and exits only then.
 * Only Node built-ins and small modules are loaded here.
 */
import { spawn } from 'node:child_process';
import { constants } from 'node:os';
import fs from 'node:fs';
import { isSupervisorMessage } from '../util/supervision.ts';
import { removeTree } from '../util/writable-dir.ts';
import { wantsJson } from './json-flag.ts';

/** Set in the child's environment: run the command instead of supervising. */
export const CHILD_ENV = 'PRUNELAB_SUPERVISED_CHILD';

const FORWARDED: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

interface Temp {
  keepIf?: string;
  removeIfEmpty: string[];
}

function signalNumber(sig: NodeJS.Signals): number {
  return (constants.signals as Record<string, number>)[sig] ?? 1;
}

/** Exactly one JSON object (a single line, as `emit` prints it), else null. */
function singleJsonObject(text: string): Record<string, unknown> | null {
  const lines = text.split('\n').filter((l) => l.trim().length > 0);
  if (lines.length !== 1) return null;
  try {
    const v: unknown = JSON.parse(lines[0]);
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? v as Record<string, unknown> : null;
  } catch {
    return null;
  }
}

/** Resolves once everything written so far to `stream` has been handed to the OS. */
export function flushed(stream: NodeJS.WritableStream): Promise<void> {
  return new Promise((resolve) => {
    stream.write('', () => resolve());
  });
}

/** Run `bin` (the prunelab entry script) as a supervised child with `argv`; resolves to the exit code. */
export async function supervise(bin: string, argv: string[]): Promise<number> {
  const json = wantsJson(argv);
  // Node options (memory limits …) apply to the command too; a debugger stays with this process.
  const nodeOptions = process.execArgv.filter((a) => !a.startsWith('--inspect'));
  const child = spawn(process.execPath, [...nodeOptions, bin, ...argv], {
    env: { ...process.env, [CHILD_ENV]: '1' },
    stdio: ['inherit', 'pipe', 'inherit', 'ipc'],
    detached: true,
  });

  let lastProgress: string | null = null;
  const temps = new Map<string, Temp>();
  child.on('message', (m: unknown) => {
    if (!isSupervisorMessage(m)) return;
    if (m.kind === 'progress') lastProgress = m.text;
    else if (m.kind === 'temp') temps.set(m.path, { keepIf: m.keepIf, removeIfEmpty: m.removeIfEmpty });
    else temps.delete(m.path);
  });

  let forwarded: NodeJS.Signals | null = null;
  const onSignal = (sig: NodeJS.Signals) => {
    forwarded ??= sig;
    if (child.exitCode === null && child.signalCode === null) child.kill(sig);
  };
  for (const s of FORWARDED) process.on(s, onSignal);

  const chunks: Buffer[] = [];
  const out = child.stdout as NodeJS.ReadableStream; // 'pipe' above
  if (json) out.on('data', (c: Buffer) => chunks.push(c));
  else out.pipe(process.stdout, { end: false });
  // A reader that went away (`| head`) must neither crash this process nor stall the command.
  process.stdout.on('error', () => {
    out.unpipe();
    out.resume();
  });

  const ended = await new Promise<{ code: number | null; signal: NodeJS.Signals | null; spawnError?: Error }>((resolve) => {
    child.on('error', (e) => resolve({ code: null, signal: null, spawnError: e }));
    child.on('close', (code, signal) => resolve({ code, signal }));
  });
  for (const s of FORWARDED) process.off(s, onSignal);

  const stdout = Buffer.concat(chunks).toString('utf8');
  let code: number;
  let report: Record<string, unknown> | null = null;
  if (ended.spawnError) {
    code = 1;
    report = { error: `cannot start the command: ${ended.spawnError.message}`, kind: 'SupervisorError' };
  } else if (ended.signal !== null) {
    // The child died of a signal: it could not clean up or report, so do both here.
    const removed: string[] = [];
    const kept: string[] = [];
    for (const [dir, t] of temps) {
      if (t.keepIf !== undefined && fs.existsSync(t.keepIf)) kept.push(dir);
      else {
        removeTree(dir, t.removeIfEmpty);
        removed.push(dir);
      }
    }
    const how = forwarded === ended.signal ? `interrupted by ${ended.signal}` : `killed by ${ended.signal}`;
    const parts = [
      how,
      lastProgress ? `last progress: ${lastProgress}` : 'before any progress was reported',
      removed.length ? `no output written (removed the unfinished ${removed.join(', ')})` : '',
      kept.length ? `the unfinished run in ${kept.join(', ')} is kept: continue it with --resume` : '',
    ].filter((p) => p.length > 0);
    const message = parts.join('; ');
    process.stderr.write(`prunelab: ${message}\n`);
    code = 128 + signalNumber(ended.signal);
    report = { error: message, kind: 'Interrupted', signal: ended.signal, lastProgress, removed, kept };
  } else {
    code = ended.code ?? 1;
    // A child that failed normally removed its folders; one that crashed may not have.
    if (code !== 0) for (const [dir, t] of temps) if (t.keepIf === undefined || !fs.existsSync(t.keepIf)) removeTree(dir, t.removeIfEmpty);
    if (json && code !== 0 && singleJsonObject(stdout) === null) {
      report = { error: `the command ended with exit code ${code} without a result (see the messages on stderr)`, kind: 'CommandFailed' };
    }
  }

  if (json) process.stdout.write(report ? JSON.stringify(report) + '\n' : stdout);
  await flushed(process.stdout);
  return code;
}
