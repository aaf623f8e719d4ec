/**
 * The streaming statistics service. Calibration hidden states live on the host in batches
 * (so device memory holds one batch at a time); a layer is run batch by batch with taps and the
 * requested statistics are accumulated on the device, then copied to the host once per layer.
 */
import * as tf from '@tensorflow/tfjs';
import { BlockContext, type CausalLM, type BlockTaps } from '../model/causal-lm.ts';
import { TAP_NAMES, type LinearRole, type TapName } from '../model/family.ts';
import type { LayerStats, LayerStatsRequest, TapStats } from './method.ts';
import { memLog } from '../util/mem-log.ts';
import { modelLayout } from '../backend/layout.ts';
import { COLUMN_SQUARE_SUMS_KERNEL, fusedKernelUsable } from '../backend/native-elementwise.ts';

/** Hidden states of the calibration windows entering some layer, `[B*T, D]` per batch. */
export interface HiddenStates {
  batches: { data: Float32Array; B: number }[];
  T: number;
  D: number;
}

export function batchWindows(windows: number[][], tokensPerBatch = 4096): number[][][] {
  const T = windows[0].length;
  const per = Math.max(1, Math.floor(tokensPerBatch / T));
  const out: number[][][] = [];
  for (let i = 0; i < windows.length; i += per) out.push(windows.slice(i, i + per));
  return out;
}

export function embedWindows(model: CausalLM, windows: number[][]): HiddenStates {
  return embedBatches(model, batchWindows(windows));
}

/** The embeddings of batches of equal-length windows, on the host (the start of a layer-major pass). */
export function embedBatches(model: CausalLM, batches: readonly (readonly (readonly number[])[])[]): HiddenStates {
  const out = model.withParts(['embed'], () => batches.map((rows) => {
    const x = model.embed(rows);
    const data = x.dataSync() as Float32Array;
    x.dispose();
    return { data: Float32Array.from(data), B: rows.length };
  }));
  return { batches: out, T: batches[0]![0]!.length, D: model.config.hiddenSize };
}

/** Temporarily swap in other weights for some linears of layer i (e.g. the dense snapshot). */
export function withLinearWeights<T>(model: CausalLM, layer: number, weights: Partial<Record<LinearRole, tf.Tensor2D>>, fn: () => T): T {
  const saved: [LinearRole, tf.Tensor2D][] = [];
  for (const [role, w] of Object.entries(weights) as [LinearRole, tf.Tensor2D][]) {
    const p = model.linearParams(layer, role);
    saved.push([role, p.weight]);
    p.weight = w;
  }
  try {
    return fn();
  } finally {
    for (const [role, w] of saved) model.linearParams(layer, role).weight = w;
  }
}

/**
 * Run layer i over all batches. `onBatch` sees the block input, output and taps of each batch
 * (device tensors, disposed after the callback). Returns the output states unless `keepOutput`
 * is false.
 */
export function runLayer(model: CausalLM, layer: number, states: HiddenStates,
  onBatch?: (input: tf.Tensor2D, output: tf.Tensor2D, taps: BlockTaps | undefined, b: number) => void,
  opts: { taps?: boolean; keepOutput?: boolean } = {}): HiddenStates | null {
  const keep = opts.keepOutput ?? true;
  const out: HiddenStates['batches'] = [];
  // The layer goes onto the backend once for all batches (streamed weights).
  model.withParts([layer], () => states.batches.forEach((batch, b) => {
    const ctx = new BlockContext(batch.B, states.T, 0, model.config);
    try {
      tf.tidy(() => {
        const x = tf.tensor2d(batch.data, [batch.B * states.T, states.D]);
        const r = model.runBlock(layer, x, ctx, { taps: opts.taps });
        onBatch?.(x, r.out, r.taps, b);
        if (keep) out.push({ data: Float32Array.from(r.out.dataSync() as Float32Array), B: batch.B });
      });
    } finally {
      ctx.dispose();
    }
  }));
  return keep ? { batches: out, T: states.T, D: states.D } : null;
}

/**
 * Running sums for the statistics of one tap: each batch's sum is made on the device and added
 * on the host into a Float32Array, which rounds every addition exactly as the device's float32
 * add did (the sum of two floats is exact in a double, so storing it rounds once; as
 * `combineBatchStats` in src/parallel/layer-passes.ts). Keeping the sums on the device held a
 * cols² Gram twice per batch (the old sum and the new one) in the WebAssembly heap, whose
 * high-water mark stays in RSS; on the host it is one float32 copy.
 */
