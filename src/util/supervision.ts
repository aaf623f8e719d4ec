/**
 * What a command tells the `prunelab` supervisor process (src/cli/supervisor.ts) while it runs:
 * its last progress line and the temporary folders it has created. A command killed by a signal
 * (or crashing) cannot clean up after itself, so the supervisor reports what was done and
 * removes those folders. Outside a supervised child (library use, tests) every call is a no-op.
 * Nothing heavy may be imported here: the supervisor loads this module too.
 */

export type SupervisorMessage =
  | { kind: 'progress'; text: string }
  /** Removed if the command dies, unless `keepIf` exists (resumable state: then only named). */
  | { kind: 'temp'; path: string; keepIf?: string; removeIfEmpty: string[] }
  | { kind: 'temp-done'; path: string };

export function isSupervisorMessage(m: unknown): m is SupervisorMessage {
  const k = (m as { kind?: unknown } | null)?.kind;
  return k === 'progress' || k === 'temp' || k === 'temp-done';
}

function send(msg: SupervisorMessage): void {
  // Small messages on the IPC pipe are written at once, even from inside a synchronous loop.
  if (typeof process.send === 'function' && process.connected) process.send(msg);
}

export function reportProgress(text: string): void {
  send({ kind: 'progress', text });
}

/**
 * A folder to remove if the command dies, unless the path `keepIf` exists then (resumable
 * state, only named); `removeIfEmpty`: parent folders created for it.
 */
export function registerTemporary(path: string, opts: { keepIf?: string; removeIfEmpty?: string[] }): void {
  send({ kind: 'temp', path, keepIf: opts.keepIf, removeIfEmpty: opts.removeIfEmpty ?? [] });
}

/** The folder was committed or removed by the command itself. */
export function releaseTemporary(path: string): void {
  send({ kind: 'temp-done', path });
}
