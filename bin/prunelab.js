#!/usr/bin/env node
// Runs the TypeScript sources through tsx, so `npx prunelab` works right after `npm ci`
// (no build step) and user plug-ins may be written in TypeScript too.
import { register } from 'tsx/esm/api';

register();
await import('../src/cli/main.ts');
