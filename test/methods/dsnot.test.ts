/**
 * DSnoT: hand-traced swaps (unstructured and 2:4), the same-sign check and the objective guard,
 * exact sparsity / N:M pattern and a reconstruction error never above the Wanda start (every row
 * of random problems, every operator of stories260K on real activations), skip_layer, and the CLI
 * end to end on stories260K with a perplexity not above Wanda's.
 */
import { gaussian } from '../../src/util/random.ts';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { dsnotNM, dsnotUnstructured, type DsnotInputs, type DsnotParams } from '../../methods/dsnot/refine.ts';
import dsnot from '../../methods/dsnot/index.ts';
import { wandaScores } from '../../src/prune/scores.ts';
import { maskNM, maskPerRow } from '../../src/prune/masks.ts';
import { parseMethodOptions } from '../../src/prune/registry.ts';
import { LLAMA } from '../../src/model/family.ts';
import { modelView, type ModelView } from '../../src/model/view.ts';
import type { OperatorView, PruneTarget, TapStats } from '../../src/prune/method.ts';
import { loadModel } from '../../src/io/load-model.ts';
import { loadTokenizer } from '../../src/tokenizer/load.ts';
import { calibrationFromText } from '../../src/prune/calibration.ts';
import { collectLayerStats, embedWindows, runLayer, type HiddenStates } from '../../src/prune/stats.ts';
import { readLinear } from '../../src/prune/linear-io.ts';
import { backendLinAlg } from '../../src/linalg/backend.ts';
import { HAVE_SHARED, NO_SHARED_REASON, STORIES_BIN, STORIES_TOK, setupBackend, tmpDir, shared } from '../support.ts';
import { runCli } from '../cli-support.ts';
import { applyMask, reconstructionError } from '../reconstruction.ts';

const DEFAULTS: DsnotParams = { maxCycleTime: 50, updateThreshold: 0.1, powOfVarRegrowing: 1, sameSign: false };

/**
 * One row whose input has mean 1 and variance 1 in every column, independent columns, one token
 * per "sequence": D = W, the Wanda score = |W| (unit norms), and G = E[xxᵀ] = 11ᵀ + I, so the
 * exact objective of a mask is e² + Σ_{pruned} W_j² (mean part + variance part).
 */
function unitRow(w: number[]): DsnotInputs {
  const cols = w.length;
  const weight = Float32Array.from(w);
  const ones = new Float64Array(cols).fill(1);
  const wanda = wandaScores(weight, 1, cols, ones);
  const gram = Float64Array.from({ length: cols * cols }, (_, i) => (i % (cols + 1) === 0 ? 2 : 1));
  return { weight, rows: 1, cols, mu: ones, variance: ones, wanda, initial: wanda, gram };
}

function pruned(mask: Uint8Array): number[] {
  return [...mask.keys()].filter((j) => mask[j] === 0);
}

test('unstructured, traced by hand: one swap brings e from 0.5 to 0, then the row stops', () => {
  // Wanda prunes the four smallest |W|: columns 0–3, e = 0.1 + 0.15 + 0.2 + 0.05 = 0.5 > 0.
  // Regrow (e > 0): the largest D among pruned = column 2 (0.2). Prune list: kept by ascending
  // |W| = [4 (−0.3), 7 (−0.6), 5 (0.9), 6 (1.0)] → negatives in order, positives reversed =
  // [4, 7, 6, 5]; e ≥ 0 takes its start: column 4 (−0.3). e → 0.5 − 0.3 − 0.2 = 0; the objective
  // e² + Σδ² goes from 0.25 + 0.075 to 0 + 0.125 (change −0.2). Then |e| ≤ 0.1: stop.
  const w = [0.1, 0.15, 0.2, 0.05, -0.3, 0.9, 1.0, -0.6];
  const r = dsnotUnstructured(unitRow(w), 0.5, DEFAULTS);
  assert.deepEqual(pruned(r.mask), [0, 1, 3, 4]);
  assert.equal(r.swaps, 1);
  assert.equal(r.cycles, 2);
  assert.ok(Math.abs(r.absErrorBefore - 0.5) < 1e-6 && r.absErrorAfter < 1e-6);
  assert.ok(Math.abs(r.objectiveChange + 0.2) < 1e-6, `objective change ${r.objectiveChange}`);
  // Mirror image (e = −0.5): regrow the most negative (column 2), prune from the end of
  // [5, 6, 7, 4] = column 4 (+0.3). Same mask.
  const m = dsnotUnstructured(unitRow(w.map((v) => -v)), 0.5, DEFAULTS);
  assert.deepEqual(pruned(m.mask), [0, 1, 3, 4]);
});

