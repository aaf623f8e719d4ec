/**
 * Shared by tables and plots: which metric columns the rows hold (one per metric *and*
 * protocol, so numbers measured differently never share a column), and the rows aggregated
 * over seeds into entries (one per model × method × options × pattern × sparsity × recovery).
 */
import { canonicalJson } from './hash.ts';
import type { ResultRow } from './results.ts';

export type AccMetric = 'acc' | 'acc_norm';
/** `default`: protocol.md's map (SliceGPT convention); `acc`: acc for every task; or per task. */
export type MetricChoice = 'default' | 'acc' | Readonly<Record<string, AccMetric>>;

const ACC_NORM_TASKS = new Set(['piqa', 'hellaswag', 'arc_easy', 'arc_challenge', 'openbookqa', 'openbook_qa', 'obqa']);

const TASK_NAMES: Record<string, string> = {
  piqa: 'PIQA', hellaswag: 'HellaSwag', winogrande: 'WinoGrande', arc_easy: 'ARC-e', arc_challenge: 'ARC-c',
  openbookqa: 'OBQA', openbook_qa: 'OBQA', obqa: 'OBQA', boolq: 'BoolQ', rte: 'RTE', lambada_openai: 'LAMBADA',
};
/** Maps a method id to the name printed (the registry's display names); default the id. */
export type DisplayName = (method: string) => string;

export const taskName = (id: string): string => TASK_NAMES[id] ?? id;
/** The printed name of a row's method: `Dense` for the dense baseline, else the method's display name. */
export const methodName = (id: string, displayName: DisplayName = (m) => m): string => (id === 'dense' ? 'Dense' : displayName(id));

/**
 * Protocol fields that describe the model rather than the procedure (its tokenizer, context
 * length, where the file sits on this machine, the headline metric): excluded from column
 * identity, so different models evaluated the same way share a column.
 */
export const MODEL_SPECIFIC_PROTOCOL_KEYS: readonly string[] = ['tokenizer', 'max_length', 'file', 'metric', 'metric_preset'];

function parseProtocol(text: string | undefined): Record<string, unknown> {
  if (!text) return {};
  try {
    const v = JSON.parse(text) as unknown;
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : { raw: text };
  } catch {
    return { raw: text };
  }
}

function identityOf(text: string | undefined): { key: string; fields: Record<string, unknown> } {
  const fields = parseProtocol(text);
  for (const k of MODEL_SPECIFIC_PROTOCOL_KEYS) delete fields[k];
  return { key: canonicalJson(fields), fields };
}

/** A number from a cell; undefined for an empty cell ('NaN' and 'Infinity' are results). */
export function num(cell: string | undefined): number | undefined {
  if (cell === undefined || cell.trim() === '') return undefined;
  return Number(cell);
}

export interface MetricColumn {
  kind: 'ppl' | 'zs' | 'speed';
  /** Perplexity id, task id, or `prefill` / `decode`. */
  id: string;
  /** The CSV column holding the value. */
  valueKey: string;
  /** For zero-shot columns: which accuracy. */
  metric?: AccMetric;
  protocolColumn: string;
  protocolKey: string;
  protocol: Record<string, unknown>;
  label: string;
}

export function metricOf(task: string, choice: MetricChoice): AccMetric {
  if (choice === 'acc') return 'acc';
  if (choice === 'default') return ACC_NORM_TASKS.has(task) ? 'acc_norm' : 'acc';
  return choice[task] ?? (ACC_NORM_TASKS.has(task) ? 'acc_norm' : 'acc');
}

/** The value of `col` in `row`, or undefined when the row has none under that column's protocol. */
export function valueIn(row: ResultRow, col: MetricColumn): number | undefined {
  if (identityOf(row[col.protocolColumn]).key !== col.protocolKey) return undefined;
  return num(row[col.valueKey]);
}