class TapAccumulator {
  tokens = 0;
  private sums: Partial<Record<'colSqSum' | 'colSum' | 'gram' | 'cross' | 'denseGram', Float32Array>> = {};
  constructor(readonly inDim: number) {}

  /** Adds a batch's sum `t` (disposed here, so the next statistic's product can reuse its memory). */
  private add(key: keyof TapAccumulator['sums'], t: tf.Tensor): void {
    this.addValues(key, t.dataSync() as Float32Array);
    t.dispose();
  }

  private addValues(key: keyof TapAccumulator['sums'], v: Float32Array): void {
    const prev = this.sums[key];
    if (!prev) this.sums[key] = Float32Array.from(v);
    else for (let i = 0; i < v.length; i++) prev[i]! += v[i]!;
  }

  /** x: current input X* `[N, in]`; dense: the dense layer's input X at the same tap (if needed). */
  accumulate(req: Set<string>, x: tf.Tensor2D, dense?: tf.Tensor2D): void {
    this.tokens += x.shape[0];
    tf.tidy(() => {
      if (req.has('colSqSum')) this.add('colSqSum', columnSquareSums(x));
      if (req.has('colSum')) this.add('colSum', tf.sum(x, 0));
      const pairs = dense ? (['cross', 'denseGram'] as const).filter((k) => req.has(k)) : [];
      // X = X* (no operator before this tap differs from the dense one): C and H_d are XᵀX, the
      // very product G is, so it is made once and added to each (the same values as three products).
      const same = dense === x;
      const fromGram = [...(req.has('gram') ? ['gram' as const] : []), ...(same ? pairs : [])];
      // XᵀY: on XNNPACK an explicit transpose keeps a plain 2-D matMul (its transposeA is slow); on
      // OpenBLAS the product reads X transposed in its packing, the same values without the copy.
      const tn = modelLayout().explicitTransposes
        ? (a: tf.Tensor2D, b: tf.Tensor2D) => tf.matMul(tf.transpose(a), b)
        : (a: tf.Tensor2D, b: tf.Tensor2D) => tf.matMul(a, b, true, false);
      if (fromGram.length > 0) {
        const g = tn(x, x);
        const v = g.dataSync() as Float32Array;
        for (const k of fromGram) this.addValues(k, v);
        g.dispose();
      }
      if (dense && !same && pairs.length > 0) {
        if (req.has('cross')) this.add('cross', tn(dense, x));
        if (req.has('denseGram')) this.add('denseGram', tn(dense, dense));
      }
    });
  }

  finish(): TapStats {
    const out: TapStats = { tokens: this.tokens, inDim: this.inDim };
    for (const [k, v] of Object.entries(this.sums) as [keyof TapAccumulator['sums'], Float32Array][]) out[k] = Float64Array.from(v);
    this.sums = {};
    return out;
  }
}

/** Σ over rows of x², `[cols]`: one native pass where the backend has it (the same bits as Square then Sum), else the two ops. */
export function columnSquareSums(x: tf.Tensor2D): tf.Tensor1D {
  if (fusedKernelUsable(COLUMN_SQUARE_SUMS_KERNEL)) return tf.engine().runKernel(COLUMN_SQUARE_SUMS_KERNEL, { x }, {}) as tf.Tensor1D;
  return tf.sum(tf.square(x), 0);
}

/** Which statistics each tap needs, from a request. */
export function requestByTap(req: LayerStatsRequest): Map<TapName, Set<string>> {
  const m = new Map<TapName, Set<string>>();
  for (const key of ['colSqSum', 'colSum', 'gram', 'cross', 'denseGram'] as const) {
    for (const tap of req[key] ?? []) {
      if (!m.has(tap)) m.set(tap, new Set());
      m.get(tap)!.add(key);
    }
  }
  return m;
}

/**
 * Collect the requested statistics of layer i over all calibration batches. With
 * `denseWeights` the dense layer is run on the same inputs too, for X (dense) vs X* statistics:
 * it holds the dense weights of the linears that differ from the current ones (the others are
 * used as they are); empty: the current layer is the dense one, and X = X* without a second run.
 */
