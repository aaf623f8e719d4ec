/**
 * Runs an experiment: validate everything, expand the grid, skip runs that already have a row,
 * hand each remaining run to the injected `executeRun`, and commit its record and row
 * atomically. SIGINT/SIGTERM stop between runs (the current run is aborted through its signal;
 * its row is written only if it returned a complete result), then the runner exits non-zero;
 * running the same command again resumes.
 */
import { removeStaleTemps } from '../util/atomic.ts';
import path from 'node:path';
import cliProgress from 'cli-progress';
import { PruneLabError } from '../util/errors.ts';
import { makeWritableDir } from '../util/writable-dir.ts';
import { expandGrid, parseShard, selectShard, type Shard } from './grid.ts';
import {
  acquireLock, buildRow, type ResultRow, packageVersions, readResults, resultColumns, resultsFileName, ResultsFile, writeRunRecord,
} from './results.ts';
import { loadExperiment, type MethodValidator, type RecoveryScheduleInfo } from './schema.ts';
import type { ExecuteRun, RunSpec } from './types.ts';

export interface RunnerOptions {
  /** Does the work of one run (calibrate, prune, recover, evaluate). */
  executeRun: ExecuteRun;
  /** `i/n` or a parsed shard: only runs with index ≡ i (mod n) in the id-sorted grid. */
  shard?: Shard | string | null;
  /** Plain progress and notices; default: stderr. */
  log?: (line: string) => void;
  /** Checks method names and options (the plugin registry); default: accept. */
  validateMethod?: MethodValidator;
  /** Whether a method takes unstructured/N:M patterns (the plug-in registry knows). */
  usesPatterns: (method: string) => boolean;
  /** Method recovery schedules; when given, `recovery:` schedule names are checked at load. */
  recoverySchedules?: RecoveryScheduleInfo;
  /** `auto`: a bar when stderr is a terminal, plain lines otherwise. */
  progress?: 'auto' | 'bar' | 'plain' | 'none';
  /** Record a failed run and go on with the others (it is retried on the next invocation). */
  continueOnError?: boolean;
  /** External stop request, handled like SIGINT. */
  signal?: AbortSignal;
  /** Install SIGINT/SIGTERM handlers (default true). */
  handleSignals?: boolean;
}

export interface ExperimentSummary {
  experiment: string;
  outputDir: string;
  resultsFile: string;
  /** Runs in the whole grid, in this shard, already finished, finished now. */
  total: number;
  selected: number;
  skipped: number;
  completed: string[];
  failed: { id: string; error: string }[];
}

/** Thrown after a stop request once the runner has stopped cleanly; `exitCode` is 128 + signal number. */
export class ExperimentInterrupted extends PruneLabError {
  override name = 'ExperimentInterrupted';
  constructor(readonly signal: string, readonly exitCode: number, readonly summary: ExperimentSummary) {
    super(`interrupted by ${signal}: ${summary.completed.length} run(s) finished now, ${summary.selected - summary.skipped - summary.completed.length} left; run the same command again to resume`);
  }
}

const SIGNAL_CODES: Record<string, number> = { SIGINT: 130, SIGTERM: 143 };

interface Progress {
  tick(id: string, seconds: number): void;
  note(line: string): void;
  stop(): void;
}

