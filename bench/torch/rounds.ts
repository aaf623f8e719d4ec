/**
 * Alternating measurement for side-by-side figures on a shared machine: every side runs once per
 * round, in turn, so load changes hit all sides alike; figures are medians over rounds and the
 * PruneLab ÷ PyTorch ratio comes with its spread over rounds.
 */
import { median } from '../../src/eval/speed.ts';
import { roundSpread } from '../../src/eval/spread.ts';

export type Side<T> = { label: string; sample: () => Promise<T> };

export const MAX_ROUNDS = 40;

/** The pause before each side's turn in a short case: longer than a BLAS thread pool spins after its last call. */
export const SETTLE_MS = 200;

/**
 * Samples per side. With a budget (short runs: prefill, decode), each side first runs once
 * unmeasured, short runs get more rounds (up to MAX_ROUNDS) until a case takes about `budgetMs`,
 * and every turn starts with a pause of SETTLE_MS and one unmeasured run of the same side: without
 * them a turn began while the previous side's threads still ran (the system OpenBLAS in PyTorch's
 * process spins its threads after a call; measured 12-03, stories260K prefill: PruneLab 16.1k
 * tokens/s right after PyTorch on 2 threads, 22.3k after a pause) and on caches and threads the
 * other side had left cold (PyTorch on 1 thread: 19.0k right after PruneLab, 15.9k after a pause
 * alone), so each side is measured warm, on a machine the other has left.
 */
export async function alternate<T>(sides: Side<T>[], minRounds: number, budgetMs: number): Promise<T[][]> {
  let rounds = minRounds;
  const warmTurns = budgetMs > 0;
  if (warmTurns) {
    const t0 = performance.now();
    for (const s of sides) await s.sample();
    const perRound = 2 * (performance.now() - t0) + SETTLE_MS * sides.length;
    rounds = Math.min(MAX_ROUNDS, Math.max(minRounds, Math.ceil(budgetMs / perRound)));
  }
  const out: T[][] = sides.map(() => []);
  for (let r = 0; r < rounds; r++) {
    for (let i = 0; i < sides.length; i++) {
      if (warmTurns) {
        await new Promise((res) => setTimeout(res, SETTLE_MS));
        await sides[i].sample();
      }
      out[i].push(await sides[i].sample());
    }
  }
  return out;
}

/** PruneLab (side 0) against the PyTorch sides for one metric. */
export interface Versus {
  /** Medians over rounds. */
  prunelab: number;
  torch: number[];
  /** Index into `torch` of the best PyTorch side (by median). */
  best: number;
  /** > 1 = PruneLab faster: PruneLab / PyTorch for throughputs, PyTorch / PruneLab for times. */
  ratio: number;
  /** min–max of the per-round ratios; the interquartile range from 5 rounds on. */
  lo: number;
  hi: number;
  rounds: number;
}

export function versus<T>(samples: T[][], metric: (s: T) => number, higherIsBetter: boolean): Versus {
  const med = samples.map((ss) => median(ss.map(metric)));
  const better = (a: number, b: number) => (higherIsBetter ? a > b : a < b);
  let best = 1;
  for (let i = 2; i < med.length; i++) if (better(med[i], med[best])) best = i;
  const rel = (p: number, t: number) => (higherIsBetter ? p / t : t / p);
  const spread = roundSpread(samples[0].map((s, r) => rel(metric(s), metric(samples[best][r]))));
  return { prunelab: med[0], torch: med.slice(1), best: best - 1, ratio: rel(med[0], med[best]), ...spread };
}

export const fmtRatio = (v: Versus) => `${v.ratio.toFixed(2)}× (${v.lo.toFixed(2)}–${v.hi.toFixed(2)}, ${v.rounds} rounds)`;
export const SPREAD_NOTE = 'The spread is the min–max of the ratios taken within each round (the interquartile range from 5 rounds on).';
