/**
 * SparseGPT on one random operator through the engine primitive on the backend (float32), with
 * wall and CPU seconds of the factor and the sweep:
 *   node --import tsx bench/sparsegpt-operator.ts [cols=4096] [rows=cols]
 * Its PyTorch counterpart on the same shapes: /usr/bin/python3 bench/torch/sparsegpt_time.py [cols].
 * CPU seconds compare the two on a machine shared with other jobs, where wall time moves with load.
 */
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/index.ts';
import { backendLinAlg } from '../src/linalg/backend.ts';
import { obsFactor, obsSweep } from '../src/prune/obs.ts';

await initBackend('wasm', true);
const n = Number(process.argv[2] ?? 4096);
const rows = Number(process.argv[3] ?? n);
const tokens = 4096;
const X = tf.randomNormal([tokens, n], 0, 1, 'float32', 1);
const H = Float64Array.from(tf.matMul(tf.transpose(X), X).dataSync()).map((v) => (2 * v) / tokens);
const W = tf.randomNormal([rows, n], 0, 1, 'float32', 2).dataSync() as Float32Array;
const la = backendLinAlg();
const cpu = (u: NodeJS.CpuUsage) => ((u.user + u.system) / 1e6).toFixed(2);
let c0 = process.cpuUsage();
let t0 = performance.now();
const f = obsFactor(la, H, n, 0.01);
const factorWall = (performance.now() - t0) / 1000;
const factorCpu = cpu(process.cpuUsage(c0));
c0 = process.cpuUsage();
t0 = performance.now();
const r = obsSweep(la, W, rows, n, f, { kind: 'matrix', sparsity: 0.5, blocksize: 128 });
const sweepWall = (performance.now() - t0) / 1000;
console.log(`PruneLab ${rows}×${n}: factor ${factorWall.toFixed(2)} s wall / ${factorCpu} s CPU, sweep ${sweepWall.toFixed(2)} s wall / ${cpu(process.cpuUsage(c0))} s CPU, loss ${r.loss.toExponential(4)}`);
f.dispose();
