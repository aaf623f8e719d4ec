/**
 * SparseGPT: hand-computed OBS cases, the loss identity, equivalence with a naive (non-lazy)
 * sweep, blocksize invariance of N:M, reconstruction error against Wanda and magnitude, dead
 * inputs, and the CLI end to end on stories260K.
 */
import { gaussian } from '../../src/util/random.ts';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { hessianFactor, sparsegptPrune, sparsegptSweep } from '../../src/prune/obs.ts';
import sparsegpt from '../../methods/sparsegpt/index.ts';
import { wandaScores } from '../../src/prune/scores.ts';
import { maskNM, maskPerMatrix, maskPerRow } from '../../src/prune/masks.ts';
import { upperCholeskyOfInverse } from '../../src/linalg/dense.ts';
import { parseMethodOptions } from '../../src/prune/registry.ts';
import { HAVE_SHARED, NO_SHARED_REASON, STORIES_BIN, tmpDir, shared } from '../support.ts';
import { runCli } from '../cli-support.ts';
import { reconstructionError } from '../reconstruction.ts';

// ---------------------------------------------------------------------------------------------
// Helpers: seeded data, Gram matrices, reconstruction error

const rng = gaussian;

/** X `[N, cols]` ~ N(0,1), a few columns scaled ×10 (outlier features), columns mixed a little. */
function calibX(N: number, cols: number, seed: number): Float64Array {
  const g = rng(seed);
  const X = new Float64Array(N * cols);
  for (let t = 0; t < N; t++) {
    let prev = 0;
    for (let j = 0; j < cols; j++) {
      const z = g();
      const v = z + 0.5 * prev; // correlated neighbours, so the OBS update has something to do
      prev = z;
      X[t * cols + j] = v * (j % 37 === 5 ? 10 : 1);
    }
  }
  return X;
}

function gramOf(X: Float64Array, N: number, cols: number): Float64Array {
  const G = new Float64Array(cols * cols);
  for (let t = 0; t < N; t++) {
    const o = t * cols;
    for (let i = 0; i < cols; i++) {
      const xi = X[o + i]!;
      if (xi === 0) continue;
      for (let j = 0; j < cols; j++) G[i * cols + j]! += xi * X[o + j]!;
    }
  }
  return G;
}

function randomW(rows: number, cols: number, seed: number): Float32Array {
  const g = rng(seed);
  return Float32Array.from({ length: rows * cols }, () => g());
}

function applyMaskTo(W: Float32Array, mask: Uint8Array): Float32Array {
  return W.map((v, i) => (mask[i] ? v : 0));
}

function zerosIn(a: ArrayLike<number>, from = 0, to = a.length): number {
  let z = 0;
  for (let i = from; i < to; i++) if (a[i] === 0) z++;
  return z;
}

/**
 * Naive SparseGPT written from §3 without lazy batching: after every column, all later columns
 * are updated; masks chosen at block starts (unstructured, by a full sort) or at every M-th
 * column (N:M), on the current weights.
 */
function naiveSparseGpt(W: Float32Array, rows: number, cols: number, H: Float64Array, s: { kind: string; sparsity?: number; n?: number; m?: number },
  B: number, percdamp: number): { w: Float64Array; mask: Uint8Array } {
  const h = H.slice();
  const w = Float64Array.from(W);
  for (let j = 0; j < cols; j++) {
    if (h[j * cols + j] === 0) {
      h[j * cols + j] = 1;
      for (let r = 0; r < rows; r++) w[r * cols + j] = 0;
    }
  }
  let tr = 0;
  for (let j = 0; j < cols; j++) tr += h[j * cols + j]!;
  for (let j = 0; j < cols; j++) h[j * cols + j]! += (percdamp * tr) / cols;
  const U = upperCholeskyOfInverse({ rows: cols, cols, data: h }).data;
  const score = (r: number, j: number) => (w[r * cols + j]! ** 2) / (U[j * cols + j]! ** 2);
  const pruned = new Uint8Array(rows * cols);
  for (let i1 = 0; i1 < cols; i1 += B) {
    const i2 = Math.min(i1 + B, cols);
    if (s.sparsity !== undefined) {
      const cand: [number, number][] = [];
      for (let r = 0; r < rows; r++) for (let j = i1; j < i2; j++) cand.push([score(r, j), r * cols + j]);
      cand.sort((a, b) => a[0] - b[0] || (Math.floor(a[1] / cols) * (i2 - i1) + (a[1] % cols)) - (Math.floor(b[1] / cols) * (i2 - i1) + (b[1] % cols)));
      const k = Math.floor(s.sparsity * rows * (i2 - i1));
      for (let t = 0; t < k; t++) pruned[cand[t]![1]] = 1;
    }
    for (let i = i1; i < i2; i++) {
      for (let r = 0; r < rows; r++) {
        if (s.n !== undefined && (i - i1) % s.m! === 0) {
          const idx = Array.from({ length: s.m! }, (_, q) => i + q).sort((a, b) => score(r, a) - score(r, b) || a - b);
          for (let q = 0; q < s.n; q++) pruned[r * cols + idx[q]!] = 1;
        }
        if (!pruned[r * cols + i]) continue;
        const e = w[r * cols + i]! / U[i * cols + i]!;
        for (let j = i; j < cols; j++) w[r * cols + j]! -= e * U[i * cols + j]!;
        w[r * cols + i] = 0;
      }
    }
  }
  return { w, mask: pruned.map((p) => 1 - p) };
}

