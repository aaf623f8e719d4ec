/**
 * Wanda and magnitude (baselines.md §1–§2) on a hand-computed operator: scores |W_ij|·‖X_j‖ and
 * per-row masks; magnitude's per-matrix cut.
 */
import { before, it } from 'node:test';
import assert from 'node:assert/strict';
import { resolveMethod } from '../../src/prune/registry.ts';
import { wandaScores } from '../../src/prune/scores.ts';
import type { OperatorContext } from '../../src/prune/method.ts';
import { backendLinAlg } from '../../src/linalg/backend.ts';
import { setupBackend } from '../support.ts';

before(setupBackend);

// W = [[1, -2, 3], [-4, 5, -6]], Σx² per column = [4, 1, 0.25] → ‖X_j‖ = [2, 1, 0.5].
const W = Float32Array.from([1, -2, 3, -4, 5, -6]);
const ctx = {
  options: {}, target: { sparsity: 1 / 3, pattern: { kind: 'unstructured' } }, log: () => {}, layer: 0, state: undefined,
  operators: [{ role: 'q', weight: W, rows: 2, cols: 3, input: 'attnIn' }],
  stats: { attnIn: { tokens: 4, inDim: 3, colSqSum: Float64Array.from([4, 1, 0.25]) } },
} as unknown as OperatorContext<unknown>;

it('Wanda scores |W_ij|·‖X_j‖ and per-row masks, by hand', async () => {
  assert.deepEqual([...wandaScores(W, 2, 3, Float64Array.from([4, 1, 0.25]))], [2, 2, 1.5, 8, 5, 3]);
  const wanda = await resolveMethod('wanda');
  if (wanda.kind !== 'layerwise') throw new Error('wanda is layer-wise');
  // With the backend's native kernels where it has them (the per-row selection in C), and without.
  const la = backendLinAlg();
  for (const linalg of [la, { ...la, native: undefined }]) {
    const [d] = await wanda.pruneOperators({ ...ctx, linalg } as OperatorContext<unknown>);
    // Row 0 scores [2, 2, 1.5]: prune column 2. Row 1 [8, 5, 3]: prune column 2.
    assert.deepEqual([...d.mask], [1, 1, 0, 1, 1, 0]);
  }
});

it('magnitude per matrix: the ⌊6/3⌋ = 2 smallest |W| go, by hand', async () => {
  const magnitude = await resolveMethod('magnitude');
  if (magnitude.kind !== 'layerwise') throw new Error('magnitude is layer-wise');
  const [dm] = await magnitude.pruneOperators({ ...ctx, options: { scope: 'matrix' } } as OperatorContext<unknown>);
  // |W| = 1 and 2 are columns 0 and 1 of row 0.
  assert.deepEqual([...dm.mask], [0, 0, 1, 1, 1, 1]);
});
