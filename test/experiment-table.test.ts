/**
 * Tables and plots from hand-made result rows; expected numbers are computed by hand in the
 * comments (accuracies are stored as fractions and shown as percentages).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { renderTable } from '../src/experiment/table.ts';
import { plotResults } from '../src/experiment/plot.ts';
import type { ResultRow } from '../src/experiment/results.ts';
import { registry, workspace } from './experiment-fixtures.ts';

const { displayName } = registry;

function pplProtocol(seqlen: number, tokenizer: string): string {
  return JSON.stringify({ bos: 'once-at-text-start', maxWindows: null, seqlen, stride: seqlen, text: '../data/wt2.txt', tokenizer });
}

interface Spec {
  model?: string;
  method: string;
  sparsity: number;
  pattern?: string;
  seed?: number;
  ppl: number | 'Infinity';
  seqlen?: number;
  /** [acc, acc_norm] per task */
  piqa: [number, number];
  boolq: [number, number];
  wino: [number, number];
  decode?: number;
}

let counter = 0;
function row(s: Spec): ResultRow {
  const model = s.model ?? 'tiny';
  const zs = (task: string, [acc, accNorm]: [number, number]) => ({
    [`acc:${task}`]: String(acc), [`acc_norm:${task}`]: String(accNorm), [`n:${task}`]: '100',
    [`zs:${task}:protocol`]: JSON.stringify({ limit: null, num_fewshot: 0, task, template: `prunelab/${task}@v1`, file: `/data/${task}.jsonl` }),
  });
  return {
    run_id: `${model}.${s.method}.${counter++}`,
    model,
    method: s.method,
    options: '{}',
    pattern: s.method === 'dense' ? '' : (s.pattern ?? 'unstructured'),
    target_sparsity: String(s.sparsity),
    measured_sparsity: String(s.sparsity),
    recovery_schedule: 'none',
    seed: String(s.seed ?? 0),
    'ppl:wt2': String(s.ppl),
    'ppl:wt2:protocol': pplProtocol(s.seqlen ?? 128, `tok-${model}`),
    ...zs('piqa', s.piqa),
    ...zs('boolq', s.boolq),
    ...zs('winogrande', s.wino),
    'speed:prefill_tok_s': s.decode === undefined ? '' : String(s.decode * 10),
    'speed:decode_tok_s': s.decode === undefined ? '' : String(s.decode),
    'speed:protocol': JSON.stringify({ backend: 'wasm', newTokens: 8, promptTokens: 8 }),
  };
}

// Deliberately not in table order: the dense row is in the middle.
const ROWS: ResultRow[] = [
  row({ method: 'magnitude', sparsity: 0.5, ppl: 20, piqa: [0.5, 0.5], boolq: [0.6, 0.3], wino: [0.5, 0.5], decode: 100 }),
  row({ method: 'wanda', sparsity: 0.5, seed: 0, ppl: 12, piqa: [0.57, 0.58], boolq: [0.66, 0.4], wino: [0.53, 0.5], decode: 100 }),
  row({ method: 'wanda', sparsity: 0.5, pattern: '2:4', ppl: 30, piqa: [0.52, 0.53], boolq: [0.62, 0.3], wino: [0.5, 0.5] }),
  row({ method: 'dense', sparsity: 0, ppl: 10, piqa: [0.6, 0.62], boolq: [0.7, 0.5], wino: [0.55, 0.56], decode: 100 }),
  row({ method: 'wanda', sparsity: 0.3, ppl: 11, piqa: [0.59, 0.61], boolq: [0.69, 0.4], wino: [0.54, 0.5], decode: 100 }),
  row({ method: 'wanda', sparsity: 0.5, seed: 1, ppl: 14, piqa: [0.55, 0.56], boolq: [0.64, 0.4], wino: [0.51, 0.5], decode: 100 }),
];