test('unstructured: an overshoot that lowers the objective is kept (refused by the same-sign check); a harmful swap stops the row', () => {
  // Pruned 0–3: e = 0.2 + 0.25 + 0.3 − 0.15 = 0.6, objective 0.36 + 0.215 = 0.575. Prune list
  // [4 (−0.45), 7 (−0.8), 6 (1.0), 5 (0.9)]. Cycle 1: regrow 2 (0.3), prune 4 (−0.45):
  // e → −0.15 (the sign flips), objective 0.0225 + 0.3275 = 0.35: kept. Cycle 2 (e < 0): regrow
  // 3 (−0.15), prune the end, 5 (0.9): e → 0.9, objective 0.81 + 1.115 = 1.925 > 0.35: refused
  // by the objective, the row stops although |e| > 0.1.
  const w = [0.2, 0.25, 0.3, -0.15, -0.45, 0.9, 1.0, -0.8];
  const r = dsnotUnstructured(unitRow(w), 0.5, DEFAULTS);
  assert.deepEqual(pruned(r.mask), [0, 1, 3, 4]);
  assert.equal(r.swaps, 1);
  assert.equal(r.objectiveStops, 1);
  assert.ok(Math.abs(r.absErrorAfter - 0.15) < 1e-6);
  assert.ok(Math.abs(r.objectiveChange + 0.225) < 1e-6, `objective change ${r.objectiveChange}`);
  const strict = dsnotUnstructured(unitRow(w), 0.5, { ...DEFAULTS, sameSign: true });
  assert.deepEqual(pruned(strict.mask), [0, 1, 2, 3]);
  assert.equal(strict.swaps, 0);
});

test('unstructured: only swaps that move e towards 0 are proposed; a row without one keeps its mask', () => {
  // Pruned 0–3 all positive (e = 1.0) and every kept entry positive too: no kept entry with
  // D < 0 can be pruned to lower e, so nothing changes (the reference would walk into the
  // positives from their largest Wanda end).
  const r = dsnotUnstructured(unitRow([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]), 0.5, DEFAULTS);
  assert.deepEqual(pruned(r.mask), [0, 1, 2, 3]);
  assert.equal(r.swaps, 0);
  assert.equal(r.objectiveStops, 0);
});

test('2:4, traced by hand: the swap stays inside the regrown entry\'s block', () => {
  // Blocks [0.1, 0.2, 1.0, −0.25] and [0.15, 0.05, 0.9, 0.8]: Wanda 2:4 prunes {0, 1} and {4, 5};
  // e = 0.5. Regrow the largest D among pruned: column 1 (0.2), block 0; its kept entry with the
  // lowest metric is column 3 (|−0.25|). e → 0.5 − 0.25 − 0.2 = 0.05, same sign, objective
  // 0.325 → 0.1: accepted; then |e| ≤ 0.1 stops the row.
  const r = dsnotNM(unitRow([0.1, 0.2, 1.0, -0.25, 0.15, 0.05, 0.9, 0.8]), 2, 4, DEFAULTS);
  assert.deepEqual(pruned(r.mask), [0, 3, 4, 5]);
  assert.equal(r.swaps, 1);
  assert.ok(Math.abs(r.objectiveChange + 0.225) < 1e-6, `objective change ${r.objectiveChange}`);
  // With column 3 = −0.5 the swap would flip the sign (0.5 − 0.5 − 0.2 < 0): rejected.
  const s = dsnotNM(unitRow([0.1, 0.2, 1.0, -0.5, 0.15, 0.05, 0.9, 0.8]), 2, 4, DEFAULTS);
  assert.deepEqual(pruned(s.mask), [0, 1, 4, 5]);
});

