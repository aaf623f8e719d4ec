/**
 * Zero-shot multiple choice with lm-evaluation-harness (0.4-style) semantics, protocol.md §3.1.
 *
 * A task is a JSONL file in one of three row shapes (../shared/data/README.md, zeroshot/):
 * - `query_choices_gold` (PIQA, ARC, BoolQ, OBQA, HellaSwag): context = query + delimiter,
 *   continuation = " " + choice; acc = argmax ll, acc_norm = argmax ll / chars(choice).
 * - `context_options` (WinoGrande, partial scoring): each option-filled prefix is a context, the
 *   shared continuation " " + suffix is scored under each; acc = argmax of the suffix ll.
 * - `context_continuation` (LAMBADA): acc = every continuation token is the greedy argmax;
 *   ppl = exp(−mean over documents of the continuation ll), the harness's `perplexity`.
 *
 * Scoring is separated from the model: a `Scorer` maps (context, continuation) strings to
 * log-likelihoods, so the metric code can be tested with a fake scorer on hand-chosen numbers.
 */
import fs from 'node:fs';
import path from 'node:path';
import { sharedDataDir } from '../util/paths.ts';
import * as tf from '@tensorflow/tfjs';
import { BlockContext, type CausalLM } from '../model/causal-lm.ts';
import { tokenNll } from '../model/loss.ts';
import type { Tokenizer } from '../tokenizer/types.ts';
import { ConfigError, DataError } from '../util/errors.ts';
import { yieldIfDue } from '../backend/yield.ts';

export type TaskName =
  | 'piqa' | 'arc_easy' | 'arc_challenge' | 'boolq' | 'openbook_qa' | 'hellaswag' | 'winogrande' | 'lambada_openai';

export type RowShape = 'query_choices_gold' | 'context_options' | 'context_continuation';
export type ZeroShotMetric = 'acc' | 'acc_norm';
/** `default`: PruneLab's map (SliceGPT convention); `acc`: acc everywhere (as the Wanda paper reports, its issue #31). */
export type MetricPreset = 'default' | 'acc';

export interface TaskConfig {
  name: string;
  /** File name inside the zeroshot data folder. */
  file: string;
  shape: RowShape;
  /** Appended to the query to form the context (query_choices_gold only). */
  delimiter: string;
  /** Put between context and choice/continuation (the harness's `target_delimiter`). */
  targetDelimiter: string;
  /** Headline metric under the default preset. */
  metric: ZeroShotMetric;
  templateId: string;
}

function task(name: TaskName, shape: RowShape, delimiter: string, metric: ZeroShotMetric): TaskConfig {
  return { name, file: `${name}.jsonl`, shape, delimiter, targetDelimiter: ' ', metric, templateId: `prunelab/${name}@v1` };
}

/** Delimiters as the data README gives them; metrics as PruneLab's default map (protocol.md §3.2). */
export const TASKS: Readonly<Record<TaskName, TaskConfig>> = {
  piqa: task('piqa', 'query_choices_gold', 'Answer:', 'acc_norm'), // query already ends with "\n"
  arc_easy: task('arc_easy', 'query_choices_gold', '\nAnswer:', 'acc_norm'),
  arc_challenge: task('arc_challenge', 'query_choices_gold', '\nAnswer:', 'acc_norm'),
  boolq: task('boolq', 'query_choices_gold', '\nAnswer:', 'acc'),
  openbook_qa: task('openbook_qa', 'query_choices_gold', '', 'acc_norm'),
  hellaswag: task('hellaswag', 'query_choices_gold', '', 'acc_norm'),
  winogrande: task('winogrande', 'context_options', '', 'acc'),
  lambada_openai: task('lambada_openai', 'context_continuation', '', 'acc'),
};

export function isTaskName(s: string): s is TaskName {
  return Object.prototype.hasOwnProperty.call(TASKS, s);
}

