/**
 * Recovery fine-tuning: LoRA (or QA-LoRA) adapters trained with the causal-LM loss on token
 * windows of a text corpus, then merged into the base weights.
 *
 * - Data: the corpus is tokenised once and cut into non-overlapping windows of `seqLen` tokens
 *   (last partial window dropped). The *last* `heldOutFraction` of the windows is held out (a
 *   contiguous tail, so no held-out text is also trained on); training windows are visited in a
 *   seeded random order, reshuffled every epoch (`SeededOrder`, train/window-sampler.ts).
 * - Loss: mean next-token NLL over all tokens of one optimiser step (micro-batches of
 *   `microBatchSize` windows, `gradAccum` of them per step).
 * - Optimiser: the training kit's (src/train/): AdamW as torch.optim.AdamW computes it
 *   (decoupled weight decay p ← p·(1 − lr·wd), bias-corrected moments). Learning rate: linear warm-up over
 *   `warmupSteps` (step s ≤ W gets lr·s/W, steps counted from 1), then cosine decay to
 *   `lr·minLrRatio` at the last step. Gradients are clipped by global norm (`maxGradNorm`, 0 = off)
 *   as torch's clip_grad_norm_ does (factor max_norm/(norm + 1e-6), capped at 1).
 * - Base weights are frozen: only the adapter variables are passed to `tf.variableGrads`.
 * - Masks: see lora.ts — zeros of the base weights stay zero through training and merge.
 * - Checkpoints (`checkpointDir`, every `checkpointEvery` steps and at the end): adapter weights and
 *   AdamW moments (safetensors), step, RNG state, data cursor and the log so far (state.json),
 *   written by the kit (train/checkpoint.ts) so that a crash leaves the previous checkpoint. `resume: true` continues from it (from scratch when the
 *   folder holds none); a resumed run reproduces the uninterrupted run's losses exactly on the
 *   same backend, because every random draw (data order, dropout masks) comes from saved state.
 *   Resume expects the same base model as the original run (a fresh load): it is checked by a
 *   weight checksum.
 */
import * as tf from '@tensorflow/tfjs';
import seedrandom from 'seedrandom';
import { z } from 'zod';
import { meanTokenNll } from '../eval/perplexity.ts';
import type { CausalLM } from '../model/causal-lm.ts';
import type { LinearRole } from '../model/family.ts';
import { withFastMatMulGradient } from '../model/matmul-grad.ts';
import type { Tokenizer } from '../tokenizer/types.ts';
import { checkCheckpointSettings, checkpointDue, checkpointToResume, saveCheckpoint, type CheckpointKind, type TrainingState } from '../train/checkpoint.ts';
import { lrAt } from '../train/lr-schedule.ts';
import { AdamW, clipFactor, globalNorm } from '../train/optimizer.ts';
import { lossAndGradients } from '../train/step.ts';
import { SeededOrder, type Cursor } from '../train/window-sampler.ts';
import { DataError } from '../util/errors.ts';
import { tokensFingerprint } from '../util/fnv.ts';
import { parseOptions } from '../util/options.ts';
import { LoraSet } from './lora.ts';
import { resolveSchedule, type ResolvedSchedule, type ScheduleSpec } from './schedule.ts';
import type { GroupQuantized } from './quant.ts';

// The kit's optimiser and schedule, re-exported where recovery code has always found them.
export { AdamW, type AdamWOptions } from '../train/optimizer.ts';
export { lrAt } from '../train/lr-schedule.ts';