/** `(seqlen=128)` naming the protocol fields that tell same-id columns apart. */
function distinguish(cols: MetricColumn[]): void {
  const byId = new Map<string, MetricColumn[]>();
  for (const c of cols) {
    const k = `${c.kind}:${c.id}:${c.metric ?? ''}`;
    byId.set(k, [...(byId.get(k) ?? []), c]);
  }
  for (const group of byId.values()) {
    if (group.length < 2) continue;
    const keys = [...new Set(group.flatMap((c) => Object.keys(c.protocol)))].sort()
      .filter((k) => new Set(group.map((c) => JSON.stringify(c.protocol[k]))).size > 1);
    for (const c of group) c.label += ` [${keys.map((k) => `${k}=${typeof c.protocol[k] === 'string' ? c.protocol[k] : JSON.stringify(c.protocol[k])}`).join(', ')}]`;
  }
}

/**
 * Metric columns in CSV order: perplexity, then zero-shot (with `both` = acc and acc_norm
 * each, else the chosen metric), then speed. One column per (metric, protocol) present.
 */
export function metricColumns(rows: readonly ResultRow[], opts: { metrics?: MetricChoice; both?: boolean } = {}): MetricColumn[] {
  const names: string[] = [];
  const seenName = new Set<string>();
  for (const r of rows) for (const k of Object.keys(r)) if (!seenName.has(k)) { seenName.add(k); names.push(k); }
  const cols: MetricColumn[] = [];
  const add = (kind: MetricColumn['kind'], id: string, valueKey: string, protocolColumn: string, label: string, metric?: AccMetric) => {
    const variants = new Map<string, Record<string, unknown>>();
    for (const r of rows) {
      if (num(r[valueKey]) === undefined) continue;
      const { key, fields } = identityOf(r[protocolColumn]);
      if (!variants.has(key)) variants.set(key, fields);
    }
    for (const [protocolKey, protocol] of variants) cols.push({ kind, id, valueKey, metric, protocolColumn, protocolKey, protocol, label });
  };
  for (const n of names) {
    const m = /^ppl:([^:]+)$/.exec(n);
    if (m) add('ppl', m[1], n, `ppl:${m[1]}:protocol`, `${m[1]} (ppl)`);
  }
  for (const n of names) {
    const m = /^acc:([^:]+)$/.exec(n);
    if (!m) continue;
    const task = m[1];
    const hasNorm = rows.some((r) => num(r[`acc_norm:${task}`]) !== undefined);
    const wanted: AccMetric[] = opts.both ? (hasNorm ? ['acc', 'acc_norm'] : ['acc']) : [hasNorm ? metricOf(task, opts.metrics ?? 'default') : 'acc'];
    for (const metric of wanted) add('zs', task, `${metric}:${task}`, `zs:${task}:protocol`, `${taskName(task)} (${metric})`, metric);
  }
  if (names.includes('speed:prefill_tok_s')) add('speed', 'prefill', 'speed:prefill_tok_s', 'speed:protocol', 'Prefill tok/s');
  if (names.includes('speed:decode_tok_s')) add('speed', 'decode', 'speed:decode_tok_s', 'speed:protocol', 'Decode tok/s');
  if (names.includes('speed:decode_vs_dense')) add('speed', 'decode_vs_dense', 'speed:decode_vs_dense', 'speed:protocol', 'Decode ÷ dense');
  distinguish(cols);
  return cols;
}

const ENTRY_KEYS = [
  'model', 'model_path', 'method', 'options', 'pattern', 'target_sparsity', 'calib_text', 'calib_nsamples', 'calib_seqlen', 'calib_mode',
  'recovery_schedule', 'recovery_steps', 'recovery_lr', 'recovery_rank', 'recovery_data', 'recovery_recipe',
];

/** What a result removed: nothing, unstructured zeros, an N:M pattern, or whole structures. */
export type ResultKind = 'dense' | 'unstructured' | 'n:m' | 'structured';

/**
 * The sparsity axis tables and plots group by: the measured fraction removed (zeros counted) of
 * decoder-layer parameters (default), of all parameters, of the method's own scope, or the target
 * as configured (grouped per kind and scope, so different meanings never share a group).
 */
export type SparsityAxis = 'decoder' | 'all' | 'scope' | 'target';
export const SPARSITY_AXES: readonly SparsityAxis[] = ['decoder', 'all', 'scope', 'target'];

