/**
 * Magnitude pruning (baselines.md §1): score |W_ij|; unstructured with one threshold per matrix
 * (the Wanda repository's form; `scope: row` for a per-row ablation); N:M per row and block.
 */
import { z } from 'zod';
import { defineMethod } from '../../src/prune/method.ts';
import { maskNM, maskPerMatrix, maskPerRow } from '../../src/prune/masks.ts';

const options = z.object({
  scope: z.enum(['matrix', 'row']).default('matrix').describe('comparison group for unstructured sparsity'),
}).strict();

export default defineMethod<z.infer<typeof options>>({
  name: 'magnitude',
  displayName: 'Magnitude',
  description: 'Magnitude pruning: remove the smallest |W| (per matrix, or N:M per row)',
  reference: 'Wanda repository lib/prune.py (prune_magnitude); baselines.md §1',
  granularity: ['unstructured', 'n:m'],
  options,
  kind: 'layerwise',
  stats: () => ({}),
  operatorOrder: () => 'together',
  defaultMode: () => 'sequential',
  pruneOperators: ({ operators, target, options: o }) => operators.map((op) => {
    const scores = op.weight.map(Math.abs);
    const p = target.pattern;
    const mask = p.kind === 'nm'
      ? maskNM(scores, op.rows, op.cols, p.n, p.m)
      : o.scope === 'matrix' ? maskPerMatrix(scores, op.rows, op.cols, target.sparsity) : maskPerRow(scores, op.rows, op.cols, target.sparsity);
    return { role: op.role, mask };
  }),
});
