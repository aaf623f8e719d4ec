/**
 * Pretraining a small LLaMA-architecture CausalLM from seeded random weights (full-parameter
 * training), on token streams prepared by the caller (see `prunelab pretrain`).
 *
 * - Model: the config and seeded initial weights of `src/model/synthetic.ts` (normal, std
 *   `initStd`; norm weights 1), untied output head, RoPE in the HF layout. Every weight becomes a
 *   `tf.Variable`; the embedding lookup uses the model's `differentiableEmbedding` switch.
 * - Data: the training stream is cut into windows of `seqLen` tokens by the kit's
 *   `WindowSampler` (window-sampler.ts): epoch e starts its windows at a seeded offset in
 *   [0, seqLen) (0 for epoch 0), so later epochs see other window boundaries, and visits them in
 *   a seeded permutation; both derive from (seed, epoch) alone, so the data cursor (epoch,
 *   position) is the whole random state. Held-out windows are the
 *   non-overlapping windows of the held-out stream from its start, scored as `prunelab eval ppl`
 *   scores a text (first token of a window not predicted), optionally capped for the periodic
 *   evaluations; the final evaluation uses all of them.
 * - Loss: mean next-token cross-entropy over the batch, as a fused op with an explicit gradient
 *   (softmax − one-hot): the composite logSumExp's gradient goes through a broadcast Equal and
 *   an Exp, which the WebAssembly backend runs slowly (in a profiled step with 1024×4096 logits
 *   the Equal alone took ≈0.8 s and one Exp ≈0.09 s, against ≈0.014 s for the fused Softmax
 *   kernel used here). Same value and gradient as `trainingNllSum`.
 * - Matrix products: while training, tf.matMul's gradient is replaced (for plain 2-D products)
 *   by products on explicit transposes (`withFastMatMulGradient`, model/matmul-grad.ts) for
 *   *every* product of the forward pass: projections, output head, RoPE rotation and the
 *   attention products. On WebAssembly the transposeA/transposeB kernels are 10–20× slower
 *   than a transpose plus a plain product (measured [1024,192]×[192,512]: 242/602 ms flagged vs
 *   23/33 ms explicit). The original gradient is restored when training returns.
 * - Optimiser: the kit's AdamW (optimizer.ts), weight decay on the matrices (embedding,
 *   projections, head) and none on the norm weights; learning rate `lrAt` (linear warm-up,
 *   cosine to lr·minLrRatio); gradient clipping by global norm as torch's clip_grad_norm_.
 * - Checkpoints (`checkpointDir`, every `checkpointEvery` steps and at the last step): weights,
 *   AdamW moments, step, data cursor and logs, written by the kit (checkpoint.ts) so that a
 *   crash leaves the previous checkpoint.
 *   `resume` continues from it (from scratch when there is none) and reproduces the
 *   uninterrupted run's losses exactly on the same backend; the settings and the data must be
 *   the same (checked by a fingerprint).
 */
import * as tf from '@tensorflow/tfjs';
import { z } from 'zod';
import { windowStarts } from '../data/text.ts';
import { meanTokenNll } from '../eval/perplexity.ts';
import { yieldIfDue } from '../backend/yield.ts';
import { CausalLM } from '../model/causal-lm.ts';
import { withFastMatMulGradient } from '../model/matmul-grad.ts';
import { syntheticLlamaConfig, syntheticLlamaTensors } from '../model/synthetic.ts';
import type { NamedTensors } from '../model/tensor-data.ts';
import { ConfigError, DataError } from '../util/errors.ts';
import { tokensFingerprint } from '../util/fnv.ts';
import { parseOptions } from '../util/options.ts';
import {
  checkCheckpointSettings, checkpointDue, checkpointToResume, hasCheckpoint, hostCopy, restoreVariable, saveCheckpoint,
  type CheckpointKind, type TrainingState,
} from './checkpoint.ts';
import { lrAt } from './lr-schedule.ts';
import { AdamW, clipFactor, globalNorm } from './optimizer.ts';
import { lossAndGradients } from './step.ts';
import { WindowSampler, type Cursor } from './window-sampler.ts';

