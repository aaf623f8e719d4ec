#!/usr/bin/env node
// Runs the TypeScript sources through tsx, so `npx prunelab` works right after `npm ci`
// (no build step) and user plug-ins may be written in TypeScript too.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../src/cli/main.ts');
await main(process.argv.slice(2));
// Exit explicitly once the command is done: a stray handle (a worker thread still shutting
// down, a timer) must not keep a finished command alive. Output is already written: stdout and
// stderr are synchronous for files and pipes on Linux.
process.exit(process.exitCode ?? 0);
