/** Learning-rate schedules shared by pretraining and LoRA recovery. */

export const LR_SCHEDULES = ['cosine', 'linear', 'constant'] as const;
export type LrScheduleKind = (typeof LR_SCHEDULES)[number];

export interface LrSchedule {
  /** Peak learning rate, reached at the end of the warm-up. */
  lr: number;
  /** Optimiser steps of the whole run (the decay ends at the last one). */
  steps: number;
  warmupSteps: number;
  /** The final learning rate as a fraction of `lr` (cosine only). */
  minLrRatio: number;
  /** Default `cosine`. */
  kind?: LrScheduleKind;
}

/**
 * Learning rate of optimiser step `step` (1-based).
 *
 * `cosine` (PruneLab's own, pretraining's and recovery's default): linear warm-up (step s ≤ W gets
 * lr·s/W), then cosine decay to lr·minLrRatio at the last step.
 *
 * `linear` and `constant` are Hugging Face's `get_linear_schedule_with_warmup` and
 * `get_constant_schedule_with_warmup` as `Trainer` steps them: optimiser step s uses the factor of
 * scheduler step s − 1, so with warm-up the first update has lr 0 (the LLM-Pruner recipe's
 * schedule, HF's default `lr_scheduler_type`). Factor at scheduler step t: t/W while t < W, then
 * `linear` max(0, (T − t)/(T − W)) with T = `steps`, `constant` 1.
 */
export function lrAt(step: number, c: LrSchedule): number {
  const { lr, steps, warmupSteps: W } = c;
  const kind = c.kind ?? 'cosine';
  if (kind !== 'cosine') {
    const t = step - 1;
    if (t < W) return (lr * t) / Math.max(1, W);
    return kind === 'constant' ? lr : lr * Math.max(0, (steps - t) / Math.max(1, steps - W));
  }
  if (W > 0 && step <= W) return (lr * step) / W;
  const span = Math.max(1, steps - W);
  const progress = Math.min(1, (step - W) / span);
  const min = lr * c.minLrRatio;
  return min + (lr - min) * 0.5 * (1 + Math.cos(Math.PI * progress));
}