// Kit pieces re-exported where pretraining code has always found them.
export { useExplicitTransposeMatMulGradient } from '../model/matmul-grad.ts';
export { WindowSampler, type Cursor } from './window-sampler.ts';

const int = (min: number) => z.number().int().min(min);

export const pretrainConfigSchema = z.strictObject({
  hidden: int(2).default(128),
  layers: int(1).default(4),
  heads: int(1).default(4),
  kvHeads: int(1).default(2),
  /** SwiGLU width; default ≈ 2.7 × hidden rounded to a multiple of 8. */
  ffn: int(1).optional(),
  vocab: int(2),
  seqLen: int(2).default(128),
  steps: int(1),
  /** Windows per optimiser step. */
  batchSize: int(1).default(16),
  lr: z.number().positive().default(2e-3),
  /** Default: min(200, 5 % of steps). */
  warmupSteps: int(0).optional(),
  minLrRatio: z.number().min(0).max(1).default(0.1),
  weightDecay: z.number().min(0).default(0.1),
  beta1: z.number().min(0).lt(1).default(0.9),
  beta2: z.number().min(0).lt(1).default(0.95),
  eps: z.number().positive().default(1e-8),
  maxGradNorm: z.number().min(0).default(1),
  initStd: z.number().positive().default(0.02),
  seed: z.number().int().default(0),
  /** Held-out loss every N steps (and at step 0); 0 = only at the end. */
  evalEvery: int(0).default(100),
  /** Cap on held-out windows for the periodic evaluations (the final one uses all). */
  evalWindows: int(1).default(64),
  checkpointDir: z.string().min(1).optional(),
  checkpointEvery: int(1).optional(),
  resume: z.boolean().default(false),
  /** Stop this call after this global step (checkpoint written; continue with `resume`). */
  stopAfterStep: int(1).optional(),
});

export type PretrainConfig = z.input<typeof pretrainConfigSchema>;
type Resolved = z.output<typeof pretrainConfigSchema> & { ffn: number; warmupSteps: number };

export interface PretrainData {
  /** Training token stream. */
  train: ArrayLike<number>;
  /** Held-out token stream (scored in non-overlapping windows from its start). */
  heldOut: ArrayLike<number>;
  /** The tokenizer's BOS/EOS ids, recorded in the model config (default 1 and 2). */
  bosId?: number | null;
  eosId?: number | null;
}

export interface PretrainStep {
  step: number;
  loss: number;
  lr: number;
  gradNorm: number;
}

export interface PretrainEval {
  step: number;
  /** Mean next-token NLL (nats) over the evaluated held-out windows. */
  loss: number;
  windows: number;
}

export interface PretrainProgress extends PretrainStep {
  steps: number;
  /** Training throughput of this call so far (tokens / s of the training loop). */
  tokensPerSecond: number;
}

export interface PretrainOptions extends PretrainConfig {
  data: PretrainData;
  onProgress?: (p: PretrainProgress) => void;
  onEval?: (e: PretrainEval) => void;
}

export interface PretrainResult {
  /** The trained model (weights are tf.Variables); the caller disposes it. */
  model: CausalLM;
  /** False when `stopAfterStep` ended the call early. */
  completed: boolean;
  step: number;
  resumedFromStep: number | null;
  log: PretrainStep[];
  evals: PretrainEval[];
  /** Final held-out NLL/perplexity over all held-out windows (null when not completed). */
  heldOut: { loss: number; ppl: number; tokens: number; windows: number } | null;
  /** Add-one unigram baseline fitted on the training stream, on the same held-out tokens. */
  unigram: { loss: number; ppl: number; tokens: number };
  tokensSeen: number;
  /** Seconds spent in the training loop, summed over resumed calls. */
  trainSeconds: number;
  parameters: number;
  config: Resolved;
}

/** ≈ 2.7 × hidden (SwiGLU's 8/3 ratio, a little smaller), a multiple of 8. */
export function defaultFfn(hidden: number): number {
  return Math.max(8, Math.round((hidden * 2.7) / 8) * 8);
}

