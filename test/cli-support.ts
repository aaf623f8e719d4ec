/** Run the real `prunelab` CLI (through bin/prunelab.js) and parse its one JSON object. */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { REPO_ROOT } from './support.ts';

export interface CliRun {
  status: number | null;
  stdout: string;
  stderr: string;
  json: Record<string, unknown> | null;
}

export function runCli(args: string[], timeoutMs = 120_000): CliRun {
  const r = spawnSync(process.execPath, [path.join(REPO_ROOT, 'bin/prunelab.js'), ...args, '--json', '--backend', 'wasm'], {
    cwd: REPO_ROOT, encoding: 'utf8', timeout: timeoutMs,
  });
  let json: Record<string, unknown> | null = null;
  const lines = r.stdout.trim().split('\n').filter((l) => l.length > 0);
  if (lines.length === 1) json = JSON.parse(lines[0]) as Record<string, unknown>;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, json };
}
