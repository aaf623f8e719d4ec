/**
 * The experiment YAML: zod schema (strict, defaults filled) and a loader whose every error
 * names the key path and its line:column in the file. Paths in the YAML are relative to the
 * YAML's folder; `config` keeps them as written (portable, hashed into run ids), `resolved`
 * holds them absolute.
 */
import fs from 'node:fs';
import path from 'node:path';
import { sharedDataDir } from '../util/paths.ts';
import { LineCounter, parseDocument, type Document } from 'yaml';
import { z } from 'zod';
import { ConfigError } from '../util/errors.ts';
import { canonicalJson } from './hash.ts';
import { formatLocated, issuesToLocated, type KeyPath, type Located } from './yaml-location.ts';
import { defaultZeroshotDir, isTaskName, TASKS } from '../eval/zeroshot.ts';
import { RecipeSettingsSchema, recipeProblems, resolveRecipe, scheduleOf, type Recipe, type RecipeInput } from '../finetune/recipes.ts';
import { readInstructionFile } from '../finetune/instruction-data.ts';
import { resolvePromptTemplate } from '../finetune/prompt-template.ts';
import { BUDGET_SCOPES } from '../prune/budget.ts';
import { CALIB_SAMPLINGS, defaultSampling } from '../prune/calibration.ts';
import { isJsonCorpus, readDocuments } from '../data/documents.ts';

const posInt = z.number().int().min(1);
const nonNegInt = z.number().int().min(0);
const pathString = z.string().min(1);
/** Ids end up in run ids, file names and CSV column names. */
const idString = z.string().regex(/^[A-Za-z0-9_][A-Za-z0-9_.-]*$/, { error: 'use letters, digits and _ . - only' });

const PATTERN_RE = /^(\d+):(\d+)$/;
/** `unstructured`, or `N:M` (N of every M consecutive weights zero) with 1 ≤ N < M. */
export function isPattern(s: string): boolean {
  if (s === 'unstructured') return true;
  const m = PATTERN_RE.exec(s);
  return m !== null && Number(m[1]) >= 1 && Number(m[1]) < Number(m[2]);
}

const ModelSchema = z.strictObject({ id: idString, path: pathString, tokenizer: pathString.optional() });

const CalibrationSchema = z.strictObject({
  text: pathString,
  nsamples: posInt.default(128),
  seqlen: posInt,
  /** Default: each run's seed. */
  seed: nonNegInt.optional(),
  /** Window starts to replay: a list, or a JSON file holding one. */
  offsets: z.union([z.array(nonNegInt), pathString], { error: 'expected a list of window start offsets or a path to a JSON file of them' }).optional(),
  /** Input mode across layers for layer-wise methods; default: each method's own. */
  mode: z.enum(['sequential', 'dense-parallel']).optional(),
  /** `stream` or `documents` (one window from one document); default by the file: documents for .json/.jsonl. */
  sampling: z.enum(CALIB_SAMPLINGS).optional(),
  /** The document field of a JSON/JSONL corpus (default `text`). */
  field: z.string().min(1).optional(),
});


/**
 * `none`, or a recovery recipe (finetune/recipes.ts): a schedule name (`uniform`, or a method that
 * declares one; checked against the registry) or a `preset`, the training settings that override
 * it, and the data. One strict object (so an unknown key lists every valid one), refined per case.
 * Entries written with only the original keys (schedule, steps, lr, rank, data) keep their exact
 * original form, so their run ids do not change; others keep what was written (the preset is
 * resolved where runs are expanded).
 */
