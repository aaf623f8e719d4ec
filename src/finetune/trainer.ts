/**
 * Recovery fine-tuning: LoRA (or QA-LoRA) adapters trained with the causal-LM loss on text
 * windows or instruction examples (training-data.ts), then merged into the base weights.
 *
 * - Data: see training-data.ts (windows of `seqLen` tokens with a held-out tail, or instruction
 *   examples cut at `seqLen` with prompt tokens masked out of the loss). Training items are visited
 *   in a seeded random order, reshuffled every epoch (`SeededOrder`, train/window-sampler.ts);
 *   micro-batches run on across epoch boundaries.
 * - Length: `steps` optimiser steps, or `epochs` passes counted as Hugging Face's Trainer counts
 *   them: steps = ceil(epochs × max(1, floor(ceil(items/microBatchSize)/gradAccum))).
 * - Loss: mean next-token NLL of each micro-batch (of `microBatchSize` items) over its predicted
 *   tokens, averaged over the `gradAccum` micro-batches of one optimiser step (effective batch
 *   microBatchSize × gradAccum items), as HF's Trainer averages accumulated micro-batches.
 * - Optimiser: the training kit's (src/train/): AdamW as torch.optim.AdamW computes it
 *   (decoupled weight decay p ← p·(1 − lr·wd), bias-corrected moments). Learning rate
 *   (train/lr-schedule.ts): `cosine` (default: linear warm-up over `warmupSteps`, step s ≤ W gets
 *   lr·s/W, then cosine decay to `lr·minLrRatio`), or HF's `linear` / `constant` with warm-up.
 *   Gradients are clipped by global norm (`maxGradNorm`, 0 = off) as torch's clip_grad_norm_ does
 *   (factor max_norm/(norm + 1e-6), capped at 1).
 * - Base weights are frozen: only the adapter variables are passed to `tf.variableGrads`.
 * - Masks: see lora.ts — zeros of the base weights stay zero through training and merge.
 * - Checkpoints (`checkpointDir`, every `checkpointEvery` steps and at the end): adapter weights and
 *   AdamW moments (safetensors), step, RNG state, data cursor and the log so far (state.json),
 *   written by the kit (train/checkpoint.ts) so that a crash leaves the previous checkpoint. `resume: true` continues from it (from scratch when the
 *   folder holds none); a resumed run reproduces the uninterrupted run's losses exactly on the
 *   same backend, because every random draw (data order, dropout masks) comes from saved state.
 *   Resume expects the same base model as the original run (a fresh load): it is checked by a
 *   weight checksum.
 * - Streamed weights (one layer on the backend): the base stays on the host and the adapters on
 *   the backend; each micro-batch's gradients come from the layer-wise backward (layer inputs on
 *   the host, each layer's forward recomputed for its backward), the same numbers as resident.
 */
import * as tf from '@tensorflow/tfjs';
import seedrandom from 'seedrandom';
import { z } from 'zod';
import type { CausalLM } from '../model/causal-lm.ts';
import { LINEAR_ROLES, type LinearRole } from '../model/family.ts';
import { withFastMatMulGradient } from '../model/matmul-grad.ts';
import { checkCheckpointSettings, checkpointDue, checkpointToResume, saveCheckpoint, type CheckpointKind, type TrainingState } from '../train/checkpoint.ts';
import { LR_SCHEDULES, lrAt } from '../train/lr-schedule.ts';
import { AdamW, clipFactor, globalNorm } from '../train/optimizer.ts';
import { lossAndGradients, type TrainBatch } from '../train/step.ts';
import { layerwiseBackward } from '../model/layer-backward.ts';
import { SeededOrder, type Cursor } from '../train/window-sampler.ts';
import { ConfigError } from '../util/errors.ts';
import { parseOptions } from '../util/options.ts';
import { LoraSet } from './lora.ts';
import { resolveSchedule, type ResolvedSchedule, type ScheduleSpec } from './schedule.ts';
import type { GroupQuantized } from './quant.ts';
import { prepareTrainingSet, type FinetuneData } from './training-data.ts';
import { yieldIfDue } from '../backend/yield.ts';

// The kit's optimiser and schedule, re-exported where recovery code has always found them.
export { AdamW, type AdamWOptions } from '../train/optimizer.ts';
export { lrAt } from '../train/lr-schedule.ts';
export { splitWindows, tokenize, type FinetuneData } from './training-data.ts';

