/**
 * Wanda-SP (baselines.md §6, CFSP repository `wanda_sp`): FFN channel j scored by
 * a_j · mean_i |W_down,ij| with a_j the RMS of the down-projection input, standardised per block,
 * one global threshold keeping ⌊N·(1 − p)⌋ of all N channels (non-uniform per block), at least
 * one channel per block. No bias.
 */
import { z } from 'zod';
import { defineMethod } from '../../src/prune/method.ts';
import { standardizedGlobalKeep } from '../../src/prune/structured.ts';

const options = z.object({
  minKeep: z.number().int().min(1).default(1).describe('channels every block keeps at least (guard; the released code has none)'),
}).strict();

/**
 * score_j = a_j · mean_i |W_ij|, a_j = √(Σ_t x_tj² / n) for a `[rows, cols]` down weight. The
 * divisor n (tokens here, samples in the reference) is a constant that cancels in the per-block
 * standardisation.
 */
export function wandaSpScores(w: Float32Array, rows: number, cols: number, colSqSum: ArrayLike<number>, n: number): Float64Array {
  const s = new Float64Array(cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) s[c] += Math.abs(w[r * cols + c]);
  for (let c = 0; c < cols; c++) s[c] = (s[c] / rows) * Math.sqrt(colSqSum[c]! / n);
  return s;
}

export default defineMethod<z.infer<typeof options>>({
  name: 'wanda-sp',
  displayName: 'Wanda-SP',
  description: 'Wanda-SP: FFN channels by input RMS × mean |W_down|, standardised per block, one global threshold',
  reference: 'CFSP repository wyxscir/CFSP @ b2d5b13 lib/prune.py (prune_wanda_sp); FLAP repository lib/prune.py; baselines.md §6',
  granularity: ['ffn-channels'],
  targetScope: 'ffn-channels',
  options,
  kind: 'structured',
  stats: () => ({ perLayer: { colSqSum: ['downIn'] } }),
  plan: ({ model, options: o, target, stats, weight }) => {
    const down = model.spec.ffnChannel.inputsOf;
    const scores = model.config.layers.map((_, i) => {
      const st = stats[i].downIn;
      if (!st?.colSqSum) throw new Error(`wanda-sp: no down-input statistics for layer ${i}`);
      const w = weight(i, down);
      return wandaSpScores(w.data, w.rows, w.cols, st.colSqSum, st.tokens);
    });
    const sel = standardizedGlobalKeep(scores, target.sparsity, o.minKeep);
    const before = scores.reduce((a, s) => a + s.length, 0);
    return {
      layers: sel.keep.map((keepChannels) => ({ keepChannels })),
      report: {
        denominator: 'FFN channels (all blocks together)',
        keptChannels: sel.keep.map((k) => k.length),
        guardedLayers: sel.guarded,
        removedFfnChannelFraction: 1 - sel.kept / before,
      },
    };
  },
});