const ROLES = ['q', 'k', 'v', 'o', 'gate', 'up', 'down', 'fc1', 'fc2'] as const;

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
  targets: z.array(z.enum(ROLES)).min(1).optional(),
  /** Layers to adapt; default all. */
  layers: z.array(z.number().int().nonnegative()).optional(),
  steps: z.number().int().positive(),
  lr: z.number().positive().default(1e-4),
  weightDecay: z.number().min(0).default(0),
  beta1: z.number().min(0).lt(1).default(0.9),
  beta2: z.number().min(0).lt(1).default(0.999),
  eps: z.number().positive().default(1e-8),
  /** Default: min(100, 10 % of steps). */
  warmupSteps: z.number().int().nonnegative().optional(),
  minLrRatio: z.number().min(0).max(1).default(0),
  seqLen: z.number().int().min(2).default(128),
  microBatchSize: z.number().int().positive().default(4),
  gradAccum: z.number().int().positive().default(1),
  maxGradNorm: z.number().min(0).default(1),
  heldOutFraction: z.number().gt(0).lt(1).default(0.1),
  /** Cap on held-out windows scored (cost control); default all. */
  maxHeldOutWindows: z.number().int().positive().optional(),
  seed: z.number().int().default(0),
  preserveMasks: z.boolean().default(true),
  /** Fold adapters into the base weights at the end (default true). */
  merge: z.boolean().default(true),
  checkpointDir: z.string().min(1).optional(),
  checkpointEvery: z.number().int().positive().optional(),
  resume: z.boolean().default(false),
  /** Stop this call once this global step is done (checkpoint written, nothing merged). */
  stopAfterStep: z.number().int().positive().optional(),
});

export type FinetuneConfig = z.input<typeof finetuneConfigSchema>;
type ResolvedConfig = z.output<typeof finetuneConfigSchema>;

/** Training text: token ids, or text (one string, or documents each encoded with BOS). */
export type FinetuneData =
  | { tokens: ArrayLike<number> }
  | { text: string | readonly string[]; tokenizer: Tokenizer; addBos?: boolean };