// ---------------------------------------------------------------------------------------------
// Random problems with non-zero input means (what DSnoT's error term is about)

const rng = gaussian;

const SEQ = 16;
const T = 32;
const N = SEQ * T;
const ROWS = 64;
const COLS = 256;

/**
 * x_j = (m_j + noise·z)·s_j with m_j ~ N(0,1). With noise 0.5 the mean part of the output error
 * is about half of it, the regime DSnoT targets; with noise 1 the variance part dominates, where
 * driving e to 0 alone made the error worse (2298 → 2311 at seed 1 before the objective guard).
 */
function problem(seed: number, noise = 0.5) {
  const g = rng(seed);
  const means = Float64Array.from({ length: COLS }, () => g());
  const scale = Float64Array.from({ length: COLS }, (_, j) => (j % 29 === 3 ? 5 : 1));
  const X = new Float64Array(N * COLS);
  for (let t = 0; t < N; t++) for (let j = 0; j < COLS; j++) X[t * COLS + j] = (means[j]! + noise * g()) * scale[j]!;
  const weight = Float32Array.from({ length: ROWS * COLS }, () => 0.05 * g());
  const colSum = new Float64Array(COLS);
  const colSqSum = new Float64Array(COLS);
  const gram = new Float64Array(COLS * COLS);
  for (let t = 0; t < N; t++) {
    for (let i = 0; i < COLS; i++) {
      const v = X[t * COLS + i]!;
      colSum[i]! += v;
      colSqSum[i]! += v * v;
      for (let j = 0; j < COLS; j++) gram[i * COLS + j]! += v * X[t * COLS + j]!;
    }
  }
  const mu = colSum.map((s) => s / SEQ); // per-sequence sum, averaged over sequences
  const variance = colSum.map((s, j) => colSqSum[j]! / N - (s / N) ** 2);
  const wanda = wandaScores(weight, ROWS, COLS, colSqSum);
  const inp: DsnotInputs = { weight, rows: ROWS, cols: COLS, mu, variance, wanda, initial: wanda, gram };
  return { X, inp, colSum, colSqSum };
}

/** Per-row ‖(W − Ŵ)X‖² with Ŵ = W masked, from the explicit activations. */
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

/** Every row's error ≤ the start's, the total strictly lower, and the reported change exact. */
function checkNotWorse(X: Float64Array, W: Float32Array, start: Uint8Array, r: { mask: Uint8Array; objectiveChange: number }, what: string): void {
  const before = rowErrors(X, W, start);
  const after = rowErrors(X, W, r.mask);
  for (let row = 0; row < ROWS; row++) {
    assert.ok(after[row]! <= before[row]! * (1 + 1e-9), `${what}: row ${row} ‖ΔWX‖² ${before[row]} → ${after[row]}`);
  }
  assert.ok(sum(after) < sum(before), `${what}: ‖ΔWX‖² ${sum(before)} → ${sum(after)}`);
  const change = sum(after) - sum(before);
  assert.ok(Math.abs(r.objectiveChange - change) <= 1e-6 * sum(before), `${what}: reported change ${r.objectiveChange} vs ${change}`);
}

test('random problems, 50 %: exact per-row sparsity, swaps happen, no row\'s output error above Wanda\'s', () => {
  for (const [seed, noise] of [[1, 0.5], [1, 1], [4, 1]] as const) {
    const { X, inp } = problem(seed, noise);
    const r = dsnotUnstructured(inp, 0.5, DEFAULTS);
    for (let row = 0; row < ROWS; row++) {
      let z = 0;
      for (let j = 0; j < COLS; j++) z += 1 - r.mask[row * COLS + j]!;
      assert.equal(z, COLS / 2, `row ${row}`);
    }
    assert.ok(r.swaps > ROWS, `seed ${seed}, noise ${noise}: only ${r.swaps} swaps`);
    assert.ok(r.absErrorAfter < r.absErrorBefore, `Σ|e| ${r.absErrorBefore} → ${r.absErrorAfter}`);
    checkNotWorse(X, inp.weight, maskPerRow(inp.wanda, ROWS, COLS, 0.5), r, `seed ${seed}, noise ${noise}`);
  }
});