export function metricFor(config: TaskConfig, preset: MetricPreset = 'default'): ZeroShotMetric {
  return preset === 'acc' ? 'acc' : config.metric;
}

// ---------------------------------------------------------------------------------------------
// Rows

export interface MultipleChoiceRow {
  shape: 'query_choices_gold';
  query: string;
  choices: string[];
  gold: number;
}

export interface PartialRow {
  shape: 'context_options';
  contextOptions: string[];
  continuation: string;
  gold: number;
}

export interface LastWordRow {
  shape: 'context_continuation';
  context: string;
  continuation: string;
}

export type TaskRow = MultipleChoiceRow | PartialRow | LastWordRow;

function isStringArray(v: unknown): v is string[] {
  return Array.isArray(v) && v.every((s) => typeof s === 'string');
}

function checkGold(gold: unknown, k: number, where: string): number {
  if (typeof gold !== 'number' || !Number.isInteger(gold) || gold < 0 || gold >= k) {
    throw new DataError(`'gold' must be an integer in [0, ${k}), got ${JSON.stringify(gold)}`, where);
  }
  return gold;
}

/** The row shape a parsed JSON object has (by its keys), or null. */
export function detectShape(obj: Record<string, unknown>): RowShape | null {
  if ('query' in obj && 'choices' in obj) return 'query_choices_gold';
  if ('context_options' in obj) return 'context_options';
  if ('context' in obj && 'continuation' in obj) return 'context_continuation';
  return null;
}

/** Validate one parsed JSONL object as `shape`; `where` (file:line) names it in errors. */
export function parseTaskRow(shape: RowShape, obj: unknown, where: string): TaskRow {
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) throw new DataError('row is not a JSON object', where);
  const o = obj as Record<string, unknown>;
  switch (shape) {
    case 'query_choices_gold': {
      if (typeof o.query !== 'string') throw new DataError(`'query' must be a string`, where);
      if (!isStringArray(o.choices) || o.choices.length < 2) throw new DataError(`'choices' must be ≥ 2 strings`, where);
      return { shape, query: o.query, choices: o.choices, gold: checkGold(o.gold, o.choices.length, where) };
    }
    case 'context_options': {
      if (!isStringArray(o.context_options) || o.context_options.length < 2) {
        throw new DataError(`'context_options' must be ≥ 2 strings`, where);
      }
      if (typeof o.continuation !== 'string') throw new DataError(`'continuation' must be a string`, where);
      return {
        shape, contextOptions: o.context_options, continuation: o.continuation,
        gold: checkGold(o.gold, o.context_options.length, where),
      };
    }
    case 'context_continuation': {
      if (typeof o.context !== 'string' || typeof o.continuation !== 'string') {
        throw new DataError(`'context' and 'continuation' must be strings`, where);
      }
      return { shape, context: o.context, continuation: o.continuation };
    }
  }
}

/** The first `limit` parsed objects (all when null) of a JSONL file, with file:line for errors. */
function readJsonl(file: string, limit: number | null): { obj: unknown; where: string }[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new DataError(`cannot read task file: ${(e as Error).message}`, file);
  }
  const out: { obj: unknown; where: string }[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length && (limit === null || out.length < limit); i++) {
    const line = lines[i].trim();
    if (line === '') continue;
    const where = `${file}:${i + 1}`;
    try {
      out.push({ obj: JSON.parse(line), where });
    } catch (e) {
      throw new DataError(`invalid JSON: ${(e as Error).message}`, where);
    }
  }
  if (out.length === 0) throw new DataError('task file has no rows', file);
  return out;
}

/** The first `limit` rows (all when null) of a JSONL task file. */
export function loadTaskRows(file: string, shape: RowShape, limit: number | null = null): TaskRow[] {
  return readJsonl(file, limit).map(({ obj, where }) => parseTaskRow(shape, obj, where));
}

// ---------------------------------------------------------------------------------------------
// Requests and scoring

export interface LoglikelihoodRequest {
  context: string;
  continuation: string;
}

