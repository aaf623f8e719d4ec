/**
 * Perplexity under an explicit protocol: tokenize once (one BOS at the start of the text),
 * non-overlapping windows of `seqlen`, tail dropped, each window scored on its own (its first
 * token is not predicted), ppl = exp(mean token NLL over all scored tokens). Windows are
 * processed in small batches, so memory is bounded by one batch's activations and logits.
 *
 * The batches are the same whatever the number of threads, and their NLL sums are added in batch
 * order, so a pass split over worker threads (`perplexityOfTextParallel`) gives bit-identical
 * numbers to the in-process one.
 */
import * as tf from '@tensorflow/tfjs';
import type { CausalLM } from '../model/causal-lm.ts';
import { causalLmNllSum } from '../model/loss.ts';
import type { Tokenizer } from '../tokenizer/types.ts';
import { tokenizeText, windowStarts } from '../data/text.ts';
import { ConfigError } from '../util/errors.ts';
import { checkContextLength } from '../util/context-length.ts';
import { runBatches } from '../parallel/forward-pool.ts';
import { embedBatches, runLayer } from '../prune/stats.ts';
import { yieldIfDue } from '../backend/yield.ts';

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

interface Prepared {
  windows: number[][];
  batchSize: number;
  protocol: PerplexityProtocol;
}

function prepare(model: CausalLM, tokens: readonly number[], source: string, tokenizerId: string, opts: PerplexityOptions): Prepared {
  checkPerplexityOptions(opts);
  const { seqlen } = opts;
  const beyond = checkContextLength(model.config, seqlen, '--seqlen', { allow: opts.allowBeyondContext ?? false, allowFlag: '--allow-long-context' });
  const starts = windowStarts(tokens.length, seqlen, opts.maxWindows ?? null, source);
  return {
    windows: starts.map((s) => tokens.slice(s, s + seqlen)),
    batchSize: opts.batchSize ?? Math.max(1, Math.floor(4096 / seqlen)),
    protocol: {
      text: source, tokenizer: tokenizerId, seqlen, stride: seqlen, bos: 'once-at-text-start', tail: 'drop',
      loss: 'exp-mean-token-nll', maxWindows: opts.maxWindows ?? null,
      ...(beyond ? { beyondContext: true as const, contextLength: model.config.maxPositionEmbeddings } : {}),
    },
  };
}

function result(p: Prepared, r: { nll: number; tokens: number }): PerplexityResult {
  return { ppl: Math.exp(r.nll), nll: r.nll, tokens: r.tokens, windows: p.windows.length, seqlen: p.protocol.seqlen, protocol: p.protocol };
}

export async function perplexityOfTokens(model: CausalLM, tokens: readonly number[], source: string, tokenizerId: string,
  opts: PerplexityOptions): Promise<PerplexityResult> {
  const p = prepare(model, tokens, source, tokenizerId, opts);
  return result(p, await meanTokenNll(model, p.windows, p.batchSize, opts.onProgress));
}

/** Summed next-token NLL of one batch of windows (one forward pass), as the device computes it. */
export function batchNllSum(model: CausalLM, rows: readonly (readonly number[])[]): number {
  const part = tf.tidy(() => causalLmNllSum(model.forward(rows), rows).sum);
  const v = part.dataSync()[0]!;
  part.dispose();
  return v;
}

function batchesOf<T>(xs: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let b = 0; b < xs.length; b += size) out.push(xs.slice(b, b + size));
  return out;
}

const scored = (rows: readonly (readonly number[])[]): number => rows.reduce((n, r) => n + Math.max(0, r.length - 1), 0);

/** Mean NLL from per-batch sums, added in batch order (the one place both paths combine them). */
function meanOf(batches: readonly (readonly (readonly number[])[])[], sums: readonly number[]): { nll: number; tokens: number } {
  let sum = 0;
  let tokens = 0;
  batches.forEach((rows, b) => {
    sum += sums[b]!;
    tokens += scored(rows);
  });
  return { nll: sum / tokens, tokens };
}

/**
 * Mean next-token NLL of `model` (with whatever hook it has) over `windows`, each scored on its
 * own (its first token not predicted), `batchSize` windows per forward pass. Async: the event loop
 * may turn between batches (src/backend/yield.ts).
 */
