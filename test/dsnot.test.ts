/**
 * DSnoT: hand-traced swaps (unstructured and 2:4), the same-sign check, exact sparsity / N:M
 * pattern and a non-increasing reconstruction error on a random problem, skip_layer, and the
 * CLI end to end on stories260K.
 */
import { gaussian } from '../src/util/random.ts';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { dsnotNM, dsnotUnstructured, type DsnotInputs, type DsnotParams } from '../methods/dsnot/refine.ts';
import dsnot from '../methods/dsnot/index.ts';
import { wandaScores } from '../src/prune/scores.ts';
import { maskNM, maskPerRow } from '../src/prune/masks.ts';
import { parseMethodOptions } from '../src/prune/registry.ts';
import { LLAMA } from '../src/model/family.ts';
import type { ModelView } from '../src/model/view.ts';
import type { OperatorView, TapStats } from '../src/prune/method.ts';
import { HAVE_SHARED, NO_SHARED_REASON, STORIES_BIN, tmpDir, shared } from './support.ts';
import { runCli } from './cli-support.ts';

const DEFAULTS: DsnotParams = { maxCycleTime: 50, updateThreshold: 0.1, powOfVarRegrowing: 1, sameSign: false };

/** One row, μ = var = 1 and unit column norms, so D = W and the Wanda score = |W|. */
function unitRow(w: number[]): DsnotInputs {
  const cols = w.length;
  const weight = Float32Array.from(w);
  const ones = new Float64Array(cols).fill(1);
  const wanda = wandaScores(weight, 1, cols, ones);
  return { weight, rows: 1, cols, mu: ones, variance: ones, wanda, initial: wanda };
}

function pruned(mask: Uint8Array): number[] {
  return [...mask.keys()].filter((j) => mask[j] === 0);
}

test('unstructured, traced by hand: one swap brings e from 0.5 to 0, then the row stops', () => {
  // Wanda prunes the four smallest |W|: columns 0–3, e = 0.1 + 0.15 + 0.2 + 0.05 = 0.5 > 0.
  // Regrow (e > 0): the largest D among pruned = column 2 (0.2). Prune list: kept by ascending
  // |W| = [4 (−0.3), 7 (−0.6), 5 (0.9), 6 (1.0)] → negatives in order, positives reversed =
  // [4, 7, 6, 5]; e ≥ 0 takes its start: column 4 (−0.3). e → 0.5 − 0.3 − 0.2 = 0 ≤ 0.1: stop.
  const w = [0.1, 0.15, 0.2, 0.05, -0.3, 0.9, 1.0, -0.6];
  const r = dsnotUnstructured(unitRow(w), 0.5, DEFAULTS);
  assert.deepEqual(pruned(r.mask), [0, 1, 3, 4]);
  assert.equal(r.swaps, 1);
  assert.equal(r.cycles, 2);
  assert.ok(Math.abs(r.absErrorBefore - 0.5) < 1e-6 && r.absErrorAfter < 1e-6);
  // Mirror image (e = −0.5): regrow the most negative (column 2), prune from the end of
  // [5, 6, 7, 4] = column 4 (+0.3). Same mask.
  const m = dsnotUnstructured(unitRow(w.map((v) => -v)), 0.5, DEFAULTS);
  assert.deepEqual(pruned(m.mask), [0, 1, 3, 4]);
});

test('unstructured: without the same-sign check a swap may overshoot; with it the row stops', () => {
  // e = 0.1 − 0.2 + 0.3 − 0.35 = −0.15. Regrow the most negative (column 3, −0.35); prune list
  // [5, 7, 4, 6] (negatives by |W|, positives reversed), e < 0 takes its end: column 6 (0.8).
  // e → −0.15 + 0.8 + 0.35 = 1.0: accepted by default (|−0.15| > 0.1), the sign flips.
  const w = [0.1, -0.2, 0.3, -0.35, 1.0, -0.9, 0.8, 2.0];
  const once = dsnotUnstructured(unitRow(w), 0.5, { ...DEFAULTS, maxCycleTime: 1 });
  assert.deepEqual(pruned(once.mask), [0, 1, 2, 6]);
  assert.ok(Math.abs(once.absErrorAfter - 1.0) < 1e-6);
  const strict = dsnotUnstructured(unitRow(w), 0.5, { ...DEFAULTS, sameSign: true });
  assert.deepEqual(pruned(strict.mask), [0, 1, 2, 3]);
  assert.equal(strict.swaps, 0);
  // Whatever happens, every row keeps exactly 4 pruned entries.
  assert.equal(pruned(dsnotUnstructured(unitRow(w), 0.5, DEFAULTS).mask).length, 4);
});

