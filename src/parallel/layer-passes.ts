/**
 * The engine's calibration passes over one decoder layer — statistics (`collectLayerStats`) and
 * outputs (`runLayer`, with the block distance) — in process, or split by batch over a forward
 * pool. The pooled version gives bit-identical results: each worker runs the in-process function
 * on one batch, and the per-batch results are combined in batch order exactly as the in-process
 * loop combines them (float32 running sums of the statistics, float64 sums of the distances).
 */
import * as tf from '@tensorflow/tfjs';
import type { CausalLM } from '../model/causal-lm.ts';
import type { LinearRole, TapName } from '../model/family.ts';
import type { LayerStats, LayerStatsRequest, TapStats } from '../prune/method.ts';
import { blockDistanceSum, collectLayerStats, requestByTap, runLayer, type HiddenStates } from '../prune/stats.ts';
import { ForwardPool, type DistanceMetric, type HostLinear } from './forward-pool.ts';
import { coresFree, poolPays } from './threads.ts';
import { yieldIfDue } from '../backend/yield.ts';
import { withBlasThreads } from '../backend/openblas.ts';
import { solveInProcess, solveOnPool, type OperatorSolve } from '../prune/parallel-operators.ts';
import type { OperatorDecision } from '../prune/method.ts';

export interface LayerPasses {
  /** Threads the passes run on (1: in process); for `AutoPasses`, what it has chosen so far. */
  readonly threads: number;
  /** `collectLayerStats(model, layer, states, req, dense)`. */
  stats(model: CausalLM, layer: number, states: HiddenStates, req: LayerStatsRequest,
    dense?: Partial<Record<LinearRole, tf.Tensor2D>>): Promise<LayerStats>;
  /** `runLayer(model, layer, states)`; with `distance`, also the summed block distance of every batch. */
  run(model: CausalLM, layer: number, states: HiddenStates, distance?: DistanceMetric): Promise<{ states: HiddenStates; distance: number }>;
  /** A group's decisions: the method's `pruneOperators` in process, or its operators side by side on the pool's workers. */
  solve(s: OperatorSolve): Promise<OperatorDecision[]>;
  close(): Promise<void>;
}

/** In process; each pass ends by letting the event loop turn if its kernels piled up (WebGPU, ../backend/yield.ts). */
export const inProcessPasses: LayerPasses = {
  threads: 1,
  stats: async (model, layer, states, req, dense) => {
    const stats = collectLayerStats(model, layer, states, req, dense);
    await yieldIfDue();
    return stats;
  },
  run: async (model, layer, states, metric) => {
    let distance = 0;
    const next = runLayer(model, layer, states, metric ? (x, out) => { distance += blockDistanceSum(x, out, metric); } : undefined)!;
    await yieldIfDue();
    return { states: next, distance };
  },
  solve: solveInProcess,
  close: async () => {},
};

const STAT_KEYS = ['colSqSum', 'colSum', 'gram', 'cross', 'denseGram'] as const;

/**
 * Per-batch statistics → the statistics of all batches, as `collectLayerStats` accumulates them:
 * a float32 running sum in batch order (a Float32Array store rounds each addition exactly as the
 * device's float32 add does), widened to float64 at the end.
 */
export function combineBatchStats(parts: readonly LayerStats[]): LayerStats {
  const out: LayerStats = {};
  const first = parts[0];
  if (!first) return out;
  for (const tap of Object.keys(first) as TapName[]) {
    const t0 = first[tap]!;
    const tapOut: TapStats = { tokens: 0, inDim: t0.inDim };
    for (const p of parts) tapOut.tokens += p[tap]!.tokens;
    for (const key of STAT_KEYS) {
      if (!t0[key]) continue;
      const acc = Float32Array.from(t0[key]);
      for (let b = 1; b < parts.length; b++) {
        const x = parts[b]![tap]![key]!;
        for (let j = 0; j < acc.length; j++) acc[j] = acc[j]! + x[j]!;
      }
      tapOut[key] = Float64Array.from(acc);
    }
    out[tap] = tapOut;
  }
  return out;
}