export async function meanTokenNll(model: CausalLM, windows: readonly (readonly number[])[], batchSize: number,
  onProgress?: (done: number, total: number) => void): Promise<{ nll: number; tokens: number }> {
  const batches = batchesOf(windows, batchSize);
  if (model.mode === 'streamed') return meanOf(batches, await layerMajorNllSums(model, batches, batchSize, windows.length, onProgress));
  const sums: number[] = [];
  for (const [k, rows] of batches.entries()) {
    sums.push(batchNllSum(model, rows));
    onProgress?.(Math.min((k + 1) * batchSize, windows.length), windows.length);
    await yieldIfDue();
  }
  return meanOf(batches, sums);
}

/** Hidden states a layer-major pass keeps on the host at once (streamed weights): 1 GiB. */
export const LAYER_MAJOR_CHUNK_BYTES = 2 ** 30;

/**
 * `batchNllSum` of every batch, computed layer-major for streamed weights: the calibration
 * driver (embedBatches, runLayer) carries the hidden states of a chunk of batches on the host
 * through one layer at a time, so each layer goes onto the backend once per chunk rather than
 * once per batch; then the head scores each batch. Every batch sees the kernels the whole-model
 * forward runs, in the same order.
 */
async function layerMajorNllSums(model: CausalLM, batches: readonly (readonly (readonly number[])[])[], batchSize: number, total: number,
  onProgress?: (done: number, total: number) => void): Promise<number[]> {
  const T = batches[0]?.[0]?.length ?? 0;
  const perChunk = Math.max(1, Math.floor(LAYER_MAJOR_CHUNK_BYTES / (4 * batchSize * T * model.config.hiddenSize)));
  const sums: number[] = [];
  for (let c = 0; c < batches.length; c += perChunk) {
    const chunk = batches.slice(c, c + perChunk);
    let states = embedBatches(model, chunk);
    for (let i = 0; i < model.numLayers; i++) {
      states = runLayer(model, i, states)!;
      await yieldIfDue();
    }
    model.withParts(['head'], () => chunk.forEach((rows, k) => {
      const b = states.batches[k]!;
      const part = tf.tidy(() => causalLmNllSum(model.head(tf.tensor2d(b.data, [b.B * states.T, states.D])), rows).sum);
      sums.push(part.dataSync()[0]!);
      part.dispose();
      onProgress?.(Math.min((c + k + 1) * batchSize, total), total);
    }));
  }
  return sums;
}

/**
 * `meanTokenNll` with the batches spread over `threads` worker threads (1: in process; never
 * more threads than batches). The batches and the order their sums are added in are those of
 * the in-process path.
 */
export async function meanTokenNllParallel(model: CausalLM, windows: readonly (readonly number[])[], batchSize: number,
  threads: number, onProgress?: (done: number, total: number) => void, auto = false): Promise<{ nll: number; tokens: number; threadsUsed: number }> {
  const batches = batchesOf(windows, batchSize);
  const progress = (done: number) => onProgress?.(Math.min(done * batchSize, windows.length), windows.length);
  const { results: sums, threadsUsed } = await runBatches(model, batches.map((rows) => ({ type: 'nll' as const, rows: rows.map((r) => [...r]) })),
    threads, auto, (t) => batchNllSum(model, t.rows), progress);
  return { ...meanOf(batches, sums), threadsUsed };
}

export interface ParallelOptions {
  threads: number;
  /** `threads` is a default, not a request: use a pool only when the pass pays for its start-up. */
  autoThreads?: boolean;
}

/** `perplexityOfTokens` on `threads` worker threads (see `meanTokenNllParallel`). */
export async function perplexityOfTokensParallel(model: CausalLM, tokens: readonly number[], source: string, tokenizerId: string,
  opts: PerplexityOptions & ParallelOptions): Promise<PerplexityResult & { threadsUsed: number }> {
  const p = prepare(model, tokens, source, tokenizerId, opts);
  const r = await meanTokenNllParallel(model, p.windows, p.batchSize, opts.threads, opts.onProgress, opts.autoThreads);
  return { ...result(p, r), threadsUsed: r.threadsUsed };
}

export async function perplexityOfTextParallel(model: CausalLM, tokenizer: Tokenizer, file: string,
  opts: PerplexityOptions & ParallelOptions): Promise<PerplexityResult & { threadsUsed: number }> {
  return perplexityOfTokensParallel(model, tokenizeText(tokenizer, file), file, tokenizer.id, opts);
}

export async function perplexityOfText(model: CausalLM, tokenizer: Tokenizer, file: string, opts: PerplexityOptions): Promise<PerplexityResult> {
  return perplexityOfTokens(model, tokenizeText(tokenizer, file), file, tokenizer.id, opts);
}