export interface LoglikelihoodResult {
  /** Σ log p(continuation token | prefix), natural log. */
  ll: number;
  /** Every continuation token is the argmax of its prediction (the harness's is_greedy). */
  isGreedy: boolean;
  /** Continuation tokens scored. */
  tokens: number;
}

/** Scores a list of requests, returning results in the same order (async: model scorers let the event loop turn). */
export type Scorer = (requests: readonly LoglikelihoodRequest[]) => Promise<LoglikelihoodResult[]>;

/** The requests one row produces, in choice order. */
export function requestsForRow(row: TaskRow, config: Pick<TaskConfig, 'delimiter' | 'targetDelimiter'>): LoglikelihoodRequest[] {
  switch (row.shape) {
    case 'query_choices_gold':
      return row.choices.map((c) => ({ context: row.query + config.delimiter, continuation: config.targetDelimiter + c }));
    case 'context_options':
      // Partial scoring: the option sits in the context; only the shared suffix is scored.
      return row.contextOptions.map((ctx) => ({ context: ctx, continuation: config.targetDelimiter + row.continuation }));
    case 'context_continuation':
      return [{ context: row.context, continuation: config.targetDelimiter + row.continuation }];
  }
}

/** Index of the first maximum (numpy argmax tie rule). */
export function argmaxFirst(values: readonly number[]): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

/** Python `len(str)`: code points, not UTF-16 units. */
export function charLength(s: string): number {
  let n = 0;
  for (const _ of s) n++;
  return n;
}

export interface ChoiceScore {
  pred: number;
  predNorm: number;
  acc: 0 | 1;
  accNorm: 0 | 1;
}

/**
 * The harness's multiple-choice decision: acc uses argmax ll; acc_norm uses argmax ll / len(choice)
 * with len the character count of the choice text (without the target delimiter, as lm-eval 0.4's
 * `completion_len = len(choice)` for `doc_to_choice`).
 */
export function scoreMultipleChoice(lls: readonly number[], choices: readonly string[], gold: number): ChoiceScore {
  if (lls.length !== choices.length) throw new Error(`scoreMultipleChoice: ${lls.length} scores for ${choices.length} choices`);
  const pred = argmaxFirst(lls);
  const predNorm = argmaxFirst(lls.map((ll, k) => ll / charLength(choices[k])));
  return { pred, predNorm, acc: pred === gold ? 1 : 0, accNorm: predNorm === gold ? 1 : 0 };
}

/**
 * Token ids of a (context, continuation) pair, the harness's `_encode_pair`: trailing whitespace
 * of the context moves to the continuation; then the whole string is encoded and split at the
 * length of the encoded context. Encoding the whole string keeps the tokenizer's merges across
 * the boundary as a single encode would produce them (encoding the continuation alone would add
 * the llama2.c/SentencePiece dummy-prefix space and change the tokens). BOS is prepended to the
 * context (PruneLab's choice; it also guarantees a non-empty context).
 */
export function encodePair(tokenizer: Tokenizer, context: string, continuation: string, addBos = true): { context: number[]; continuation: number[] } {
  const trimmed = context.trimEnd();
  const nSpaces = context.length - trimmed.length;
  if (nSpaces > 0) {
    continuation = context.slice(trimmed.length) + continuation;
    context = trimmed;
  }
  const whole = tokenizer.encode(context + continuation, { addBos });
  const ctx = tokenizer.encode(context, { addBos });
  return { context: whole.slice(0, ctx.length), continuation: whole.slice(ctx.length) };
}

export interface TokenRequest {
  context: readonly number[];
  continuation: readonly number[];
}

export interface ModelScorerOptions {
  /** Rows per forward pass (equal-length rows only; default 16). */
  batchSize?: number;
  /** Token budget per forward pass, B × T (default 8192). */
  maxBatchTokens?: number;
  /** Left-truncation length (default the model's maxPositionEmbeddings). */
  maxLength?: number;
  onProgress?: (done: number, total: number) => void;
}