export function collectLayerStats(model: CausalLM, layer: number, states: HiddenStates, req: LayerStatsRequest,
  denseWeights?: Partial<Record<LinearRole, tf.Tensor2D>>): LayerStats {
  const byTap = requestByTap(req);
  if (byTap.size === 0) return {};
  const needDense = denseWeights !== undefined && [...byTap.values()].some((s) => s.has('cross') || s.has('denseGram'));
  const sameAsCurrent = denseWeights !== undefined && Object.keys(denseWeights).length === 0;
  const acc = new Map<TapName, TapAccumulator>();
  const skip = linearsPastTaps(model, [...byTap.keys()]);
  model.withParts([layer], () => withSkippedLinears(model, layer, skip, () => { for (const batch of states.batches) {
    const ctx = new BlockContext(batch.B, states.T, 0, model.config);
    try {
      tf.tidy(() => {
        const x = tf.tensor2d(batch.data, [batch.B * states.T, states.D]);
        // No dense weight differs from the current one (none of the layer pruned yet): the dense run
        // would repeat the current one value for value, so its taps are the current ones.
        const dense = needDense && !sameAsCurrent
          ? withLinearWeights(model, layer, denseWeights, () => model.runBlock(layer, x, ctx, { taps: true }).taps)
          : undefined;
        const cur = model.runBlock(layer, x, ctx, { taps: true }).taps!;
        for (const [tap, set] of byTap) {
          if (!acc.has(tap)) acc.set(tap, new TapAccumulator(cur[tap].shape[1]));
          acc.get(tap)!.accumulate(set, cur[tap], needDense ? (dense ?? cur)[tap] : undefined);
        }
      });
    } finally {
      ctx.dispose();
    }
    memLog(`layer ${layer} stats batch`);
  } }));
  const out: LayerStats = {};
  for (const [tap, a] of acc) out[tap] = a.finish();
  return out;
}

/**
 * The linears of a block whose outputs reach none of `taps`: those reading the last of them or a
 * later one (TAP_NAMES is in forward order, and a linear's output reaches only later taps).
 */
export function linearsPastTaps(model: CausalLM, taps: readonly TapName[]): Set<LinearRole> {
  const last = Math.max(...taps.map((t) => TAP_NAMES.indexOf(t)));
  return new Set(model.spec.linears.filter((l) => TAP_NAMES.indexOf(l.input) >= last).map((l) => l.role));
}

/**
 * Runs fn with the given linears of layer i answering zeros of their output shape instead of
 * their product (through the model's linear hook, the previous one kept for the others): for
 * passes that read only the taps upstream of them, which keep their values while the block's
 * later work, and its output, become meaningless. Collecting attnIn then costs no product.
 */
export function withSkippedLinears<T>(model: CausalLM, layer: number, roles: Set<LinearRole>, fn: () => T): T {
  if (roles.size === 0) return fn();
  const prev = model.linearHook;
  model.linearHook = (i, role, x, p) =>
    (i === layer && roles.has(role) ? tf.zeros([x.shape[0], p.weight.shape[1]]) : prev ? prev(i, role, x, p) : null);
  try {
    return fn();
  } finally {
    model.linearHook = prev;
  }
}

/** Mean per-token distance between block input and output (CFSP §3). */
export function blockDistanceSum(input: tf.Tensor2D, output: tf.Tensor2D, metric: 'angular' | 'cosine' | 'mse'): number {
  const s = tf.tidy(() => {
    if (metric === 'mse') return tf.sum(tf.mean(tf.square(tf.sub(output, input)), -1));
    const dot = tf.sum(tf.mul(input, output), -1);
    const norms = tf.mul(tf.norm(input, 'euclidean', -1), tf.norm(output, 'euclidean', -1));
    let cos = tf.div(dot, norms);
    // A NaN cosine (zero vector) counts as 0.5, as the reference code does.
    cos = tf.where(tf.isNaN(cos), tf.fill(cos.shape, 0.5), cos);
    cos = tf.clipByValue(cos, -1, 1);
    return metric === 'cosine' ? tf.sum(tf.sub(1, cos)) : tf.div(tf.sum(tf.acos(cos)), Math.PI);
  });
  const v = s.dataSync()[0];
  s.dispose();
  return v;
}
