/**
 * Tables from result rows, Markdown or LaTeX (booktabs).
 *
 * `paper`: the dense row first, then methods as rows grouped by sparsity (seeds averaged);
 * perplexity columns first, then one column per zero-shot task naming its metric
 * (`PIQA (acc_norm)`), then the Average over the zero-shot columns. `wide`: one line per run
 * with every stored metric. A column is one metric under one protocol: rows measured
 * differently land in separate, labelled columns.
 */
import {
  AXIS_TITLE, entries, entryValue, metricColumns, methodName, num, paperOrder, targetLabel, valueIn, type DisplayName, type SparsityAxis, type Entry, type MetricChoice, type MetricColumn,
} from './report-data.ts';
import type { ResultRow } from './results.ts';

export interface TableOptions {
  format: 'md' | 'latex';
  layout: 'paper' | 'wide';
  /** Accuracy shown per task (paper layout and averages); default `default`. */
  metrics?: MetricChoice;
  /** Printed method names (the registry's display names); default the ids. */
  displayName?: DisplayName;
  /** The sparsity axis rows are grouped by (paper layout); default `decoder`. */
  axis?: SparsityAxis;
}

/** `text` as LaTeX shows it (group labels once per group); `full` as Markdown, which has no rules, shows it. */
type Cell = { text: string; numeric: boolean; full?: string };

const MISSING = '—';

function fmtPpl(v: number | undefined): string {
  if (v === undefined) return MISSING;
  return Number.isFinite(v) ? v.toFixed(2) : String(v);
}
const fmtPct = (v: number | undefined): string => (v === undefined ? MISSING : (v * 100).toFixed(2));
const fmtRate = (v: number | undefined): string => (v === undefined ? MISSING : v.toFixed(1));

function fmt(col: MetricColumn, v: number | undefined): string {
  return col.kind === 'ppl' ? fmtPpl(v) : col.kind === 'zs' ? fmtPct(v) : fmtRate(v);
}

/** A speed cell; a ratio to dense (measured in alternation) with its spread: `1.12 (1.05–1.20)`. */
function speedCell(col: MetricColumn, r: ResultRow): string {
  const v = valueIn(r, col);
  if (!col.valueKey.endsWith('_vs_dense') || v === undefined) return fmt(col, v);
  const [lo, hi] = [num(r[`${col.valueKey}_lo`]), num(r[`${col.valueKey}_hi`])];
  return `${v.toFixed(2)}${lo !== undefined && hi !== undefined ? ` (${lo.toFixed(2)}–${hi.toFixed(2)})` : ''}`;
}

/** Mean of the zero-shot values; undefined unless every zero-shot column has one. */
export function average(values: readonly (number | undefined)[]): number | undefined {
  if (values.length === 0 || values.some((v) => v === undefined)) return undefined;
  return (values as number[]).reduce((a, b) => a + b, 0) / values.length;
}

interface Table {
  header: string[];
  numeric: boolean[];
  /** Blocks are separated by a rule (LaTeX) — dense, then each sparsity group. */
  blocks: Cell[][][];
}

function paperTable(rows: readonly ResultRow[], metrics: MetricChoice, displayName?: DisplayName, axis: SparsityAxis = 'decoder'): Table {
  const cols = metricColumns(rows, { metrics }).filter((c) => c.kind !== 'speed');
  const zs = cols.filter((c) => c.kind === 'zs');
  const list = entries(rows, displayName);
  const multiModel = new Set(list.map((e) => e.model)).size > 1;
  const header = [...(multiModel ? ['Model'] : []), AXIS_TITLE[axis], 'Method', ...(axis === 'target' ? [] : ['Target']),
    ...cols.map((c) => c.label), ...(zs.length ? ['Average'] : [])];
  const firstMetric = (multiModel ? 3 : 2) + (axis === 'target' ? 0 : 1);
  const numeric = header.map((_, i) => i >= firstMetric);
  const seenModels = new Set<string>();
  const line = (e: Entry, group: string, first: boolean): Cell[] => {
    const vals = cols.map((c) => entryValue(e, c));
    const avg = average(zs.map((c) => vals[cols.indexOf(c)]));
    const newModel = !seenModels.has(e.model);
    seenModels.add(e.model);
    return [
      ...(multiModel ? [{ text: newModel ? e.model : '', full: e.model, numeric: false }] : []),
      { text: first ? group : '', full: group, numeric: false },
      { text: e.label, numeric: false },
      ...(axis === 'target' ? [] : [{ text: targetLabel(e), numeric: false }]),
      ...cols.map((c, i) => ({ text: fmt(c, vals[i]), numeric: true })),
      ...(zs.length ? [{ text: fmtPct(avg), numeric: true }] : []),
    ];
  };
  const blocks = paperOrder(list, axis).map((g) => g.entries.map((e, i) => line(e, g.label, i === 0)));
  return { header, numeric, blocks };
}