test('random problems, 2:4: valid pattern, no row\'s output error above Wanda 2:4', () => {
  for (const [seed, noise] of [[2, 0.5], [2, 1]] as const) {
    const { X, inp } = problem(seed, noise);
    const r = dsnotNM(inp, 2, 4, DEFAULTS);
    for (let b = 0; b < ROWS * COLS; b += 4) {
      assert.equal(4 - (r.mask[b]! + r.mask[b + 1]! + r.mask[b + 2]! + r.mask[b + 3]!), 2, `block at ${b}`);
    }
    assert.ok(r.swaps > 0);
    checkNotWorse(X, inp.weight, maskNM(inp.wanda, ROWS, COLS, 2, 4), r, `2:4 seed ${seed}, noise ${noise}`);
  }
});

test('plug-in: defaults, Gram statistics requested, skip_layer mlp keeps Wanda\'s mask for MLP operators only', async () => {
  assert.deepEqual(parseMethodOptions(dsnot, {}), {
    initial_method: 'wanda', max_cycle_time: 50, update_threshold: 0.1, pow_of_var_regrowing: 1,
    without_same_sign: true, skip_layer: 'mlp', skip_sub_layer: 'no_skip', error_seqlen: 2048,
  });
  assert.throws(() => parseMethodOptions(dsnot, { max_cycles: 3 }));
  if (dsnot.kind !== 'layerwise') throw new Error('dsnot must be layerwise');
  assert.ok(dsnot.stats(parseMethodOptions(dsnot, {})).gram?.includes('attnIn'), 'the objective guard needs the Gram matrix');
  const { inp, colSum, colSqSum } = problem(3);
  const st: TapStats = { tokens: N, inDim: COLS, colSum, colSqSum, gram: inp.gram };
  const ops: OperatorView[] = [
    { role: 'q', weight: inp.weight, rows: ROWS, cols: COLS, input: 'attnIn' },
    { role: 'gate', weight: inp.weight, rows: ROWS, cols: COLS, input: 'mlpIn' },
  ];
  const model = { spec: LLAMA } as unknown as ModelView;
  const options = parseMethodOptions(dsnot, { error_seqlen: T });
  const out = await dsnot.pruneOperators({
    model, options, target: { sparsity: 0.5, pattern: { kind: 'unstructured' } }, log: () => {}, layer: 0, operators: ops,
    stats: { attnIn: st, mlpIn: st }, state: undefined, linalg: backendLinAlg(),
  });
  const wandaMask = maskPerRow(wandaScores(inp.weight, ROWS, COLS, colSqSum), ROWS, COLS, 0.5);
  assert.deepEqual(out[1]!.mask, wandaMask, 'gate (mlp) keeps the initial mask');
  assert.notDeepEqual(out[0]!.mask, wandaMask, 'q is refined');
  // μ = error_seqlen · mean = the per-sequence sum here, so q's mask equals the pure function's.
  assert.deepEqual(out[0]!.mask, dsnotUnstructured(inp, 0.5, DEFAULTS).mask);
});

const skip = HAVE_SHARED ? false : NO_SHARED_REASON;

/** ‖(W − Ŵ)X‖² from the Gram matrix, Ŵ = W masked. */
function objective(op: OperatorView, mask: Uint8Array, G: Float64Array): number {
  return reconstructionError(op.weight, applyMask(op.weight, mask), op.rows, op.cols, G);
}

