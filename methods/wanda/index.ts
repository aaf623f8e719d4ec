/**
 * Wanda (baselines.md §2): S_ij = |W_ij| · ‖X_j‖₂ with X the operator's input over all
 * calibration tokens; per output row prune the ⌊s·n⌋ lowest; N:M per row and block. No update.
 */
import { z } from 'zod';
import { defineMethod } from '../../src/prune/method.ts';
import { maskNM, maskPerRow } from '../../src/prune/masks.ts';
import { TAP_NAMES } from '../../src/model/family.ts';

const options = z.object({}).strict();

/** Wanda scores of an `[rows, cols]` weight given Σ x_j² per input column. */
export function wandaScores(weight: Float32Array, rows: number, cols: number, colSqSum: Float64Array): Float64Array {
  const norms = colSqSum.map(Math.sqrt);
  const s = new Float64Array(weight.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) s[r * cols + c] = Math.abs(weight[r * cols + c]) * norms[c];
  return s;
}

export default defineMethod<z.infer<typeof options>>({
  name: 'wanda',
  displayName: 'Wanda',
  description: 'Wanda: |W| times input-feature norm, compared per output row (or N:M)',
  reference: 'Sun et al., arXiv 2306.11695; locuslab/wanda @ 8e8fc87 lib/prune.py (prune_wanda)',
  granularity: ['unstructured', 'n:m'],
  options,
  kind: 'layerwise',
  stats: () => ({ colSqSum: TAP_NAMES }),
  operatorOrder: () => 'together',
  defaultMode: () => 'sequential',
  pruneOperators: ({ operators, stats, target }) => operators.map((op) => {
    const st = stats[op.input];
    if (!st?.colSqSum) throw new Error(`wanda: no input statistics for ${op.role}`);
    const scores = wandaScores(op.weight, op.rows, op.cols, st.colSqSum);
    const p = target.pattern;
    const mask = p.kind === 'nm' ? maskNM(scores, op.rows, op.cols, p.n, p.m) : maskPerRow(scores, op.rows, op.cols, target.sparsity);
    return { role: op.role, mask };
  }),
});