function hostLinear(w: tf.Tensor2D, bias: tf.Tensor1D | null): HostLinear {
  return {
    weight: w.dataSync() as Float32Array, shape: [w.shape[0], w.shape[1]],
    bias: bias ? (bias.dataSync() as Float32Array) : null,
  };
}

/** The passes on a pool; the workers' copy of a layer is refreshed whenever its tensors changed. */
export class PooledPasses implements LayerPasses {
  /** The tensors each worker last received, by layer: identity tells whether they changed. */
  private readonly sent = new Map<number, (tf.Tensor | null)[]>();

  constructor(private readonly pool: ForwardPool, readonly threads: number) {}

  static start(model: CausalLM, threads: number): PooledPasses {
    return new PooledPasses(ForwardPool.start(model, threads), threads);
  }

  private async sync(model: CausalLM, layer: number, dense: Partial<Record<LinearRole, tf.Tensor2D>> | null): Promise<void> {
    const roles = model.spec.linears.map((l) => l.role);
    const current = roles.flatMap((r) => {
      const p = model.linearParams(layer, r);
      return p.bias ? [p.weight, p.bias] : [p.weight];
    });
    const denseTs = dense ? roles.flatMap((r) => (dense[r] ? [dense[r]] : [])) : [];
    // null marks that a dense snapshot was sent, even an empty one (no linear differs from the current).
    const key = [...current, ...(dense ? [null, ...denseTs] : [])];
    const prev = this.sent.get(layer);
    if (prev && prev.length === key.length && prev.every((t, i) => t === key[i])) return;
    await this.pool.broadcast({
      type: 'set-layer', layer,
      linears: roles.map((r) => { const p = model.linearParams(layer, r); return [r, hostLinear(p.weight, p.bias)]; }),
      dense: dense ? (Object.entries(dense) as [LinearRole, tf.Tensor2D][]).map(([r, w]) => [r, hostLinear(w, null)]) : null,
    });
    this.sent.set(layer, key);
  }

  async stats(model: CausalLM, layer: number, states: HiddenStates, req: LayerStatsRequest,
    dense?: Partial<Record<LinearRole, tf.Tensor2D>>): Promise<LayerStats> {
    const byTap = requestByTap(req);
    if (byTap.size === 0) return {};
    // As collectLayerStats: the dense snapshot is used only when a tap asks for X vs X* statistics.
    const withDense = dense !== undefined && [...byTap.values()].some((s) => s.has('cross') || s.has('denseGram'));
    await this.sync(model, layer, withDense ? dense : null);
    const { T, D } = states;
    const parts = await this.pool.run(states.batches.map((batch) => ({ type: 'layer-stats' as const, layer, batch, T, D, req, withDense })));
    return combineBatchStats(parts);
  }

  async run(model: CausalLM, layer: number, states: HiddenStates, distance?: DistanceMetric): Promise<{ states: HiddenStates; distance: number }> {
    await this.sync(model, layer, null);
    const { T, D } = states;
    const outs = await this.pool.run(states.batches.map((batch) => ({ type: 'run-layer' as const, layer, batch, T, D, distance: distance ?? null })));
    let sum = 0;
    for (const o of outs) sum += o.distance;
    return { states: { batches: outs.map((o) => o.batch), T, D }, distance: sum };
  }

  solve(s: OperatorSolve): Promise<OperatorDecision[]> {
    if (s.remote && s.ctx.operators.length > 1) return solveOnPool(this.pool, s);
    // Solved in process (one operator, or a method the workers cannot load) while the workers
    // wait: its products may use their cores (the pool's workers otherwise leave it one share).
    return withBlasThreads(this.threads, () => solveOnPool(this.pool, s));
  }

  close(): Promise<void> {
    return this.pool.close();
  }
}

