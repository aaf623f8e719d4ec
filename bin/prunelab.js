#!/usr/bin/env node
// Runs the TypeScript sources through tsx, so `npx prunelab` works right after `npm ci`
// (no build step) and user plug-ins may be written in TypeScript too. This process supervises
// (signals, the one-JSON-object contract, complete output: src/cli/supervisor.ts); the command
// itself runs in a child process started from this same file.
import { fileURLToPath } from 'node:url';
import { register } from 'tsx/esm/api';

register();
const { CHILD_ENV, supervise } = await import('../src/cli/supervisor.ts');
if (process.env[CHILD_ENV] === '1') {
  delete process.env[CHILD_ENV];
  const { runMain } = await import('../src/cli/main.ts');
  await runMain(process.argv.slice(2));
} else {
  // No process.exit here: the process ends once stdout is drained.
  process.exitCode = await supervise(fileURLToPath(import.meta.url), process.argv.slice(2));
}