// ---------------------------------------------------------------------------------------------
// Hand-computed cases

test('1×4, diagonal H: no weight moves; mask = lowest w²·(H_jj + damp); loss by hand', () => {
  // H = diag(5, 2, 0.25, 9), mean 4.0625, damp = 0.01 · 4.0625. U = diag(1/√(H_jj + damp)).
  // Scores w²(H_jj + damp): 1·5.04, 4·2.04, 9·0.29, 0.36·9.04 → prune columns 2 and 3.
  const H = new Float64Array(16);
  const hd = [5, 2, 0.25, 9];
  hd.forEach((v, j) => { H[j * 4 + j] = v; });
  const W = Float32Array.from([1, -2, 3, 0.6]);
  const r = sparsegptPrune(W, 1, 4, H, { kind: 'matrix', sparsity: 0.5 });
  assert.deepEqual(Array.from(r.mask), [1, 1, 0, 0]);
  assert.deepEqual(Array.from(r.weight), [1, -2, 0, 0]);
  const damp = 0.01 * 4.0625;
  const expected = (9 * (0.25 + damp) + Math.fround(0.6) ** 2 * (9 + damp)) / 2;
  assert.ok(Math.abs(r.loss - expected) < 1e-9, `loss ${r.loss} vs ${expected}`);
  // Magnitude would have pruned 0.6 and 1 instead.
  assert.deepEqual(Array.from(maskPerMatrix(W.map(Math.abs), 1, 4, 0.5)), [0, 1, 1, 0]);
});

test('1×2, H = [[2,1],[1,2]], no damping: pruning w0 moves w1 to the OBS optimum 1.5, loss 0.75', () => {
  // U: UᵀU = H⁻¹ = ⅓[[2,−1],[−1,2]] → U00 = √(2/3), U01 = −1/(3·U00), U11 = √½.
  // Scores 1/U00² = 1.5 < 1/U11² = 2 → prune w0; e = 1/U00; w1 −= e·U01 = 1 + ½.
  // Check: min over w1 of ½·[1, 1−w1] H [1, 1−w1]ᵀ is at w1 = 1.5, value 0.75.
  const H = Float64Array.from([2, 1, 1, 2]);
  const r = sparsegptPrune(Float32Array.from([1, 1]), 1, 2, H, { kind: 'matrix', sparsity: 0.5, percdamp: 0 });
  assert.deepEqual(Array.from(r.mask), [0, 1]);
  assert.equal(r.weight[0], 0);
  assert.ok(Math.abs(r.weight[1]! - 1.5) < 1e-6, `w1 = ${r.weight[1]}`);
  assert.ok(Math.abs(r.loss - 0.75) < 1e-12, `loss ${r.loss}`);
});

// ---------------------------------------------------------------------------------------------
// Identities and equivalences on random problems

const N = 600;
const ROWS = 48;
const COLS = 300; // blocks of 128, 128, 44
const X = calibX(N, COLS, 7);
const G = gramOf(X, N, COLS);
const W = randomW(ROWS, COLS, 11);