/**
 * Score token-level requests with the model. Input = (context + continuation) left-truncated to
 * maxLength + 1 tokens, minus its last token (the harness's `inp`); the last n positions predict
 * the continuation. Requests of equal input length run together as one `[B, T]` forward, so no
 * padding is involved. Only the continuation rows go through the output head (the full
 * `[B*T, vocab]` logits would dominate memory for large vocabularies), which is why the blocks
 * are run here instead of through `forward`.
 */
export async function scoreTokenRequests(model: CausalLM, requests: readonly TokenRequest[], opts: ModelScorerOptions = {}): Promise<LoglikelihoodResult[]> {
  const maxLength = opts.maxLength ?? model.config.maxPositionEmbeddings;
  const batchSize = Math.max(1, opts.batchSize ?? 16);
  const maxTokens = Math.max(1, opts.maxBatchTokens ?? 8192);
  const results: LoglikelihoodResult[] = new Array(requests.length);
  const prepared = requests.map((r, idx) => {
    const full = [...r.context, ...r.continuation].slice(-(maxLength + 1));
    const n = Math.min(r.continuation.length, full.length - 1);
    return { idx, input: full.slice(0, -1), targets: full.slice(full.length - n), n };
  });
  for (const p of prepared) {
    if (p.n <= 0) results[p.idx] = { ll: 0, isGreedy: true, tokens: 0 }; // empty continuation: harness gives 0
  }
  const byLength = new Map<number, typeof prepared>();
  for (const p of prepared) {
    if (p.n <= 0) continue;
    const g = byLength.get(p.input.length);
    if (g) g.push(p);
    else byLength.set(p.input.length, [p]);
  }
  // Longest first (as the harness orders), then original order: deterministic batches.
  const lengths = [...byLength.keys()].sort((a, b) => b - a);
  const total = prepared.filter((p) => p.n > 0).length;
  let done = 0;
  for (const T of lengths) {
    const group = byLength.get(T) as typeof prepared;
    const B = Math.max(1, Math.min(batchSize, Math.floor(maxTokens / T)));
    for (let s = 0; s < group.length; s += B) {
      const batch = group.slice(s, s + B);
      const rows: number[] = [];
      const targets: number[] = [];
      batch.forEach((p, b) => {
        for (let j = 0; j < p.n; j++) {
          rows.push(b * T + T - p.n + j);
          targets.push(p.targets[j]);
        }
      });
      const { nll, argmax } = continuationScores(model, batch.map((p) => p.input), rows, targets);
      let off = 0;
      for (const p of batch) {
        let ll = 0;
        let greedy = true;
        for (let j = 0; j < p.n; j++, off++) {
          ll -= nll[off];
          if (argmax[off] !== targets[off]) greedy = false;
        }
        results[p.idx] = { ll, isGreedy: greedy, tokens: p.n };
      }
      done += batch.length;
      opts.onProgress?.(done, total);
      await yieldIfDue();
    }
  }
  return results;
}

/** NLL and argmax at the given flat rows of a `[B, T]` forward. */
function continuationScores(model: CausalLM, ids: number[][], rows: number[], targets: number[]): { nll: Float32Array; argmax: Int32Array } {
  const B = ids.length;
  const T = ids[0].length;
  const ctx = new BlockContext(B, T, 0, model.config);
  let out: tf.Tensor[];
  try {
    out = tf.tidy(() => {
      let x = model.embed(ids, 0);
      for (let i = 0; i < model.numLayers; i++) {
        const { out: y } = model.runBlock(i, x, ctx);
        x.dispose();
        x = y;
      }
      const logits = model.head(tf.gather(x, tf.tensor1d(rows, 'int32')) as tf.Tensor2D);
      return [tokenNll(logits, targets), tf.argMax(logits, -1)];
    });
  } finally {
    ctx.dispose();
  }
  const nll = out[0].dataSync() as Float32Array;
  const argmax = out[1].dataSync() as Int32Array;
  tf.dispose(out);
  return { nll, argmax };
}