const LEGACY_RECOVERY_KEYS = new Set(['schedule', 'steps', 'lr', 'rank', 'data']);
const { schedule: scheduleField, ...recipeFields } = RecipeSettingsSchema.shape;
const RecoverySchema = z.strictObject({
  schedule: scheduleField,
  preset: z.string().min(1).optional(),
  ...recipeFields,
  data: pathString.optional(),
}).superRefine((r, ctx) => {
  if (r.schedule === 'none') {
    for (const k of Object.keys(r)) {
      if (k !== 'schedule') ctx.addIssue({ code: 'custom', path: [k], message: "schedule 'none' takes no training settings" });
    }
    return;
  }
  for (const p of recipeProblems(r)) ctx.addIssue({ code: 'custom', path: [p.key], message: p.message });
  if (r.data === undefined) {
    ctx.addIssue({ code: 'custom', path: ['data'], message: `schedule '${r.schedule ?? r.preset}' needs data (a training text file, or instruction JSON/JSONL for format alpaca-json)` });
  }
}).transform((r): { schedule: 'none' } | (RecipeInput & { schedule: string; data: string }) => {
  if (r.schedule === 'none') return { schedule: 'none' };
  if (Object.keys(r).every((k) => LEGACY_RECOVERY_KEYS.has(k))) {
    return { schedule: r.schedule!, steps: r.steps!, lr: r.lr ?? 1e-4, rank: r.rank ?? 8, data: r.data! };
  }
  return { ...r, schedule: scheduleOf(r) ?? '', data: r.data! };
});

/** The resolved recipe of a recovery entry that trains (as written: paths are not part of it). */
export function recipeOfEntry(entry: RecipeInput & { data: string }): Recipe {
  const { data: _data, ...input } = entry;
  return resolveRecipe(input);
}

/** A method; `sparsities` and `recovery` override the experiment-wide lists for its runs. */
const MethodSchema = z.strictObject({
  name: z.string().min(1),
  options: z.record(z.string(), z.unknown()).default({}),
  /** Run setting (not an option): worker threads pruning layers concurrently (layer-wise methods, dense-parallel). */
  workers: posInt.optional(),
  /**
   * Structured methods: the sparsities are parameter budgets, fractions of these parameters to
   * remove; the engine finds each method's own sparsity that meets them (prune/budget.ts).
   */
  budget: z.enum(BUDGET_SCOPES).optional(),
  sparsities: z.array(z.number().gte(0).lt(1)).min(1).optional(),
  recovery: z.array(RecoverySchema).min(1).optional(),
});

const EvaluationsSchema = z.strictObject({
  perplexity: z.array(z.strictObject({ id: idString, text: pathString, seqlen: posInt, maxWindows: posInt.optional() })).default([]),
  zeroshot: z.array(z.strictObject({ task: z.string().min(1), limit: posInt.optional() })).default([]),
  speed: z.strictObject({
    promptTokens: posInt.default(128),
    newTokens: posInt.default(128),
    batch: posInt.default(1),
    warmup: nonNegInt.default(1),
    repeats: posInt.default(5),
  }).optional(),
});

export const ExperimentSchema = z.strictObject({
  name: idString,
  /** Output folder; default `results/<name>` beside the YAML. */
  output: pathString.optional(),
  models: z.array(ModelSchema).min(1),
  calibration: CalibrationSchema.optional(),
  methods: z.array(MethodSchema).default([]),
  sparsities: z.array(z.number().gte(0).lt(1)).default([]),
  patterns: z.array(z.string().refine(isPattern, { error: 'expected "unstructured" or "N:M" with 1 ≤ N < M' })).min(1).default(['unstructured']),
  recovery: z.array(RecoverySchema).min(1).default([{ schedule: 'none' }]),
  evaluations: EvaluationsSchema.default({ perplexity: [], zeroshot: [] }),
  seeds: z.array(nonNegInt).min(1).default([0]),
});

export type ExperimentConfig = z.output<typeof ExperimentSchema>;
export type MethodEntry = ExperimentConfig['methods'][number];
export type RecoveryEntry = ExperimentConfig['recovery'][number];

/**
 * Checks a method name and its options (the plugin registry supplies it). Throw to reject:
 * a `ZodError`, or an error with `path` (relative to `options`), is located precisely.
 * Returning an object replaces the options with it (defaults filled), so rows, records and run
 * ids carry the method's full resolved configuration.
 */
export type MethodValidator = (name: string, options: Record<string, unknown>) => void | Record<string, unknown>;

/** Recovery schedules by name (besides `uniform`): whether each reads its own method's report. */
export type RecoveryScheduleInfo = ReadonlyMap<string, { readsReport: boolean }>;

export interface LoadOptions {
  validateMethod?: MethodValidator;
  /** When given, schedule names are checked against it (and `uniform`). */
  recoverySchedules?: RecoveryScheduleInfo;
}

