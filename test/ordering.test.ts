/**
 * Orderings the methods' papers rest on, checked on real data: stories260K with a fixed calibration
 * (16 × 128 tokens of the TinyStories sample, seed 0), every operator of every layer on the dense
 * model's activations.
 * - SparseGPT reconstructs every operator better than magnitude (‖(W − Ŵ)X‖² lower); Wanda
 *   better than magnitude in the same comparison group (per row at 50 %, per block at 2:4) for
 *   every layer's sum and all but a few operators (one, `o` of layer 1 at 2:4, is a 0.1 % tie:
 *   Wanda's score is the objective's diagonal, not the objective). Against magnitude's one
 *   threshold per matrix Wanda loses on q and k at 50 %: measured and printed, not asserted.
 * - FISTAPruner's objective (E_total = ‖W'X* − WX‖²) is never above its warm start's with
 *   `warmStartCandidate`; the paper's defaults are printed (some operators end above it).
 * - CFSP's non-uniform block allocation and the uniform one (a = 0), side by side (printed).
 * DSnoT ≤ its Wanda start on the same data is in test/methods/dsnot.test.ts.
 */
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { setupBackend, HAVE_SHARED, NO_SHARED_REASON, STORIES_BIN, STORIES_TOK, shared } from './support.ts';
import { loadModel } from '../src/io/load-model.ts';
import { loadTokenizer } from '../src/tokenizer/load.ts';
import { calibrationFromText } from '../src/prune/calibration.ts';
import { collectLayerStats, embedWindows, runLayer, type HiddenStates } from '../src/prune/stats.ts';
import { readLinear } from '../src/prune/linear-io.ts';
import { modelView } from '../src/model/view.ts';
import { TAP_NAMES } from '../src/model/family.ts';
import { parseMethodOptions, resolveMethod } from '../src/prune/registry.ts';
import { pruneModel } from '../src/prune/engine.ts';
import type { OperatorView, PruneTarget } from '../src/prune/method.ts';
import { perplexityOfText } from '../src/eval/perplexity.ts';
import { applyMask, reconstructionError } from './reconstruction.ts';
import { backendLinAlg } from '../src/linalg/backend.ts';

const skip = HAVE_SHARED ? false : NO_SHARED_REASON;
const TEXT = shared('text/tinystories-sample.txt');
const TARGETS: PruneTarget[] = [{ sparsity: 0.5, pattern: { kind: 'unstructured' } }, { sparsity: 0.5, pattern: { kind: 'nm', n: 2, m: 4 } }];
const label = (t: PruneTarget) => (t.pattern.kind === 'nm' ? '2:4' : '50%');

async function calibration(): Promise<number[][]> {
  const tok = await loadTokenizer(STORIES_TOK);
  return calibrationFromText(tok, { text: TEXT, nsamples: 16, seqlen: 128, seed: 0 }).windows;
}

before(setupBackend);

/** Magnitude as configured (one threshold per matrix, the Wanda repository's form) and per row (Wanda's comparison group). */
const VARIANTS = [
  { id: 'magnitude', method: 'magnitude', options: {} },
  { id: 'magnitude-row', method: 'magnitude', options: { scope: 'row' } },
  { id: 'wanda', method: 'wanda', options: {} },
  { id: 'sparsegpt', method: 'sparsegpt', options: {} },
] as const;

test('stories260K: SparseGPT reconstructs every operator better than magnitude, Wanda every layer (and ≥ 95 % of operators) in its comparison group (50 % and 2:4)', { skip }, async (t) => {
  const { model } = loadModel(STORIES_BIN);
  try {
    const view = modelView(model);
    let states: HiddenStates = embedWindows(model, await calibration());
    const sums: Record<string, number> = {};
    let wandaAboveMatrixMagnitude = 0;
    const wandaExceptions: string[] = [];
    let operatorsSeen = 0;
    for (let layer = 0; layer < model.numLayers; layer++) {
      // The dense layer's own inputs at every tap: what every method decides from.
      const stats = collectLayerStats(model, layer, states, { colSqSum: TAP_NAMES, gram: TAP_NAMES });
      const operators: OperatorView[] = model.spec.linears.map((l) => {
        const h = readLinear(model, layer, l.role);
        return { role: l.role, weight: h.data, rows: h.rows, cols: h.cols, input: l.input };
      });
      for (const target of TARGETS) {
        const errors: Record<string, number[]> = {};
        for (const v of VARIANTS) {
          const m = await resolveMethod(v.method);
          if (m.kind !== 'layerwise') throw new Error(`${m.name} must be layer-wise`);
          const options = parseMethodOptions(m, v.options);
          const state = m.setup?.({ model: view, options, target, log: () => {}, run: { mode: 'dense-parallel', workers: 1 } });
          const out = await m.pruneOperators({ model: view, options, target, log: () => {}, layer, operators, stats, state, linalg: backendLinAlg() });
          errors[v.id] = out.map((d, i) => {
            const op = operators[i]!;
            return reconstructionError(op.weight, applyMask(d.weight ?? op.weight, d.mask), op.rows, op.cols, stats[op.input]!.gram!);
          });
          const key = `${v.id} ${label(target)}`;
          sums[key] = (sums[key] ?? 0) + errors[v.id].reduce((a, b) => a + b, 0);
        }
        operators.forEach((op, i) => {
          const what = `layer ${layer} ${op.role} ${label(target)}`;
          assert.ok(errors.sparsegpt[i] < errors.magnitude[i], `${what}: SparseGPT ${errors.sparsegpt[i]} ≥ magnitude ${errors.magnitude[i]}`);
          assert.ok(errors.sparsegpt[i] < errors['magnitude-row'][i], `${what}: SparseGPT ${errors.sparsegpt[i]} ≥ magnitude per row ${errors['magnitude-row'][i]}`);
          if (errors.wanda[i] >= errors['magnitude-row'][i]) {
            wandaExceptions.push(`${what} (${errors.wanda[i].toFixed(1)} vs ${errors['magnitude-row'][i].toFixed(1)})`);
          }
          if (target.pattern.kind === 'nm') assert.equal(errors.magnitude[i], errors['magnitude-row'][i], 'N:M has one comparison group');
          operatorsSeen++;
          if (errors.wanda[i] >= errors.magnitude[i]) wandaAboveMatrixMagnitude++;
        });
        // Wanda's score is the objective's diagonal: the ordering holds for the layer, not for every operator.
        const layerSum = (id: string) => errors[id].reduce((a, b) => a + b, 0);
        assert.ok(layerSum('wanda') < layerSum('magnitude-row'), `layer ${layer} ${label(target)}: Wanda ${layerSum('wanda')} ≥ magnitude per row ${layerSum('magnitude-row')}`);
      }
      states = runLayer(model, layer, states)!; // every layer sees the dense model's activations
    }
    t.diagnostic(`summed ‖(W − Ŵ)X‖² over all operators: ${Object.entries(sums).map(([k, v]) => `${k} ${v.toFixed(0)}`).join(', ')}`);
    // Measured, not asserted: per-row Wanda against one threshold per matrix loses on q/k at 50 %.
    t.diagnostic(`Wanda's error ≥ per-matrix magnitude's on ${wandaAboveMatrixMagnitude} of ${operatorsSeen} operator cases`);
    t.diagnostic(`Wanda's error ≥ magnitude's in the same comparison group on ${wandaExceptions.length} of ${operatorsSeen}: ${wandaExceptions.join('; ') || 'none'}`);
    assert.ok(wandaExceptions.length <= operatorsSeen / 20, `Wanda lost to magnitude in its own comparison group on ${wandaExceptions.length} operators`);
  } finally {
    model.dispose();
  }
});