export interface TrainLogEntry {
  step: number;
  loss: number;
  lr: number;
  gradNorm: number;
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
  trainWindows: number;
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

export function tokenize(data: FinetuneData): number[] {
  if ('tokens' in data) return Array.from(data.tokens);
  const docs = typeof data.text === 'string' ? [data.text] : data.text;
  const addBos = data.addBos ?? true;
  const out: number[] = [];
  for (const d of docs) if (d.length > 0) out.push(...data.tokenizer.encode(d, { addBos }));
  return out;
}

/** Non-overlapping windows of `seqLen` tokens; the last `fraction` (at least one) is held out. */
export function splitWindows(tokens: readonly number[], seqLen: number, fraction: number): { train: number[][]; heldOut: number[][] } {
  const n = Math.floor(tokens.length / seqLen);
  const windows = Array.from({ length: n }, (_, i) => tokens.slice(i * seqLen, (i + 1) * seqLen));
  const held = Math.max(1, Math.round(n * fraction));
  if (n - held < 1) {
    throw new DataError(`corpus too small: ${tokens.length} tokens give ${n} windows of ${seqLen}, ` +
      `need at least one training and one held-out window (lower seqLen or heldOutFraction, or give more text)`);
  }
  return { train: windows.slice(0, n - held), heldOut: windows.slice(n - held) };
}

/** Per-linear Σ|w| of the targeted base weights: detects resuming onto a different model. */
function weightChecksum(model: CausalLM, ranks: readonly number[], targets: readonly LinearRole[]): number[] {
  const out: number[] = [];
  ranks.forEach((r, layer) => {
    if (r === 0) return;
    for (const role of targets) {
      const s = tf.tidy(() => tf.sum(tf.abs(model.linearParams(layer, role).weight)));
      out.push(s.dataSync()[0]);
      s.dispose();
    }
  });
  return out;
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
export function finetune(model: CausalLM, options: FinetuneOptions): FinetuneResult {
  // Attention, output head and RoPE products train through the fast explicit-transpose gradient.
  return withFastMatMulGradient(() => finetuneImpl(model, options));
}

function finetuneImpl(model: CausalLM, options: FinetuneOptions): FinetuneResult {
  const { data, onProgress, ...raw } = options;
  const cfg = parseFinetuneConfig(raw);
  const warmupSteps = cfg.warmupSteps ?? Math.min(100, Math.floor(cfg.steps * 0.1));
  checkCheckpointSettings(cfg);
  const schedule = resolveSchedule(cfg.schedule satisfies ScheduleSpec, {
    rank: cfg.rank, alpha: cfg.alpha, numLayers: model.numLayers, layers: cfg.layers,
  });
  const targets: LinearRole[] = cfg.targets ?? model.spec.linears.map((l) => l.role);

  const tokens = tokenize(data);
  const vocab = model.config.vocabSize;
  const badTok = tokens.find((t) => !Number.isInteger(t) || t < 0 || t >= vocab);
  if (badTok !== undefined) throw new DataError(`token id ${badTok} is outside the model's vocabulary 0..${vocab - 1}`);
  const { train, heldOut: heldAll } = splitWindows(tokens, cfg.seqLen, cfg.heldOutFraction);
  const heldOut = cfg.maxHeldOutWindows ? heldAll.slice(0, cfg.maxHeldOutWindows) : heldAll;
  const evalBatch = cfg.microBatchSize;

  const fingerprint: Record<string, unknown> = {
    family: model.config.family, numLayers: model.numLayers, schedule: schedule, targets,
    dropout: cfg.dropout, steps: cfg.steps, lr: cfg.lr, weightDecay: cfg.weightDecay,
    betas: [cfg.beta1, cfg.beta2], eps: cfg.eps, warmupSteps, minLrRatio: cfg.minLrRatio,
    seqLen: cfg.seqLen, microBatchSize: cfg.microBatchSize, gradAccum: cfg.gradAccum,
    maxGradNorm: cfg.maxGradNorm, heldOutFraction: cfg.heldOutFraction, seed: cfg.seed,
    preserveMasks: cfg.preserveMasks, tokens: tokensFingerprint(tokens),
    weights: weightChecksum(model, schedule.ranks, targets),
  };
  const ckpt = checkpointToResume<RecoveryState>(cfg.checkpointDir, cfg.resume, CHECKPOINT, fingerprint,
    { weights: 'base weights (resume needs the same, unmodified base model as the original run)' });

  const savedHook = model.linearHook;
  const before = meanTokenNll(model, heldOut, evalBatch);

  const set = LoraSet.create(model, {
    ranks: schedule.ranks, alphas: schedule.alphas, dropout: cfg.dropout, targets,
    quant: schedule.quant, preserveMasks: cfg.preserveMasks, seed: cfg.seed,
  });
  const vars = set.variables();
  const adam = new AdamW(vars, { beta1: cfg.beta1, beta2: cfg.beta2, eps: cfg.eps, weightDecay: cfg.weightDecay });
  let keepAdapters = false;

  try {
    set.attach(model, { training: false });
    const start = meanTokenNll(model, heldOut, evalBatch).nll;

    let step = 0;
    let log: TrainLogEntry[] = [];
    let rng = seedrandom.alea(`${cfg.seed}:train`, { state: true });
    const order = new SeededOrder(cfg.seed, train.length);
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

    const stopAt = Math.min(cfg.steps, cfg.stopAfterStep ?? cfg.steps);
    set.setMode({ training: true });
    while (step < stopAt) {
      step += 1;
      const lr = lrAt(step, { lr: cfg.lr, steps: cfg.steps, warmupSteps, minLrRatio: cfg.minLrRatio });
      const { loss, grads: gList } = lossAndGradients(model, vars, cfg.gradAccum, () => {
        const batch = order.next(cfg.microBatchSize).map((v) => train[v.item]);
        set.dropoutSeed = rng.int32();
        return batch;
      });
      const gradNorm = globalNorm(gList);
      const clip = clipFactor(gradNorm, cfg.maxGradNorm);
      adam.step(gList, lr, clip);
      tf.dispose(gList);
      const entry: TrainLogEntry = { step, loss, lr, gradNorm };
      log.push(entry);
      onProgress?.({ ...entry, steps: cfg.steps });
      if (checkpointDue(step, cfg.checkpointEvery, stopAt)) save();
    }
    set.setMode({ training: false });

    const base = {
      step, resumedFromStep, log, trainWindows: train.length, schedule,
      trainableParams: set.numTrainableParams,
    };
    const heldInfo = { before: before.nll, start, tokens: before.tokens, windows: heldOut.length };
    if (step < cfg.steps) {
      return { ...base, completed: false, heldOut: { ...heldInfo, after: null }, quantized: null, adapters: null };
    }
    let quantized: Map<string, GroupQuantized> | null = null;
    if (cfg.merge) {
      const q = set.merge(model);
      quantized = schedule.quant ? q : null;
    } else {
      keepAdapters = true;
    }
    const after = meanTokenNll(model, heldOut, evalBatch).nll;
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
