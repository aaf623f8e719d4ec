/**
 * What the recovery trainer trains on: plain text cut into windows, or instruction examples
 * (instruction-data.ts), split into training and held-out items, batched, and scored.
 *
 * - Text: the corpus is tokenised once and cut into non-overlapping windows of `seqLen` tokens
 *   (last partial window dropped); the *last* windows are held out (a contiguous tail, so no
 *   held-out text is also trained on). Every token after a window's first is predicted.
 * - Instructions: one sequence per example, at most `seqLen` tokens (the cutoff), with a loss mask
 *   (prompt tokens not predicted unless trainOnInputs). Held-out examples are drawn by a seeded
 *   shuffle (LLM-Pruner holds out a random `val_set_size`). A micro-batch is right-padded to its
 *   longest sequence with id 0 (LLM-Pruner's pad id) and padding is masked out of the loss; the
 *   model is causal, so padding after a sequence changes none of its logits.
 *
 * Held out: `heldOutCount` items, or else `heldOutFraction` of them (at least one).
 */
import * as tf from '@tensorflow/tfjs';
import { meanTokenNll } from '../eval/perplexity.ts';
import type { CausalLM } from '../model/causal-lm.ts';
import { causalLmNllSum } from '../model/loss.ts';
import type { Tokenizer } from '../tokenizer/types.ts';
import type { TrainBatch } from '../train/step.ts';
import { seededPermutation } from '../train/window-sampler.ts';
import { DataError } from '../util/errors.ts';
import { yieldIfDue } from '../backend/yield.ts';
import { tokensFingerprint } from '../util/fnv.ts';
import { tokenizeInstruction, type InstructionExample, type TokenizedExample } from './instruction-data.ts';
import type { PromptTemplate } from './prompt-template.ts';

/** Training data: token ids, text (one string, or documents each encoded with BOS), or instruction examples. */
export type FinetuneData =
  | { tokens: ArrayLike<number> }
  | { text: string | readonly string[]; tokenizer: Tokenizer; addBos?: boolean }
  | { instructions: readonly InstructionExample[]; tokenizer: Tokenizer; template: PromptTemplate; trainOnInputs: boolean };

export interface SplitOptions {
  /** Window length (text) or cutoff (instructions). */
  seqLen: number;
  heldOutFraction: number;
  heldOutCount?: number;
  /** Cap on held-out items scored (cost control). */
  maxHeldOut?: number;
  seed: number;
  vocabSize: number;
}

export interface TrainingSet {
  format: 'text' | 'instructions';
  trainItems: number;
  heldOutItems: number;
  /** The training micro-batch of these training items. */
  batch(items: readonly number[]): TrainBatch;
  /** Mean NLL of the predicted held-out tokens (batches of `batchSize` items) and their count (async: yields between batches). */
  heldOutNll(model: CausalLM, batchSize: number): Promise<{ nll: number; tokens: number }>;
  /** Identifies the training data in checkpoint fingerprints. */
  fingerprint: string;
}

/** Pad id of instruction batches: LLM-Pruner sets `tokenizer.pad_token_id = 0`. */
const PAD_ID = 0;

export function tokenize(data: Exclude<FinetuneData, { instructions: unknown }>): number[] {
  if ('tokens' in data) return Array.from(data.tokens);
  const docs = typeof data.text === 'string' ? [data.text] : data.text;
  const addBos = data.addBos ?? true;
  const out: number[] = [];
  for (const d of docs) if (d.length > 0) out.push(...data.tokenizer.encode(d, { addBos }));
  return out;
}

function heldOutSize(n: number, o: SplitOptions, what: string): number {
  const held = o.heldOutCount ?? Math.max(1, Math.round(n * o.heldOutFraction));
  if (n - held < 1) {
    throw new DataError(`too little data: ${n} ${what} leave none to train on after holding out ${held} ` +
      '(lower the held-out fraction or count, or give more data)');
  }
  return held;
}