test('stories260K, every operator of every layer on real activations: ‖(W − Ŵ)X‖² after DSnoT ≤ its Wanda start (50 % and 2:4)', { skip }, async () => {
  await setupBackend();
  const { model } = loadModel(STORIES_BIN);
  try {
    const tok = await loadTokenizer(STORIES_TOK);
    const calib = calibrationFromText(tok, { text: shared('text/tinystories-sample.txt'), nsamples: 16, seqlen: 128, seed: 0 });
    const view = modelView(model);
    const options = parseMethodOptions(dsnot, { skip_layer: 'no_skip' });
    if (dsnot.kind !== 'layerwise') throw new Error('dsnot must be layerwise');
    const targets: PruneTarget[] = [{ sparsity: 0.5, pattern: { kind: 'unstructured' } }, { sparsity: 0.5, pattern: { kind: 'nm', n: 2, m: 4 } }];
    let states: HiddenStates = embedWindows(model, calib.windows);
    let total = 0;
    let improved = 0;
    for (let layer = 0; layer < model.config.numLayers; layer++) {
      const stats = collectLayerStats(model, layer, states, dsnot.stats(options));
      const operators: OperatorView[] = model.spec.linears.map((l) => {
        const h = readLinear(model, layer, l.role);
        return { role: l.role, weight: h.data, rows: h.rows, cols: h.cols, input: l.input };
      });
      for (const target of targets) {
        const out = await dsnot.pruneOperators({ model: view, options, target, log: () => {}, layer, operators, stats, state: undefined, linalg: backendLinAlg() });
        out.forEach((d, i) => {
          const op = operators[i]!;
          const st = stats[op.input]!;
          const wanda = wandaScores(op.weight, op.rows, op.cols, st.colSqSum!);
          const start = target.pattern.kind === 'nm' ? maskNM(wanda, op.rows, op.cols, 2, 4) : maskPerRow(wanda, op.rows, op.cols, 0.5);
          const before = objective(op, start, st.gram!);
          const after = objective(op, d.mask, st.gram!);
          const what = `layer ${layer} ${op.role} ${target.pattern.kind}`;
          assert.ok(after <= before * (1 + 1e-9), `${what}: ${before} → ${after}`);
          total++;
          if (after < before * (1 - 1e-6)) improved++;
        });
      }
      states = runLayer(model, layer, states)!; // the next layer sees the dense model's activations
    }
    assert.ok(improved > total / 2, `DSnoT lowered the error of only ${improved} of ${total} operators`);
  } finally {
    model.dispose();
  }
});

test('CLI: stories260K at 50 % and 2:4, exact sparsity, perplexity not above Wanda\'s', { skip }, () => {
  const dir = tmpDir('dsnot');
  const text = shared('text/tinystories-sample.txt');
  try {
    for (const [name, pattern] of [['u50', 'unstructured'], ['nm24', '2:4']] as const) {
      const ppl: Record<string, number> = {};
      for (const method of ['wanda', 'dsnot']) {
        const out = path.join(dir, `${method}-${name}`);
        const p = runCli(['prune', '--model', STORIES_BIN, '--method', method, '--sparsity', '0.5', '--pattern', pattern,
          '--calib', text, '--nsamples', '16', '--seqlen', '128', '--out', out]);
        assert.equal(p.status, 0, p.stderr);
        const zeros = (p.json!.zeros as { overall: { zeros: number; total: number } }).overall;
        assert.equal(zeros.zeros, zeros.total / 2, `${method} ${pattern}: zeros`);
        const e = runCli(['eval', 'ppl', '--model', out, '--text', text, '--seqlen', '256', '--max-windows', '8']);
        assert.equal(e.status, 0, e.stderr);
        ppl[method] = Number(e.json!.ppl);
        assert.ok(Number.isFinite(ppl[method]), `${method} ${pattern}: ppl ${String(e.json!.ppl)}`);
      }
      // Measured: 50 % 24.05 vs Wanda 25.73; 2:4 62.88 vs 67.49 (before the fix 363 and 159).
      assert.ok(ppl.dsnot! <= ppl.wanda!, `${pattern}: dsnot ${ppl.dsnot} vs wanda ${ppl.wanda}`);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