const AXIS_COLUMN: Record<SparsityAxis, string> = { decoder: 'removed_decoder', all: 'removed_all', scope: 'removed_scope', target: 'target_sparsity' };
export const AXIS_TITLE: Record<SparsityAxis, string> = {
  decoder: 'Removed (decoder layers)', all: 'Removed (all parameters)', scope: 'Removed (own scope)', target: 'Target',
};

export interface Entry {
  model: string;
  dense: boolean;
  kind: ResultKind;
  method: string;
  pattern: string;
  /** Target sparsity as configured. */
  sparsity: number;
  /** What the target is a fraction of (the method's scope; empty when it has a meaning of its own). */
  scope: string;
  recovery: string;
  /** Rows of this setting (one per seed). */
  rows: ResultRow[];
  /** Identity fields, options flattened as `options.<key>`. */
  identity: Record<string, string>;
  label: string;
}

/** Mean over the entry's rows that have a value in `col`. */
export function entryValue(e: Entry, col: MetricColumn): number | undefined {
  const vals = e.rows.map((r) => valueIn(r, col)).filter((v): v is number => v !== undefined);
  return vals.length === 0 ? undefined : vals.reduce((a, b) => a + b, 0) / vals.length;
}

function flatIdentity(r: ResultRow): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of ENTRY_KEYS) if (k !== 'options') out[k] = r[k] ?? '';
  const opts = parseProtocol(r.options);
  for (const [k, v] of Object.entries(opts)) out[`options.${k}`] = typeof v === 'string' ? v : JSON.stringify(v);
  return out;
}

/** Rows → entries (seeds aggregated), in first-appearance order, with labels made unique per model. */
export function entries(rows: readonly ResultRow[], displayName?: DisplayName): Entry[] {
  const map = new Map<string, Entry>();
  for (const r of rows) {
    const key = canonicalJson(ENTRY_KEYS.map((k) => r[k] ?? ''));
    let e = map.get(key);
    if (!e) {
      const dense = r.method === 'dense';
      const recovery = r.recovery_schedule || 'none';
      e = {
        model: r.model, dense, kind: kindOf(r), method: r.method, pattern: r.pattern ?? '', sparsity: Number(r.target_sparsity || 0),
        scope: r.scope ?? '', recovery, rows: [],
        identity: flatIdentity(r),
        label: methodName(r.method, displayName) + (recovery !== 'none' ? ` + LoRA (${recovery})` : ''),
      };
      map.set(key, e);
    }
    e.rows.push(r);
  }
  const list = [...map.values()];
  // Same label for different settings: name the fields that differ.
  const byLabel = new Map<string, Entry[]>();
  for (const e of list) {
    const k = `${e.model}\u0000${e.kind}\u0000${e.pattern}\u0000${e.sparsity}\u0000${e.label}`;
    byLabel.set(k, [...(byLabel.get(k) ?? []), e]);
  }
  for (const group of byLabel.values()) {
    if (group.length < 2) continue;
    const keys = [...new Set(group.flatMap((e) => Object.keys(e.identity)))].sort()
      .filter((k) => new Set(group.map((e) => e.identity[k] ?? '')).size > 1);
    for (const e of group) e.label += ` (${keys.map((k) => `${k.replace(/^options\./, '')}=${e.identity[k] ?? '—'}`).join(', ')})`;
  }
  return list;
}

function kindOf(r: ResultRow): ResultKind {
  if (r.kind === 'dense' || r.kind === 'unstructured' || r.kind === 'n:m' || r.kind === 'structured') return r.kind;
  // Rows written before the kind column: from the pattern.
  if (r.method === 'dense') return 'dense';
  return /^\d+:\d+$/.test(r.pattern ?? '') ? 'n:m' : r.pattern === 'unstructured' ? 'unstructured' : 'structured';
}

/** The entry's value on `axis`: the mean over its rows (undefined when a row lacks it). */
export function axisValue(e: Entry, axis: SparsityAxis): number | undefined {
  if (e.dense) return 0;
  const vals = e.rows.map((r) => num(r[AXIS_COLUMN[axis]]));
  if (vals.some((v) => v === undefined)) return undefined;
  return (vals as number[]).reduce((a, b) => a + b, 0) / vals.length;
}

const pct = (v: number): string => `${+(v * 100).toFixed(1)}%`;