/** In-process passes for 1 thread, else a pool of `threads` workers (close it when done). */
export function layerPasses(model: CausalLM, threads: number): LayerPasses {
  return threads > 1 ? PooledPasses.start(model, threads) : inProcessPasses;
}

/**
 * The passes of a pruning run: `threads` as given (explicit `--threads`), or with `auto` at most
 * `threads`, decided by `AutoPasses`. Never more threads than batches (each thread runs whole
 * batches), unless the pool also solves a group's operators side by side (`solves`).
 */
export function pruningPasses(model: CausalLM, o: { threads: number; auto: boolean; batches: number; lastLayer: number; solves?: boolean; log?: (msg: string) => void }): LayerPasses {
  const n = o.solves ? o.threads : Math.min(o.threads, o.batches);
  return o.auto && n > 1 ? new AutoPasses(n, o.lastLayer, o.log) : layerPasses(model, n);
}

/**
 * The default of `prune` (no `--threads`), decided as `eval ppl` decides: the passes of the first
 * layer run in process and are timed; at the first pass of another layer, a pool of `threads`
 * workers starts for the remaining layers only if their estimated in-process time (the first
 * layer's × the layers left) pays for its start-up on the cores free now (`poolPaysNow`). In-process and pooled passes give
 * bit-identical results, so the choice changes only the time.
 */
export class AutoPasses implements LayerPasses {
  private current: LayerPasses = inProcessPasses;
  private measured: number | null = null;
  private seconds = 0;
  private decided: boolean;

  /** `lastLayer`: the last layer whose passes will run; `pays` and `free`: the rule and the free cores (`poolPaysNow`'s; tests replace them). */
  constructor(private readonly maxThreads: number, private readonly lastLayer: number, private readonly log: (msg: string) => void = () => {},
    private readonly pays: (seconds: number, threads: number, free: number) => boolean = poolPays, private readonly free: () => number = coresFree) {
    this.decided = maxThreads <= 1;
  }

  get threads(): number {
    return this.current === inProcessPasses ? 1 : this.maxThreads;
  }

  private before(model: CausalLM, layer: number): void {
    if (this.decided) return;
    if (this.measured === null) this.measured = layer;
    if (layer === this.measured) return;
    this.decided = true;
    const estimate = this.seconds * (this.lastLayer - layer + 1);
    const free = this.free();
    if (this.pays(estimate, this.maxThreads, free)) this.current = PooledPasses.start(model, this.maxThreads);
    this.log(`calibration passes: layer ${this.measured}'s took ${this.seconds.toFixed(2)} s in process, the ${this.lastLayer - layer + 1} left ≈ ${estimate.toFixed(1)} s, ${free} cores free: `
      + (this.threads > 1 ? `${this.threads} threads from layer ${layer} on` : 'staying in process (a pool would not pay for its start-up)'));
  }

  private async timed<T>(layer: number, f: () => Promise<T>): Promise<T> {
    const t0 = performance.now();
    const r = await f();
    if (!this.decided && layer === this.measured) this.seconds += (performance.now() - t0) / 1000;
    return r;
  }

  stats(model: CausalLM, layer: number, states: HiddenStates, req: LayerStatsRequest,
    dense?: Partial<Record<LinearRole, tf.Tensor2D>>): Promise<LayerStats> {
    this.before(model, layer);
    return this.timed(layer, () => this.current.stats(model, layer, states, req, dense));
  }

  run(model: CausalLM, layer: number, states: HiddenStates, distance?: DistanceMetric): Promise<{ states: HiddenStates; distance: number }> {
    this.before(model, layer);
    return this.timed(layer, () => this.current.run(model, layer, states, distance));
  }

  /** Timed with the measured layer's passes: the pool's estimate covers the solves it would share too. */
  solve(s: OperatorSolve): Promise<OperatorDecision[]> {
    return this.timed(s.ctx.layer, () => this.current.solve(s));
  }

  close(): Promise<void> {
    return this.current.close();
  }
}