/** `uniform`, or a resolved method schedule (see schedule.ts): per-layer ranks, alphas, quantisation. */
const scheduleSchema = z.union([
  z.literal('uniform'),
  z.strictObject({
    name: z.string().min(1),
    ranks: z.array(z.number().int().nonnegative()).min(1),
    alphas: z.array(z.number().positive()).min(1),
    quant: z.strictObject({ bits: z.number().int().min(2).max(8), groupSize: z.number().int().positive() }).nullable(),
    allocation: z.string().min(1),
  }),
]);

/**
 * The serialisable recovery settings (what an experiment YAML's `recovery:` block holds).
 * Unknown keys are errors. Defaults follow the baselines' LoRA recipe (baselines.md §8.6) where it has
 * one: r 8, α 16, dropout 0.05, lr 1e-4, all linears of every layer.
 */
export const finetuneConfigSchema = z.strictObject({
  schedule: scheduleSchema.default('uniform'),
  /** r̄: the rank (uniform) or the mean rank of a per-layer allocation. */
  rank: z.number().int().positive().default(8),
  alpha: z.number().positive().default(16),
  dropout: z.number().min(0).lt(1).default(0.05),
  /** Linear roles to adapt; default all linears of the family. */
  targets: z.array(z.enum(LINEAR_ROLES)).min(1).optional(),
  /** Layers to adapt; default all. */
  layers: z.array(z.number().int().nonnegative()).optional(),
  /** Optimiser steps; give this or `epochs`. */
  steps: z.number().int().positive().optional(),
  /** Passes over the training items (steps counted as HF's Trainer counts them); give this or `steps`. */
  epochs: z.number().positive().optional(),
  lr: z.number().positive().default(1e-4),
  /** Learning-rate schedule after the warm-up (train/lr-schedule.ts). */
  lrSchedule: z.enum(LR_SCHEDULES).default('cosine'),
  weightDecay: z.number().min(0).default(0),
  beta1: z.number().min(0).lt(1).default(0.9),
  beta2: z.number().min(0).lt(1).default(0.999),
  eps: z.number().positive().default(1e-8),
  /** Default: min(100, 10 % of steps). */
  warmupSteps: z.number().int().nonnegative().optional(),
  /** Final learning rate as a fraction of `lr` (cosine only). */
  minLrRatio: z.number().min(0).max(1).default(0),
  /** Window length of text; maximum tokens per example (the cutoff) of instruction data. */
  seqLen: z.number().int().min(2).default(128),
  microBatchSize: z.number().int().positive().default(4),
  gradAccum: z.number().int().positive().default(1),
  maxGradNorm: z.number().min(0).default(1),
  heldOutFraction: z.number().gt(0).lt(1).default(0.1),
  /** Held-out items (windows or examples); replaces `heldOutFraction` when given. */
  heldOutCount: z.number().int().positive().optional(),
  /** Cap on held-out windows (or examples) scored (cost control); default all. */
  maxHeldOutWindows: z.number().int().positive().optional(),
  seed: z.number().int().default(0),
  preserveMasks: z.boolean().default(true),
  /** Fold adapters into the base weights at the end (default true). */
  merge: z.boolean().default(true),
  checkpointDir: z.string().min(1).optional(),
  /** Default: every 10 % of the steps (and at the end). */
  checkpointEvery: z.number().int().positive().optional(),
  resume: z.boolean().default(false),
  /** Stop this call once this global step is done (checkpoint written, nothing merged). */
  stopAfterStep: z.number().int().positive().optional(),
}).superRefine((c, ctx) => {
  if ((c.steps === undefined) === (c.epochs === undefined)) {
    ctx.addIssue({ code: 'custom', path: ['steps'], message: c.steps === undefined ? 'give steps or epochs' : 'give steps or epochs, not both' });
  }
});

export type FinetuneConfig = z.input<typeof finetuneConfigSchema>;
type ResolvedConfig = z.output<typeof finetuneConfigSchema>;

export interface TrainLogEntry {
  step: number;
  loss: number;
  lr: number;
  gradNorm: number;
  /** Predicted tokens of the step (all micro-batches). */
  tokens: number;
}