export function parsePretrainConfig(raw: unknown): Resolved {
  const c = parseOptions(pretrainConfigSchema, raw, 'pretraining', 'pretrain');
  if (c.hidden % c.heads !== 0) throw new ConfigError(`hidden ${c.hidden} is not a multiple of heads ${c.heads}`);
  if ((c.hidden / c.heads) % 2 !== 0) throw new ConfigError(`head dim ${c.hidden / c.heads} must be even (RoPE)`);
  if (c.heads % c.kvHeads !== 0) throw new ConfigError(`heads ${c.heads} is not a multiple of kvHeads ${c.kvHeads}`);
  checkCheckpointSettings(c);
  return {
    ...c,
    ffn: c.ffn ?? defaultFfn(c.hidden),
    warmupSteps: c.warmupSteps ?? Math.min(200, Math.floor(c.steps * 0.05)),
  };
}

// ---------------------------------------------------------------------------------------------
// Model

interface Slot {
  name: string;
  variable: tf.Variable;
  decay: boolean;
}

/** A freshly initialised model (seeded) for the shape in `c`; weights are still plain tensors. */
export function initialModel(c: Pick<Resolved, 'hidden' | 'layers' | 'heads' | 'kvHeads' | 'ffn' | 'vocab' | 'seqLen' | 'seed' | 'initStd'>,
  special: { bos: number | null; eos: number | null } = { bos: 1, eos: 2 }): CausalLM {
  const config = syntheticLlamaConfig({
    hidden: c.hidden, layers: c.layers, heads: c.heads, kvHeads: c.kvHeads, ffn: c.ffn, vocab: c.vocab,
    seed: c.seed, maxPositions: c.seqLen, tied: false,
  });
  config.bosTokenId = special.bos;
  config.eosTokenId = special.eos;
  config.hfConfig = { ...config.hfConfig, bos_token_id: special.bos, eos_token_id: special.eos };
  return CausalLM.fromNamedTensors(config, syntheticLlamaTensors(config, c.seed, c.initStd), `pretrain-init(seed=${c.seed})`);
}

/** Turn every weight of `model` into a trainable variable (in place); returns them in a fixed order. */
function makeTrainable(model: CausalLM): Slot[] {
  const slots: Slot[] = [];
  const wrap = <T extends tf.Tensor>(name: string, t: T, decay: boolean): T => {
    const v = tf.variable(t, true);
    t.dispose();
    slots.push({ name, variable: v, decay });
    return v as unknown as T;
  };
  const p = model.params;
  if (p.positions || model.config.tieWordEmbeddings) throw new ConfigError('pretraining supports untied LLaMA-family models only');
  p.embed = wrap('embed', p.embed, true);
  p.layers.forEach((layer, i) => {
    layer.attnNorm.weight = wrap(`layers.${i}.attn_norm`, layer.attnNorm.weight, false);
    for (const l of model.spec.linears) {
      const lin = layer.linears[l.role];
      if (!lin) continue;
      lin.weight = wrap(`layers.${i}.${l.role}`, lin.weight, true);
      if (lin.bias) lin.bias = wrap(`layers.${i}.${l.role}.bias`, lin.bias, false);
    }
    layer.mlpNorm.weight = wrap(`layers.${i}.mlp_norm`, layer.mlpNorm.weight, false);
  });
  p.finalNorm.weight = wrap('final_norm', p.finalNorm.weight, false);
  p.lmHead = wrap('lm_head', p.lmHead, true);
  return slots;
}

// ---------------------------------------------------------------------------------------------
// Data

/** The non-overlapping held-out windows (at most `max`), as `prunelab eval ppl` cuts them. */
export function heldOutWindows(tokens: ArrayLike<number>, seqLen: number, max: number | null = null): number[][] {
  const starts = windowStarts(tokens.length, seqLen, max, 'held-out text');
  return starts.map((s) => Array.from({ length: seqLen }, (_, t) => tokens[s + t]));
}

/**
 * Unigram baseline: p(t) = (count of t in `train` + 1) / (|train| + V) (add-one smoothing),
 * scored on the targets of `windows` (every token but each window's first, as eval ppl does).
 */
