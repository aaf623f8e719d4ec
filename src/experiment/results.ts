/**
 * results.csv (one row per run, fixed columns) and runs/<id>.json (the full record).
 *
 * Atomicity: a row is never appended in place. The whole new file (old bytes + new row) is
 * written to a temp file in the same folder, fsynced, then renamed over results.csv; rename is
 * atomic within a file system, so a crash leaves either the old file or the new one, never a
 * torn or doubled row. The run record is written (the same way) before its row, so the row is
 * the commit marker: a run without a row is simply redone. Old bytes are kept verbatim, so a
 * resumed experiment never rewrites finished rows.
 *
 * One writer per results file: a lock file beside it refuses a second runner (a stale lock of a
 * dead process on this host is taken over). Shards write their own `results.shard-i-of-n.csv`,
 * because several machines renaming over one shared file would lose each other's rows;
 * `readResults` reads them all.
 */
import { writeFileAtomic } from '../util/atomic.ts';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createObjectCsvStringifier } from 'csv-writer';
import { parse } from 'csv-parse/sync';
import { ConfigError, PruneLabError } from '../util/errors.ts';
import { canonicalJson, shortHash } from './hash.ts';
import { zeroshotId, type ExperimentConfig } from './schema.ts';
import type { Shard } from './grid.ts';
import type { RunResult, RunSpec } from './types.ts';

export type ResultRow = Record<string, string>;

const IDENTITY_COLUMNS = [
  'run_id', 'experiment', 'model', 'model_path', 'model_hash', 'family', 'dtype', 'tokenizer', 'tokenizer_hash',
  'method', 'options', 'kind', 'pattern', 'target_sparsity', 'removed_decoder', 'removed_all', 'scope', 'removed_scope', 'params_before', 'params_after',
  'calib_text', 'calib_nsamples', 'calib_seqlen', 'calib_seed', 'calib_offsets_hash', 'calib_mode',
  'recovery_schedule', 'recovery_steps', 'recovery_lr', 'recovery_rank', 'recovery_data', 'recovery_merged', 'recovery_recipe', 'recovery_evaluated',
];
const TRAILING_COLUMNS = ['backend', 'device', 'seed'];
/** Columns that legitimately differ between two executions of the same run. */
export const TIMING_COLUMNS: readonly string[] = ['time_calibrate_s', 'time_prune_s', 'time_recover_s', 'time_eval_s', 'time_total_s', 'time_finished'];

/** Throughput ÷ dense, measured in alternation with the dense model (structured runs; 1 for dense), with its spread. */
export const SPEED_RATIO_COLUMNS: readonly string[] = ['prefill', 'decode'].flatMap((k) => [`speed:${k}_vs_dense`, `speed:${k}_vs_dense_lo`, `speed:${k}_vs_dense_hi`]);

/** The header, from the experiment's declared evaluations: the same for every row of the experiment. */
export function resultColumns(config: ExperimentConfig): string[] {
  const cols = [...IDENTITY_COLUMNS];
  for (const p of config.evaluations.perplexity) cols.push(`ppl:${p.id}`, `ppl:${p.id}:windows`, `ppl:${p.id}:protocol`);
  for (const z of config.evaluations.zeroshot) {
    const id = zeroshotId(z.task);
    cols.push(`acc:${id}`, `acc_norm:${id}`, `n:${id}`, `zs:${id}:protocol`);
  }
  if (config.evaluations.speed) cols.push('speed:prefill_tok_s', 'speed:decode_tok_s', ...SPEED_RATIO_COLUMNS, 'speed:protocol');
  return [...cols, ...TRAILING_COLUMNS, ...TIMING_COLUMNS];
}

/** Protocol fields fixed by the YAML (paths as written, so they compare across machines). */
export function declaredProtocols(config: ExperimentConfig): {
  perplexity: Record<string, Record<string, unknown>>;
  zeroshot: Record<string, Record<string, unknown>>;
  speed: Record<string, unknown> | null;
} {
  const perplexity: Record<string, Record<string, unknown>> = {};
  for (const p of config.evaluations.perplexity) {
    perplexity[p.id] = { text: p.text, seqlen: p.seqlen, stride: p.seqlen, maxWindows: p.maxWindows ?? null };
  }
  const zeroshot: Record<string, Record<string, unknown>> = {};
  for (const z of config.evaluations.zeroshot) zeroshot[zeroshotId(z.task)] = { task: z.task, limit: z.limit ?? null, num_fewshot: 0 };
  const s = config.evaluations.speed;
  return { perplexity, zeroshot, speed: s ? { ...s, statistic: 'median' } : null };
}