/** How the run was laid out, once the data was read: recorded with results. */
export interface TrainingLayout {
  format: 'text' | 'instructions';
  trainItems: number;
  heldOutItems: number;
  microBatchSize: number;
  gradAccum: number;
  /** Items per optimiser step: microBatchSize × gradAccum. */
  effectiveBatch: number;
  seqLen: number;
  /** Optimiser steps per epoch as HF's Trainer counts them. */
  stepsPerEpoch: number;
  steps: number;
  /** Passes over the training items the steps make (steps × effectiveBatch / trainItems). */
  epochs: number;
  lrSchedule: (typeof LR_SCHEDULES)[number];
  warmupSteps: number;
}

export interface FinetuneProgress extends TrainLogEntry {
  steps: number;
}

export interface FinetuneOptions extends FinetuneConfig {
  data: FinetuneData;
  onProgress?: (p: FinetuneProgress) => void;
}

export interface FinetuneResult {
  /** False when `stopAfterStep` ended the call early (adapters discarded, nothing merged). */
  completed: boolean;
  /** Global steps done. */
  step: number;
  resumedFromStep: number | null;
  /** Every step so far, restored entries included after a resume. */
  log: TrainLogEntry[];
  /**
   * Mean held-out token NLL: `before` on the model as given, `start` with adapters attached at
   * the starting point (the fake-quantised base under group quantisation), `after` on the returned model
   * (merged, or with adapters attached when `merge` is false; null when not completed).
   */
  heldOut: { before: number; start: number; after: number | null; tokens: number; windows: number };
  /** Training windows (or examples). */
  trainWindows: number;
  layout: TrainingLayout;
  schedule: ResolvedSchedule;
  trainableParams: number;
  /** QA-LoRA form after merge: the quantised weights (updated β) by `<layer>.<role>`. */
  quantized: Map<string, GroupQuantized> | null;
  /** With `merge: false`: the adapters, attached (evaluation mode); the caller disposes them. */
  adapters: LoraSet | null;
}

export function parseFinetuneConfig(raw: unknown): ResolvedConfig {
  return parseOptions(finetuneConfigSchema, raw, 'recovery', 'recovery');
}

/** Optimiser steps of `epochs` passes over `items`, as HF's Trainer counts them. */
export function stepsForEpochs(epochs: number, items: number, microBatchSize: number, gradAccum: number): { steps: number; stepsPerEpoch: number } {
  const stepsPerEpoch = Math.max(1, Math.floor(Math.ceil(items / microBatchSize) / gradAccum));
  return { steps: Math.ceil(epochs * stepsPerEpoch), stepsPerEpoch };
}

/** Per-linear Σ|w| of the targeted base weights: detects resuming onto a different model. */
function weightChecksum(model: CausalLM, ranks: readonly number[], targets: readonly LinearRole[]): number[] {
  const out: number[] = [];
  ranks.forEach((r, layer) => {
    if (r === 0) return;
    model.withParts([layer], () => {
      for (const role of targets) {
        const s = tf.tidy(() => tf.sum(tf.abs(model.linearParams(layer, role).weight)));
        out.push(s.dataSync()[0]);
        s.dispose();
      }
    });
  });
  return out;
}

/**
 * `lossAndGradients` for a streamed model, through the layer-wise backward: one micro-batch per
 * pass (drawn, with its dropout seed, just before it; the seed holds for the recomputed forward),
 * the same loss (micro-batch token means over `accum`) and gradients summed in the same order.
 */
function layerwiseLossAndGradients(model: CausalLM, set: LoraSet, vars: readonly tf.Variable[], accum: number,
  nextBatch: () => TrainBatch): { loss: number; grads: tf.Tensor[]; tokens: number } {
  const index = new Map<tf.Tensor, number>(vars.map((v, i) => [v, i]));
  const byLayer = (l: number) => set.adapters.filter((a) => a.layer === l).flatMap((a) => [a.A, a.B]);
  const grads: (tf.Tensor | null)[] = vars.map(() => null);
  let loss = 0;
  let tokens = 0;
  for (let k = 0; k < accum; k++) {
    const batch = nextBatch();
    const [ids, mask] = Array.isArray(batch) ? [batch, undefined] : [batch.ids, batch.lossMask];
    const r = layerwiseBackward(model, [{ ids, mask }], {
      lossDivisor: (_b, count) => Math.max(1, count) * accum,
      wrt: byLayer,
      onBatch: (l, g) => byLayer(l).forEach((v, j) => {
        const i = index.get(v)!;
        const prev = grads[i];
        grads[i] = prev ? tf.add(prev, g[j]!) : tf.clone(g[j]!);
        prev?.dispose();
      }),
    });
    loss += r.loss;
    tokens += r.tokens;
  }
  if (grads.some((g) => g === null)) throw new Error('layer-wise backward: an adapter got no gradient');
  return { loss, grads: grads as tf.Tensor[], tokens };
}