test('loss = ½·Σ_rows δ H_damped δᵀ (δ = total weight change), unstructured and 2:4', () => {
  for (const t of [{ kind: 'matrix', sparsity: 0.5 }, { kind: 'nm', n: 2, m: 4 }] as const) {
    const f = hessianFactor(G, COLS, 0.01);
    const r = sparsegptSweep(W, ROWS, COLS, f, t);
    const Hd = G.slice();
    for (let j = 0; j < COLS; j++) Hd[j * COLS + j]! += f.damp;
    const q = reconstructionError(W, r.weight, ROWS, COLS, Hd) / 2;
    assert.ok(Math.abs(r.loss - q) / q < 1e-4, `${JSON.stringify(t)}: loss ${r.loss} vs ½δHδ ${q}`);
  }
});

test('blocked sweep with lazy updates equals a naive column-by-column sweep', () => {
  for (const [t, B] of [[{ kind: 'matrix', sparsity: 0.5 }, 128], [{ kind: 'matrix', sparsity: 0.3 }, 64], [{ kind: 'nm', n: 2, m: 4 }, 128], [{ kind: 'nm', n: 1, m: 4 }, 32]] as const) {
    const r = sparsegptPrune(W, ROWS, COLS, G, { ...t, blocksize: B });
    const ref = naiveSparseGpt(W, ROWS, COLS, G, t, B, 0.01);
    assert.deepEqual(r.mask, ref.mask, `${JSON.stringify(t)} B=${B}: masks differ`);
    let maxDiff = 0;
    for (let i = 0; i < ref.w.length; i++) maxDiff = Math.max(maxDiff, Math.abs(r.weight[i]! - ref.w[i]!));
    assert.ok(maxDiff < 1e-4, `${JSON.stringify(t)} B=${B}: max |Δw| = ${maxDiff}`);
  }
});

test('N:M results do not depend on the blocksize (the lazy update is exact)', () => {
  const a = sparsegptPrune(W, ROWS, COLS, G, { kind: 'nm', n: 2, m: 4, blocksize: 4 });
  const b = sparsegptPrune(W, ROWS, COLS, G, { kind: 'nm', n: 2, m: 4, blocksize: 128 });
  const c = sparsegptPrune(W, ROWS, COLS, G, { kind: 'nm', n: 2, m: 4, blocksize: 512 });
  assert.deepEqual(a.mask, b.mask);
  assert.deepEqual(b.mask, c.mask);
  let d = 0;
  for (let i = 0; i < a.weight.length; i++) d = Math.max(d, Math.abs(a.weight[i]! - b.weight[i]!), Math.abs(c.weight[i]! - b.weight[i]!));
  assert.ok(d < 1e-4, `max |Δw| across blocksizes ${d}`);
});

test('reconstruction error below Wanda and magnitude at 50 % and 2:4; exact per-block and 2:4 sparsity', () => {
  const colSqSum = new Float64Array(COLS);
  for (let j = 0; j < COLS; j++) colSqSum[j] = G[j * COLS + j]!;
  const wanda = wandaScores(W, ROWS, COLS, colSqSum);
  const mag = W.map(Math.abs);
  // 50 % unstructured.
  const sg = sparsegptPrune(W, ROWS, COLS, G, { kind: 'matrix', sparsity: 0.5 });
  const eS = reconstructionError(W, sg.weight, ROWS, COLS, G);
  const eW = reconstructionError(W, applyMaskTo(W, maskPerRow(wanda, ROWS, COLS, 0.5)), ROWS, COLS, G);
  const eM = reconstructionError(W, applyMaskTo(W, maskPerMatrix(mag, ROWS, COLS, 0.5)), ROWS, COLS, G);
  assert.ok(eS < eW && eW < eM, `50%: sparsegpt ${eS}, wanda ${eW}, magnitude ${eM}`);
  for (const [i1, i2] of [[0, 128], [128, 256], [256, 300]]) {
    let z = 0;
    for (let r = 0; r < ROWS; r++) for (let j = i1!; j < i2!; j++) if (sg.mask[r * COLS + j] === 0) z++;
    assert.equal(z, Math.floor(0.5 * ROWS * (i2! - i1!)), `block [${i1}, ${i2})`);
  }
  assert.equal(zerosIn(sg.weight), zerosIn(sg.mask), 'pruned weights are exactly zero, kept ones non-zero');
  // 2:4.
  const s24 = sparsegptPrune(W, ROWS, COLS, G, { kind: 'nm', n: 2, m: 4 });
  const e24 = reconstructionError(W, s24.weight, ROWS, COLS, G);
  const w24 = reconstructionError(W, applyMaskTo(W, maskNM(wanda, ROWS, COLS, 2, 4)), ROWS, COLS, G);
  const m24 = reconstructionError(W, applyMaskTo(W, maskNM(mag, ROWS, COLS, 2, 4)), ROWS, COLS, G);
  assert.ok(e24 < w24 && e24 < m24, `2:4: sparsegpt ${e24}, wanda ${w24}, magnitude ${m24}`);
  for (let g = 0; g < ROWS * COLS; g += 4) {
    assert.equal(zerosIn(s24.mask, g, g + 4), 2, `group at ${g}`);
    assert.equal(zerosIn(s24.weight, g, g + 4), 2, `weights of group at ${g}`);
  }
});

