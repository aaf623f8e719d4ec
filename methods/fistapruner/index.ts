/**
 * FISTAPruner (fistapruner.md, Decisions 1–6): per operator, FISTA on
 * ½‖W*X* − WX‖²_F + λ‖W*‖₁ from Gram matrices, exact cut per row / matrix / N:M, λ bisection on
 * E_round/E_total, warm start; operators in forward groups with intra-layer error correction
 * (`grouped`), layers from dense inputs (`dense-parallel`, optionally on worker threads).
 */
import { z } from 'zod';
import { defineMethod, type OperatorDecision } from '../../src/prune/method.ts';
import { TAP_NAMES, type LinearRole } from '../../src/model/family.ts';
import { ConfigError } from '../../src/util/errors.ts';
import { cutOf } from '../../src/prune/masks.ts';
import { prepareGram, releaseGram, solveWithGram, type PreparedGram } from './fista.ts';
import { WARM_STARTS, warmStartWeights } from './warm-start.ts';

const options = z.object({
  itersPerRound: z.number().int().min(1).default(20).describe('FISTA iterations per λ round (K)'),
  maxRounds: z.number().int().min(1).default(3).describe('λ rounds (T)'),
  ratioThreshold: z.number().positive().default(0.3).describe('ξ: E_round/E_total above it raises λ'),
  tol: z.number().min(0).default(1e-4).describe('early stop: relative iterate change (Eq. 6)'),
  powerIters: z.number().int().min(1).default(30).describe('power iterations for L = 1.01·λ_max(G)'),
  warmStart: z.enum(WARM_STARTS).optional().describe('W₀; default wanda (LLaMA), sparsegpt (OPT)'),
  intraLayerCorrection: z.boolean().default(true)
    .describe('operators in forward groups, each fitted on inputs from the already pruned ones (false: all from the unpruned layer, Fig. 4a ablation)'),
  cut: z.enum(['row', 'matrix']).default('row').describe('exact unstructured cut: per output row or per matrix'),
  projectEveryIteration: z.boolean().default(false).describe('apply the cut after every FISTA step (projected FISTA)'),
  warmStartCandidate: z.boolean().default(false).describe('H(W₀) competes for W_best'),
  refit: z.boolean().default(false).describe('masked FISTA with λ = 0 on the final support (PruneLab extension)'),
  monotone: z.boolean().default(false)
    .describe('monotone FISTA (MFISTA, Beck & Teboulle 2009 TIP §V): F(W_k) never rises; default false = the paper\'s standard FISTA'),
  lambdaInit: z.enum(['scaled', 'previous-layer']).default('scaled')
    .describe("λ₀: 1e-3·max|B| per operator, or the previous layer's final λ of the same operator type (one worker only)"),
}).strict();

export type FistaPrunerOptions = z.infer<typeof options>;

/** Per-run state: the final λ per operator type of the layer pruned last (for lambdaInit previous-layer). */
interface FistaState {
  lambdas: Map<LinearRole, number>;
}