test('2:4, traced by hand: the swap stays inside the regrown entry\'s block', () => {
  // Blocks [0.1, 0.2, 1.0, −0.25] and [0.15, 0.05, 0.9, 0.8]: Wanda 2:4 prunes {0, 1} and {4, 5};
  // e = 0.5. Regrow the largest D among pruned: column 1 (0.2), block 0; its kept entry with the
  // lowest metric is column 3 (|−0.25|). e → 0.5 − 0.25 − 0.2 = 0.05, same sign: accepted; then
  // |e| ≤ 0.1 stops the row.
  const r = dsnotNM(unitRow([0.1, 0.2, 1.0, -0.25, 0.15, 0.05, 0.9, 0.8]), 2, 4, DEFAULTS);
  assert.deepEqual(pruned(r.mask), [0, 3, 4, 5]);
  assert.equal(r.swaps, 1);
  // With column 3 = −0.5 the swap would flip the sign (0.5 − 0.5 − 0.2 < 0): rejected.
  const s = dsnotNM(unitRow([0.1, 0.2, 1.0, -0.5, 0.15, 0.05, 0.9, 0.8]), 2, 4, DEFAULTS);
  assert.deepEqual(pruned(s.mask), [0, 1, 4, 5]);
});

// ---------------------------------------------------------------------------------------------
// Random problem with non-zero input means (what DSnoT's error term is about)

const rng = gaussian;

const SEQ = 16;
const T = 32;
const N = SEQ * T;
const ROWS = 64;
const COLS = 256;

/**
 * x_j = (m_j + 0.5·z)·s_j with m_j ~ N(0,1): the mean part of the output error is about half of
 * it, the regime DSnoT targets (it ranks by the mean error only; with unit noise at the default
 * threshold its 50 swaps per row trade ~all of the mean part for a slightly larger variance
 * part, e.g. 2298 → 2311 at seed 1 — recorded in the README).
 */
function problem(seed: number) {
  const g = rng(seed);
  const means = Float64Array.from({ length: COLS }, () => g());
  const scale = Float64Array.from({ length: COLS }, (_, j) => (j % 29 === 3 ? 5 : 1));
  const X = new Float64Array(N * COLS);
  for (let t = 0; t < N; t++) for (let j = 0; j < COLS; j++) X[t * COLS + j] = (means[j]! + 0.5 * g()) * scale[j]!;
  const weight = Float32Array.from({ length: ROWS * COLS }, () => 0.05 * g());
  const colSum = new Float64Array(COLS);
  const colSqSum = new Float64Array(COLS);
  for (let t = 0; t < N; t++) {
    for (let j = 0; j < COLS; j++) {
      const v = X[t * COLS + j]!;
      colSum[j]! += v;
      colSqSum[j]! += v * v;
    }
  }
  const mu = colSum.map((s) => s / SEQ); // per-sequence sum, averaged over sequences
  const variance = colSum.map((s, j) => colSqSum[j]! / N - (s / N) ** 2);
  const wanda = wandaScores(weight, ROWS, COLS, colSqSum);
  const inp: DsnotInputs = { weight, rows: ROWS, cols: COLS, mu, variance, wanda, initial: wanda };
  return { X, inp };
}

/** Per-row ‖(W − Ŵ)X‖² with Ŵ = W masked. */
function rowErrors(X: Float64Array, W: Float32Array, mask: Uint8Array): Float64Array {
  const out = new Float64Array(ROWS);
  for (let r = 0; r < ROWS; r++) {
    for (let t = 0; t < N; t++) {
      let s = 0;
      for (let j = 0; j < COLS; j++) if (!mask[r * COLS + j]) s += W[r * COLS + j]! * X[t * COLS + j]!;
      out[r]! += s * s;
    }
  }
  return out;
}

const sum = (a: Float64Array) => a.reduce((x, y) => x + y, 0);

test('random problem, 50 %: exact per-row sparsity, swaps happen, output error not above Wanda\'s', () => {
  const { X, inp } = problem(1);
  const base = maskPerRow(inp.wanda, ROWS, COLS, 0.5);
  const r = dsnotUnstructured(inp, 0.5, DEFAULTS);
  for (let row = 0; row < ROWS; row++) {
    let z = 0;
    for (let j = 0; j < COLS; j++) z += 1 - r.mask[row * COLS + j]!;
    assert.equal(z, COLS / 2, `row ${row}`);
  }
  assert.ok(r.swaps > ROWS, `only ${r.swaps} swaps`);
  assert.ok(r.absErrorAfter < 0.5 * r.absErrorBefore, `Σ|e| ${r.absErrorBefore} → ${r.absErrorAfter}`);
  const before = rowErrors(X, inp.weight, base);
  const after = rowErrors(X, inp.weight, r.mask);
  let better = 0;
  for (let row = 0; row < ROWS; row++) if (after[row]! <= before[row]!) better++;
  assert.ok(sum(after) <= sum(before), `aggregate ‖ΔWX‖² ${sum(before)} → ${sum(after)}`);
  assert.ok(better > ROWS / 2, `only ${better}/${ROWS} rows not worse`);
});

