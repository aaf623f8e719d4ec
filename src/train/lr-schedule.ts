/** Learning-rate schedule shared by pretraining and LoRA recovery. */

export interface LrSchedule {
  /** Peak learning rate, reached at the end of the warm-up. */
  lr: number;
  /** Optimiser steps of the whole run (the cosine ends at the last one). */
  steps: number;
  warmupSteps: number;
  /** The final learning rate as a fraction of `lr`. */
  minLrRatio: number;
}

/**
 * Learning rate of optimiser step `step` (1-based): linear warm-up (step s ≤ W gets lr·s/W),
 * then cosine decay to lr·minLrRatio at the last step.
 */
export function lrAt(step: number, c: LrSchedule): number {
  const { lr, steps, warmupSteps: W } = c;
  if (W > 0 && step <= W) return (lr * step) / W;
  const span = Math.max(1, steps - W);
  const progress = Math.min(1, (step - W) / span);
  const min = lr * c.minLrRatio;
  return min + (lr - min) * 0.5 * (1 + Math.cos(Math.PI * progress));
}
