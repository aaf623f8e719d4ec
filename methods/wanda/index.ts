/**
 * Wanda (baselines.md §2): S_ij = |W_ij| · ‖X_j‖₂ with X the operator's input over all
 * calibration tokens; per output row prune the ⌊s·n⌋ lowest; N:M per row and block. No update.
 */
import { z } from 'zod';
import { defineMethod } from '../../src/prune/method.ts';
import { cutOf } from '../../src/prune/masks.ts';
import { wandaMask } from '../../src/prune/scores.ts';
import { TAP_NAMES } from '../../src/model/family.ts';

const options = z.object({}).strict();

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
  // The per-row scores and selection are native and threaded where the backend has them (wandaMask).
  threadedSolve: 'within',
  pruneOperators: ({ operators, stats, target, linalg }) => operators.map((op) => {
    const st = stats[op.input];
    if (!st?.colSqSum) throw new Error(`wanda: no input statistics for ${op.role}`);
    return { role: op.role, mask: wandaMask(op.weight, op.rows, op.cols, st.colSqSum, cutOf(target, 'row'), linalg.native) };
  }),
});