export interface LoadedExperiment {
  /** The YAML path as given (used in messages). */
  file: string;
  /** Absolute folder of the YAML: relative paths resolve against it. */
  dir: string;
  /** Validated, defaults filled, paths as written. */
  config: ExperimentConfig;
  /** Same with every path absolute and `output` filled. */
  resolved: ExperimentConfig & { output: string };
  /** Calibration offsets loaded from the list or file, or null. */
  calibrationOffsets: number[] | null;
}

/** Column id of a zero-shot entry: the task name, or a `.jsonl` file's base name. */
export function zeroshotId(task: string): string {
  return task.endsWith('.jsonl') ? path.basename(task, '.jsonl') : task;
}

function duplicates<T>(items: readonly T[], key: (t: T) => string, at: (i: number) => KeyPath, what: string): Located[] {
  const seen = new Map<string, number>();
  const out: Located[] = [];
  items.forEach((item, i) => {
    const k = key(item);
    const first = seen.get(k);
    if (first === undefined) seen.set(k, i);
    else out.push({ path: at(i), message: `duplicate ${what} ${JSON.stringify(k)} (first at index ${first})` });
  });
  return out;
}

/** Checks that zod cannot express per field: uniqueness and cross-field rules. */
function semanticChecks(c: ExperimentConfig): Located[] {
  const out: Located[] = [
    ...duplicates(c.models, (m) => m.id, (i) => ['models', i, 'id'], 'model id'),
    ...duplicates(c.sparsities, String, (i) => ['sparsities', i], 'sparsity'),
    ...duplicates(c.patterns, String, (i) => ['patterns', i], 'pattern'),
    ...duplicates(c.seeds, String, (i) => ['seeds', i], 'seed'),
    ...duplicates(c.evaluations.perplexity, (p) => p.id, (i) => ['evaluations', 'perplexity', i, 'id'], 'perplexity id'),
    // Identical entries would expand to identical runs (same id).
    ...duplicates(c.methods, canonicalJson, (i) => ['methods', i], 'method entry'),
    ...duplicates(c.recovery, canonicalJson, (i) => ['recovery', i], 'recovery entry'),
    ...duplicates(c.evaluations.zeroshot, (z) => zeroshotId(z.task), (i) => ['evaluations', 'zeroshot', i, 'task'], 'zero-shot task'),
  ];
  c.methods.forEach((m, i) => {
    if (m.budget === undefined) return;
    const own = m.sparsities !== undefined;
    (m.sparsities ?? c.sparsities).forEach((s, k) => {
      if (s <= 0) out.push({ path: own ? ['methods', i, 'sparsities', k] : ['sparsities', k], message: `methods[${i}] (${m.name}) takes its sparsities as budgets, which must be > 0` });
    });
  });
  const cal = c.calibration;
  if (cal?.seed !== undefined && cal.offsets !== undefined) out.push({ path: ['calibration', 'offsets'], message: 'give either seed or offsets, not both' });
  if (cal && !isJsonCorpus(cal.text)) {
    if (cal.sampling === 'documents') out.push({ path: ['calibration', 'sampling'], message: 'documents sampling needs a JSON or JSON Lines corpus (.json/.jsonl); this is a text file (use stream)' });
    if (cal.field !== undefined) out.push({ path: ['calibration', 'field'], message: 'field applies to JSON/JSONL corpora; this is a text file' });
  }
  if (cal && cal.offsets !== undefined && (cal.sampling ?? defaultSampling(cal.text)) === 'documents') {
    out.push({ path: ['calibration', 'offsets'], message: 'offsets replay stream windows; documents sampling is reproduced by its seed' });
  }
  if (c.methods.length > 0 && c.sparsities.length === 0 && c.patterns.includes('unstructured')) {
    out.push({ path: ['sparsities'], message: 'at least one sparsity is needed when methods are given' });
  }
  return out;
}

/**
 * The written option keys a validator's message names (`'key'` or `"key"`), so an error that
 * carries no path still points at the option rather than at the method's name.
 */
function optionKeysNamed(message: string, options: Record<string, unknown>): string[] {
  return Object.keys(options).filter((k) => message.includes(`'${k}'`) || message.includes(`"${k}"`));
}

