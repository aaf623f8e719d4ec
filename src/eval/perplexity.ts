/**
 * Perplexity under an explicit protocol: tokenize once (one BOS at the start of the text),
 * non-overlapping windows of `seqlen`, tail dropped, each window scored on its own (its first
 * token is not predicted), ppl = exp(mean token NLL over all scored tokens). Windows are
 * processed in small batches, so memory is bounded by one batch's activations and logits.
 */
import * as tf from '@tensorflow/tfjs';
import type { CausalLM } from '../model/causal-lm.ts';
import { causalLmNllSum } from '../model/loss.ts';
import type { Tokenizer } from '../tokenizer/types.ts';
import { tokenizeText, windowStarts } from '../data/text.ts';
import { ConfigError } from '../util/errors.ts';
import { checkContextLength } from '../util/context-length.ts';

export interface PerplexityProtocol {
  text: string;
  tokenizer: string;
  seqlen: number;
  stride: number;
  bos: 'once-at-text-start';
  tail: 'drop';
  loss: 'exp-mean-token-nll';
  maxWindows: number | null;
  /** Present (true) only when windows run past the model's trained context (asked for explicitly). */
  beyondContext?: true;
  contextLength?: number;
}

export interface PerplexityResult {
  ppl: number;
  /** Mean NLL per scored token (nats). */
  nll: number;
  /** Scored tokens: windows × (seqlen − 1). */
  tokens: number;
  windows: number;
  seqlen: number;
  protocol: PerplexityProtocol;
}

export interface PerplexityOptions {
  seqlen: number;
  maxWindows?: number | null;
  /** Windows per forward pass; default keeps a batch near 4096 tokens. */
  batchSize?: number;
  /** LLaMA family: allow windows longer than max_position_embeddings (recorded in the protocol). */
  allowBeyondContext?: boolean;
  onProgress?: (done: number, total: number) => void;
}

/** The argument checks (also run by the CLI before it loads anything). */
export function checkPerplexityOptions(opts: Pick<PerplexityOptions, 'seqlen' | 'maxWindows'>): void {
  const { seqlen, maxWindows } = opts;
  if (!Number.isInteger(seqlen) || seqlen < 2) throw new ConfigError(`--seqlen must be an integer ≥ 2 (got ${seqlen})`);
  if (maxWindows != null && !(Number.isInteger(maxWindows) && maxWindows >= 1)) {
    throw new ConfigError(`--max-windows must be a positive integer, or left out to score every window (got ${maxWindows})`);
  }
}

export function perplexityOfTokens(model: CausalLM, tokens: readonly number[], source: string, tokenizerId: string,
  opts: PerplexityOptions): PerplexityResult {
  checkPerplexityOptions(opts);
  const { seqlen } = opts;
  const maxWindows = opts.maxWindows ?? null;
  const beyond = checkContextLength(model.config, seqlen, '--seqlen', { allow: opts.allowBeyondContext ?? false, allowFlag: '--allow-long-context' });
  const starts = windowStarts(tokens.length, seqlen, maxWindows, source);
  const batch = opts.batchSize ?? Math.max(1, Math.floor(4096 / seqlen));
  const windows = starts.map((s) => tokens.slice(s, s + seqlen));
  const { nll, tokens: count } = meanTokenNll(model, windows, batch, opts.onProgress);
  return {
    ppl: Math.exp(nll), nll, tokens: count, windows: starts.length, seqlen,
    protocol: {
      text: source, tokenizer: tokenizerId, seqlen, stride: seqlen, bos: 'once-at-text-start', tail: 'drop',
      loss: 'exp-mean-token-nll', maxWindows,
      ...(beyond ? { beyondContext: true as const, contextLength: model.config.maxPositionEmbeddings } : {}),
    },
  };
}

/**
 * Mean next-token NLL of `model` (with whatever hook it has) over `windows`, each scored on its
 * own (its first token not predicted), `batchSize` windows per forward pass.
 */
export function meanTokenNll(model: CausalLM, windows: readonly (readonly number[])[], batchSize: number,
  onProgress?: (done: number, total: number) => void): { nll: number; tokens: number } {
  let sum = 0;
  let tokens = 0;
  for (let b = 0; b < windows.length; b += batchSize) {
    const rows = windows.slice(b, b + batchSize);
    const part = tf.tidy(() => causalLmNllSum(model.forward(rows), rows).sum);
    sum += part.dataSync()[0];
    part.dispose();
    tokens += rows.reduce((n, r) => n + Math.max(0, r.length - 1), 0);
    onProgress?.(Math.min(b + batchSize, windows.length), windows.length);
  }
  return { nll: sum / tokens, tokens };
}

export function perplexityOfText(model: CausalLM, tokenizer: Tokenizer, file: string, opts: PerplexityOptions): PerplexityResult {
  return perplexityOfTokens(model, tokenizeText(tokenizer, file), file, tokenizer.id, opts);
}