/** A `Scorer` backed by the model and tokenizer (BOS before every context by default). */
export function modelScorer(model: CausalLM, tokenizer: Tokenizer, opts: ModelScorerOptions & { addBos?: boolean } = {}): Scorer {
  const addBos = opts.addBos ?? true;
  return (requests) => scoreTokenRequests(model, requests.map((r) => encodePair(tokenizer, r.context, r.continuation, addBos)), opts);
}

// ---------------------------------------------------------------------------------------------
// Task evaluation

export interface RowMetrics {
  /** Mean accuracy over rows. */
  acc: number;
  /** Mean acc_norm (query_choices_gold only; null otherwise). */
  acc_norm: number | null;
  /** LAMBADA: exp(−mean per-document ll); null otherwise. */
  ppl: number | null;
  n: number;
}

/** Evaluate parsed rows with any scorer (one scorer call for all requests, so it can batch). */
export async function evaluateRows(rows: readonly TaskRow[], config: Pick<TaskConfig, 'delimiter' | 'targetDelimiter'>, scorer: Scorer): Promise<RowMetrics> {
  if (rows.length === 0) throw new DataError('no rows to evaluate');
  const perRow = rows.map((r) => requestsForRow(r, config));
  const flat = perRow.flat();
  const res = await scorer(flat);
  if (res.length !== flat.length) throw new Error(`scorer returned ${res.length} results for ${flat.length} requests`);
  let acc = 0;
  let accNorm = 0;
  let llSum = 0;
  let off = 0;
  rows.forEach((row, i) => {
    const r = res.slice(off, off + perRow[i].length);
    off += perRow[i].length;
    switch (row.shape) {
      case 'query_choices_gold': {
        const s = scoreMultipleChoice(r.map((x) => x.ll), row.choices, row.gold);
        acc += s.acc;
        accNorm += s.accNorm;
        break;
      }
      case 'context_options':
        acc += argmaxFirst(r.map((x) => x.ll)) === row.gold ? 1 : 0;
        break;
      case 'context_continuation':
        acc += r[0].isGreedy ? 1 : 0;
        llSum += r[0].ll;
        break;
    }
  });
  const n = rows.length;
  const shape = rows[0].shape;
  return {
    acc: acc / n,
    acc_norm: shape === 'query_choices_gold' ? accNorm / n : null,
    ppl: shape === 'context_continuation' ? Math.exp(-llSum / n) : null,
    n,
  };
}

export interface ZeroShotProtocol {
  harness: 'lm-eval 0.4-style';
  num_fewshot: 0;
  template: string;
  row_shape: RowShape;
  delimiter: string;
  target_delimiter: string;
  metric: ZeroShotMetric;
  metric_preset: MetricPreset;
  acc_norm_length: 'characters of the choice text';
  bos: 'prepended to every context' | 'none';
  tokenization: 'encode(context + continuation), split at len(encode(context))';
  max_length: number;
  truncation: 'left';
  limit: number | null;
  file: string;
  tokenizer: string;
}

export interface ZeroShotResult {
  task: string;
  acc: number;
  acc_norm: number | null;
  /** LAMBADA continuation perplexity; null for other shapes. */
  ppl: number | null;
  n: number;
  metric: ZeroShotMetric;
  /** The value of `metric`. */
  value: number;
  protocol: ZeroShotProtocol;
}

export interface EvaluateTaskOptions extends ModelScorerOptions {
  /** First N rows only (`--limit N`). */
  limit?: number | null;
  /** Override the task's delimiter (query_choices_gold). */
  delimiter?: string;
  metric?: ZeroShotMetric;
  preset?: MetricPreset;
  addBos?: boolean;
  /** Folder holding `<task>.jsonl`; default `$PRUNELAB_SHARED_DATA/zeroshot`, else ../shared/data/zeroshot. */
  dataDir?: string;
}