/** Validate each method; options the validator resolves replace the written ones in `c`. */
function methodChecks(c: ExperimentConfig, validate: MethodValidator): Located[] {
  const out: Located[] = [];
  c.methods.forEach((m, i) => {
    try {
      const resolved = validate(m.name, m.options);
      if (resolved && typeof resolved === 'object') m.options = resolved;
    } catch (err) {
      if (err instanceof z.ZodError) {
        out.push(...issuesToLocated(err.issues, z.record(z.string(), z.unknown()), m.options, ['methods', i, 'options']));
      } else {
        const message = err instanceof Error ? err.message : String(err);
        const rel = (err as { path?: unknown }).path;
        const named = optionKeysNamed(message, m.options);
        const where: KeyPath = Array.isArray(rel) ? ['methods', i, 'options', ...(rel as PropertyKey[])]
          : named.length > 0 ? ['methods', i, 'options', named[0]] : ['methods', i, 'name'];
        // An unknown option is pointed at by its key, a bad value by the value.
        out.push({ path: where, message, atKey: !Array.isArray(rel) && named.length > 0 && /unknown option/.test(message) });
      }
    }
  });
  return out;
}

/** A method name that is a module path (a plug-in folder or file) rather than a registered name. */
export const isModulePath = (name: string): boolean => name.includes('/') || /\.(ts|js|mjs)$/.test(name);

/**
 * Every recovery schedule names `uniform` or a method that declares one; a schedule that reads its
 * method's report recovers only runs of that method.
 */
function scheduleChecks(c: ExperimentConfig, schedules: RecoveryScheduleInfo): Located[] {
  const out: Located[] = [];
  const valid = ['none', 'uniform', ...schedules.keys()].join(', ');
  const check = (schedule: string, at: KeyPath, methods: readonly string[]) => {
    if (schedule === 'none' || schedule === 'uniform' || isModulePath(schedule)) return;
    const info = schedules.get(schedule);
    if (!info) {
      out.push({ path: at, message: `unknown recovery schedule '${schedule}'; valid: ${valid} (or a method module path)` });
      return;
    }
    const others = methods.filter((m) => m !== schedule);
    if (info.readsReport && others.length > 0) {
      out.push({ path: at, message: `schedule '${schedule}' reads the pruning report of '${schedule}' and cannot recover runs of ${others.join(', ')}; give those methods their own recovery list` });
    }
  };
  const withoutOwn = c.methods.filter((m) => !m.recovery).map((m) => m.name);
  c.recovery.forEach((r, i) => check(r.schedule, ['recovery', i, 'schedule'], withoutOwn));
  c.methods.forEach((m, k) => (m.recovery ?? []).forEach((r, i) => check(r.schedule, ['methods', k, 'recovery', i, 'schedule'], [m.name])));
  return out;
}

/** Every recovery entry (experiment-wide and per method), where it is and how to reach it in a config. */
function recoveryEntries(c: ExperimentConfig): { at: KeyPath; entry: (x: ExperimentConfig) => RecoveryEntry }[] {
  return [
    ...c.recovery.map((_, i) => ({ at: ['recovery', i] as KeyPath, entry: (x: ExperimentConfig) => x.recovery[i] })),
    ...c.methods.flatMap((m, k) => (m.recovery ?? []).map((_, i) => ({
      at: ['methods', k, 'recovery', i] as KeyPath, entry: (x: ExperimentConfig) => x.methods[k].recovery![i],
    }))),
  ];
}

/**
 * Instruction data is read and checked at load (every record, every field), as is a template
 * file, so bad data fails before any run starts or anything is written.
 */