function wideTable(rows: readonly ResultRow[], metrics: MetricChoice, displayName?: DisplayName): Table {
  const cols = metricColumns(rows, { both: true });
  const chosen = metricColumns(rows, { metrics }).filter((c) => c.kind === 'zs');
  const fixed = ['Model', 'Method', 'Options', 'Kind', 'Pattern', 'Target', 'Scope', 'Removed (own scope)', 'Removed (decoder layers)', 'Removed (all)', 'Recovery', 'Seed'];
  const header = [...fixed, ...cols.filter((c) => c.kind !== 'speed').map((c) => c.label), ...(chosen.length ? ['Average'] : []), ...cols.filter((c) => c.kind === 'speed').map((c) => c.label)];
  const numeric = header.map((h, i) => (i >= fixed.indexOf('Target') && h !== 'Recovery' && h !== 'Scope'));
  const ordered = [...rows.filter((r) => r.method === 'dense'), ...rows.filter((r) => r.method !== 'dense')];
  const pct = (s: string | undefined) => (num(s) === undefined ? MISSING : `${+((num(s) as number) * 100).toFixed(2)}%`);
  const lines = ordered.map((r): Cell[] => [
    { text: r.model, numeric: false },
    { text: methodName(r.method, displayName), numeric: false },
    { text: r.options && r.options !== '{}' ? r.options : '', numeric: false },
    { text: r.kind ?? '', numeric: false },
    { text: r.pattern ?? '', numeric: false },
    { text: pct(r.target_sparsity), numeric: true },
    { text: r.scope ?? '', numeric: false },
    { text: pct(r.removed_scope), numeric: true },
    { text: pct(r.removed_decoder), numeric: true },
    { text: pct(r.removed_all), numeric: true },
    { text: r.recovery_schedule || 'none', numeric: false },
    { text: r.seed ?? '', numeric: true },
    ...cols.filter((c) => c.kind !== 'speed').map((c) => ({ text: fmt(c, valueIn(r, c)), numeric: true })),
    ...(chosen.length ? [{ text: fmtPct(average(chosen.map((c) => valueIn(r, c)))), numeric: true }] : []),
    ...cols.filter((c) => c.kind === 'speed').map((c) => ({ text: speedCell(c, r), numeric: true })),
  ]);
  return { header, numeric, blocks: [lines] };
}

function mdEscape(s: string): string {
  return s.replace(/\|/g, '\\|');
}

function toMarkdown(t: Table): string {
  const out = [`| ${t.header.map(mdEscape).join(' | ')} |`, `|${t.numeric.map((n) => (n ? '---:' : '---')).join('|')}|`];
  for (const block of t.blocks) {
    for (const cells of block) out.push(`| ${cells.map((c) => mdEscape(c.full ?? c.text)).join(' | ')} |`);
  }
  return out.join('\n') + '\n';
}

const LATEX_SPECIAL: Record<string, string> = {
  '\\': '\\textbackslash{}', '&': '\\&', '%': '\\%', $: '\\$', '#': '\\#', _: '\\_', '{': '\\{', '}': '\\}', '~': '\\textasciitilde{}', '^': '\\textasciicircum{}',
};
export function latexEscape(s: string): string {
  return s.replace(/[\\&%$#_{}~^]/g, (c) => LATEX_SPECIAL[c]).replace(/—/g, '--');
}

function toLatex(t: Table): string {
  const out = [
    `\\begin{tabular}{${t.numeric.map((n) => (n ? 'r' : 'l')).join('')}}`,
    '\\toprule',
    `${t.header.map(latexEscape).join(' & ')} \\\\`,
  ];
  for (const block of t.blocks) {
    out.push('\\midrule');
    for (const cells of block) out.push(`${cells.map((c) => latexEscape(c.text)).join(' & ')} \\\\`);
  }
  out.push('\\bottomrule', '\\end{tabular}');
  return out.join('\n') + '\n';
}

export function renderTable(rows: readonly ResultRow[], opts: TableOptions): string {
  const metrics = opts.metrics ?? 'default';
  const table = opts.layout === 'wide' ? wideTable(rows, metrics, opts.displayName) : paperTable(rows, metrics, opts.displayName, opts.axis);
  return opts.format === 'latex' ? toLatex(table) : toMarkdown(table);
}