/** Executor-reported fields first, declared ones win (they are the portable spelling). */
function protocolJson(declared: Record<string, unknown>, extra: object | undefined): string {
  return canonicalJson({ ...(extra ?? {}), ...declared });
}

function cell(v: unknown): string {
  if (v === null || v === undefined) return '';
  return typeof v === 'string' ? v : String(v);
}

/**
 * The recipe a row records: as run (steps from epochs, warm-up, data sizes) when the run reports
 * it, else as resolved; a template file keeps its path as written (rows compare across machines).
 */
function recipeRow(run: RunSpec, result: RunResult): Record<string, unknown> | null {
  if (!('recipe' in run.recovery)) return null;
  const written = (run.settings as { recovery?: { template?: string } }).recovery?.template;
  return { ...run.recovery.recipe, ...result.recovery?.recipe, ...(written?.endsWith('.json') ? { template: written } : {}) };
}

export interface RowTiming {
  totalS: number;
  finished: Date;
}

/** Flatten a run and its result into a row; throws when a declared evaluation is missing. */
export function buildRow(run: RunSpec, result: RunResult, config: ExperimentConfig, timing: RowTiming): ResultRow {
  const declared = declaredProtocols(config);
  const settings = run.settings as { model: { path: string; tokenizer: string | null }; calibration?: { text: string; offsets: string | null } | null; recovery?: Record<string, unknown> };
  const cal = run.calibration;
  const offsetsHash = settings.calibration?.offsets ?? (result.calibration ? shortHash(canonicalJson(result.calibration.offsets), 12) : null);
  const rec = settings.recovery ?? { schedule: 'none' };
  const recipe = recipeRow(run, result);
  const row: ResultRow = {
    run_id: run.id,
    experiment: run.experiment,
    model: run.model.id,
    model_path: settings.model.path,
    model_hash: result.model.hash,
    family: result.model.family,
    dtype: result.model.dtype,
    tokenizer: cell(settings.model.tokenizer),
    tokenizer_hash: cell(result.model.tokenizerHash),
    method: run.method?.name ?? 'dense',
    options: canonicalJson(run.method?.options ?? {}),
    pattern: run.kind === 'dense' ? '' : (run.pattern ?? 'structured'),
    kind: run.kind === 'dense' ? 'dense' : run.pattern === null ? 'structured' : run.pattern === 'unstructured' ? 'unstructured' : 'n:m',
    target_sparsity: cell(run.sparsity),
    removed_decoder: cell(result.sparsity.decoderLayers),
    removed_all: cell(result.sparsity.allParameters),
    scope: cell(result.sparsity.scope?.name),
    removed_scope: cell(result.sparsity.scope?.fraction),
    params_before: cell(result.sparsity.paramsBefore),
    params_after: cell(result.sparsity.paramsAfter),
    calib_text: cell(settings.calibration?.text),
    calib_nsamples: cell(cal?.nsamples),
    calib_seqlen: cell(cal?.seqlen),
    calib_seed: cell(cal?.seed),
    calib_offsets_hash: cal ? cell(offsetsHash) : '',
    // The mode actually used: the YAML's, else the one the engine chose (reported).
    calib_mode: cell(cal?.mode ?? (result.pruningReport as { mode?: string } | undefined)?.mode),
    recovery_schedule: cell(rec.schedule),
    recovery_steps: cell(recipe?.steps),
    recovery_lr: cell(recipe?.lr),
    recovery_rank: cell(recipe?.rank),
    recovery_data: cell(rec.data),
    recovery_merged: rec.schedule === 'none' ? '' : cell(result.recovery?.merged),
    recovery_recipe: recipe ? canonicalJson(recipe) : '',
    recovery_evaluated: rec.schedule === 'none' ? '' : cell(result.recovery?.evaluated),
  };
  for (const p of run.evaluations.perplexity) {
    const m = result.perplexity[p.id];
    if (!m) throw new PruneLabError(`run ${run.id}: the result has no perplexity '${p.id}'`);
    row[`ppl:${p.id}`] = cell(m.ppl);
    row[`ppl:${p.id}:windows`] = cell(m.windows);
    row[`ppl:${p.id}:protocol`] = protocolJson(declared.perplexity[p.id], m.protocol);
  }
  for (const z of run.evaluations.zeroshot) {
    const m = result.zeroshot[z.id];
    if (!m) throw new PruneLabError(`run ${run.id}: the result has no zero-shot task '${z.id}'`);
    row[`acc:${z.id}`] = cell(m.acc);
    row[`acc_norm:${z.id}`] = cell(m.acc_norm);
    row[`n:${z.id}`] = cell(m.n);
    row[`zs:${z.id}:protocol`] = protocolJson(declared.zeroshot[z.id], m.protocol);
  }
  if (declared.speed) {
    if (!result.speed) throw new PruneLabError(`run ${run.id}: the result has no speed measurement`);
    row['speed:prefill_tok_s'] = cell(result.speed.prefillTokensPerS);
    row['speed:decode_tok_s'] = cell(result.speed.decodeTokensPerS);
    for (const k of ['prefill', 'decode'] as const) {
      const v = run.kind === 'dense' ? { ratio: 1, lo: 1, hi: 1 } : result.speed.vsDense?.[k];
      row[`speed:${k}_vs_dense`] = cell(v?.ratio);
      row[`speed:${k}_vs_dense_lo`] = cell(v?.lo);
      row[`speed:${k}_vs_dense_hi`] = cell(v?.hi);
    }
    row['speed:protocol'] = protocolJson({ ...declared.speed, backend: result.backend }, result.speed.protocol);
  }
  Object.assign(row, {
    backend: result.backend,
    device: cell(result.device),
    seed: cell(run.seed),
    time_calibrate_s: cell(result.timings.calibrateS),
    time_prune_s: cell(result.timings.pruneS),
    time_recover_s: cell(result.timings.recoverS),
    time_eval_s: cell(result.timings.evalS),
    time_total_s: cell(+timing.totalS.toFixed(3)),
    time_finished: timing.finished.toISOString(),
  });
  return row;
}

