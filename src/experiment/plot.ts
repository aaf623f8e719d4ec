/**
 * SVG charts from result rows, drawn with vega-lite (compiled to vega, rendered headless):
 * sparsity vs perplexity (a line per method, dense as a dashed rule, log y) and speed vs
 * quality (decode tokens/s vs perplexity). One chart per model and perplexity column, so
 * numbers under different protocols never share axes.
 */
import fs from 'node:fs';
import path from 'node:path';
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import { entries, entryValue, metricColumns, type DisplayName, type Entry, type MetricColumn } from './report-data.ts';
import type { ResultRow } from './results.ts';

interface Point {
  series: string;
  sparsity: number;
  ppl: number;
  decode?: number;
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

function sparsitySpec(title: string, points: Point[], dense: number | undefined): TopLevelSpec {
  const layers: TopLevelSpec[] = [{
    mark: { type: 'line', point: true },
    encoding: {
      x: { field: 'sparsity', type: 'quantitative', title: 'target sparsity', axis: { format: '.0%' }, scale: { zero: true } },
      y: { field: 'ppl', type: 'quantitative', title: 'perplexity (log scale)', scale: { type: 'log' } },
      color: { field: 'series', type: 'nominal', title: 'method' },
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
          x: { field: 'decode', type: 'quantitative', title: 'decode tokens/s', scale: { zero: false } },
          y: { field: 'ppl', type: 'quantitative', title: 'perplexity (log scale)', scale: { type: 'log' } },
          color: { field: 'series', type: 'nominal', title: 'method' },
        },
      },
      {
        mark: { type: 'text', dx: 6, align: 'left', fontSize: 9 },
        encoding: {
          x: { field: 'decode', type: 'quantitative' },
          y: { field: 'ppl', type: 'quantitative', scale: { type: 'log' } },
          text: { field: 'sparsity', type: 'quantitative', format: '.0%' },
        },
      },
    ],
  } as TopLevelSpec;
}

/** Log axes need finite positive values; a collapsed run (ppl = inf/NaN) is left off the chart. */
const plottable = (v: number | undefined): v is number => v !== undefined && Number.isFinite(v) && v > 0;

/** Write the charts into `outDir`; returns the files written. */
export async function plotResults(rows: readonly ResultRow[], outDir: string, displayName?: DisplayName): Promise<string[]> {
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
      const points = mine.filter((e) => !e.dense).flatMap((e): Point[] => {
        const ppl = entryValue(e, col);
        return plottable(ppl) ? [{ series: seriesOf(e), sparsity: e.sparsity, ppl }] : [];
      });
      if (points.length > 0) await write(`sparsity-ppl.${stem}.svg`, sparsitySpec(title, points, denseVal));

      const speedPoints = mine.flatMap((e): Point[] => {
        const ppl = entryValue(e, col);
        const rate = decode.map((d: MetricColumn) => entryValue(e, d)).find((v) => v !== undefined);
        return plottable(ppl) && rate !== undefined && Number.isFinite(rate) ? [{ series: e.dense ? 'Dense' : seriesOf(e), sparsity: e.sparsity, ppl, decode: rate }] : [];
      });
      if (speedPoints.length > 0) await write(`speed-quality.${stem}.svg`, speedSpec(title, speedPoints));
    }
  }
  return written;
}