test('random problem, 2:4: valid pattern, output error not above Wanda 2:4', () => {
  const { X, inp } = problem(2);
  const base = maskNM(inp.wanda, ROWS, COLS, 2, 4);
  const r = dsnotNM(inp, 2, 4, DEFAULTS);
  for (let b = 0; b < ROWS * COLS; b += 4) {
    assert.equal(4 - (r.mask[b]! + r.mask[b + 1]! + r.mask[b + 2]! + r.mask[b + 3]!), 2, `block at ${b}`);
  }
  assert.ok(r.swaps > 0);
  const before = sum(rowErrors(X, inp.weight, base));
  const after = sum(rowErrors(X, inp.weight, r.mask));
  assert.ok(after <= before, `aggregate ‖ΔWX‖² ${before} → ${after}`);
});

test('plug-in: defaults, skip_layer mlp keeps Wanda\'s mask for MLP operators only', async () => {
  assert.deepEqual(parseMethodOptions(dsnot, {}), {
    initial_method: 'wanda', max_cycle_time: 50, update_threshold: 0.1, pow_of_var_regrowing: 1,
    without_same_sign: true, skip_layer: 'mlp', skip_sub_layer: 'no_skip', error_seqlen: 2048,
  });
  assert.throws(() => parseMethodOptions(dsnot, { max_cycles: 3 }));
  if (dsnot.kind !== 'layerwise') throw new Error('dsnot must be layerwise');
  const { inp } = problem(3);
  const colSum = inp.mu.map((m) => m * SEQ); // Σ over tokens
  const colSqSum = new Float64Array(COLS);
  for (let j = 0; j < COLS; j++) colSqSum[j] = (inp.variance[j]! + (colSum[j]! / N) ** 2) * N;
  const st: TapStats = { tokens: N, inDim: COLS, colSum, colSqSum };
  const ops: OperatorView[] = [
    { role: 'q', weight: inp.weight, rows: ROWS, cols: COLS, input: 'attnIn' },
    { role: 'gate', weight: inp.weight, rows: ROWS, cols: COLS, input: 'mlpIn' },
  ];
  const model = { spec: LLAMA } as unknown as ModelView;
  const options = parseMethodOptions(dsnot, { error_seqlen: T });
  const out = await dsnot.pruneOperators({
    model, options, target: { sparsity: 0.5, pattern: { kind: 'unstructured' } }, log: () => {}, layer: 0, operators: ops,
    stats: { attnIn: st, mlpIn: st },
  });
  const wandaMask = maskPerRow(wandaScores(inp.weight, ROWS, COLS, colSqSum), ROWS, COLS, 0.5);
  assert.deepEqual(out[1]!.mask, wandaMask, 'gate (mlp) keeps the initial mask');
  assert.notDeepEqual(out[0]!.mask, wandaMask, 'q is refined');
  // μ = error_seqlen · mean = the per-sequence sum here, so q's mask equals the pure function's.
  assert.deepEqual(out[0]!.mask, dsnotUnstructured(inp, 0.5, DEFAULTS).mask);
});

const skip = HAVE_SHARED ? false : NO_SHARED_REASON;

test('CLI: stories260K at 50 % and 2:4, finite perplexity, exact sparsity', { skip }, () => {
  const dir = tmpDir('dsnot');
  const text = shared('text/tinystories-sample.txt');
  try {
    for (const [name, pattern] of [['u50', 'unstructured'], ['nm24', '2:4']]) {
      const out = path.join(dir, name!);
      const p = runCli(['prune', '--model', STORIES_BIN, '--method', 'dsnot', '--sparsity', '0.5', '--pattern', pattern!,
        '--calib', text, '--nsamples', '16', '--seqlen', '128', '--out', out]);
      assert.equal(p.status, 0, p.stderr);
      const zeros = (p.json!.zeros as { overall: { zeros: number; total: number } }).overall;
      assert.equal(zeros.zeros, zeros.total / 2, `${pattern}: zeros`);
      const e = runCli(['eval', 'ppl', '--model', out, '--text', text, '--seqlen', '256', '--max-windows', '8']);
      assert.equal(e.status, 0, e.stderr);
      assert.ok(Number.isFinite(Number(e.json!.ppl)), `${pattern}: ppl ${String(e.json!.ppl)}`);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