export function defaultZeroshotDir(): string {
  return path.join(sharedDataDir(), 'zeroshot');
}

/** Resolve a task name or a JSONL path to its file and config (unknown files: shape from the first row). */
export function resolveTask(taskFileOrName: string, dataDir?: string): { file: string; config: TaskConfig } {
  if (isTaskName(taskFileOrName)) {
    const config = TASKS[taskFileOrName];
    return { file: path.join(dataDir ?? defaultZeroshotDir(), config.file), config };
  }
  if (!taskFileOrName.endsWith('.jsonl')) {
    throw new ConfigError(`unknown task '${taskFileOrName}': expected one of ${Object.keys(TASKS).join(', ')} or a .jsonl file`);
  }
  const name = path.basename(taskFileOrName, '.jsonl');
  if (isTaskName(name)) return { file: taskFileOrName, config: TASKS[name] };
  const [{ obj }] = readJsonl(taskFileOrName, 1);
  const shape = typeof obj === 'object' && obj !== null ? detectShape(obj as Record<string, unknown>) : null;
  if (!shape) throw new DataError('cannot tell the row shape from the first row\'s keys', taskFileOrName);
  return {
    file: taskFileOrName,
    config: { name, file: path.basename(taskFileOrName), shape, delimiter: '', targetDelimiter: ' ', metric: 'acc', templateId: `custom/${name}` },
  };
}

/** Evaluate one task zero-shot. Leaves the tensor count unchanged. */
export async function evaluateTask(model: CausalLM, tokenizer: Tokenizer, taskFileOrName: string, opts: EvaluateTaskOptions = {}): Promise<ZeroShotResult> {
  const { file, config: base } = resolveTask(taskFileOrName, opts.dataDir);
  const limit = opts.limit ?? null;
  if (limit !== null && (!Number.isInteger(limit) || limit < 1)) throw new ConfigError(`limit must be a positive integer, got ${limit}`);
  const delimiterChanged = opts.delimiter !== undefined && opts.delimiter !== base.delimiter;
  const config: TaskConfig = {
    ...base,
    delimiter: opts.delimiter ?? base.delimiter,
    templateId: delimiterChanged ? `${base.templateId}+delimiter=${JSON.stringify(opts.delimiter)}` : base.templateId,
  };
  const preset = opts.preset ?? 'default';
  let metric = opts.metric ?? metricFor(config, preset);
  if (config.shape !== 'query_choices_gold' && metric === 'acc_norm') {
    throw new ConfigError(`task ${config.name} (${config.shape}) has no acc_norm`);
  }
  if (config.shape !== 'query_choices_gold') metric = 'acc';
  const rows = loadTaskRows(file, config.shape, limit);
  const addBos = opts.addBos ?? true;
  const maxLength = opts.maxLength ?? model.config.maxPositionEmbeddings;
  const m = await evaluateRows(rows, config, modelScorer(model, tokenizer, { ...opts, addBos, maxLength }));
  return {
    task: config.name,
    acc: m.acc,
    acc_norm: m.acc_norm,
    ppl: m.ppl,
    n: m.n,
    metric,
    value: metric === 'acc_norm' ? (m.acc_norm as number) : m.acc,
    protocol: {
      harness: 'lm-eval 0.4-style',
      num_fewshot: 0,
      template: config.templateId,
      row_shape: config.shape,
      delimiter: config.delimiter,
      target_delimiter: config.targetDelimiter,
      metric,
      metric_preset: preset,
      acc_norm_length: 'characters of the choice text',
      bos: addBos ? 'prepended to every context' : 'none',
      tokenization: 'encode(context + continuation), split at len(encode(context))',
      max_length: maxLength,
      truncation: 'left',
      limit,
      file,
      tokenizer: tokenizer.id,
    },
  };
}