export default defineMethod<FistaPrunerOptions, Record<string, unknown>, FistaState>({
  name: 'fistapruner',
  displayName: 'FISTAPruner',
  description: 'FISTAPruner: convex ℓ1 layer-wise reconstruction solved by FISTA with intra-layer error correction',
  reference: 'Zhao et al., arXiv 2408.03728 (EMNLP 2025 main, 2025.emnlp-main.1498); fistapruner.md',
  granularity: ['unstructured', 'n:m'],
  options,
  kind: 'layerwise',
  // Without correction X* = X at every tap, so G alone serves as C and H_d (one product, not three).
  stats: (o) => (o.intraLayerCorrection ? { gram: TAP_NAMES, cross: TAP_NAMES, denseGram: TAP_NAMES } : { gram: TAP_NAMES }),
  operatorOrder: (o) => (o.intraLayerCorrection ? 'grouped' : 'together'),
  defaultMode: () => 'dense-parallel',
  // Products, accepted steps and cuts split their rows over every core (fista.ts, native kernels).
  threadedSolve: 'within',
  setup: ({ options: o, run }) => {
    if (o.lambdaInit === 'previous-layer' && run.workers > 1) {
      throw new ConfigError("fistapruner: lambdaInit 'previous-layer' chains the layers and cannot run with workers > 1");
    }
    return { lambdas: new Map() };
  },
  pruneOperators: async ({ model, operators, stats, target, options: o, layer, log, state, linalg }) => {
    const warmStart = o.warmStart ?? (model.config.family === 'opt' ? 'sparsegpt' : 'wanda');
    const cut = cutOf(target, o.cut);
    const prev = state.lambdas;
    if (layer === 0) prev.clear();
    const out: OperatorDecision[] = [];
    // Operators reading one tap (q, k, v; gate, up) share its prepared Gram part, freed after the last of them.
    const grams = new Map<string, PreparedGram>();
    const lastUse = new Map(operators.map((op, k) => [op.input as string, k]));
    try {
      for (const [k, op] of operators.entries()) {
        const st = stats[op.input];
        const gram = st?.gram;
        const cross = o.intraLayerCorrection ? st?.cross : gram;
        const denseGram = o.intraLayerCorrection ? st?.denseGram : gram;
        if (!gram || !cross || !denseGram) throw new Error(`fistapruner: no Gram statistics for ${op.role} (${op.input})`);
        const t0 = performance.now();
        const W0 = warmStartWeights(warmStart, { weight: op.weight, rows: op.rows, cols: op.cols, gram, cut, native: linalg.native });
        let prepared = grams.get(op.input);
        if (!prepared) {
          prepared = prepareGram({ cols: op.cols, gram, cross, denseGram }, linalg);
          grams.set(op.input, prepared);
        }
        const r = solveWithGram(
          prepared, op.rows, op.weight,
          W0,
          {
            cut, itersPerRound: o.itersPerRound, maxRounds: o.maxRounds, ratioThreshold: o.ratioThreshold, tol: o.tol,
            powerIters: o.powerIters, projectEveryIteration: o.projectEveryIteration, warmStartCandidate: o.warmStartCandidate,
            refit: o.refit, monotone: o.monotone, lambda0: o.lambdaInit === 'previous-layer' ? prev.get(op.role) : undefined,
          },
        );
        if (lastUse.get(op.input) === k) {
          releaseGram(prepared);
          grams.delete(op.input);
        }
        prev.set(op.role, r.lambda);
        const seconds = (performance.now() - t0) / 1000;
        const bestRound = typeof r.best === 'number' ? r.rounds[r.best] : undefined;
        const iterations = r.rounds.reduce((s, x) => s + x.iterations, 0);
        log(`layer ${layer} ${op.role}: λ ${r.lambda.toExponential(3)} (max ${r.lambdaMax.toExponential(3)}), `
          + `E_round/E_total ${bestRound ? bestRound.ratio.toFixed(3) : '-'}, E_total ${r.eTotal.toExponential(3)} `
          + `(warm start ${r.warmStartError.toExponential(3)}), best ${r.best}, ${iterations} iterations, ${seconds.toFixed(3)} s`);
        out.push({
          role: op.role,
          mask: r.mask,
          weight: Float32Array.from(r.weight),
          info: {
            warmStart, lambda: r.lambda, lambdaMax: r.lambdaMax, L: r.L,
            ratio: bestRound?.ratio ?? null, eRound: bestRound?.eRound ?? null, eTotal: r.eTotal,
            warmStartError: r.warmStartError, refitError: r.refitError ?? null, best: r.best, iterations,
            rounds: r.rounds.map((x) => ({
              lambda: x.lambda, iterations: x.iterations, eTotal: x.eTotal, eRound: x.eRound, ratio: x.ratio, objective: x.objective,
              ...(o.monotone ? { rejected: x.rejected } : {}),
            })),
            seconds,
          },
        });
      }
    } finally {
      for (const g of grams.values()) releaseGram(g);
    }
    return out;
  },
});
