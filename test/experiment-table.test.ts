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
  /** Structured rows: the method's scope and measured fractions; default unstructured-like values. */
  scope?: string;
  removedDecoder?: number;
  recovery?: string;
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
    kind: s.method === 'dense' ? 'dense' : s.pattern === 'structured' ? 'structured' : s.pattern && s.pattern !== 'unstructured' ? 'n:m' : 'unstructured',
    pattern: s.method === 'dense' ? '' : (s.pattern ?? 'unstructured'),
    target_sparsity: String(s.sparsity),
    // Unstructured: zeros are 90% of the decoder-layer parameters of this model (norms and biases are the rest).
    removed_decoder: String(s.removedDecoder ?? 0.9 * s.sparsity),
    removed_all: String(0.6 * (s.removedDecoder ?? 0.9 * s.sparsity)),
    scope: s.method === 'dense' ? '' : (s.scope ?? 'decoder-linears'),
    removed_scope: String(s.sparsity),
    recovery_schedule: s.recovery ?? 'none',
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
  it('paper layout, Markdown: dense first, groups by measured decoder-layer fraction, target beside, seeds averaged, Average over zero-shot columns', () => {
    // Default metrics: PIQA acc_norm, BoolQ acc, WinoGrande acc.
    // Dense avg (62 + 70 + 55) / 3 = 62.33. Wanda 50% = mean of seeds: ppl (12+14)/2 = 13,
    // PIQA (58+56)/2 = 57, BoolQ (66+64)/2 = 65, Wino (53+51)/2 = 52, avg (57+65+52)/3 = 58.
    // Wanda 30%: (61+69+54)/3 = 61.33. Magnitude: (50+60+50)/3 = 53.33. Wanda 2:4: (53+62+50)/3 = 55.
    assert.equal(renderTable(ROWS, { format: 'md', layout: 'paper', displayName }), [
      '| Removed (decoder layers) | Method | Target | wt2 (ppl) | PIQA (acc_norm) | BoolQ (acc) | WinoGrande (acc) | Average |',
      '|---|---|---|---:|---:|---:|---:|---:|',
      '| 0% | Dense |  | 10.00 | 62.00 | 70.00 | 55.00 | 62.33 |',
      '| 27% | Wanda | 30% decoder linears | 11.00 | 61.00 | 69.00 | 54.00 | 61.33 |',
      '| 45% | Magnitude | 50% decoder linears | 20.00 | 50.00 | 60.00 | 50.00 | 53.33 |',
      '| 45% | Wanda | 50% decoder linears | 13.00 | 57.00 | 65.00 | 52.00 | 58.00 |',
      '| 2:4 | Wanda | 2:4 | 30.00 | 53.00 | 62.00 | 50.00 | 55.00 |',
      '',
    ].join('\n'));
  });

  it('paper layout, LaTeX: booktabs, escaped, a rule between the dense row and each sparsity group', () => {
    assert.equal(renderTable(ROWS, { format: 'latex', layout: 'paper', displayName }), [
      '\\begin{tabular}{lllrrrrr}',
      '\\toprule',
      'Removed (decoder layers) & Method & Target & wt2 (ppl) & PIQA (acc\\_norm) & BoolQ (acc) & WinoGrande (acc) & Average \\\\',
      '\\midrule',
      '0\\% & Dense &  & 10.00 & 62.00 & 70.00 & 55.00 & 62.33 \\\\',
      '\\midrule',
      '27\\% & Wanda & 30\\% decoder linears & 11.00 & 61.00 & 69.00 & 54.00 & 61.33 \\\\',
      '\\midrule',
      '45\\% & Magnitude & 50\\% decoder linears & 20.00 & 50.00 & 60.00 & 50.00 & 53.33 \\\\',
      ' & Wanda & 50\\% decoder linears & 13.00 & 57.00 & 65.00 & 52.00 & 58.00 \\\\',
      '\\midrule',
      '2:4 & Wanda & 2:4 & 30.00 & 53.00 & 62.00 & 50.00 & 55.00 \\\\',
      '\\bottomrule',
      '\\end{tabular}',
      '',
    ].join('\n'));
  });

  it('the acc preset switches every task to acc (and the average with it)', () => {
    const md = renderTable(ROWS, { format: 'md', layout: 'paper', metrics: 'acc', displayName });
    assert.match(md, /\| PIQA \(acc\) \| BoolQ \(acc\) \| WinoGrande \(acc\) \| Average \|/);
    // Dense: (60 + 70 + 55) / 3 = 61.67.
    assert.match(md, /\| 0% \| Dense \|  \| 10\.00 \| 60\.00 \| 70\.00 \| 55\.00 \| 61\.67 \|/);
  });

  it('structured results: different sparsity meanings never share a group; close measured fractions do, labelled with their range; recovery right after its base', () => {
    const z: Pick<Spec, 'piqa' | 'boolq' | 'wino'> = { piqa: [0.5, 0.5], boolq: [0.5, 0.5], wino: [0.5, 0.5] };
    const rows = [
      row({ method: 'dense', sparsity: 0, ppl: 10, ...z }),
      // CFSP at 20% of FFN channels and SAAP at 20% of all parameters remove very different shares of the decoder layers.
      row({ method: 'cfsp', sparsity: 0.2, pattern: 'structured', scope: 'ffn-channels', removedDecoder: 0.134, ppl: 12, recovery: 'cfsp', ...z }),
      row({ method: 'saap', sparsity: 0.2, pattern: 'structured', scope: 'all-parameters', removedDecoder: 0.31, ppl: 15, ...z }),
      row({ method: 'cfsp', sparsity: 0.2, pattern: 'structured', scope: 'ffn-channels', removedDecoder: 0.134, ppl: 13, ...z }),
      row({ method: 'wanda-sp', sparsity: 0.2, pattern: 'structured', scope: 'ffn-channels', removedDecoder: 0.136, ppl: 14, ...z }),
      row({ method: 'wanda', sparsity: 0.5, ppl: 11, ...z }),
    ];
    const lines = renderTable(rows, { format: 'md', layout: 'paper', displayName }).trim().split('\n').slice(2).map((l) => l.split(' | ').slice(0, 3).join(' | '));
    assert.deepEqual(lines, [
      '| 0% | Dense | ',
      '| 45% | Wanda | 50% decoder linears',
      '| structured 13.4%–13.6% | CFSP | 20% FFN channels',
      '| structured 13.4%–13.6% | CFSP + LoRA (cfsp) | 20% FFN channels',
      '| structured 13.4%–13.6% | Wanda-SP | 20% FFN channels',
      '| structured 31% | SAAP | 20% all parameters',
    ]);
    // By target: the two 20% targets stay apart because their scopes differ.
    const byTarget = renderTable(rows, { format: 'md', layout: 'paper', displayName, axis: 'target' });
    assert.match(byTarget, /\| structured 20% FFN channels \| CFSP \|/);
    assert.match(byTarget, /\| structured 20% all parameters \| SAAP \|/);
  });

  it('rows under different protocols never share a column; model-specific fields (tokenizer) do not split columns', () => {
    const rows = [
      ...ROWS,
      row({ model: 'small', method: 'dense', sparsity: 0, ppl: 8, seqlen: 256, piqa: [0.7, 0.7], boolq: [0.8, 0.8], wino: [0.6, 0.6] }),
      row({ model: 'small', method: 'wanda', sparsity: 0.5, ppl: 9, seqlen: 128, piqa: [0.65, 0.66], boolq: [0.75, 0.7], wino: [0.58, 0.5] }),
    ];
    const md = renderTable(rows, { format: 'md', layout: 'paper', displayName });
    const lines = md.trim().split('\n');
    assert.equal(lines[0], '| Model | Removed (decoder layers) | Method | Target | wt2 (ppl) [seqlen=128, stride=128] | wt2 (ppl) [seqlen=256, stride=256] | PIQA (acc_norm) | BoolQ (acc) | WinoGrande (acc) | Average |');
    assert.equal(lines[2], '| tiny | 0% | Dense |  | 10.00 | — | 62.00 | 70.00 | 55.00 | 62.33 |');
    // small's dense (seqlen 256) and small's Wanda (seqlen 128, another tokenizer than tiny's) each in their own protocol's column.
    assert.ok(lines.includes('| small | 0% | Dense |  | — | 8.00 | 70.00 | 80.00 | 60.00 | 70.00 |'), md);
    assert.ok(lines.includes('| small | 45% | Wanda | 50% decoder linears | 9.00 | — | 66.00 | 75.00 | 58.00 | 66.33 |'), md);
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
  it('writes sparsity–perplexity SVGs per kind, and speed–quality for structured models only', async () => {
    const dir = path.join(workspace('plot'), 'plots');
    const rows = [...ROWS, row({ method: 'magnitude', sparsity: 0.9, ppl: 'Infinity', piqa: [0.25, 0.25], boolq: [0.5, 0.5], wino: [0.5, 0.5] })];
    const files = await plotResults(rows, dir, displayName);
    // Unstructured rows have speeds too, but zeros do not change speed: no speed chart.
    assert.deepEqual(files.map((f) => path.basename(f)).sort(), ['sparsity-ppl.nm.tiny.wt2.svg', 'sparsity-ppl.unstructured.tiny.wt2.svg']);
    const structured = row({ method: 'cfsp', sparsity: 0.2, pattern: 'structured', scope: 'ffn-channels', removedDecoder: 0.134, ppl: 12, decode: 125, piqa: [0.5, 0.5], boolq: [0.5, 0.5], wino: [0.5, 0.5] });
    const more = await plotResults([...rows, structured], path.join(dir, 'more'), displayName);
    assert.ok(more.some((f) => path.basename(f) === 'speed-quality.structured.tiny.wt2.svg'), more.join(', '));
    assert.ok(fs.readFileSync(more.find((f) => f.includes('speed-quality'))!, 'utf8').includes('relative to dense'));
    for (const f of files) {
      const svg = fs.readFileSync(f, 'utf8');
      assert.ok(svg.includes('<svg'), f);
      assert.ok(svg.includes('Wanda'), `${f} names the methods in its legend`);
    }
  });
});