export function unigramBaseline(train: ArrayLike<number>, windows: readonly (readonly number[])[], vocab: number): { loss: number; ppl: number; tokens: number } {
  const counts = new Float64Array(vocab);
  for (let i = 0; i < train.length; i++) {
    const t = train[i];
    if (t < 0 || t >= vocab) throw new DataError(`token id ${t} is outside the vocabulary 0..${vocab - 1}`);
    counts[t] += 1;
  }
  const denom = train.length + vocab;
  let nll = 0;
  let tokens = 0;
  for (const w of windows) {
    for (let t = 1; t < w.length; t++) {
      nll -= Math.log((counts[w[t]] + 1) / denom);
      tokens += 1;
    }
  }
  if (tokens === 0) throw new DataError('no held-out tokens to score');
  const loss = nll / tokens;
  return { loss, ppl: Math.exp(loss), tokens };
}

// ---------------------------------------------------------------------------------------------
// Checkpoints

interface PretrainState extends TrainingState {
  cursor: Cursor;
  log: PretrainStep[];
  evals: PretrainEval[];
  trainSeconds: number;
}

const CHECKPOINT: CheckpointKind = { format: 'prunelab-pretrain', label: 'pretraining' };

/** True when `dir` holds a pretraining checkpoint. */
export function hasPretrainCheckpoint(dir: string): boolean {
  return hasCheckpoint(dir);
}

// ---------------------------------------------------------------------------------------------
// Training

/** Train a fresh model (or resume one) on `options.data`. */
export async function pretrain(options: PretrainOptions): Promise<PretrainResult> {
  // Every product of the forward pass trains through the fast explicit-transpose gradient.
  return withFastMatMulGradient(() => pretrainImpl(options));
}

