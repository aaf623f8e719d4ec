/**
 * SVG charts from result rows, drawn with vega-lite (compiled to vega, rendered headless):
 * - sparsity vs perplexity: x = the measured fraction removed on the chosen axis (default:
 *   decoder-layer parameters, zeros counted), one chart per kind (unstructured, N:M, structured)
 *   so different sparsity meanings never share axes; a distinct colour and marker per method,
 *   recovery as a dashed twin of its method's line, dense as a grey rule, log y;
 * - speed vs quality for structured models only (zeros do not change speed): decode tokens/s
 *   relative to the dense model's, vs perplexity — the ratio measured in alternation with the
 *   dense model in the same run, with its spread as an error bar (older results: divided by the
 *   dense row's rate, no bar).
 * One chart per model and perplexity column, so numbers under different protocols never share axes.
 */
import fs from 'node:fs';
import path from 'node:path';
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import { AXIS_TITLE, axisValue, entries, entryValue, methodName, metricColumns, num, type DisplayName, type Entry, type MetricColumn, type ResultKind, type SparsityAxis } from './report-data.ts';
import type { ResultRow } from './results.ts';

interface Point {
  /** The line: method + recovery (+ N:M pattern). */
  series: string;
  /** Colour and marker: the method. */
  method: string;
  /** Dashed line: recovered. */
  recovered: boolean;
  x: number;
  ppl: number;
  decode?: number;
  /** Spread of `decode` over interleaved repeats (when measured so). */
  decodeLo?: number;
  decodeHi?: number;
}

function fileSafe(s: string): string {
  return s.replace(/[^A-Za-z0-9_.-]+/g, '-');
}

/** Series name: method (+ N:M pattern, which is its own curve) + recovery, as in tables. */
function seriesOf(e: Entry): string {
  return /^\d+:\d+$/.test(e.pattern) ? `${e.label} ${e.pattern}` : e.label;
}

async function toSvg(spec: TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** 20 colours (Tableau 20) and 8 marker shapes: methods stay apart in a 20-series chart. */
const methodEncoding = {
  color: { field: 'method', type: 'nominal', title: 'method', scale: { scheme: 'tableau20' } },
  shape: { field: 'method', type: 'nominal', title: 'method' },
  strokeDash: { field: 'recovered', type: 'nominal', title: 'recovered', scale: { domain: [false, true], range: [[1, 0], [5, 3]] } },
  detail: { field: 'series', type: 'nominal' },
};

function sparsitySpec(title: string, xTitle: string, points: Point[], dense: number | undefined): TopLevelSpec {
  const layers: TopLevelSpec[] = [{
    mark: { type: 'line', point: true },
    encoding: {
      x: { field: 'x', type: 'quantitative', title: xTitle, axis: { format: '.0%' }, scale: { zero: true } },
      y: { field: 'ppl', type: 'quantitative', title: 'perplexity (log scale)', scale: { type: 'log' } },
      ...methodEncoding,
    },
  } as TopLevelSpec];
  if (dense !== undefined) {
    layers.push({ data: { values: [{ ppl: dense }] }, mark: { type: 'rule', strokeDash: [4, 4], color: 'gray' }, encoding: { y: { field: 'ppl', type: 'quantitative' } } } as TopLevelSpec);
  }
  return { $schema: 'https://vega.github.io/schema/vega-lite/v6.json', title, width: 480, height: 320, data: { values: points }, layer: layers } as TopLevelSpec;
}

function speedSpec(title: string, points: Point[]): TopLevelSpec {
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json', title, width: 480, height: 320, data: { values: points },
    layer: [
      {
        mark: { type: 'point', filled: true, size: 80 },
        encoding: {
          x: { field: 'decode', type: 'quantitative', title: 'decode tokens/s relative to dense', scale: { zero: false } },
          y: { field: 'ppl', type: 'quantitative', title: 'perplexity (log scale)', scale: { type: 'log' } },
          color: methodEncoding.color,
          shape: methodEncoding.shape,
        },
      },
      {
        mark: { type: 'rule' },
        encoding: {
          x: { field: 'decodeLo', type: 'quantitative' },
          x2: { field: 'decodeHi' },
          y: { field: 'ppl', type: 'quantitative', scale: { type: 'log' } },
          color: methodEncoding.color,
        },
      },
      {
        mark: { type: 'text', dx: 6, align: 'left', fontSize: 9 },
        encoding: {
          x: { field: 'decode', type: 'quantitative' },
          y: { field: 'ppl', type: 'quantitative', scale: { type: 'log' } },
          text: { field: 'x', type: 'quantitative', format: '.0%' },
        },
      },
    ],
  } as TopLevelSpec;
}

