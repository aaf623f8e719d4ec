/**
 * Grid expansion, stable ids, sharding, and the runner's resume/atomicity guarantees, with a
 * deterministic fake executor in place of the real pipeline (and, for signals, a child process).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadExperiment } from '../src/experiment/schema.ts';
import { parseShard, selectShard } from '../src/experiment/grid.ts';
import { readResults, readResultsFile, TIMING_COLUMNS } from '../src/experiment/results.ts';
import { ExperimentInterrupted, runExperiment } from '../src/experiment/runner.ts';
import type { RunSpec } from '../src/experiment/types.ts';
import { ConfigError, FileSystemError } from '../src/util/errors.ts';
import { fakeResult, gridOf, registry, workspace, writeYaml } from './experiment-fixtures.ts';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

const GRID = `name: grid
models:
  - id: tiny
    path: ../models/tiny
  - id: small
    path: ../models/small
calibration:
  text: ../data/calib.txt
  nsamples: 4
  seqlen: 16
methods:
  - name: magnitude
  - name: wanda
    options: {alpha: 1}
  - name: flap
sparsities: [0.3, 0.5]
patterns: [unstructured, "2:4"]
seeds: [0, 1]
evaluations:
  perplexity:
    - {id: wt2, text: ../data/wt2.txt, seqlen: 16}
  zeroshot:
    - {task: piqa}
    - {task: boolq, limit: 10}
  speed: {promptTokens: 8, newTokens: 8}
`;
// Per model: magnitude and wanda (2 sparsities + 2:4) × 2 seeds = 6 each, flap 2 × 2 = 4, + dense.
const GRID_SIZE = 2 * (6 + 6 + 4 + 1);

const SMALL = `name: small
models:
  - id: tiny
    path: ../models/tiny
calibration: {text: ../data/calib.txt, nsamples: 2, seqlen: 8}
methods:
  - name: magnitude
  - name: wanda
sparsities: [0.25, 0.5, 0.75]
evaluations:
  perplexity: [{id: wt2, text: ../data/wt2.txt, seqlen: 8}]
  zeroshot: [{task: piqa}]
`;
const SMALL_SIZE = 2 * 3 + 1;

const quiet = { log: () => {}, progress: 'none' as const, handleSignals: false, usesPatterns: registry.usesPatterns };

function idsOf(runs: readonly RunSpec[]): string[] {
  return runs.map((r) => r.id);
}

function csvPath(root: string, name: string): string {
  return path.join(root, 'exp', 'results', name, 'results.csv');
}

function assertComplete(root: string, name: string, expected: readonly string[]): void {
  const { rows } = readResultsFile(csvPath(root, name));
  const ids = rows.map((r) => r.run_id);
  assert.equal(new Set(ids).size, ids.length, 'duplicate rows');
  assert.deepEqual([...ids].sort(), [...expected].sort());
}

describe('grid', () => {
  const root = workspace('grid');

  it('expands models × methods × sparsities (× patterns) × seeds × recovery, plus a dense run per model', () => {
    const runs = gridOf(loadExperiment(writeYaml(root, 'g.yaml', GRID)));
    assert.equal(runs.length, GRID_SIZE);
    assert.equal(runs.filter((r) => r.kind === 'dense').length, 2);
    const flap = runs.filter((r) => r.method?.name === 'flap');
    assert.ok(flap.every((r) => r.pattern === null), 'structured methods ignore patterns');
    const nm = runs.filter((r) => r.pattern === '2:4');
    assert.equal(nm.length, 2 * 2 * 2);
    assert.ok(nm.every((r) => r.sparsity === 0.5));
    assert.ok(runs.some((r) => /^tiny\.wanda\.s0\.5\.unstructured\.seed0\.none-[0-9a-f]{8}$/.test(r.id)));
    assert.ok(runs.some((r) => /^tiny\.wanda\.s0\.5\.2of4\.seed1\.none-[0-9a-f]{8}$/.test(r.id)));
    assert.ok(runs.some((r) => /^small\.dense-[0-9a-f]{8}$/.test(r.id)));
    // Calibration seed follows the run seed unless the YAML fixes it.
    assert.ok(runs.filter((r) => r.kind === 'pruned').every((r) => r.calibration?.seed === r.seed));
    assert.deepEqual(idsOf(runs), [...idsOf(runs)].sort());
  });

  it('a method\'s own recovery list overrides the experiment-wide one for its runs only', () => {
    const yaml = GRID.replace('  - name: flap\n', '  - name: flap\n    recovery:\n      - {schedule: none}\n      - {schedule: uniform, steps: 5, data: ../data/calib.txt}\n');
    const runs = gridOf(loadExperiment(writeYaml(root, 'g-rec.yaml', yaml)));
    // flap doubles (none + uniform), everything else keeps the global [none].
    assert.equal(runs.length, GRID_SIZE + 2 * 4);
    const flapUniform = runs.filter((r) => r.method?.name === 'flap' && r.recovery.schedule === 'uniform');
    assert.equal(flapUniform.length, 2 * 4);
    assert.ok(flapUniform.every((r) => r.recovery.schedule === 'uniform' && path.isAbsolute(r.recovery.data)));
    assert.ok(runs.filter((r) => r.method?.name === 'wanda').every((r) => r.recovery.schedule === 'none'));
    // Per-method sparsities: wanda at 0.5 only (plus its 2:4 run).
    const only = gridOf(loadExperiment(writeYaml(root, 'g-sp.yaml', GRID.replace('    options: {alpha: 1}\n', '    options: {alpha: 1}\n    sparsities: [0.5]\n'))));
    const wanda = only.filter((r) => r.method?.name === 'wanda');
    assert.deepEqual([...new Set(wanda.map((r) => `${r.pattern}@${r.sparsity}`))].sort(), ['2:4@0.5', 'unstructured@0.5']);
  });

  it('ids are stable: same config (any key order, any folder) → same ids', () => {
    const a = idsOf(gridOf(loadExperiment(writeYaml(root, 'g.yaml', GRID))));
    const b = idsOf(gridOf(loadExperiment(writeYaml(root, 'g.yaml', GRID))));
    assert.deepEqual(a, b);
    const reordered = GRID.replace('    options: {alpha: 1}', '    options: {alpha: 1}').replace('  nsamples: 4\n  seqlen: 16', '  seqlen: 16\n  nsamples: 4');
    assert.deepEqual(idsOf(gridOf(loadExperiment(writeYaml(root, 'g2.yaml', reordered)))), a);
    // Another copy of the whole workspace: ids hash paths as written, not absolute paths.
    const other = workspace('grid-other');
    assert.deepEqual(idsOf(gridOf(loadExperiment(writeYaml(other, 'g.yaml', GRID)))), a);
  });

  it('changing one method option changes only that method\'s run ids', () => {
    const before = gridOf(loadExperiment(writeYaml(root, 'g.yaml', GRID)));
    const after = gridOf(loadExperiment(writeYaml(root, 'g.yaml', GRID.replace('{alpha: 1}', '{alpha: 2}'))));
    const pick = (runs: RunSpec[], wanda: boolean) => new Set(idsOf(runs.filter((r) => (r.method?.name === 'wanda') === wanda)));
    assert.deepEqual(pick(after, false), pick(before, false));
    const w0 = pick(before, true);
    const w1 = pick(after, true);
    assert.equal(w1.size, w0.size);
    for (const id of w1) assert.ok(!w0.has(id), `${id} should have changed`);
  });

  it('shards partition the grid: every run exactly once', () => {
    const runs = gridOf(loadExperiment(writeYaml(root, 'g.yaml', GRID)));
    for (const n of [1, 2, 3, 5, 7, GRID_SIZE + 3]) {
      const seen = new Map<string, number>();
      for (let i = 0; i < n; i++) {
        const part = selectShard(runs, parseShard(`${i}/${n}`));
        // Deterministic: the same slice twice, and from a shuffled list.
        assert.deepEqual(idsOf(selectShard([...runs].reverse(), { index: i, count: n })), idsOf(part));
        for (const r of part) seen.set(r.id, (seen.get(r.id) ?? 0) + 1);
      }
      assert.equal(seen.size, runs.length);
      assert.ok([...seen.values()].every((c) => c === 1));
    }
  });

  it('--shard is validated', () => {
    for (const bad of ['2/2', '3/2', '0/0', '-1/3', 'a/b', '1', '1/2/3']) {
      assert.throws(() => parseShard(bad), ConfigError, bad);
    }
    assert.deepEqual(parseShard(' 1 / 4 '), { index: 1, count: 4 });
  });
});

describe('runner', () => {
  it('runs the grid once; re-running does no work and leaves results.csv byte-identical', async () => {
    const root = workspace('run');
    const file = writeYaml(root, 'g.yaml', GRID);
    let calls = 0;
    const executeRun = (run: RunSpec) => { calls++; return fakeResult(run); };
    const summary = await runExperiment(file, { ...quiet, executeRun });
    assert.equal(calls, GRID_SIZE);
    assert.equal(summary.completed.length, GRID_SIZE);
    const expected = idsOf(gridOf(loadExperiment(file)));
    assertComplete(root, 'grid', expected);

    const { columns, rows } = readResultsFile(csvPath(root, 'grid'));
    for (const c of ['run_id', 'model_hash', 'options', 'calib_offsets_hash', 'calib_mode', 'ppl:wt2', 'ppl:wt2:protocol', 'acc:piqa', 'acc_norm:boolq', 'speed:decode_tok_s', 'backend', 'seed']) {
      assert.ok(columns.includes(c), c);
    }
    const wanda = rows.find((r) => r.method === 'wanda')!;
    assert.equal(wanda.options, '{"alpha":1}');
    assert.equal(JSON.parse(wanda['ppl:wt2:protocol']).seqlen, 16);
    assert.equal(JSON.parse(wanda['zs:boolq:protocol']).limit, 10);
    const dense = rows.find((r) => r.method === 'dense')!;
    assert.equal(dense.calib_text, '');
    assert.equal(dense.target_sparsity, '0');

    const record = JSON.parse(fs.readFileSync(path.join(root, 'exp', 'results', 'grid', 'runs', `${wanda.run_id}.json`), 'utf8'));
    assert.equal(record.backend, 'fake');
    assert.equal(record.versions.prunelab, '0.1.0');
    assert.ok(record.versions.packages['@tensorflow/tfjs']);
    assert.equal(record.run.method.options.alpha, 1);
    assert.equal(record.experiment.config.models[0].path, path.join(root, 'models', 'tiny'));
    assert.deepEqual(record.result.pruningReport, { perMatrix: { 'layers.0.q_proj': wanda.target_sparsity === '0.3' ? 0.3 : 0.5 } });

    const bytes = fs.readFileSync(csvPath(root, 'grid'));
    calls = 0;
    const again = await runExperiment(file, { ...quiet, executeRun });
    assert.equal(calls, 0);
    assert.equal(again.skipped, GRID_SIZE);
    assert.ok(fs.readFileSync(csvPath(root, 'grid')).equals(bytes));
  });

  it('an executor crash mid-grid, then a re-run, leaves every run exactly once', async () => {
    const root = workspace('crash');
    const file = writeYaml(root, 's.yaml', SMALL);
    let calls = 0;
    await assert.rejects(
      runExperiment(file, { ...quiet, executeRun: (run) => { if (++calls === 4) throw new Error('out of memory'); return fakeResult(run); } }),
      /run .* failed: out of memory/,
    );
    assert.equal(readResultsFile(csvPath(root, 'small')).rows.length, 3);
    calls = 0;
    await runExperiment(file, { ...quiet, executeRun: (run) => { calls++; return fakeResult(run); } });
    assert.equal(calls, SMALL_SIZE - 3);
    assertComplete(root, 'small', idsOf(gridOf(loadExperiment(file))));
    assert.deepEqual(fs.readdirSync(path.dirname(csvPath(root, 'small'))).filter((n) => /\.tmp(-\d+)?$/.test(n) || n.endsWith('.lock')), []);
  });

  it('a stop request mid-run writes the finished run whole and nothing of the aborted one', async () => {
    const root = workspace('abort');
    const file = writeYaml(root, 's.yaml', SMALL);
    const stop = new AbortController();
    let calls = 0;
    const err = await runExperiment(file, {
      ...quiet, signal: stop.signal,
      executeRun: async (run, ctx) => {
        calls++;
        if (calls === 3) {
          stop.abort(); // the kill arrives while run 3 is in flight ...
          await new Promise((r) => setTimeout(r, 5));
          assert.ok(ctx.signal.aborted); // ... and reaches the executor, which stops half-way
          throw ctx.signal.reason;
        }
        return fakeResult(run);
      },
    }).catch((e: unknown) => e);
    assert.ok(err instanceof ExperimentInterrupted);
    assert.equal(err.summary.completed.length, 2);
    assert.equal(calls, 3);
    assert.equal(readResultsFile(csvPath(root, 'small')).rows.length, 2);

    // Executor that ignores the abort and finishes: its complete row is kept, then the runner stops.
    const stop2 = new AbortController();
    await assert.rejects(runExperiment(file, {
      ...quiet, signal: stop2.signal,
      executeRun: (run) => { stop2.abort(); return fakeResult(run); },
    }), ExperimentInterrupted);
    assert.equal(readResultsFile(csvPath(root, 'small')).rows.length, 3);

    await runExperiment(file, { ...quiet, executeRun: fakeResult });
    assertComplete(root, 'small', idsOf(gridOf(loadExperiment(file))));
  });

  it('the same seed gives identical rows (timings aside) with a deterministic executor', async () => {
    const root = workspace('det');
    const a = writeYaml(root, 'a.yaml', GRID.replace('name: grid', 'name: grid\noutput: results/a'));
    const b = writeYaml(root, 'b.yaml', GRID.replace('name: grid', 'name: grid\noutput: results/b'));
    await runExperiment(a, { ...quiet, executeRun: fakeResult });
    await runExperiment(b, { ...quiet, executeRun: fakeResult });
    const strip = (rows: Record<string, string>[]) => rows.map((r) => Object.fromEntries(Object.entries(r).filter(([k]) => !TIMING_COLUMNS.includes(k))));
    const ra = readResults(path.join(root, 'exp', 'results', 'a'));
    const rb = readResults(path.join(root, 'exp', 'results', 'b'));
    assert.equal(ra.length, GRID_SIZE);
    assert.deepEqual(strip(rb), strip(ra));
    assert.notDeepEqual(rb.map((r) => r.time_prune_s), ra.map((r) => r.time_prune_s));
  });

  it('shards write their own files; together they hold every run once, and an unsharded re-run has nothing left', async () => {
    const root = workspace('shards');
    const file = writeYaml(root, 's.yaml', SMALL);
    for (let i = 0; i < 3; i++) await runExperiment(file, { ...quiet, shard: `${i}/3`, executeRun: fakeResult });
    const out = path.join(root, 'exp', 'results', 'small');
    assert.deepEqual(fs.readdirSync(out).filter((n) => n.endsWith('.csv')).sort(),
      ['results.shard-0-of-3.csv', 'results.shard-1-of-3.csv', 'results.shard-2-of-3.csv']);
    const rows = readResults(out);
    assert.deepEqual(rows.map((r) => r.run_id).sort(), idsOf(gridOf(loadExperiment(file))));
    let calls = 0;
    await runExperiment(file, { ...quiet, executeRun: (run) => { calls++; return fakeResult(run); } });
    assert.equal(calls, 0);
  });

  it('validates everything before any work', async () => {
    const root = workspace('validate');
    let calls = 0;
    const executeRun = (run: RunSpec) => { calls++; return fakeResult(run); };
    await assert.rejects(runExperiment(writeYaml(root, 'bad.yaml', SMALL.replace('wt2.txt', 'nope.txt')), { ...quiet, executeRun }), ConfigError);
    await assert.rejects(runExperiment(writeYaml(root, 's.yaml', SMALL), { ...quiet, shard: '1/1', executeRun }), ConfigError);
    await assert.rejects(runExperiment(writeYaml(root, 's.yaml', SMALL), {
      ...quiet, executeRun, validateMethod: (name) => { if (name === 'wanda') throw new Error('unknown method wanda'); },
    }), /:8:11: methods\[1\]\.name: unknown method wanda/);
    assert.equal(calls, 0);
    // Evaluations changed after results exist: the header no longer matches → refused up front.
    const file = writeYaml(root, 's.yaml', SMALL);
    await runExperiment(file, { ...quiet, executeRun });
    calls = 0;
    writeYaml(root, 's.yaml', SMALL.replace('zeroshot: [{task: piqa}]', 'zeroshot: [{task: piqa}, {task: boolq}]'));
    await assert.rejects(runExperiment(file, { ...quiet, executeRun }), /columns differ.*missing: acc:boolq/);
    assert.equal(calls, 0);
  });

  it('an output folder that cannot be created is one FileSystemError before any run', async () => {
    const root = workspace('outdir');
    fs.writeFileSync(path.join(root, 'a-file'), 'x');
    let calls = 0;
    const executeRun = (run: RunSpec) => { calls++; return fakeResult(run); };
    const yaml = SMALL.replace('name: small\n', 'name: small\noutput: ../a-file/out\n');
    await assert.rejects(runExperiment(writeYaml(root, 'o.yaml', yaml), { ...quiet, executeRun }), (e: Error) =>
      e instanceof FileSystemError && e.code === 'ENOTDIR'
      && e.message === `experiment output ${path.join(root, 'a-file', 'out')}: cannot create folder ${path.join(root, 'a-file', 'out')}: ENOTDIR (a part of the path is a file, not a folder)`);
    assert.equal(calls, 0);
  });

  it('refuses a second runner on the same results file', async () => {
    const root = workspace('lock');
    const file = writeYaml(root, 's.yaml', SMALL);
    let release!: () => void;
    const gate = new Promise<void>((r) => { release = r; });
    const first = runExperiment(file, { ...quiet, executeRun: async (run) => { await gate; return fakeResult(run); } });
    await new Promise((r) => setTimeout(r, 20));
    await assert.rejects(runExperiment(file, { ...quiet, executeRun: fakeResult }), /another runner holds results\.csv\.lock/);
    release();
    await first;
    assertComplete(root, 'small', idsOf(gridOf(loadExperiment(file))));
  });

  it('continueOnError records failures, finishes the rest, and a re-run retries only those', async () => {
    const root = workspace('keepgoing');
    const file = writeYaml(root, 's.yaml', SMALL);
    const bad = (run: RunSpec) => run.method?.name === 'wanda' && run.sparsity === 0.75;
    await assert.rejects(runExperiment(file, {
      ...quiet, continueOnError: true, executeRun: (run) => { if (bad(run)) throw new Error('diverged'); return fakeResult(run); },
    }), /1 run\(s\) failed.*\n.*wanda.*diverged/);
    assert.equal(readResultsFile(csvPath(root, 'small')).rows.length, SMALL_SIZE - 1);
    const redo: string[] = [];
    await runExperiment(file, { ...quiet, executeRun: (run) => { redo.push(run.id); return fakeResult(run); } });
    assert.equal(redo.length, 1);
    assert.ok(redo[0].startsWith('tiny.wanda.s0.75.'));
  });

  it('a result missing a declared evaluation fails the run without writing a row', async () => {
    const root = workspace('missing');
    const file = writeYaml(root, 's.yaml', SMALL);
    await assert.rejects(runExperiment(file, { ...quiet, executeRun: (run) => ({ ...fakeResult(run), zeroshot: {} }) }), /has no zero-shot task 'piqa'/);
    assert.equal(readResultsFile(csvPath(root, 'small')).rows.length, 0);
  });
});

describe('runner under real signals (child process)', () => {
  /** Start a runner in a child process whose executor takes `ms` per run. */
  function child(root: string, file: string, ms: number) {
    // .mts: the scratch folder has no package.json saying "type": "module".
    const script = path.join(root, 'child.mts');
    fs.writeFileSync(script, `
import { runExperiment } from ${JSON.stringify(path.join(REPO_ROOT, 'src/experiment/runner.ts'))};
import { fakeResult, registry } from ${JSON.stringify(path.join(REPO_ROOT, 'test/experiment-fixtures.ts'))};
await runExperiment(${JSON.stringify(file)}, {
  progress: 'plain', log: () => {}, usesPatterns: registry.usesPatterns,
  executeRun: async (run) => { await new Promise((r) => setTimeout(r, ${ms})); return fakeResult(run); },
}).catch((e) => console.error(e.message));
`);
    const proc = spawn(process.execPath, ['--import', 'tsx', script], { cwd: REPO_ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    proc.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    let running = true;
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => proc.on('exit', (code, signal) => { running = false; resolve({ code, signal }); }));
    return { proc, exited, isRunning: () => running, stderr: () => stderr };
  }

  async function waitForRows(csv: string, n: number, c: ReturnType<typeof child>): Promise<void> {
    for (let t = 0; t < 1200 && c.isRunning(); t++) {
      if (fs.existsSync(csv) && readResultsFile(csv).rows.length >= n) return;
      await new Promise((r) => setTimeout(r, 25));
    }
    c.proc.kill('SIGKILL');
    assert.fail(`no ${n} rows in ${csv}; child stderr:\n${c.stderr()}`);
  }

  for (const signal of ['SIGTERM', 'SIGINT', 'SIGKILL'] as const) {
    it(`${signal} mid-grid, then a re-run: no torn, duplicate or missing rows`, async () => {
      const root = workspace(`sig-${signal}`);
      const file = writeYaml(root, 's.yaml', SMALL);
      const csv = csvPath(root, 'small');
      const c = child(root, file, 120);
      const { proc, exited } = c;
      await waitForRows(csv, 2, c);
      proc.kill(signal);
      const { code, signal: got } = await exited;
      if (signal === 'SIGKILL') assert.equal(got, 'SIGKILL');
      else assert.equal(code, signal === 'SIGTERM' ? 143 : 130, 'exits non-zero with 128 + signal');
      const { rows } = readResultsFile(csv); // parses: nothing torn
      assert.ok(rows.length >= 2 && rows.length < SMALL_SIZE, `${rows.length} rows`);
      // The re-run resumes (after SIGKILL it takes over the dead process's lock).
      const done: string[] = [];
      await runExperiment(file, { ...quiet, executeRun: (run) => { done.push(run.id); return fakeResult(run); } });
      assert.equal(done.length, SMALL_SIZE - rows.length);
      assertComplete(root, 'small', idsOf(gridOf(loadExperiment(file))));
    });
  }
});