function makeProgress(mode: RunnerOptions['progress'], total: number, start: number, log: (l: string) => void): Progress {
  const useBar = mode === 'bar' || (mode === 'auto' && process.stderr.isTTY === true);
  if (useBar) {
    const multi = new cliProgress.MultiBar({ stream: process.stderr, hideCursor: true, format: '{bar} {value}/{total} runs | {last}' }, cliProgress.Presets.shades_classic);
    const bar = multi.create(total, start, { last: '' });
    return {
      tick: (id) => bar.increment(1, { last: id }),
      note: (line) => multi.log(line + '\n'),
      stop: () => multi.stop(),
    };
  }
  let done = start;
  return {
    tick: (id, s) => {
      done++;
      if (mode !== 'none') log(`[${done}/${total}] ${id} done in ${s.toFixed(1)} s`);
    },
    note: (line) => { if (mode !== 'none') log(line); },
    stop: () => {},
  };
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export async function runExperiment(file: string, opts: RunnerOptions): Promise<ExperimentSummary> {
  const log = opts.log ?? ((line: string) => process.stderr.write(line + '\n'));

  // Everything that can be wrong with the inputs fails here, before any run starts.
  const exp = loadExperiment(file, { validateMethod: opts.validateMethod, recoverySchedules: opts.recoverySchedules });
  const shard = typeof opts.shard === 'string' ? parseShard(opts.shard) : opts.shard ?? null;
  const grid = expandGrid(exp, { usesPatterns: opts.usesPatterns });
  const selected = selectShard(grid, shard);
  const outDir = exp.resolved.output;
  const columns = resultColumns(exp.config);
  // Created and proved writable before any run (a read-only or full disk fails here, named).
  makeWritableDir(path.join(outDir, 'runs'), `experiment output ${outDir}`);
  const resultsPath = path.join(outDir, resultsFileName(shard));

  const release = acquireLock(resultsPath);
  const summary: ExperimentSummary = {
    experiment: exp.config.name, outputDir: outDir, resultsFile: resultsPath,
    total: grid.length, selected: selected.length, skipped: 0, completed: [], failed: [],
  };
  let stopSignal: string | null = null;
  let osSignal = false;
  const abort = new AbortController();
  const requestStop = (sig: string) => {
    if (stopSignal === null) {
      stopSignal = sig;
      abort.abort(new PruneLabError(`stopped by ${sig}`));
    }
  };
  const onSignal = (sig: NodeJS.Signals) => {
    if (stopSignal !== null) {
      // Second signal: leave now. Safe: rows are only ever renamed into place, whole.
      release();
      process.exit(SIGNAL_CODES[sig] ?? 1);
    }
    osSignal = true;
    requestStop(sig);
    progress?.note(`${sig}: stopping after the current run (send it again to exit at once; nothing written is lost)`);
  };
  const onExternal = () => requestStop('abort');
  let progress: Progress | null = null;
  const handleSignals = opts.handleSignals ?? true;
  if (handleSignals) {
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  }
  opts.signal?.addEventListener('abort', onExternal);
  if (opts.signal?.aborted) requestStop('abort');

  try {
    removeStaleTemps(path.dirname(resultsPath), resultsPath);
    const results = ResultsFile.open(resultsPath, columns);
    const done = new Set(readResults(outDir).map((r) => r.run_id));
    const todo: RunSpec[] = selected.filter((r) => !done.has(r.id) && !results.has(r.id));
    summary.skipped = selected.length - todo.length;
    progress = makeProgress(opts.progress ?? 'auto', selected.length, summary.skipped, log);
    if (summary.skipped > 0) progress.note(`${exp.config.name}: ${summary.skipped} of ${selected.length} run(s) already done, ${todo.length} to go`);
    const versions = packageVersions();

    for (const run of todo) {
      if (stopSignal !== null) break;
      const started = performance.now();
      let row: ResultRow;
      try {
        const result = await opts.executeRun(run, { signal: abort.signal, log: (l) => progress!.note(l) });
        const totalS = (performance.now() - started) / 1000;
        const finished = new Date();
        row = buildRow(run, result, exp.config, { totalS, finished });
        writeRunRecord(outDir, {
          id: run.id,
          experiment: { name: exp.config.name, file: path.resolve(exp.file), config: exp.resolved },
          run, versions, backend: result.backend, device: result.device ?? null, seed: run.seed,
          timings: { ...result.timings, totalS, finished: finished.toISOString() },
          result, row,
        });
      } catch (err) {
        if (stopSignal !== null) break; // aborted mid-run: nothing of it is written
        if (!opts.continueOnError) {
          const wrapped = new PruneLabError(`run ${run.id} failed: ${errorText(err)}`);
          wrapped.cause = err;
          throw wrapped;
        }
        summary.failed.push({ id: run.id, error: errorText(err) });
        progress.note(`run ${run.id} failed: ${errorText(err)}`);
        continue;
      }
      results.append(row);
      summary.completed.push(run.id);
      progress.tick(run.id, (performance.now() - started) / 1000);
    }
  } finally {
    progress?.stop();
    if (handleSignals) {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
    opts.signal?.removeEventListener('abort', onExternal);
    release();
  }

  if (stopSignal !== null) {
    const code = SIGNAL_CODES[stopSignal] ?? 1;
    if (osSignal) process.exitCode = code;
    throw new ExperimentInterrupted(stopSignal, code, summary);
  }
  if (summary.failed.length > 0) {
    throw new PruneLabError(`${summary.failed.length} run(s) failed (re-run to retry them):\n${summary.failed.map((f) => `  ${f.id}: ${f.error}`).join('\n')}`);
  }
  return summary;
}