function instructionDataChecks(resolved: ExperimentConfig): Located[] {
  const out: Located[] = [];
  const checked = new Map<string, string | null>();
  const check = (key: string, fn: () => unknown): string | null => {
    if (!checked.has(key)) {
      try {
        fn();
        checked.set(key, null);
      } catch (err) {
        checked.set(key, err instanceof Error ? err.message : String(err));
      }
    }
    return checked.get(key) ?? null;
  };
  for (const { at, entry } of recoveryEntries(resolved)) {
    const r = entry(resolved);
    if (!('data' in r)) continue;
    const recipe = recipeOfEntry(r);
    if (recipe.format !== 'alpaca-json') continue;
    const dataProblem = check(`data:${r.data}`, () => readInstructionFile(r.data));
    if (dataProblem) out.push({ path: [...at, 'data'], message: dataProblem });
    const templateProblem = check(`template:${recipe.template}`, () => resolvePromptTemplate(recipe.template as string));
    if (templateProblem) out.push({ path: [...at, r.template !== undefined ? 'template' : 'preset'], message: templateProblem });
  }
  return out;
}

/** A JSON/JSONL calibration corpus is read and checked at load (every record has its field), naming the row. */
function corpusChecks(resolved: ExperimentConfig): Located[] {
  const cal = resolved.calibration;
  if (!cal || !isJsonCorpus(cal.text)) return [];
  try {
    readDocuments(cal.text, cal.field ?? 'text');
    return [];
  } catch (err) {
    return [{ path: ['calibration', 'text'], message: err instanceof Error ? err.message : String(err) }];
  }
}

interface PathField {
  at: KeyPath;
  get: (c: ExperimentConfig) => string | undefined;
  set: (c: ExperimentConfig, v: string) => void;
}

/**
 * Resolve a path as written in the YAML. A leading `$NAME/` is an environment variable (so
 * configs for real checkpoints stay portable: `$MODELS/llama-2-7b-hf`); `$SHARED` defaults to the
 * shared data folder (PRUNELAB_SHARED_DATA or ../shared/data beside the repo). Anything else is
 * relative to the YAML. An unset variable leaves the path unresolvable, which the caller reports.
 */
export function resolveInputPath(dir: string, written: string): string {
  const m = VARIABLE_RE.exec(written);
  if (m) {
    const base = m[1] === 'SHARED' ? process.env.SHARED ?? sharedDataDir() : process.env[m[1]];
    return base === undefined ? `(environment variable ${m[1]} is not set)${m[2] ?? ''}` : path.join(base, m[2] ?? '');
  }
  return path.resolve(dir, written);
}

const VARIABLE_RE = /^\$([A-Za-z_][A-Za-z0-9_]*)(\/.*)?$/;

/**
 * What is wrong with a path as written, before it is looked up: an unset `$NAME`, or a `$` that
 * is not a leading `$NAME/` (it would be taken literally, e.g. a folder named `$OUTDIR`).
 */
export function pathVariableProblem(written: string): string | null {
  const m = VARIABLE_RE.exec(written);
  if (m) {
    if (m[1] === 'SHARED' || process.env[m[1]] !== undefined) return null;
    return `environment variable ${m[1]} is not set: set it, or write the path without it`;
  }
  if (written.includes('$')) return 'only a leading $NAME/ is expanded (an environment variable); a $ elsewhere would be taken literally';
  return null;
}

/** Module-path methods (`./my-method.ts`) resolve against the current folder, as at run time. */
function methodModuleProblem(name: string): string | null {
  const isPath = name.includes('/') || /\.(ts|js|mjs)$/.test(name);
  return isPath && !fs.existsSync(path.resolve(name)) ? `method module not found: ${path.resolve(name)} (module paths resolve against the current folder)` : null;
}

/** Names the loader can resolve without running anything: zero-shot tasks (and their data) and method modules. */
function nameChecks(c: ExperimentConfig): Located[] {
  const out: Located[] = [];
  c.evaluations.zeroshot.forEach((z, i) => {
    const at: KeyPath = ['evaluations', 'zeroshot', i, 'task'];
    if (z.task.endsWith('.jsonl')) return; // a path: checked with the other paths
    if (!isTaskName(z.task)) {
      out.push({ path: at, message: `unknown zero-shot task ${JSON.stringify(z.task)}; valid: ${Object.keys(TASKS).join(', ')}, or a .jsonl file` });
      return;
    }
    const file = path.join(defaultZeroshotDir(), TASKS[z.task].file);
    if (!fs.existsSync(file)) out.push({ path: at, message: `task data not found: ${file} (the shared data folder; PRUNELAB_SHARED_DATA sets it)` });
  });
  c.methods.forEach((m, i) => {
    const problem = methodModuleProblem(m.name);
    if (problem) out.push({ path: ['methods', i, 'name'], message: problem });
  });
  return out;
}