/** Non-overlapping windows of `seqLen` tokens; the last `fraction` (at least one) is held out. */
export function splitWindows(tokens: readonly number[], seqLen: number, fraction: number, count?: number): { train: number[][]; heldOut: number[][] } {
  const n = Math.floor(tokens.length / seqLen);
  const windows = Array.from({ length: n }, (_, i) => tokens.slice(i * seqLen, (i + 1) * seqLen));
  const held = count ?? Math.max(1, Math.round(n * fraction));
  if (n - held < 1) {
    throw new DataError(`corpus too small: ${tokens.length} tokens give ${n} windows of ${seqLen}, ` +
      `need at least one training and one held-out window (lower seqLen or the held-out fraction or count, or give more text)`);
  }
  return { train: windows.slice(0, n - held), heldOut: windows.slice(n - held) };
}

function checkVocab(ids: readonly number[], vocab: number): void {
  const bad = ids.find((t) => !Number.isInteger(t) || t < 0 || t >= vocab);
  if (bad !== undefined) throw new DataError(`token id ${bad} is outside the model's vocabulary 0..${vocab - 1}`);
}

export function prepareTrainingSet(data: FinetuneData, o: SplitOptions): TrainingSet {
  return 'instructions' in data ? instructionSet(data, o) : textSet(data, o);
}

function textSet(data: Exclude<FinetuneData, { instructions: unknown }>, o: SplitOptions): TrainingSet {
  const tokens = tokenize(data);
  checkVocab(tokens, o.vocabSize);
  const { train, heldOut: all } = splitWindows(tokens, o.seqLen, o.heldOutFraction, o.heldOutCount);
  const heldOut = o.maxHeldOut ? all.slice(0, o.maxHeldOut) : all;
  return {
    format: 'text', trainItems: train.length, heldOutItems: heldOut.length,
    batch: (items) => items.map((i) => train[i]),
    heldOutNll: (model, batchSize) => meanTokenNll(model, heldOut, batchSize),
    fingerprint: tokensFingerprint(tokens),
  };
}

/** Right-pad examples to their longest; padding is never predicted. */
function padded(examples: readonly TokenizedExample[]): { ids: number[][]; lossMask: number[][] } {
  const T = Math.max(...examples.map((e) => e.ids.length));
  const pad = (row: readonly number[], v: number) => [...row, ...new Array<number>(T - row.length).fill(v)];
  return { ids: examples.map((e) => pad(e.ids, PAD_ID)), lossMask: examples.map((e) => pad(e.lossMask, 0)) };
}

function instructionSet(data: Extract<FinetuneData, { instructions: unknown }>, o: SplitOptions): TrainingSet {
  const all = data.instructions.map((ex) => tokenizeInstruction(ex, data.tokenizer, data.template, { cutoff: o.seqLen, trainOnInputs: data.trainOnInputs }));
  const flat: number[] = [];
  for (const e of all) {
    checkVocab(e.ids, o.vocabSize);
    flat.push(...e.ids, ...e.lossMask);
  }
  const n = all.length;
  const held = heldOutSize(n, o, 'examples');
  const perm = seededPermutation(n, `${o.seed}:held-out`);
  const isHeld = new Set(perm.subarray(n - held));
  const train = all.filter((_, i) => !isHeld.has(i));
  const heldAll = all.filter((_, i) => isHeld.has(i));
  const heldOut = o.maxHeldOut ? heldAll.slice(0, o.maxHeldOut) : heldAll;
  return {
    format: 'instructions', trainItems: train.length, heldOutItems: heldOut.length,
    batch: (items) => padded(items.map((i) => train[i])),
    heldOutNll: async (model, batchSize) => {
      let sum = 0;
      let tokens = 0;
      for (let b = 0; b < heldOut.length; b += batchSize) {
        const { ids, lossMask } = padded(heldOut.slice(b, b + batchSize));
        const part = tf.tidy(() => {
          const r = causalLmNllSum(model.forward(ids), ids, lossMask);
          tokens += r.count;
          return r.sum;
        });
        sum += part.dataSync()[0];
        part.dispose();
        await yieldIfDue();
      }
      if (tokens === 0) throw new DataError('the held-out examples have no response tokens to score (raise the cutoff, or hold out other examples)');
      return { nll: sum / tokens, tokens };
    },
    fingerprint: tokensFingerprint(flat),
  };
}
