/**
 * Inference speed and size (protocol.md §4): prefill and KV-cache decode throughput with warm-up
 * excluded and the median of repeats, per-token decode latency, parameters by matrix type,
 * analytic FLOPs per token, and tensor memory. `compareSpeed` measures a dense and a pruned model
 * interleaved in one run, so both see the same machine state, and reports ratios.
 *
 * Unstructured sparsity stored as dense zeros does not change these numbers; report speed only
 * for structurally pruned models.
 */
import * as tf from '@tensorflow/tfjs';
import { countParameters, type ParameterCount } from '../model/count.ts';
import { disposeCache, type CausalLM } from '../model/causal-lm.ts';
import type { ModelConfig } from '../model/config.ts';
import { familySpec } from '../model/family.ts';
import { ConfigError } from '../util/errors.ts';
import { ROUND_SPREAD_STATISTIC, roundSpread, type RoundSpread } from './spread.ts';
import { deviceDescription } from '../backend/index.ts';
import { yieldIfDue } from '../backend/yield.ts';

export interface SpeedOptions {
  /** Prompt length T of the prefill forward. */
  promptTokens: number;
  /** Single-token decode steps after the prefill. */
  newTokens: number;
  /** Measured repeats (median reported). */
  repeats: number;
  /** Unmeasured repeats run first. */
  warmup: number;
  /** Sequences per forward (default 1). */
  batch?: number;
  /** Context length L for `flops_per_token` (default promptTokens). */
  contextLength?: number;
}


export interface SpeedProtocol {
  backend: string;
  device: string;
  batch: number;
  prompt_tokens: number;
  new_tokens: number;
  warmup: number;
  repeats: number;
  statistic: 'median';
  decode: 'greedy, KV cache, one token per forward';
  timer: 'performance.now around each forward incl. reading the argmax back';
  flops_context_length: number;
  flops_formula: string;
}

export interface SpeedResult {
  /** batch × promptTokens / median prefill time. */
  prefill_tps: number;
  /** batch × newTokens / median total decode time. */
  decode_tps: number;
  /** Median time of one decode step over all measured steps (ms). */
  latency_ms: number;
  /** Median prefill time (ms). */
  prefill_ms: number;
  params: ParameterCount;
  flops_per_token: number;
  /** weight_bytes + kv_cache_bytes: this model's tensor memory at the end of decoding. */
  tensor_bytes: number;
  /** Bytes of the model's parameter tensors (the tied head's transposed copy included). */
  weight_bytes: number;
  /** Growth of `tf.memory().numBytes` from before the prefill to the end of decoding (the KV cache). */
  kv_cache_bytes: number;
  protocol: SpeedProtocol;
}

export interface SpeedComparison {
  dense: SpeedResult;
  pruned: SpeedResult;
  /** pruned / dense for throughputs, dense / pruned for latency (> 1 = pruned faster): ratios of the medians. */
  speedup: { prefill: number; decode: number; latency: number };
  /**
   * How far noise moves the throughput ratios: pruned / dense taken within each repeat (the two
   * runs of a repeat are adjacent in time), spread over the repeats.
   */
  spread: { prefill: RoundSpread; decode: RoundSpread; statistic: string };
  /** pruned / dense. */
  params_ratio: number;
  flops_ratio: number;
}

/** Parameters from the model's actual tensors (so per-layer pruned shapes count as they are). */

function weightBytes(model: CausalLM): number {
  return model.weights.weightBytes();
}

export const FLOPS_FORMULA =
  'flops_per_token = 2 * (sum over layers and linears of in*out + vocab*hidden) + sum over layers of 4 * numHeads * headDim * L';

/**
 * Analytic FLOPs for one token attending to a context of L positions (itself included):
 *   2 × MACs of every decoder linear (in × out per layer and role, from the per-layer shapes)
 * + 2 × MACs of the output head (vocab × hidden)
 * + per layer 4 · H · hd · L for attention: q·kᵀ scores (H · hd · L MACs) and the
 *   probability-weighted sum of values (H · hd · L MACs), 2 FLOPs per MAC.
 * Biases, norms, RoPE, softmax, activations and the embedding lookup are not counted.
 */
export function flopsPerToken(config: ModelConfig, contextLength: number): number {
  const spec = familySpec(config.family);
  let macs = config.vocabSize * config.hiddenSize;
  let attn = 0;
  for (const shape of config.layers) {
    for (const l of spec.linears) macs += l.inDim(shape, config) * l.outDim(shape, config);
    attn += 4 * shape.numHeads * config.headDim * contextLength;
  }
  return 2 * macs + attn;
}

interface Sample {
  prefillMs: number;
  stepMs: number[];
  kvBytes: number;
}

function promptIds(batch: number, T: number, vocab: number): number[][] {
  // Fixed, non-degenerate ids; their values do not affect the work done.
  return Array.from({ length: batch }, (_, b) => Array.from({ length: T }, (_, t) => 3 + ((t * 31 + b * 17) % Math.max(1, vocab - 3))));
}

/** Greedy next ids from the last position of each row; reading them back synchronises. */
function nextIds(logits: tf.Tensor2D, B: number, T: number): number[] {
  const ids = tf.tidy(() => {
    const V = logits.shape[1];
    return tf.argMax(logits.reshape([B, T, V]).slice([0, T - 1, 0], [B, 1, V]).reshape([B, V]), -1);
  });
  logits.dispose();
  const out = Array.from(ids.dataSync());
  ids.dispose();
  return out;
}

