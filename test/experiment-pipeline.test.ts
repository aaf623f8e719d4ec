/**
 * The real pipeline behind `prunelab run`: a small experiment (two methods, one sparsity,
 * stories260K) end to end through the CLI, its table, and a re-run that does no work.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { HAVE_SHARED, NO_SHARED_REASON, tmpDir } from './support.ts';
import { runCli } from './cli-support.ts';
import { loadExperiment } from '../src/experiment/schema.ts';
import { gridOf, registry } from './experiment-fixtures.ts';
import { methodNames } from '../src/prune/registry.ts';
import { REPO_ROOT, setupBackend } from './support.ts';
import { executeRun } from '../src/experiment/pipeline.ts';
import { buildRow } from '../src/experiment/results.ts';

describe('experiment pipeline (CLI)', { skip: HAVE_SHARED ? false : NO_SHARED_REASON }, () => {
  it('runs two methods on stories260K, renders the table, and resumes without work', () => {
    const dir = tmpDir('exp');
    const yaml = path.join(dir, 'small.yaml');
    fs.writeFileSync(yaml, [
      'name: ci-small',
      'output: out',
      'models:',
      '  - id: stories260K',
      '    path: $SHARED/models/stories260K/stories260K.bin',
      'calibration: {text: $SHARED/text/tinystories-sample.txt, nsamples: 4, seqlen: 64, seed: 0, mode: sequential}',
      'methods: [{name: magnitude}, {name: wanda}]',
      'sparsities: [0.5]',
      'patterns: [unstructured]',
      'evaluations:',
      '  perplexity: [{id: tinystories, text: $SHARED/text/tinystories-sample.txt, seqlen: 128, maxWindows: 8}]',
      'seeds: [0]',
      '',
    ].join('\n'));
    const r = runCli(['run', yaml], 300_000);
    assert.equal(r.status, 0, r.stderr);
    const out = r.json as { completed: string[]; table: string };
    assert.equal(out.completed.length, 3, 'dense + 2 methods');
    const lines = out.table.split('\n');
    assert.match(lines[2], /Dense/);
    assert.ok(out.table.includes('Magnitude') && out.table.includes('Wanda'));
    const csv = path.join(dir, 'out', 'results.csv');
    const rows = fs.readFileSync(csv, 'utf8').trim().split('\n');
    assert.equal(rows.length, 4, 'header + 3 rows');
    // Dense perplexity is below both pruned ones (a sanity check a pipeline bug would break).
    const header = rows[0].split(',');
    const col = header.indexOf('ppl:tinystories');
    assert.ok(col >= 0, header.join(','));
    const bytes = fs.readFileSync(csv);
    const again = runCli(['run', yaml], 120_000);
    assert.equal(again.status, 0, again.stderr);
    assert.deepEqual((again.json as { completed: string[] }).completed, []);
    assert.deepEqual(fs.readFileSync(csv), bytes, 'results.csv unchanged by a re-run');
  });
});

describe('speed relative to dense (pipeline)', { skip: HAVE_SHARED ? false : NO_SHARED_REASON }, () => {
  it('a structured run measures its speed in alternation with the dense model: ratio and spread in the row; layer-wise runs do not', async () => {
    await setupBackend();
    const dir = tmpDir('exp-speed');
    const yaml = path.join(dir, 'speed.yaml');
    fs.writeFileSync(yaml, [
      'name: speed', 'output: out', 'models:', '  - id: stories260K', '    path: $SHARED/models/stories260K/stories260K.bin',
      'methods: [{name: magnitude-sp}, {name: magnitude}]', 'sparsities: [0.5]',
      'evaluations:', '  speed: {promptTokens: 8, newTokens: 4, repeats: 3, warmup: 0}', '',
    ].join('\n'));
    const exp = loadExperiment(yaml, { validateMethod: registry.validateMethod, recoverySchedules: registry.recoverySchedules });
    const ctx = { signal: new AbortController().signal, log: () => {} } as unknown as Parameters<typeof executeRun>[1];
    for (const run of gridOf(exp)) {
      const result = await executeRun(run, ctx);
      const row = buildRow(run, result, exp.config, { totalS: 1, finished: new Date(0) });
      if (run.method?.name === 'magnitude-sp') {
        const v = result.speed?.vsDense;
        assert.ok(v, 'structured run has a ratio to dense');
        assert.equal(v.rounds, 3);
        for (const k of ['prefill', 'decode'] as const) assert.ok(v[k].lo > 0 && v[k].lo <= v[k].hi, `${k}: ${v[k].lo}–${v[k].hi}`);
        assert.equal(Number(row['speed:decode_vs_dense']), v.decode.ratio);
        assert.equal(Number(row['speed:decode_vs_dense_hi']), v.decode.hi);
      } else {
        assert.equal(result.speed?.vsDense, undefined);
        assert.equal(row['speed:decode_vs_dense'], run.kind === 'dense' ? '1' : '');
      }
    }
  });
});

describe('shipped experiment files', () => {
  it('the quickstart is valid and puts every method side by side', async () => {
    const { validateMethod, recoverySchedules } = registry;
    const exp = loadExperiment(path.join(REPO_ROOT, 'experiments/quickstart.yaml'), { validateMethod, recoverySchedules });
    const runs = gridOf(exp);
    const methods = new Set(runs.map((r) => r.method?.name).filter((m) => m));
    assert.deepEqual([...methods].sort(), methodNames());
    // Unstructured: 50% and 2:4; structured: 20% and 50%, each with and without recovery; + dense.
    const unstructured = runs.filter((r) => r.pattern !== null);
    assert.ok(unstructured.every((r) => r.sparsity === 0.5));
    const structured = runs.filter((r) => r.kind === 'pruned' && r.pattern === null);
    const sparsitiesOf = (list: typeof runs) => [...new Set(list.map((r) => r.sparsity))].sort();
    assert.deepEqual(sparsitiesOf(structured.filter((r) => r.method?.name !== 'saap')), [0.2, 0.5]);
    // SAAP counts all parameters (embeddings are 58% of this model): 10% and 20%.
    assert.deepEqual(sparsitiesOf(structured.filter((r) => r.method?.name === 'saap')), [0.1, 0.2]);
    assert.ok(structured.some((r) => r.recovery.schedule !== 'none'));
    assert.equal(runs.filter((r) => r.kind === 'dense').length, 1);
  });

  it('the small experiments on stories260K are valid', { skip: HAVE_SHARED ? false : NO_SHARED_REASON }, async () => {
    const { validateMethod, recoverySchedules } = registry;
    for (const f of ['stories-small', 'cfsp-small', 'saap-small', 'fistapruner-small']) {
      const exp = loadExperiment(path.join(REPO_ROOT, 'experiments', `${f}.yaml`), { validateMethod, recoverySchedules });
      assert.ok(gridOf(exp).length > 1, f);
    }
  });

  it('the paper configs are valid with their inputs in place, and their recovery runs use the presets', { skip: HAVE_SHARED ? false : NO_SHARED_REASON }, () => {
    const { validateMethod, recoverySchedules } = registry;
    const root = tmpDir('paper-inputs');
    const saved = { MODELS: process.env.MODELS, DATA: process.env.DATA };
    process.env.MODELS = path.join(root, 'models');
    process.env.DATA = path.join(root, 'data');
    try {
      const files = fs.readdirSync(path.join(REPO_ROOT, 'experiments')).filter((f) => f.startsWith('paper-'));
      const presets = new Map<string, Set<string>>();
      for (const f of files) {
        const text = fs.readFileSync(path.join(REPO_ROOT, 'experiments', f), 'utf8');
        // Stand-ins for what the header asks for: folders for models, files for data.
        for (const m of text.matchAll(/\$(MODELS|DATA)\/([^\s,}]+)/g)) {
          const p = path.join(root, m[1] === 'MODELS' ? 'models' : 'data', m[2]);
          fs.mkdirSync(m[1] === 'MODELS' ? p : path.dirname(p), { recursive: true });
          if (m[1] === 'DATA') fs.writeFileSync(p, p.endsWith('.json') ? '[{"instruction": "a", "input": "", "output": "b"}]' : 'text\n');
        }
        const runs = gridOf(loadExperiment(path.join(REPO_ROOT, 'experiments', f), { validateMethod, recoverySchedules }));
        // Like with like: every SAAP-paper row prunes to the same budget of all parameters.
        if (f === 'paper-saap.yaml') for (const r of runs) if (r.kind === 'pruned') assert.equal(r.method?.budget, 'all-parameters', r.id);
        for (const r of runs) {
          if (!('recipe' in r.recovery)) continue;
          const key = `${f}:${r.method?.name}`;
          presets.set(key, (presets.get(key) ?? new Set()).add(`${r.recovery.recipe.preset}/${r.recovery.schedule}`));
        }
      }
      assert.deepEqual([...presets.get('paper-cfsp-recovery.yaml:cfsp') ?? []].sort(), ['cfsp/cfsp', 'llm-pruner/uniform']);
      // Each baseline its own paper's recovery: LLM-Pruner plain LoRA, SAAP group fine-tuning.
      assert.deepEqual([...presets.get('paper-saap.yaml:saap') ?? []], ['saap/saap']);
      assert.deepEqual([...presets.get('paper-saap.yaml:llm-pruner') ?? []], ['llm-pruner/uniform']);
    } finally {
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
  });
});
