/**
 * Magnitude pruning (baselines.md §1): score |W_ij|; unstructured with one threshold per matrix
 * (the Wanda repository's form; `scope: row` for a per-row ablation); N:M per row and block.
 */
import { z } from 'zod';
import { defineMethod } from '../../src/prune/method.ts';
import { cutOf, maskForCut } from '../../src/prune/masks.ts';

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
    return { role: op.role, mask: maskForCut(scores, op.rows, op.cols, cutOf(target, o.scope)) };
  }),
});