test('stories260K: FISTAPruner\'s objective vs its Wanda warm start (50 % and 2:4): never above with warmStartCandidate; the defaults printed', { skip }, async (t) => {
  const method = await resolveMethod('fistapruner');
  const windows = await calibration();
  for (const candidate of [true, false]) {
    for (const target of TARGETS) {
      const { model } = loadModel(STORIES_BIN);
      try {
        const report = await pruneModel(model, { method, options: parseMethodOptions(method, { warmStartCandidate: candidate }), target, windows });
        let fista = 0;
        let warm = 0;
        let above = 0;
        let n = 0;
        for (const l of report.layers) {
          for (const [role, d] of Object.entries((l.detail as { operators: Record<string, { eTotal: number; warmStartError: number }> }).operators)) {
            if (candidate) assert.ok(d.eTotal <= d.warmStartError, `layer ${String(l.detail.layer)} ${role} ${label(target)}: E_total ${d.eTotal} > warm start ${d.warmStartError}`);
            if (d.eTotal > d.warmStartError) above++;
            fista += d.eTotal;
            warm += d.warmStartError;
            n++;
          }
        }
        // The paper's defaults (no warm-start candidate, λ from 1e-3·max|B|, 3 rounds) can end an
        // operator, and at 2:4 even the sum, above the warm start: measured and printed, not asserted.
        if (candidate) assert.ok(fista < warm, `${label(target)}: summed E_total ${fista} ≥ summed warm start ${warm}`);
        t.diagnostic(`warmStartCandidate ${candidate}, ${label(target)}: E_total summed over ${n} operators ${fista.toFixed(0)} vs Wanda warm start ${warm.toFixed(0)}; ${above} operators above their warm start`);
      } finally {
        model.dispose();
      }
    }
  }
});

test('stories260K: CFSP at 50 % with its block allocation and with the uniform one, side by side', { skip }, async (t) => {
  const method = await resolveMethod('cfsp');
  const windows = await calibration();
  const tok = await loadTokenizer(STORIES_TOK);
  const rows: { a: number; kept: number[]; ppl: number }[] = [];
  for (const a of [1, 0]) {
    const { model } = loadModel(STORIES_BIN);
    try {
      await pruneModel(model, { method, options: parseMethodOptions(method, { a }), target: { sparsity: 0.5, pattern: { kind: 'unstructured' } }, windows });
      const kept = model.config.layers.map((l) => l.intermediateSize);
      const ppl = (await perplexityOfText(model, tok, TEXT, { seqlen: 256 })).ppl;
      rows.push({ a, kept, ppl });
    } finally {
      model.dispose();
    }
  }
  const [adaptive, uniform] = rows;
  for (const r of rows) t.diagnostic(`cfsp a=${r.a} (${r.a === 0 ? 'uniform' : 'block angles'}): FFN channels kept per layer ${r.kept.join(' ')}, TinyStories ppl@256 ${r.ppl.toFixed(3)}`);
  // Same budget (within per-layer rounding), spent differently.
  const total = (k: number[]) => k.reduce((s, x) => s + x, 0);
  assert.ok(Math.abs(total(adaptive.kept) - total(uniform.kept)) <= adaptive.kept.length);
  assert.equal(new Set(uniform.kept).size, 1, 'a = 0 keeps the same count in every layer');
  assert.ok(new Set(adaptive.kept).size > 1, 'the block allocation is not uniform');
  assert.ok(Number.isFinite(adaptive.ppl) && Number.isFinite(uniform.ppl));
});