async function pretrainImpl(options: PretrainOptions): Promise<PretrainResult> {
  const { data, onProgress, onEval, ...raw } = options;
  const cfg = parsePretrainConfig(raw);
  const train = Int32Array.from(data.train);
  const held = Int32Array.from(data.heldOut);
  for (const [name, s] of [['training', train], ['held-out', held]] as const) {
    for (let i = 0; i < s.length; i++) {
      if (s[i] < 0 || s[i] >= cfg.vocab) throw new DataError(`${name} token id ${s[i]} is outside the vocabulary 0..${cfg.vocab - 1}`);
    }
  }
  const sampler = new WindowSampler(train.length, cfg.seqLen, cfg.seed);
  const allHeld = heldOutWindows(held, cfg.seqLen);
  const evalSet = allHeld.slice(0, cfg.evalWindows);
  const evalBatch = Math.max(1, Math.floor(4096 / cfg.seqLen));
  const unigram = unigramBaseline(train, allHeld, cfg.vocab);

  const fingerprint: Record<string, unknown> = {
    shape: [cfg.hidden, cfg.layers, cfg.heads, cfg.kvHeads, cfg.ffn, cfg.vocab, cfg.seqLen],
    steps: cfg.steps, batchSize: cfg.batchSize, lr: cfg.lr, warmupSteps: cfg.warmupSteps, minLrRatio: cfg.minLrRatio,
    weightDecay: cfg.weightDecay, betas: [cfg.beta1, cfg.beta2], eps: cfg.eps, maxGradNorm: cfg.maxGradNorm,
    initStd: cfg.initStd, seed: cfg.seed, train: tokensFingerprint(train), heldOut: tokensFingerprint(held),
  };
  const ckpt = checkpointToResume<PretrainState>(cfg.checkpointDir, cfg.resume, CHECKPOINT, fingerprint);

  const model = initialModel(cfg, { bos: data.bosId === undefined ? 1 : data.bosId, eos: data.eosId === undefined ? 2 : data.eosId });
  const slots = makeTrainable(model);
  model.differentiableEmbedding = true;
  const vars = slots.map((s) => s.variable);
  const groups = [true, false].map((decay) => {
    const idx = slots.flatMap((s, i) => (s.decay === decay ? [i] : []));
    const opt = new AdamW(idx.map((i) => vars[i]), { beta1: cfg.beta1, beta2: cfg.beta2, eps: cfg.eps, weightDecay: decay ? cfg.weightDecay : 0 });
    return { prefix: decay ? 'decay' : 'nodecay', idx, opt };
  });
  const parameters = vars.reduce((n, v) => n + v.size, 0);

  let step = 0;
  let log: PretrainStep[] = [];
  let evals: PretrainEval[] = [];
  let trainSeconds = 0;
  let resumedFromStep: number | null = null;
  let ok = false;
  try {
    if (ckpt) {
      slots.forEach((s) => restoreVariable(s.variable, ckpt.tensors, `param.${s.name}`, 'weight', ckpt.file));
      for (const g of groups) g.opt.loadNamedTensors(ckpt.tensors, ckpt.state.step, ckpt.file, `${g.prefix}.`);
      step = ckpt.state.step;
      log = ckpt.state.log.slice();
      evals = ckpt.state.evals.slice();
      trainSeconds = ckpt.state.trainSeconds;
      sampler.cursor = { ...ckpt.state.cursor };
      resumedFromStep = step;
    }

    const evaluate = async () => {
      const e = { step, loss: (await meanTokenNll(model, evalSet, evalBatch)).nll, windows: evalSet.length };
      evals.push(e);
      onEval?.(e);
    };
    const save = () => {
      if (!cfg.checkpointDir) return;
      const t: NamedTensors = new Map();
      slots.forEach((s) => t.set(`param.${s.name}`, hostCopy(s.variable)));
      for (const g of groups) g.opt.toNamedTensors(t, `${g.prefix}.`);
      saveCheckpoint<PretrainState>(cfg.checkpointDir, CHECKPOINT, { step, cursor: sampler.cursor, log, evals, trainSeconds, fingerprint }, t);
    };

    if (step === 0 && cfg.evalEvery > 0) await evaluate();
    const stopAt = Math.min(cfg.steps, cfg.stopAfterStep ?? cfg.steps);
    const t0 = performance.now();
    let loopTokens = 0;
    while (step < stopAt) {
      const ts = performance.now();
      step += 1;
      const lr = lrAt(step, { lr: cfg.lr, steps: cfg.steps, warmupSteps: cfg.warmupSteps, minLrRatio: cfg.minLrRatio });
      const { loss, grads: gList } = lossAndGradients(model, vars, 1,
        () => sampler.next(cfg.batchSize).map((s) => Array.from(train.subarray(s, s + cfg.seqLen))));
      const gradNorm = globalNorm(gList);
      if (!Number.isFinite(loss) || !Number.isFinite(gradNorm)) {
        tf.dispose(gList);
        throw new DataError(`training diverged at step ${step} (loss ${loss}, gradient norm ${gradNorm}): lower --lr`);
      }
      const clip = clipFactor(gradNorm, cfg.maxGradNorm);
      for (const g of groups) g.opt.step(g.idx.map((i) => gList[i]), lr, clip);
      tf.dispose(gList);
      trainSeconds += (performance.now() - ts) / 1000;
      loopTokens += cfg.batchSize * cfg.seqLen;
      const entry: PretrainStep = { step, loss, lr, gradNorm };
      log.push(entry);
      onProgress?.({ ...entry, steps: cfg.steps, tokensPerSecond: loopTokens / ((performance.now() - t0) / 1000) });
      if (cfg.evalEvery > 0 && step % cfg.evalEvery === 0 && step < cfg.steps) await evaluate();
      if (checkpointDue(step, cfg.checkpointEvery, stopAt)) save();
      await yieldIfDue();
    }

    let heldOut: PretrainResult['heldOut'] = null;
    if (step >= cfg.steps) {
      const r = await meanTokenNll(model, allHeld, evalBatch);
      heldOut = { loss: r.nll, ppl: Math.exp(r.nll), tokens: r.tokens, windows: allHeld.length };
      const e = { step, loss: r.nll, windows: allHeld.length };
      evals.push(e);
      onEval?.(e);
    }
    ok = true;
    return {
      model, completed: step >= cfg.steps, step, resumedFromStep, log, evals, heldOut, unigram,
      tokensSeen: step * cfg.batchSize * cfg.seqLen, trainSeconds, parameters, config: cfg,
    };
  } finally {
    for (const g of groups) g.opt.dispose();
    if (!ok) model.dispose();
  }
}