// --------------------------------------------------------------------------------------------
// results.csv

export function resultsFileName(shard?: Shard | null): string {
  return shard && shard.count > 1 ? `results.shard-${shard.index}-of-${shard.count}.csv` : 'results.csv';
}

function stringifier(columns: readonly string[]) {
  return createObjectCsvStringifier({ header: columns.map((c) => ({ id: c, title: c })) });
}

/** Header and rows of one results file (all cells strings). */
export function readResultsFile(file: string): { columns: string[]; rows: ResultRow[] } {
  const text = fs.readFileSync(file, 'utf8');
  if (text.length > 0 && !text.endsWith('\n')) throw new PruneLabError('does not end with a newline: it was not written by PruneLab; repair or remove it', file);
  let records: string[][];
  try {
    records = parse(text, { skip_empty_lines: true }) as string[][];
  } catch (err) {
    throw new PruneLabError(`cannot parse CSV: ${(err as Error).message}`, file);
  }
  const [columns = [], ...body] = records;
  const rows = body.map((r, i) => {
    if (r.length !== columns.length) throw new PruneLabError(`row ${i + 2} has ${r.length} cells, header has ${columns.length}`, file);
    return Object.fromEntries(columns.map((c, j) => [c, r[j]]));
  });
  return { columns, rows };
}

/** Every row under `outDir` (results.csv and shard files), first occurrence of a run id wins. */
export function readResults(outDir: string): ResultRow[] {
  if (!fs.existsSync(outDir)) return [];
  const files = fs.readdirSync(outDir).filter((n) => n === 'results.csv' || /^results\.shard-\d+-of-\d+\.csv$/.test(n)).sort();
  const seen = new Set<string>();
  const out: ResultRow[] = [];
  for (const name of files) {
    for (const row of readResultsFile(path.join(outDir, name)).rows) {
      if (seen.has(row.run_id)) continue;
      seen.add(row.run_id);
      out.push(row);
    }
  }
  return out;
}

/** An append-only results file whose header is fixed at open. Hold its lock while appending. */
export class ResultsFile {
  private content: string;
  private readonly ids = new Set<string>();

  private constructor(readonly file: string, readonly columns: readonly string[], content: string) {
    this.content = content;
  }

