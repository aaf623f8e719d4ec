/**
 * DSnoT (baselines.md §4): training-free refinement of an initial mask (Wanda by default) by
 * per-row prune/regrow swaps that reduce the expected output error Σ_{j pruned} W_ij·μ_j, each
 * kept only if it lowers the row's exact reconstruction error (README item 11), so no operator
 * ends worse than its initial mask. No weight update. Attention operators only by default
 * (`skip_layer: mlp`).
 */
import { z } from 'zod';
import { defineMethod, type OperatorDecision, type OperatorView } from '../../src/prune/method.ts';
import { TAP_NAMES, type TapName } from '../../src/model/family.ts';
import { PruneLabError } from '../../src/util/errors.ts';
import { cutOf } from '../../src/prune/masks.ts';
import { wandaScores } from '../../src/prune/scores.ts';
import { obsFactor, obsFactorSaliency, type ObsFactor } from '../../src/prune/obs.ts';
import type { LinAlg } from '../../src/linalg/linalg.ts';
import { dsnotRefine, initialMask, type DsnotInputs } from './refine.ts';

const ROLES = ['q', 'k', 'v', 'o', 'gate', 'up', 'down', 'fc1', 'fc2'] as const;

const options = z.object({
  initial_method: z.enum(['wanda', 'magnitude', 'sparsegpt']).default('wanda').describe('initial mask metric'),
  max_cycle_time: z.number().int().min(0).default(50).describe('maximum prune/regrow cycles'),
  update_threshold: z.number().min(0).finite().default(0.1).describe('a row keeps swapping while |e_i| exceeds this'),
  pow_of_var_regrowing: z.number().min(0).finite().default(1).describe('γ in the regrowing key D_ij / var_j^γ (0: no division)'),
  without_same_sign: z.boolean().default(true).describe('unstructured: skip the check sign(e_after) = sign(e_initial) (reference default)'),
  skip_layer: z.enum(['mlp', 'self_attn', 'no_skip']).default('mlp').describe('operators that keep the initial mask'),
  skip_sub_layer: z.enum(['no_skip', ...ROLES]).default('no_skip').describe('one more role that keeps the initial mask'),
  error_seqlen: z.number().positive().finite().default(2048)
    .describe('μ_j = expected sum of x_j over a sequence of this many tokens (the reference hard-codes 2048)'),
}).strict();

type Options = z.infer<typeof options>;

export default defineMethod<Options>({
  name: 'dsnot',
  displayName: 'DSnoT',
  description: 'DSnoT: training-free prune/regrow refinement of a Wanda (or magnitude/SparseGPT-score) mask',
  reference: 'Zhang et al., "Dynamic Sparse No Training", arXiv 2310.08915; zyxxmu/DSnoT @ 4c029df lib/prune.py (prune_DSnoT)',
  granularity: ['unstructured', 'n:m'],
  options,
  kind: 'layerwise',
  // The Gram matrix is the exact objective every swap must lower (README item 11).
  stats: () => ({ colSqSum: TAP_NAMES, colSum: TAP_NAMES, gram: TAP_NAMES }),
  operatorOrder: () => 'together',
  defaultMode: () => 'sequential',
  pruneOperators: ({ operators, stats, target, options: o, model, linalg }) => {
    const factors = new Map<TapName, ObsFactor>();
    // DSnoT swaps within a row, so an unstructured target is a per-row cut.
    const cut = cutOf(target, 'row');
    try {
      return operators.map((op) => pruneOne(op));
    } finally {
      for (const f of factors.values()) f.dispose();
    }

    function pruneOne(op: OperatorView): OperatorDecision {
      const st = stats[op.input];
      if (!st?.colSqSum || !st.colSum || !st.gram) throw new PruneLabError(`dsnot: no input statistics for ${op.role} (tap ${op.input})`);
      const N = Math.max(1, st.tokens);
      const mu = new Float64Array(op.cols);
      const variance = new Float64Array(op.cols);
      for (let j = 0; j < op.cols; j++) {
        const mean = st.colSum[j]! / N;
        mu[j] = o.error_seqlen * mean;
        variance[j] = Math.max(0, st.colSqSum[j]! / N - mean * mean);
      }
      const wanda = wandaScores(op.weight, op.rows, op.cols, st.colSqSum);
      const inp: DsnotInputs = {
        weight: op.weight, rows: op.rows, cols: op.cols, mu, variance, wanda, gram: st.gram,
        initial: initialMetric(o.initial_method, op, wanda, st.gram, factors, linalg),
      };
      const module = model.spec.linears.find((l) => l.role === op.role)?.module;
      const skipped = (o.skip_layer === 'mlp' && module === 'mlp') || (o.skip_layer === 'self_attn' && module === 'attn')
        || o.skip_sub_layer === op.role;
      if (skipped) return { role: op.role, mask: initialMask(inp, cut), info: { refined: false } };
      const params = {
        maxCycleTime: o.max_cycle_time, updateThreshold: o.update_threshold,
        powOfVarRegrowing: o.pow_of_var_regrowing, sameSign: !o.without_same_sign,
      };
      const r = dsnotRefine(inp, cut, params);
      return {
        role: op.role, mask: r.mask,
        info: {
          refined: true, swaps: r.swaps, cycles: r.cycles, absErrorBefore: r.absErrorBefore, absErrorAfter: r.absErrorAfter,
          objectiveChange: r.objectiveChange, objectiveStops: r.objectiveStops,
        },
      };
    }
  },
});

function initialMetric(kind: Options['initial_method'], op: { weight: Float32Array; rows: number; cols: number; input: TapName; role: string },
  wanda: Float64Array, gram: Float64Array | undefined, factors: Map<TapName, ObsFactor>, linalg: LinAlg): Float64Array {
  if (kind === 'wanda') return wanda;
  if (kind === 'magnitude') return Float64Array.from(op.weight, Math.abs);
  // SparseGPT's score w² / U_jj² (percdamp 0.01, dead inputs zeroed), without the OBS update.
  if (!gram) throw new PruneLabError(`dsnot: no Gram matrix for ${op.role} (tap ${op.input})`);
  let f = factors.get(op.input);
  if (!f) {
    f = obsFactor(linalg, gram, op.cols, 0.01);
    factors.set(op.input, f);
  }
  return obsFactorSaliency(op.weight, op.rows, op.cols, f);
}