/** Every input path in the config, so they resolve and are checked in one place. */
function pathFields(c: ExperimentConfig): PathField[] {
  const fields: PathField[] = [];
  c.models.forEach((_, i) => {
    fields.push({ at: ['models', i, 'path'], get: (x) => x.models[i].path, set: (x, v) => { x.models[i].path = v; } });
    fields.push({ at: ['models', i, 'tokenizer'], get: (x) => x.models[i].tokenizer, set: (x, v) => { x.models[i].tokenizer = v; } });
  });
  if (c.calibration) {
    fields.push({ at: ['calibration', 'text'], get: (x) => x.calibration?.text, set: (x, v) => { x.calibration!.text = v; } });
    fields.push({
      at: ['calibration', 'offsets'],
      get: (x) => (typeof x.calibration?.offsets === 'string' ? x.calibration.offsets : undefined),
      set: (x, v) => { x.calibration!.offsets = v; },
    });
  }
  for (const { at, entry } of recoveryEntries(c)) {
    const r = entry(c);
    if (isModulePath(r.schedule)) fields.push({ at: [...at, 'schedule'], get: (x) => entry(x).schedule, set: (x, v) => { entry(x).schedule = v; } });
    if (!('data' in r)) continue;
    const trains = (x: ExperimentConfig) => entry(x) as RecipeInput & { data: string };
    fields.push({ at: [...at, 'data'], get: (x) => trains(x).data, set: (x, v) => { trains(x).data = v; } });
    // A template file (not a registered name) is a path like any other.
    if (r.template?.endsWith('.json')) fields.push({ at: [...at, 'template'], get: (x) => trains(x).template, set: (x, v) => { trains(x).template = v; } });
  }
  c.methods.forEach((m, k) => {
    // A method given as a module path (a plug-in folder or file) is a path like any other.
    if (isModulePath(m.name)) fields.push({ at: ['methods', k, 'name'], get: (x) => x.methods[k].name, set: (x, v) => { x.methods[k].name = v; } });
  });
  c.evaluations.perplexity.forEach((_, i) => {
    fields.push({ at: ['evaluations', 'perplexity', i, 'text'], get: (x) => x.evaluations.perplexity[i].text, set: (x, v) => { x.evaluations.perplexity[i].text = v; } });
  });
  c.evaluations.zeroshot.forEach((z, i) => {
    // Only file tasks are paths; task names resolve in the evaluation module.
    if (z.task.endsWith('.jsonl')) fields.push({ at: ['evaluations', 'zeroshot', i, 'task'], get: (x) => x.evaluations.zeroshot[i].task, set: (x, v) => { x.evaluations.zeroshot[i].task = v; } });
  });
  return fields;
}

function loadOffsets(file: string, nsamples: number): number[] | string {
  let data: unknown;
  try {
    data = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    return `cannot read offsets file ${file}: ${(err as Error).message}`;
  }
  return checkOffsets(data, nsamples);
}

function checkOffsets(data: unknown, nsamples: number): number[] | string {
  if (!Array.isArray(data) || !data.every((v) => Number.isInteger(v) && v >= 0)) return 'offsets must be a list of non-negative integers';
  if (data.length !== nsamples) return `has ${data.length} offsets but calibration.nsamples is ${nsamples}`;
  return data as number[];
}

/** `duplicate key "name" (first at line 3)`: the key at `offset` and its earlier sibling. */
function duplicateKeyMessage(source: string, offset: number, lines: LineCounter): string {
  const m = /^(?:"((?:[^"\\]|\\.)*)"|'((?:[^']|'')*)'|([^:#\n]*?))\s*:/.exec(source.slice(offset));
  const key = m ? m[1] ?? m[2]?.replace(/''/g, "'") ?? m[3] ?? '' : '';
  if (!key) return 'duplicate key: each key may appear once in a mapping';
  // The nearest earlier line with the same key at the same indentation is the first one.
  const { line, col } = lines.linePos(offset);
  const escaped = key.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const re = new RegExp(`^[ -]{${col - 1}}["']?${escaped}["']?\\s*:`);
  const earlier = source.split('\n').slice(0, line - 1);
  let first = earlier.length - 1;
  while (first >= 0 && !re.test(earlier[first])) first--;
  return `duplicate key ${JSON.stringify(key)}${first >= 0 ? ` (first at line ${first + 1})` : ''}: each key may appear once in a mapping; remove or merge one`;
}