  /** Open or create; an existing file must have exactly `columns` as its header. */
  static open(file: string, columns: readonly string[]): ResultsFile {
    if (!fs.existsSync(file)) {
      const header = stringifier(columns).getHeaderString() ?? '';
      writeFileAtomic(file, header);
      return new ResultsFile(file, columns, header);
    }
    const { columns: have, rows } = readResultsFile(file);
    if (canonicalJson(have) !== canonicalJson(columns)) {
      const missing = columns.filter((c) => !have.includes(c));
      const extra = have.filter((c) => !columns.includes(c));
      throw new ConfigError(
        `its columns differ from this experiment's (the evaluations changed?)${missing.length ? `; missing: ${missing.join(', ')}` : ''}` +
          `${extra.length ? `; not declared now: ${extra.join(', ')}` : ''}${!missing.length && !extra.length ? '; same columns in another order' : ''}` +
          '. Use a new output folder, or move the old results away.',
        file,
      );
    }
    const f = new ResultsFile(file, columns, fs.readFileSync(file, 'utf8'));
    for (const r of rows) f.ids.add(r.run_id);
    return f;
  }

  has(id: string): boolean {
    return this.ids.has(id);
  }

  /** Add one row atomically; a run id already present is an error (never a duplicate row). */
  append(row: ResultRow): void {
    if (this.ids.has(row.run_id)) throw new PruneLabError(`run ${row.run_id} already has a row`, this.file);
    const unknown = Object.keys(row).filter((k) => !this.columns.includes(k));
    if (unknown.length > 0) throw new PruneLabError(`row for ${row.run_id} has columns outside the header: ${unknown.join(', ')}`, this.file);
    const next = this.content + stringifier(this.columns).stringifyRecords([row]);
    writeFileAtomic(this.file, next);
    this.content = next;
    this.ids.add(row.run_id);
  }
}

// --------------------------------------------------------------------------------------------
// Lock

interface LockInfo {
  pid: number;
  host: string;
  started: string;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Take `<file>.lock` (exclusive create); returns the release function. */
export function acquireLock(file: string): () => void {
  const lock = `${file}.lock`;
  const info: LockInfo = { pid: process.pid, host: os.hostname(), started: new Date().toISOString() };
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      fs.writeFileSync(lock, JSON.stringify(info), { flag: 'wx' });
      return () => fs.rmSync(lock, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      let held: Partial<LockInfo> = {};
      try { held = JSON.parse(fs.readFileSync(lock, 'utf8')) as LockInfo; } catch { /* unreadable: treated as held */ }
      const stale = held.host === info.host && typeof held.pid === 'number' && !alive(held.pid);
      if (!stale) {
        throw new PruneLabError(
          `another runner holds ${path.basename(lock)} (pid ${held.pid ?? '?'} on ${held.host ?? '?'} since ${held.started ?? '?'}); ` +
            `if that process is gone, delete ${lock}`,
        );
      }
      fs.rmSync(lock, { force: true });
    }
  }
  throw new PruneLabError(`cannot take the lock ${lock}`);
}

// --------------------------------------------------------------------------------------------
// Run records

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
let versionsCache: { prunelab: string; node: string; packages: Record<string, string | null> } | null = null;

/** PruneLab's version and the installed version of every package it depends on. */
export function packageVersions(): { prunelab: string; node: string; packages: Record<string, string | null> } {
  if (versionsCache) return versionsCache;
  const pkg = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as {
    version: string; dependencies?: Record<string, string>; peerDependencies?: Record<string, string>;
  };
  const packages: Record<string, string | null> = {};
  for (const name of Object.keys({ ...pkg.dependencies, ...pkg.peerDependencies }).sort()) {
    try {
      packages[name] = (JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version;
    } catch {
      packages[name] = null; // optional peer not installed
    }
  }
  versionsCache = { prunelab: pkg.version, node: process.version, packages };
  return versionsCache;
}

export interface RunRecord {
  id: string;
  experiment: { name: string; file: string; config: ExperimentConfig };
  run: RunSpec;
  versions: ReturnType<typeof packageVersions>;
  backend: string;
  device: string | null;
  seed: number;
  timings: RunResult['timings'] & { totalS: number; finished: string };
  result: RunResult;
  row: ResultRow;
}

export function runRecordPath(outDir: string, id: string): string {
  return path.join(outDir, 'runs', `${id}.json`);
}

export function writeRunRecord(outDir: string, record: RunRecord): void {
  const file = runRecordPath(outDir, record.id);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  writeFileAtomic(file, JSON.stringify(record, null, 2) + '\n');
}
