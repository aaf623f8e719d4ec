/**
 * Grid expansion: models × methods × sparsities (× patterns for unstructured methods) × seeds ×
 * recovery, plus one dense run per model. Ids are a readable prefix plus a short hash of the
 * run's canonical settings (YAML paths as written, so ids agree across machines), and runs are
 * sorted by id so `--shard i/n` slices the same list everywhere.
 */
import { ConfigError } from '../util/errors.ts';
import { canonicalJson, shortHash } from './hash.ts';
import { recipeOfEntry, zeroshotId, type LoadedExperiment, type RecoveryEntry } from './schema.ts';
import type { Pattern, RunCalibration, RunEvaluations, RunRecovery, RunSpec } from './types.ts';

export interface GridOptions {
  /**
   * Whether a method takes `patterns` (unstructured / N:M): the plug-in registry knows (its
   * granularity). Others are structured and get one run per sparsity.
   */
  usesPatterns: (method: string) => boolean;
}

export interface Shard {
  index: number;
  count: number;
}

/** Parse `i/n` with 0 ≤ i < n. */
export function parseShard(text: string): Shard {
  const m = /^\s*(\d+)\s*\/\s*(\d+)\s*$/.exec(text);
  if (!m) throw new ConfigError(`--shard must look like i/n (e.g. 0/4), got '${text}'`);
  const shard = { index: Number(m[1]), count: Number(m[2]) };
  checkShard(shard);
  return shard;
}

function checkShard(s: Shard): void {
  if (!Number.isInteger(s.count) || s.count < 1) throw new ConfigError(`--shard: n must be a positive integer, got ${s.count}`);
  if (!Number.isInteger(s.index) || s.index < 0 || s.index >= s.count) {
    throw new ConfigError(`--shard: i must satisfy 0 ≤ i < n, got ${s.index}/${s.count}`);
  }
}

/** Runs whose position in the id-sorted list is ≡ index (mod count). */
export function selectShard(runs: readonly RunSpec[], shard: Shard | null | undefined): RunSpec[] {
  if (!shard) return [...runs];
  checkShard(shard);
  return sortRuns(runs).filter((_, i) => i % shard.count === shard.index);
}

