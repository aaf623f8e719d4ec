/**
 * The spread of ratios measured in rounds: each round runs every side once, in turn, so a ratio
 * taken within a round sees one machine state; the spread over rounds says how far noise moves it.
 * Shared by the speed comparison (src/eval/speed.ts) and the PyTorch bench (bench/torch/rounds.ts).
 */

/** Linear-interpolated quantile of ascending values. */
export function quantile(sorted: readonly number[], q: number): number {
  const x = q * (sorted.length - 1);
  const i = Math.floor(x);
  return i + 1 < sorted.length ? sorted[i] + (x - i) * (sorted[i + 1] - sorted[i]) : sorted[i];
}

export interface RoundSpread {
  /** Low and high end: min–max of the per-round values, the interquartile range from 5 rounds on. */
  lo: number;
  hi: number;
  rounds: number;
}

export const ROUND_SPREAD_STATISTIC = 'min–max of the per-round ratios (interquartile range from 5 rounds on)';

export function roundSpread(perRound: readonly number[]): RoundSpread {
  if (perRound.length === 0) throw new Error('roundSpread: no rounds');
  const s = [...perRound].sort((a, b) => a - b);
  const iqr = s.length >= 5;
  return { lo: iqr ? quantile(s, 0.25) : s[0], hi: iqr ? quantile(s, 0.75) : s[s.length - 1], rounds: s.length };
}
