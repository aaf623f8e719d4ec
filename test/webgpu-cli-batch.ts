/**
 * Several `prunelab` commands in one process on one backend, so a suite comparing many commands
 * on WebGPU and on wasm starts each backend once instead of once per command (Dawn's start-up and
 * tsx's compile dominate small commands on the software adapter).
 *
 *   node --import tsx test/webgpu-cli-batch.ts BACKEND < commands.json
 *
 * commands.json: an array of argument lists (`--json --backend BACKEND` is appended to each).
 * stdout: one JSON line per command, in order (the command's own `--json` object, an error object
 * included), then `{"numTensors": N}`: the tensors still alive after every command disposed its
 * models (a leak shows as a difference from the wasm run; null when no command started a backend).
 */
import fs from 'node:fs';
import * as tf from '@tensorflow/tfjs';
import { main } from '../src/cli/main.ts';
import { activeBackend } from '../src/backend/index.ts';

const backend = process.argv[2];
if (!backend) throw new Error('usage: node --import tsx test/webgpu-cli-batch.ts BACKEND < commands.json');
const commands = JSON.parse(fs.readFileSync(0, 'utf8')) as string[][];
for (const args of commands) await main([...args, '--json', '--backend', backend]);
// No backend started when every command failed before loading anything.
let started = true;
try { activeBackend(); } catch { started = false; }
process.stdout.write(`${JSON.stringify({ numTensors: started ? tf.memory().numTensors : null })}\n`);