/** Code-unit order (not locale order) so every machine sorts identically. */
export function sortRuns(runs: readonly RunSpec[]): RunSpec[] {
  return [...runs].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

function segment(s: string): string {
  return s.replace(/[^A-Za-z0-9_-]+/g, '-');
}

function patternSegment(p: Pattern | null): string {
  return p === null ? 'structured' : p.replace(':', 'of');
}

function recoveryOf(r: RecoveryEntry, abs: RecoveryEntry): RunRecovery {
  if (r.schedule === 'none' || !('data' in abs)) return { schedule: 'none' };
  return { schedule: abs.schedule, data: abs.data, recipe: recipeOfEntry(abs) };
}

/** Target sparsity of an N:M pattern: N of every M are zero. */
export function patternSparsity(p: Pattern): number | null {
  if (p === 'unstructured') return null;
  const [n, m] = p.split(':').map(Number);
  return n / m;
}

export function expandGrid(exp: LoadedExperiment, opts: GridOptions): RunSpec[] {
  const { config, resolved } = exp;
  const { usesPatterns } = opts;
  const evaluations: RunEvaluations = {
    perplexity: resolved.evaluations.perplexity.map((p) => ({ id: p.id, text: p.text, seqlen: p.seqlen, maxWindows: p.maxWindows ?? null })),
    zeroshot: resolved.evaluations.zeroshot.map((z, i) => ({ id: zeroshotId(config.evaluations.zeroshot[i].task), task: z.task, limit: z.limit ?? null })),
    speed: resolved.evaluations.speed ?? null,
  };
  const offsetsHash = exp.calibrationOffsets ? shortHash(canonicalJson(exp.calibrationOffsets), 12) : null;
  const runs: RunSpec[] = [];

  config.models.forEach((model, mi) => {
    const absModel = resolved.models[mi];
    const modelSettings = { id: model.id, path: model.path, tokenizer: model.tokenizer ?? null };
    const base = {
      experiment: config.name,
      model: { id: model.id, path: absModel.path, tokenizer: absModel.tokenizer ?? null },
      evaluations,
      outputDir: resolved.output,
    };
    const denseSettings = { v: 1, kind: 'dense', model: modelSettings };
    runs.push({
      ...base,
      id: `${segment(model.id)}.dense-${shortHash(canonicalJson(denseSettings))}`,
      kind: 'dense',
      method: null,
      pattern: null,
      sparsity: 0,
      seed: config.seeds[0],
      calibration: null,
      recovery: { schedule: 'none' },
      settings: denseSettings,
    });

    config.methods.forEach((method, ki) => {
      const cells: { pattern: Pattern | null; sparsity: number }[] = [];
      const sparsities = method.sparsities ?? config.sparsities;
      if (method.budget && usesPatterns(method.name)) {
        throw new ConfigError(`methods[${ki}] (${method.name}): budget applies to structured methods; a layer-wise method's sparsity already is a fraction of decoder-linear weights`, exp.file);
      }
      if (usesPatterns(method.name)) {
        for (const p of config.patterns as Pattern[]) {
          const s = patternSparsity(p);
          if (s === null) for (const sparsity of sparsities) cells.push({ pattern: p, sparsity });
          else cells.push({ pattern: p, sparsity: s });
        }
      } else {
        for (const sparsity of sparsities) cells.push({ pattern: null, sparsity });
      }
      if (cells.length === 0) throw new ConfigError(`methods[${ki}] (${method.name}) yields no runs: it is structured and no sparsities are given`, exp.file);

      for (const { pattern, sparsity } of cells) {
        for (const seed of config.seeds) {
          // A method's own recovery list (e.g. recovery only for structured methods) wins.
          const recs = method.recovery ?? config.recovery;
          const absRecs = resolved.methods[ki].recovery ?? resolved.recovery;
          recs.forEach((rec, ri) => {
            const cal = config.calibration;
            const calSeed = cal && cal.offsets === undefined ? (cal.seed ?? seed) : null;
            const calibration: RunCalibration | null = cal && resolved.calibration
              ? {
                text: resolved.calibration.text, nsamples: cal.nsamples, seqlen: cal.seqlen, seed: calSeed, offsets: exp.calibrationOffsets, mode: cal.mode ?? null,
                ...(cal.sampling ? { sampling: cal.sampling } : {}), ...(cal.field ? { field: cal.field } : {}),
              }
              : null;
            const settings = {
              v: 1,
              model: modelSettings,
              // The budget is part of a run's identity; absent, ids stay as they were.
              method: { name: method.name, options: method.options, ...(method.budget ? { budget: method.budget } : {}) },
              pattern,
              sparsity,
              seed,
              // Sampling and field are part of a run's identity only when written (ids of older configs stay).
              calibration: cal ? {
                text: cal.text, nsamples: cal.nsamples, seqlen: cal.seqlen, seed: calSeed, offsets: offsetsHash, mode: cal.mode ?? null,
                ...(cal.sampling ? { sampling: cal.sampling } : {}), ...(cal.field ? { field: cal.field } : {}),
              } : null,
              recovery: rec,
            };
            const prefix = [segment(model.id), segment(method.name), `${method.budget ? 'b' : 's'}${+sparsity.toFixed(4)}`, patternSegment(pattern), `seed${seed}`, rec.schedule].join('.');
            runs.push({
              ...base,
              id: `${prefix}-${shortHash(canonicalJson(settings))}`,
              kind: 'pruned',
              // Executed by its resolved name (a module path made absolute); identified by the written one.
              method: {
                name: resolved.methods[ki].name, options: method.options,
                ...(method.workers ? { workers: method.workers } : {}), ...(method.budget ? { budget: method.budget } : {}),
              },
              pattern,
              sparsity,
              seed,
              calibration,
              recovery: recoveryOf(rec, absRecs[ri]),
              settings,
            });
          });
        }
      }
    });
  });

  const sorted = sortRuns(runs);
  for (let i = 1; i < sorted.length; i++) {
    // Duplicate entries are rejected by the schema; this guards against a hash collision.
    if (sorted[i].id === sorted[i - 1].id) throw new ConfigError(`two runs share the id ${sorted[i].id}`, exp.file);
  }
  return sorted;
}