/** The recovery trainer's checkpoint state (besides step and fingerprint). */
interface RecoveryState extends TrainingState {
  rng: seedrandom.State.Alea;
  cursor: Cursor;
  log: TrainLogEntry[];
}

const CHECKPOINT: CheckpointKind = { format: 'prunelab-lora-trainer', label: 'recovery trainer' };

/**
 * Fine-tune `model` in place with LoRA adapters per `options.schedule` and (by default) merge
 * them into its weights. The model's previous `linearHook` is restored at the end.
 */
export async function finetune(model: CausalLM, options: FinetuneOptions): Promise<FinetuneResult> {
  // Attention, output head and RoPE products train through the fast explicit-transpose gradient.
  return withFastMatMulGradient(() => finetuneImpl(model, options));
}

async function finetuneImpl(model: CausalLM, options: FinetuneOptions): Promise<FinetuneResult> {
  const { data, onProgress, ...raw } = options;
  const cfg = parseFinetuneConfig(raw);
  checkCheckpointSettings(cfg);
  const schedule = resolveSchedule(cfg.schedule satisfies ScheduleSpec, {
    rank: cfg.rank, alpha: cfg.alpha, numLayers: model.numLayers, layers: cfg.layers,
  });
  const targets: LinearRole[] = cfg.targets ?? model.spec.linears.map((l) => l.role);

  const dataset = prepareTrainingSet(data, {
    seqLen: cfg.seqLen, heldOutFraction: cfg.heldOutFraction, heldOutCount: cfg.heldOutCount,
    maxHeldOut: cfg.maxHeldOutWindows, seed: cfg.seed, vocabSize: model.config.vocabSize,
  });
  const perEpoch = stepsForEpochs(1, dataset.trainItems, cfg.microBatchSize, cfg.gradAccum).stepsPerEpoch;
  const steps = cfg.steps ?? stepsForEpochs(cfg.epochs as number, dataset.trainItems, cfg.microBatchSize, cfg.gradAccum).steps;
  const warmupSteps = cfg.warmupSteps ?? Math.min(100, Math.floor(steps * 0.1));
  if (dataset.format === 'instructions' && cfg.seqLen > model.config.maxPositionEmbeddings) {
    throw new ConfigError(`seqLen (cutoff) ${cfg.seqLen} exceeds the model's ${model.config.maxPositionEmbeddings} positions`);
  }
  const layout: TrainingLayout = {
    format: dataset.format, trainItems: dataset.trainItems, heldOutItems: dataset.heldOutItems,
    microBatchSize: cfg.microBatchSize, gradAccum: cfg.gradAccum, effectiveBatch: cfg.microBatchSize * cfg.gradAccum,
    seqLen: cfg.seqLen, stepsPerEpoch: perEpoch, steps,
    epochs: (steps * cfg.microBatchSize * cfg.gradAccum) / dataset.trainItems, lrSchedule: cfg.lrSchedule, warmupSteps,
  };
  const evalBatch = cfg.microBatchSize;

  // Keys only a non-default setting adds keep older checkpoints resumable.
  const fingerprint: Record<string, unknown> = {
    family: model.config.family, numLayers: model.numLayers, schedule: schedule, targets,
    dropout: cfg.dropout, steps, lr: cfg.lr, weightDecay: cfg.weightDecay,
    betas: [cfg.beta1, cfg.beta2], eps: cfg.eps, warmupSteps, minLrRatio: cfg.minLrRatio,
    seqLen: cfg.seqLen, microBatchSize: cfg.microBatchSize, gradAccum: cfg.gradAccum,
    maxGradNorm: cfg.maxGradNorm, heldOutFraction: cfg.heldOutFraction, seed: cfg.seed,
    preserveMasks: cfg.preserveMasks, tokens: dataset.fingerprint,
    weights: weightChecksum(model, schedule.ranks, targets),
    ...(cfg.lrSchedule !== 'cosine' ? { lrSchedule: cfg.lrSchedule } : {}),
    ...(cfg.heldOutCount !== undefined ? { heldOutCount: cfg.heldOutCount } : {}),
  };
  const ckpt = checkpointToResume<RecoveryState>(cfg.checkpointDir, cfg.resume, CHECKPOINT, fingerprint,
    { weights: 'base weights (resume needs the same, unmodified base model as the original run)' });

  const savedHook = model.linearHook;
  const before = await dataset.heldOutNll(model, evalBatch);

  const set = LoraSet.create(model, {
    ranks: schedule.ranks, alphas: schedule.alphas, dropout: cfg.dropout, targets,
    quant: schedule.quant, preserveMasks: cfg.preserveMasks, seed: cfg.seed,
  });
  const vars = set.variables();
  const adam = new AdamW(vars, { beta1: cfg.beta1, beta2: cfg.beta2, eps: cfg.eps, weightDecay: cfg.weightDecay });
  let keepAdapters = false;

  try {
    set.attach(model, { training: false });
    const start = (await dataset.heldOutNll(model, evalBatch)).nll;

    let step = 0;
    let log: TrainLogEntry[] = [];
    let rng = seedrandom.alea(`${cfg.seed}:train`, { state: true });
    const order = new SeededOrder(cfg.seed, dataset.trainItems);
    let resumedFromStep: number | null = null;
    if (ckpt) {
      set.loadNamedTensors(ckpt.tensors, ckpt.file);
      adam.loadNamedTensors(ckpt.tensors, ckpt.state.step, ckpt.file);
      step = ckpt.state.step;
      log = ckpt.state.log.slice();
      rng = seedrandom.alea('', { state: ckpt.state.rng });
      order.cursor = { ...ckpt.state.cursor };
      resumedFromStep = step;
    }

    const save = () => {
      if (!cfg.checkpointDir) return;
      const t = adam.toNamedTensors(set.toNamedTensors());
      saveCheckpoint<RecoveryState>(cfg.checkpointDir, CHECKPOINT, { step, rng: rng.state(), cursor: order.cursor, log, fingerprint }, t);
    };

    const stopAt = Math.min(steps, cfg.stopAfterStep ?? steps);
    const checkpointEvery = cfg.checkpointEvery ?? Math.max(1, Math.floor(steps / 10));
    set.setMode({ training: true });
    while (step < stopAt) {
      step += 1;
      const lr = lrAt(step, { lr: cfg.lr, steps, warmupSteps, minLrRatio: cfg.minLrRatio, kind: cfg.lrSchedule });
      const nextBatch = () => {
        const batch = dataset.batch(order.next(cfg.microBatchSize).map((v) => v.item));
        set.dropoutSeed = rng.int32();
        return batch;
      };
      const { loss, grads: gList, tokens } = model.mode === 'streamed'
        ? layerwiseLossAndGradients(model, set, vars, cfg.gradAccum, nextBatch)
        : lossAndGradients(model, vars, cfg.gradAccum, nextBatch);
      const gradNorm = globalNorm(gList);
      const clip = clipFactor(gradNorm, cfg.maxGradNorm);
      adam.step(gList, lr, clip);
      tf.dispose(gList);
      const entry: TrainLogEntry = { step, loss, lr, gradNorm, tokens };
      log.push(entry);
      onProgress?.({ ...entry, steps });
      if (checkpointDue(step, checkpointEvery, stopAt)) save();
      await yieldIfDue();
    }
    set.setMode({ training: false });

    const base = {
      step, resumedFromStep, log, trainWindows: dataset.trainItems, layout, schedule,
      trainableParams: set.numTrainableParams,
    };
    const heldInfo = { before: before.nll, start, tokens: before.tokens, windows: dataset.heldOutItems };
    if (step < steps) {
      return { ...base, completed: false, heldOut: { ...heldInfo, after: null }, quantized: null, adapters: null };
    }
    let quantized: Map<string, GroupQuantized> | null = null;
    if (cfg.merge) {
      const q = set.merge(model);
      quantized = schedule.quant ? q : null;
    } else {
      keepAdapters = true;
    }
    const after = (await dataset.heldOutNll(model, evalBatch)).nll;
    return {
      ...base, completed: true, heldOut: { ...heldInfo, after }, quantized,
      adapters: keepAdapters ? set : null,
    };
  } finally {
    adam.dispose();
    if (!keepAdapters) {
      set.dispose();
      model.linearHook = savedHook;
    }
  }
}
