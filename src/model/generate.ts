/**
 * Autoregressive generation with a key/value cache: one prefill forward over the prompt, then
 * one single-token forward per new token. Greedy or sampled (temperature, top-k, seeded).
 */
import * as tf from '@tensorflow/tfjs';
import seedrandom from 'seedrandom';
import { disposeCache, type CausalLM } from './causal-lm.ts';
import { yieldIfDue } from '../backend/yield.ts';

export interface GenerateOptions {
  maxNewTokens: number;
  /** Argmax decoding (default when no temperature is given). */
  greedy?: boolean;
  temperature?: number;
  topK?: number;
  seed?: number;
  /** Stop after emitting this id (included in the output). */
  stopId?: number | null;
}

export interface GenerateResult {
  /** Prompt followed by the new tokens. */
  ids: number[];
  newIds: number[];
}

/** Pick the next id from one row of logits. */
export function sampleNext(logits: Float32Array, opts: GenerateOptions, rng: () => number): number {
  if (opts.greedy || opts.temperature === undefined || opts.temperature === 0) {
    let best = 0;
    for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
    return best;
  }
  const order = Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a] || a - b);
  const k = opts.topK && opts.topK > 0 ? Math.min(opts.topK, order.length) : order.length;
  const top = order.slice(0, k);
  const maxLogit = logits[top[0]];
  const weights = top.map((i) => Math.exp((logits[i] - maxLogit) / (opts.temperature as number)));
  const total = weights.reduce((a, b) => a + b, 0);
  let r = rng() * total;
  for (let j = 0; j < k; j++) {
    r -= weights[j];
    if (r <= 0) return top[j];
  }
  return top[k - 1];
}

/** Async so that it can let the event loop turn between tokens (WebGPU frees its objects then). */
export async function generate(model: CausalLM, prompt: readonly number[], opts: GenerateOptions): Promise<GenerateResult> {
  if (prompt.length === 0) throw new Error('generate: the prompt must hold at least one id (e.g. BOS)');
  const limit = model.config.family === 'opt' ? model.config.maxPositionEmbeddings : Infinity;
  if (prompt.length + opts.maxNewTokens > limit) {
    throw new Error(`generate: ${prompt.length} + ${opts.maxNewTokens} tokens exceed the model's ${limit} positions`);
  }
  const rng = seedrandom(String(opts.seed ?? 0));
  const cache = model.newCache();
  const newIds: number[] = [];
  try {
    let input: number[] = [...prompt];
    for (let step = 0; step < opts.maxNewTokens; step++) {
      const last = tf.tidy(() => {
        const logits = model.forward([input], cache);
        return logits.slice([logits.shape[0] - 1, 0], [1, -1]);
      });
      const row = last.dataSync() as Float32Array;
      last.dispose();
      const next = sampleNext(row, opts, rng);
      newIds.push(next);
      if (opts.stopId !== undefined && opts.stopId !== null && next === opts.stopId) break;
      input = [next];
      await yieldIfDue();
    }
  } finally {
    disposeCache(cache);
  }
  return { ids: [...prompt, ...newIds], newIds };
}
