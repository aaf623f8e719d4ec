/**
 * Shared by the experiment tests: a scratch workspace (fake model folders and text files, so
 * path checks pass) and a deterministic fake executor whose numbers depend only on the run's
 * settings, so two executions of the same run give the same row (timings aside).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { canonicalJson, shortHash } from '../src/experiment/hash.ts';
import type { RunResult, RunSpec } from '../src/experiment/types.ts';
import { TASKS } from '../src/eval/zeroshot.ts';
import { HAVE_SHARED } from './support.ts';

// The experiments here name zero-shot tasks (never evaluated: the executor is fake), and the
// loader checks that a named task's data file exists. Without the shared data, stand-in files do.
if (!HAVE_SHARED) {
  const stand = fs.mkdtempSync(path.join(fs.realpathSync(os.tmpdir()), 'prunelab-shared-stand-in-'));
  fs.mkdirSync(path.join(stand, 'zeroshot'));
  for (const t of Object.values(TASKS)) fs.writeFileSync(path.join(stand, 'zeroshot', t.file), '');
  process.env.PRUNELAB_SHARED_DATA = stand;
}
import { expandGrid } from '../src/experiment/grid.ts';
import type { LoadedExperiment } from '../src/experiment/schema.ts';
import { methodRegistryInfo } from '../src/experiment/pipeline.ts';

/** What the registry says of the methods in this repository (granularities, schedules, names). */
export const registry = await methodRegistryInfo();

/** The grid as `prunelab run` expands it (pattern-taking methods from the registry). */
export const gridOf = (exp: LoadedExperiment): RunSpec[] => expandGrid(exp, { usesPatterns: registry.usesPatterns });

export function workspace(prefix: string): string {
  const root = fs.mkdtempSync(path.join(fs.realpathSync(os.tmpdir()), `prunelab-${prefix}-`));
  for (const d of ['exp', 'data', 'models/tiny', 'models/small']) fs.mkdirSync(path.join(root, d), { recursive: true });
  fs.writeFileSync(path.join(root, 'data/calib.txt'), 'once upon a time\n');
  fs.writeFileSync(path.join(root, 'data/wt2.txt'), 'the quick brown fox\n');
  return root;
}

export function writeYaml(root: string, name: string, text: string): string {
  const file = path.join(root, 'exp', name);
  fs.writeFileSync(file, text);
  return file;
}

/** A value in [0, 1) from the run's settings and a tag. */
function unit(run: RunSpec, tag: string): number {
  return parseInt(shortHash(canonicalJson(run.settings) + tag, 8), 16) / 2 ** 32;
}

export function fakeResult(run: RunSpec): RunResult {
  const s = run.sparsity;
  return {
    backend: 'fake',
    model: { hash: shortHash(run.model.id, 16), family: 'llama', dtype: 'float32' },
    sparsity: { decoderLayers: 0.9 * s, allParameters: 0.6 * s, scope: { name: 'decoder-linears', fraction: s }, paramsBefore: 1000, paramsAfter: Math.round(1000 * (1 - s)) },
    calibration: run.calibration ? { offsets: Array.from({ length: run.calibration.nsamples }, (_, i) => (run.seed * 7 + i * 13) % 97) } : undefined,
    pruningReport: { perMatrix: { 'layers.0.q_proj': s } },
    perplexity: Object.fromEntries(run.evaluations.perplexity.map((p) => [p.id, {
      ppl: 10 * (1 + 4 * s * s) * (1 + 0.05 * unit(run, p.id)), windows: 3, protocol: { bos: 'once-at-text-start', tokenizer: `tok-${run.model.id}` },
    }])),
    zeroshot: Object.fromEntries(run.evaluations.zeroshot.map((z) => [z.id, {
      acc: 0.7 - 0.3 * s + 0.01 * unit(run, z.id), acc_norm: 0.72 - 0.3 * s, n: z.limit ?? 50, protocol: { template: `prunelab/${z.id}@v1` },
    }])),
    speed: run.evaluations.speed ? { prefillTokensPerS: 1000 * (1 + s), decodeTokensPerS: 100 * (1 + s) } : undefined,
    // Random on purpose: timing columns are the only ones allowed to differ between executions.
    timings: { pruneS: Math.random(), evalS: Math.random() },
  };
}

/** The start of a small experiment YAML (one model, calibration text), up to its `methods:` key. */
export const YAML_HEAD = `name: demo
models:
  - id: tiny
    path: ../models/tiny
calibration:
  text: ../data/calib.txt
  seqlen: 64
methods:
`;