/** Async so the decode loop can let the event loop turn between steps (outside the timed spans). */
async function runOnce(model: CausalLM, prompt: number[][], newTokens: number): Promise<Sample> {
  const B = prompt.length;
  const T = prompt[0].length;
  const cache = model.newCache();
  const before = tf.memory().numBytes;
  try {
    let t0 = performance.now();
    let next = nextIds(model.forward(prompt, cache), B, T);
    const prefillMs = performance.now() - t0;
    const stepMs: number[] = [];
    for (let s = 0; s < newTokens; s++) {
      await yieldIfDue();
      t0 = performance.now();
      next = nextIds(model.forward(next.map((id) => [id]), cache), B, 1);
      stepMs.push(performance.now() - t0);
    }
    return { prefillMs, stepMs, kvBytes: tf.memory().numBytes - before };
  } finally {
    disposeCache(cache);
  }
}

export function median(xs: readonly number[]): number {
  if (xs.length === 0) throw new Error('median of an empty list');
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function checkOptions(model: CausalLM, o: SpeedOptions): Required<SpeedOptions> {
  const r: Required<SpeedOptions> = { batch: 1, contextLength: o.promptTokens, ...o };
  for (const k of ['promptTokens', 'newTokens', 'repeats', 'batch'] as const) {
    if (!Number.isInteger(r[k]) || r[k] < 1) throw new ConfigError(`speed: ${k} must be a positive integer, got ${r[k]}`);
  }
  if (!Number.isInteger(r.warmup) || r.warmup < 0) throw new ConfigError(`speed: warmup must be a non-negative integer, got ${r.warmup}`);
  if (model.config.family === 'opt' && r.promptTokens + r.newTokens > model.config.maxPositionEmbeddings) {
    throw new ConfigError(`speed: ${r.promptTokens} + ${r.newTokens} tokens exceed the model's ${model.config.maxPositionEmbeddings} positions`);
  }
  return r;
}

function summarize(model: CausalLM, o: Required<SpeedOptions>, samples: Sample[]): SpeedResult {
  const prefillMs = median(samples.map((s) => s.prefillMs));
  const decodeMs = median(samples.map((s) => s.stepMs.reduce((a, b) => a + b, 0)));
  const wBytes = weightBytes(model);
  const kvBytes = Math.max(...samples.map((s) => s.kvBytes));
  return {
    prefill_tps: (o.batch * o.promptTokens) / (prefillMs / 1000),
    decode_tps: (o.batch * o.newTokens) / (decodeMs / 1000),
    latency_ms: median(samples.flatMap((s) => s.stepMs)),
    prefill_ms: prefillMs,
    params: countParameters(model),
    flops_per_token: flopsPerToken(model.config, o.contextLength),
    tensor_bytes: wBytes + kvBytes,
    weight_bytes: wBytes,
    kv_cache_bytes: kvBytes,
    protocol: {
      backend: tf.getBackend(),
      device: deviceDescription(),
      batch: o.batch,
      prompt_tokens: o.promptTokens,
      new_tokens: o.newTokens,
      warmup: o.warmup,
      repeats: o.repeats,
      statistic: 'median',
      decode: 'greedy, KV cache, one token per forward',
      timer: 'performance.now around each forward incl. reading the argmax back',
      flops_context_length: o.contextLength,
      flops_formula: FLOPS_FORMULA,
    },
  };
}

/** Measure one model. Leaves the tensor count unchanged. */
export async function measureSpeed(model: CausalLM, opts: SpeedOptions): Promise<SpeedResult> {
  const o = checkOptions(model, opts);
  const prompt = promptIds(o.batch, o.promptTokens, model.config.vocabSize);
  for (let i = 0; i < o.warmup; i++) await runOnce(model, prompt, o.newTokens);
  const samples: Sample[] = [];
  for (let i = 0; i < o.repeats; i++) samples.push(await runOnce(model, prompt, o.newTokens));
  return summarize(model, o, samples);
}

/**
 * Dense and pruned in the same run, interleaved (ABBA order across repeats) so that drift in
 * machine load affects both alike.
 */
export async function compareSpeed(dense: CausalLM, pruned: CausalLM, opts: SpeedOptions): Promise<SpeedComparison> {
  const od = checkOptions(dense, opts);
  const op = checkOptions(pruned, opts);
  const pd = promptIds(od.batch, od.promptTokens, dense.config.vocabSize);
  const pp = promptIds(op.batch, op.promptTokens, pruned.config.vocabSize);
  for (let i = 0; i < od.warmup; i++) {
    await runOnce(dense, pd, od.newTokens);
    await runOnce(pruned, pp, op.newTokens);
  }
  const sd: Sample[] = [];
  const sp: Sample[] = [];
  for (let i = 0; i < od.repeats; i++) {
    if (i % 2 === 0) {
      sd.push(await runOnce(dense, pd, od.newTokens));
      sp.push(await runOnce(pruned, pp, op.newTokens));
    } else {
      sp.push(await runOnce(pruned, pp, op.newTokens));
      sd.push(await runOnce(dense, pd, od.newTokens));
    }
  }
  const d = summarize(dense, od, sd);
  const p = summarize(pruned, op, sp);
  const decodeMs = (x: Sample) => x.stepMs.reduce((a, b) => a + b, 0);
  // Same tokens on both sides, so the throughput ratio of a repeat is dense time / pruned time.
  const perRound = (t: (x: Sample) => number) => roundSpread(sd.map((x, i) => t(x) / t(sp[i])));
  return {
    dense: d,
    pruned: p,
    speedup: {
      prefill: p.prefill_tps / d.prefill_tps,
      decode: p.decode_tps / d.decode_tps,
      latency: d.latency_ms / p.latency_ms,
    },
    spread: { prefill: perRound((x) => x.prefillMs), decode: perRound(decodeMs), statistic: ROUND_SPREAD_STATISTIC },
    params_ratio: p.params.total / d.params.total,
    flops_ratio: p.flops_per_token / d.flops_per_token,
  };
}