/** Log axes need finite positive values; a collapsed run (ppl = inf/NaN) is left off the chart. */
const plottable = (v: number | undefined): v is number => v !== undefined && Number.isFinite(v) && v > 0;

/** Write the charts into `outDir`; returns the files written. */
export async function plotResults(rows: readonly ResultRow[], outDir: string, displayName?: DisplayName, axis: SparsityAxis = 'decoder'): Promise<string[]> {
  fs.mkdirSync(outDir, { recursive: true });
  const list = entries(rows, displayName);
  const cols = metricColumns(rows);
  const ppls = cols.filter((c) => c.kind === 'ppl');
  const decode = cols.filter((c) => c.kind === 'speed' && c.id === 'decode');
  const written: string[] = [];
  const write = async (name: string, spec: TopLevelSpec) => {
    const file = path.join(outDir, name);
    fs.writeFileSync(file, await toSvg(spec));
    written.push(file);
  };

  for (const model of [...new Set(list.map((e) => e.model))]) {
    const mine = list.filter((e) => e.model === model);
    const variantIndex = new Map<string, number>();
    for (const col of ppls) {
      const n = (variantIndex.get(col.id) ?? 0) + 1;
      variantIndex.set(col.id, n);
      const stem = `${fileSafe(model)}.${fileSafe(col.id)}${n > 1 ? `.v${n}` : ''}`;
      const title = `${model}: ${col.label}`;
      const denseVal = mine.filter((e) => e.dense).map((e) => entryValue(e, col)).find(plottable);
      const point = (e: Entry, extra: Partial<Point> = {}): Point[] => {
        const ppl = entryValue(e, col);
        const x = axisValue(e, axis);
        return plottable(ppl) && x !== undefined
          ? [{ series: seriesOf(e), method: methodName(e.method, displayName), recovered: e.recovery !== 'none', x, ppl, ...extra }] : [];
      };
      for (const kind of ['unstructured', 'n:m', 'structured'] as const satisfies readonly ResultKind[]) {
        const points = mine.filter((e) => e.kind === kind).flatMap((e) => point(e));
        const kindTitle = `${title} — ${kind === 'n:m' ? 'N:M' : kind}`;
        if (points.length > 0) await write(`sparsity-ppl.${kind === 'n:m' ? 'nm' : kind}.${stem}.svg`, sparsitySpec(kindTitle, AXIS_TITLE[axis], points, denseVal));
      }

      // Speed only where it can change: structured models, relative to the dense model's speed —
      // the interleaved ratio with its spread where the rows have it, else this row ÷ the dense row.
      const rateOf = (e: Entry) => decode.map((d: MetricColumn) => entryValue(e, d)).find((v) => v !== undefined && Number.isFinite(v));
      const ratioOf = (e: Entry, key: string) => {
        const vals = e.rows.map((r) => num(r[key]));
        return vals.every((v) => v !== undefined && Number.isFinite(v)) ? (vals as number[]).reduce((a, b) => a + b, 0) / vals.length : undefined;
      };
      const denseRate = mine.filter((e) => e.dense).map(rateOf).find((v) => v !== undefined);
      const speedPoints = mine.filter((e) => e.kind === 'structured' || e.dense).flatMap((e): Point[] => {
        const dense = e.dense ? { series: 'Dense', method: 'Dense' } : {};
        const ratio = ratioOf(e, 'speed:decode_vs_dense');
        if (ratio !== undefined) {
          return point(e, { decode: ratio, decodeLo: ratioOf(e, 'speed:decode_vs_dense_lo'), decodeHi: ratioOf(e, 'speed:decode_vs_dense_hi'), ...dense });
        }
        const rate = rateOf(e);
        return rate === undefined || denseRate === undefined ? [] : point(e, { decode: rate / denseRate, ...dense });
      });
      if (speedPoints.some((p) => p.method !== 'Dense')) await write(`speed-quality.structured.${stem}.svg`, speedSpec(`${title} — structured`, speedPoints));
    }
  }
  return written;
}
