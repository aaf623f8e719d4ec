/**
 * Magnitude-SP (baselines.md §5, CFSP repository `mag_sp`): FFN channels scored by the L2 norm
 * of their `down` column, the same ratio in every block, kept count by the `roundTo` rule of
 * cfsp.md §5. Data-free; no bias.
 */
import { z } from 'zod';
import { defineMethod } from '../../src/prune/method.ts';
import { keepFromScores, roundedKeepCount } from '../../src/prune/structured.ts';

const options = z.object({
  roundTo: z.number().int().min(1).default(1).describe('kept channel counts are multiples of this (cfsp.md §5; 128 = CFSP --cuda_friendly)'),
}).strict();

/** ‖W[:, j]‖₂ for each column j of a row-major `[rows, cols]` matrix. */
export function columnL2Norms(w: Float32Array, rows: number, cols: number): Float64Array {
  const s = new Float64Array(cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) s[c] += w[r * cols + c] ** 2;
  return s.map(Math.sqrt);
}

export default defineMethod<z.infer<typeof options>>({
  name: 'magnitude-sp',
  displayName: 'Magnitude-SP',
  description: 'Magnitude-SP: remove the FFN channels with the smallest down-projection column norm, same ratio per block',
  reference: 'CFSP repository wyxscir/CFSP @ b2d5b13 lib/prune.py (prune_magnitude_sp); baselines.md §5',
  granularity: ['ffn-channels'],
  targetScope: 'ffn-channels',
  options,
  kind: 'structured',
  stats: () => ({ perLayer: {} }),
  plan: ({ model, options: o, target, weight }) => {
    const down = model.spec.ffnChannel.inputsOf;
    const kept: number[] = [];
    const layers = model.config.layers.map((shape, i) => {
      const w = weight(i, down);
      const k = roundedKeepCount(shape.intermediateSize, 1 - target.sparsity, o.roundTo);
      kept.push(k);
      return { keepChannels: keepFromScores(columnL2Norms(w.data, w.rows, w.cols), k) };
    });
    const before = model.config.layers.reduce((a, s) => a + s.intermediateSize, 0);
    return {
      layers,
      report: {
        denominator: 'FFN channels (per block, same ratio)',
        keptChannels: kept,
        removedFfnChannelFraction: 1 - kept.reduce((a, b) => a + b, 0) / before,
      },
    };
  },
});