describe('tables', () => {
  it('paper layout, Markdown: dense first, groups by sparsity, seeds averaged, Average over zero-shot columns', () => {
    // Default metrics: PIQA acc_norm, BoolQ acc, WinoGrande acc.
    // Dense avg (62 + 70 + 55) / 3 = 62.33. Wanda 50% = mean of seeds: ppl (12+14)/2 = 13,
    // PIQA (58+56)/2 = 57, BoolQ (66+64)/2 = 65, Wino (53+51)/2 = 52, avg (57+65+52)/3 = 58.
    // Wanda 30%: (61+69+54)/3 = 61.33. Magnitude: (50+60+50)/3 = 53.33. Wanda 2:4: (53+62+50)/3 = 55.
    assert.equal(renderTable(ROWS, { format: 'md', layout: 'paper', displayName }), [
      '| Sparsity | Method | wt2 (ppl) | PIQA (acc_norm) | BoolQ (acc) | WinoGrande (acc) | Average |',
      '|---|---|---:|---:|---:|---:|---:|',
      '| 0% | Dense | 10.00 | 62.00 | 70.00 | 55.00 | 62.33 |',
      '| 30% | Wanda | 11.00 | 61.00 | 69.00 | 54.00 | 61.33 |',
      '| 50% | Magnitude | 20.00 | 50.00 | 60.00 | 50.00 | 53.33 |',
      '| 50% | Wanda | 13.00 | 57.00 | 65.00 | 52.00 | 58.00 |',
      '| 2:4 | Wanda | 30.00 | 53.00 | 62.00 | 50.00 | 55.00 |',
      '',
    ].join('\n'));
  });

  it('paper layout, LaTeX: booktabs, escaped, a rule between the dense row and each sparsity group', () => {
    assert.equal(renderTable(ROWS, { format: 'latex', layout: 'paper', displayName }), [
      '\\begin{tabular}{llrrrrr}',
      '\\toprule',
      'Sparsity & Method & wt2 (ppl) & PIQA (acc\\_norm) & BoolQ (acc) & WinoGrande (acc) & Average \\\\',
      '\\midrule',
      '0\\% & Dense & 10.00 & 62.00 & 70.00 & 55.00 & 62.33 \\\\',
      '\\midrule',
      '30\\% & Wanda & 11.00 & 61.00 & 69.00 & 54.00 & 61.33 \\\\',
      '\\midrule',
      '50\\% & Magnitude & 20.00 & 50.00 & 60.00 & 50.00 & 53.33 \\\\',
      ' & Wanda & 13.00 & 57.00 & 65.00 & 52.00 & 58.00 \\\\',
      '\\midrule',
      '2:4 & Wanda & 30.00 & 53.00 & 62.00 & 50.00 & 55.00 \\\\',
      '\\bottomrule',
      '\\end{tabular}',
      '',
    ].join('\n'));
  });

  it('the acc preset switches every task to acc (and the average with it)', () => {
    const md = renderTable(ROWS, { format: 'md', layout: 'paper', metrics: 'acc', displayName });
    assert.match(md, /\| PIQA \(acc\) \| BoolQ \(acc\) \| WinoGrande \(acc\) \| Average \|/);
    // Dense: (60 + 70 + 55) / 3 = 61.67.
    assert.match(md, /\| 0% \| Dense \| 10\.00 \| 60\.00 \| 70\.00 \| 55\.00 \| 61\.67 \|/);
  });

  it('rows under different protocols never share a column; model-specific fields (tokenizer) do not split columns', () => {
    const rows = [
      ...ROWS,
      row({ model: 'small', method: 'dense', sparsity: 0, ppl: 8, seqlen: 256, piqa: [0.7, 0.7], boolq: [0.8, 0.8], wino: [0.6, 0.6] }),
      row({ model: 'small', method: 'wanda', sparsity: 0.5, ppl: 9, seqlen: 128, piqa: [0.65, 0.66], boolq: [0.75, 0.7], wino: [0.58, 0.5] }),
    ];
    const md = renderTable(rows, { format: 'md', layout: 'paper', displayName });
    const lines = md.trim().split('\n');
    assert.equal(lines[0], '| Model | Sparsity | Method | wt2 (ppl) [seqlen=128, stride=128] | wt2 (ppl) [seqlen=256, stride=256] | PIQA (acc_norm) | BoolQ (acc) | WinoGrande (acc) | Average |');
    assert.equal(lines[2], '| tiny | 0% | Dense | 10.00 | — | 62.00 | 70.00 | 55.00 | 62.33 |');
    // small's dense (seqlen 256) and small's Wanda (seqlen 128, another tokenizer than tiny's) each in their own protocol's column.
    assert.ok(lines.includes('| small | 0% | Dense | — | 8.00 | 70.00 | 80.00 | 60.00 | 70.00 |'), md);
    assert.ok(lines.includes('| small | 50% | Wanda | 9.00 | — | 66.00 | 75.00 | 58.00 | 66.33 |'), md);
  });

  it('wide layout: one line per run, dense first, both accuracies and speed', () => {
    const md = renderTable(ROWS, { format: 'md', layout: 'wide', displayName });
    const lines = md.trim().split('\n');
    assert.equal(lines.length, ROWS.length + 2);
    assert.match(lines[0], /\| PIQA \(acc\) \| PIQA \(acc_norm\) \|.*\| Average \| Prefill tok\/s \| Decode tok\/s \|$/);
    assert.match(lines[2], /^\| tiny \| Dense \|/);
    // Dense average uses the default map: 62.33; speed 1000.0 / 100.0.
    assert.match(lines[2], /\| 62\.33 \| 1000\.0 \| 100\.0 \|$/);
    assert.match(renderTable(ROWS, { format: 'latex', layout: 'wide' }), /^\\begin\{tabular\}/);
  });
});

describe('plots', () => {
  it('writes sparsity–perplexity and speed–quality SVGs', async () => {
    const dir = path.join(workspace('plot'), 'plots');
    const rows = [...ROWS, row({ method: 'magnitude', sparsity: 0.9, ppl: 'Infinity', piqa: [0.25, 0.25], boolq: [0.5, 0.5], wino: [0.5, 0.5] })];
    const files = await plotResults(rows, dir, displayName);
    assert.deepEqual(files.map((f) => path.basename(f)).sort(), ['sparsity-ppl.tiny.wt2.svg', 'speed-quality.tiny.wt2.svg']);
    for (const f of files) {
      const svg = fs.readFileSync(f, 'utf8');
      assert.ok(svg.includes('<svg'), f);
      assert.ok(svg.includes('Wanda'), `${f} names the methods in its legend`);
    }
  });
});