function fail(file: string, doc: Document, lines: LineCounter, errors: Located[]): never {
  const msgs = errors.map((e) => formatLocated(file, doc, lines, e)).sort((a, b) => a.line - b.line || a.col - b.col);
  throw new ConfigError(msgs.map((m) => m.text).join('\n'));
}

/** Read, parse and validate an experiment file; throws one ConfigError listing every problem found. */
export function loadExperiment(file: string, opts: LoadOptions = {}): LoadedExperiment {
  let source: string;
  try {
    source = fs.readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ConfigError(code === 'ENOENT' ? 'experiment file not found' : `cannot read experiment file (${code ?? String(err)})`, file);
  }
  const lines = new LineCounter();
  const doc = parseDocument(source, { lineCounter: lines, prettyErrors: false });
  if (doc.errors.length > 0) {
    throw new ConfigError(doc.errors.map((e) => {
      if (e.code === 'DUPLICATE_KEY') {
        // The reported offset may sit before the key (after an empty value): start at the key.
        const at = e.pos[0] + (/^\s*/.exec(source.slice(e.pos[0]))?.[0].length ?? 0);
        const pos = lines.linePos(at);
        return `${file}:${pos.line}:${pos.col}: ${duplicateKeyMessage(source, at, lines)}`;
      }
      const pos = e.linePos?.[0] ?? lines.linePos(e.pos[0]);
      return `${file}:${pos.line}:${pos.col}: malformed YAML: ${e.message.split('\n')[0]}`;
    }).join('\n'));
  }
  const data: unknown = doc.toJS();
  const parsed = ExperimentSchema.safeParse(data);
  if (!parsed.success) fail(file, doc, lines, issuesToLocated(parsed.error.issues, ExperimentSchema, data));
  const config = parsed.data;
  // Methods first: resolved options are what the duplicate check must compare.
  const methodProblems = methodChecks(config, opts.validateMethod ?? (() => {}));
  const scheduleProblems = opts.recoverySchedules ? scheduleChecks(config, opts.recoverySchedules) : [];
  const problems = [...methodProblems, ...scheduleProblems, ...semanticChecks(config), ...nameChecks(config)];
  if (problems.length > 0) fail(file, doc, lines, problems);

  const dir = path.dirname(path.resolve(file));
  const resolved = structuredClone(config) as LoadedExperiment['resolved'];
  // The output folder takes $NAME/ like the inputs; it need not exist yet (the runner creates it).
  const outputProblem = config.output === undefined ? null : pathVariableProblem(config.output);
  if (outputProblem) problems.push({ path: ['output'], message: outputProblem });
  resolved.output = resolveInputPath(dir, config.output ?? path.join('results', config.name));
  for (const f of pathFields(config)) {
    const written = f.get(config);
    if (written === undefined) continue;
    const abs = resolveInputPath(dir, written);
    const problem = pathVariableProblem(written);
    if (problem) problems.push({ path: f.at, message: problem });
    else if (!fs.existsSync(abs)) problems.push({ path: f.at, message: `path not found: ${abs}` });
    f.set(resolved, abs);
  }
  if (problems.length === 0) problems.push(...instructionDataChecks(resolved), ...corpusChecks(resolved));
  let calibrationOffsets: number[] | null = null;
  const offsets = resolved.calibration?.offsets;
  if (offsets !== undefined && problems.length === 0) {
    const got = typeof offsets === 'string' ? loadOffsets(offsets, resolved.calibration!.nsamples) : checkOffsets(offsets, resolved.calibration!.nsamples);
    if (typeof got === 'string') problems.push({ path: ['calibration', 'offsets'], message: got });
    else calibrationOffsets = got;
  }
  if (problems.length > 0) fail(file, doc, lines, problems);
  return { file, dir, config, resolved, calibrationOffsets };
}