test('dead inputs (H_jj = 0): the column is zeroed, the rest stays finite and exact', () => {
  const cols = 64;
  const Xd = calibX(200, cols, 3);
  for (const j of [3, 40]) for (let t = 0; t < 200; t++) Xd[t * cols + j] = 0;
  const Gd = gramOf(Xd, 200, cols);
  const Wd = randomW(8, cols, 5);
  const f = hessianFactor(Gd, cols);
  assert.deepEqual([...f.dead.keys()].filter((j) => f.dead[j]), [3, 40]);
  const r = sparsegptPrune(Wd, 8, cols, Gd, { kind: 'matrix', sparsity: 0.5 });
  assert.ok(r.weight.every(Number.isFinite) && Number.isFinite(r.loss));
  for (let row = 0; row < 8; row++) {
    assert.equal(r.weight[row * cols + 3], 0);
    assert.equal(r.weight[row * cols + 40], 0);
  }
  assert.equal(zerosIn(r.mask), Math.floor(0.5 * 8 * cols));
  // Dead weights cost nothing (score 0), so they are pruned first.
  for (let row = 0; row < 8; row++) assert.equal(r.mask[row * cols + 3], 0);
  // Without the fix the Cholesky of the undamped H fails.
  assert.throws(() => upperCholeskyOfInverse({ rows: cols, cols, data: Gd }), /not positive definite/);
});

test('options: strict, defaults from the reference', () => {
  assert.deepEqual(parseMethodOptions(sparsegpt, {}), { percdamp: 0.01, blocksize: 128 });
  assert.throws(() => parseMethodOptions(sparsegpt, { blocksz: 64 }));
  assert.throws(() => sparsegptPrune(W, ROWS, COLS, G, { kind: 'nm', n: 2, m: 4, blocksize: 6 }), /multiple of M/);
});

// ---------------------------------------------------------------------------------------------
// End to end through the CLI

const skip = HAVE_SHARED ? false : NO_SHARED_REASON;

test('CLI: stories260K at 50 % and 2:4, finite perplexity, exact sparsity', { skip }, () => {
  const dir = tmpDir('sparsegpt');
  const text = shared('text/tinystories-sample.txt');
  try {
    const dense = runCli(['eval', 'ppl', '--model', STORIES_BIN, '--text', text, '--seqlen', '256', '--max-windows', '8']);
    assert.equal(dense.status, 0, dense.stderr);
    const densePpl = Number(dense.json!.ppl);
    for (const [name, pattern] of [['u50', 'unstructured'], ['nm24', '2:4']]) {
      const out = path.join(dir, name!);
      const p = runCli(['prune', '--model', STORIES_BIN, '--method', 'sparsegpt', '--sparsity', '0.5', '--pattern', pattern!,
        '--calib', text, '--nsamples', '16', '--seqlen', '128', '--out', out]);
      assert.equal(p.status, 0, p.stderr);
      const zeros = (p.json!.zeros as { overall: { zeros: number; total: number } }).overall;
      assert.equal(zeros.zeros, zeros.total / 2, `${pattern}: zeros`);
      assert.ok(fs.existsSync(path.join(out, 'prune_report.json')));
      const e = runCli(['eval', 'ppl', '--model', out, '--text', text, '--seqlen', '256', '--max-windows', '8']);
      assert.equal(e.status, 0, e.stderr);
      const ppl = Number(e.json!.ppl);
      assert.ok(Number.isFinite(ppl) && ppl > densePpl, `${pattern}: ppl ${ppl} (dense ${densePpl})`);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