/** How the target reads beside the result: `2:4`, or `20% FFN channels`. */
export function targetLabel(e: Entry): string {
  if (e.dense) return '';
  if (e.kind === 'n:m') return e.pattern;
  const scope = e.scope === '' ? '(method-defined)' : e.scope.replace(/-/g, ' ').replace('ffn', 'FFN');
  return `${pct(e.sparsity)} ${scope}`;
}

/** A group of entries of one kind whose sparsities mean the same thing. */
export interface SparsityGroup {
  kind: ResultKind;
  label: string;
  entries: Entry[];
}

const KIND_ORDER: readonly ResultKind[] = ['dense', 'unstructured', 'n:m', 'structured'];
/** Entries whose axis values differ by at most this much share a group (labelled with their range). */
const SAME_SPARSITY = 0.01;

function rangeLabel(vals: readonly number[]): string {
  const lo = Math.min(...vals);
  const hi = Math.max(...vals);
  return pct(lo) === pct(hi) ? pct(lo) : `${pct(lo)}–${pct(hi)}`;
}

/**
 * Entries of one model in table order: dense, then unstructured, N:M and structured sections
 * (never mixed). N:M groups by pattern. The others group by `axis`: measured fractions within
 * one percentage point of each other form a group labelled with their range; on the `target`
 * axis, by target and scope. Entries without a value on the axis group by themselves at the end.
 */
export function sparsityGroups(list: readonly Entry[], axis: SparsityAxis): SparsityGroup[] {
  const out: SparsityGroup[] = [];
  for (const kind of KIND_ORDER) {
    const mine = list.filter((e) => e.kind === kind);
    if (mine.length === 0) continue;
    if (kind === 'dense') { out.push({ kind, label: '0%', entries: mine }); continue; }
    if (kind === 'n:m') {
      const byPattern = new Map<string, Entry[]>();
      for (const e of mine) byPattern.set(e.pattern, [...(byPattern.get(e.pattern) ?? []), e]);
      for (const [pattern, entries] of [...byPattern].sort((a, b) => a[1][0].sparsity - b[1][0].sparsity)) out.push({ kind, label: pattern, entries });
      continue;
    }
    const prefix = kind === 'structured' ? 'structured ' : '';
    if (axis === 'target') {
      const byTarget = new Map<string, Entry[]>();
      for (const e of mine) { const k = targetLabel(e); byTarget.set(k, [...(byTarget.get(k) ?? []), e]); }
      for (const [label, entries] of [...byTarget].sort((a, b) => a[1][0].sparsity - b[1][0].sparsity)) out.push({ kind, label: prefix + label, entries });
      continue;
    }
    const valued = mine.map((e) => ({ e, v: axisValue(e, axis) }));
    const known = valued.filter((x): x is { e: Entry; v: number } => x.v !== undefined).sort((a, b) => a.v - b.v);
    let current: { e: Entry; v: number }[] = [];
    const flush = () => { if (current.length) out.push({ kind, label: prefix + rangeLabel(current.map((x) => x.v)), entries: current.map((x) => x.e) }); current = []; };
    for (const x of known) {
      if (current.length && x.v - current[0].v > SAME_SPARSITY) flush();
      current.push(x);
    }
    flush();
    for (const { e } of valued.filter((x) => x.v === undefined)) out.push({ kind, label: `${prefix}? (${targetLabel(e)})`, entries: [e] });
  }
  return out;
}

/** Per model (first appearance), its sparsity groups in table order. */
export function paperOrder(list: readonly Entry[], axis: SparsityAxis = 'decoder'): SparsityGroup[] {
  const models = [...new Set(list.map((e) => e.model))];
  const methods = [...new Set(list.map((e) => e.method))];
  // Inside a group: methods in first-appearance order, each recovery row right after its base row.
  const order = (a: Entry, b: Entry) => methods.indexOf(a.method) - methods.indexOf(b.method)
    || Number(a.recovery !== 'none') - Number(b.recovery !== 'none') || a.sparsity - b.sparsity;
  return models.flatMap((model) => sparsityGroups(list.filter((e) => e.model === model), axis))
    .map((g) => ({ ...g, entries: [...g.entries].sort(order) }));
}
