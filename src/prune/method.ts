/**
 * The plug-in contract of a pruning method.
 *
 * The engine owns the loops (calibration passes, the layer loop, operator order, statistics,
 * applying masks and surgery); a method declares what it needs and owns its scoring and
 * decisions. Two kinds exist:
 * - `layerwise`: unstructured / N:M methods. The engine visits layers in order and, inside a
 *   layer, groups of operators that share an input; the method returns masks (and optionally
 *   updated weights) per operator.
 * - `structured`: methods that remove FFN channels and/or key/value head groups. The engine
 *   gathers per-layer statistics in one dense calibration pass (plus gradients if asked: each
 *   layer's gradients are handed to the method's `layerScores` as soon as they are complete and
 *   freed after it, so only the small per-layer scores are kept), the method returns a plan for
 *   all layers at once, and shared surgery applies it.
 *
 * Around that, a method declares its metadata (display name, granularity, options), optional
 * per-run state (`setup`, called once per run and per worker thread) and optionally its own
 * recovery schedule (how LoRA ranks and base quantisation are laid over the layers after it
 * pruned), which reads the method's own typed report. The core never names a method.
 */
import type { z } from 'zod';
import type { ModelView } from '../model/view.ts';
import type { RecipePreset } from '../finetune/recipes.ts';
import type { LinearRole, TapName } from '../model/family.ts';
import type { SparsityPattern } from './masks.ts';
import type { LinAlg, Numerics } from '../linalg/linalg.ts';

export type Granularity = 'unstructured' | 'n:m' | 'ffn-channels' | 'attention-heads';
export type InputMode = 'sequential' | 'dense-parallel';

/** Per-layer activation statistics a method asks for, by tap (see `TapName`). */
export interface LayerStatsRequest {
  /** Σ over calibration tokens of x_j² per input column. */
  colSqSum?: readonly TapName[];
  /** Σ over calibration tokens of x_j per input column. */
  colSum?: readonly TapName[];
  /** Gram matrix Σ xᵀx (`[in, in]`) of the current input X*. */
  gram?: readonly TapName[];
  /**
   * With intra-layer correction: also XᵀX* (`cross`) and XᵀX (`denseGram`) where X is the input
   * the dense layer sees and X* the input after earlier operators of this layer were pruned.
   */
  cross?: readonly TapName[];
  denseGram?: readonly TapName[];
}

/** Statistics of one tap, on the host, accumulated over all calibration tokens. */
export interface TapStats {
  tokens: number;
  inDim: number;
  colSqSum?: Float64Array;
  colSum?: Float64Array;
  /** Row-major `[in, in]`. */
  gram?: Float64Array;
  cross?: Float64Array;
  denseGram?: Float64Array;
}

export type LayerStats = Partial<Record<TapName, TapStats>>;

/** An operator (decoder linear) handed to a method, in HF orientation. */
export interface OperatorView {
  role: LinearRole;
  /** Row-major `[out, in]`. */
  weight: Float32Array;
  rows: number;
  cols: number;
  input: TapName;
}

export interface OperatorDecision {
  role: LinearRole;
  /** 1 = keep, 0 = prune; `[out, in]` row-major. */
  mask: Uint8Array;
  /** Updated weights (e.g. SparseGPT's OBS update); masked entries are zeroed by the engine. */
  weight?: Float32Array;
  /** Anything worth reporting per operator (λ, errors, iterations …). */
  info?: Record<string, unknown>;
}

export interface PruneTarget {
  sparsity: number;
  pattern: SparsityPattern;
}

export interface MethodContext<O> {
  /** Read-only: configuration, per-layer shapes, bias presence. */
  model: ModelView;
  options: O;
  target: PruneTarget;
  log: (msg: string) => void;
}

/** Settings of the run (request fields, not method options). */
export interface RunSettings {
  mode: InputMode;
  /** Worker threads pruning layers concurrently (1: in-process). */
  workers: number;
  /** The solvers' numerics (`OperatorContext.linalg`); default float32 on the backend. */
  numerics?: Numerics;
}

export interface SetupContext<O> extends MethodContext<O> {
  run: RunSettings;
}

export interface OperatorContext<O, S = unknown> extends MethodContext<O> {
  layer: number;
  operators: OperatorView[];
  stats: LayerStats;
  /** What `setup` returned for this run (undefined without `setup`). */
  state: S;
  /** Dense linear algebra on the active backend (or the host float64 reference, by the run's numerics). */
  linalg: LinAlg;
}

export interface LayerwiseMethod<O, S = unknown> {
  kind: 'layerwise';
  /**
   * Per-run state, made once per pruning run (and once per worker thread, so state must not be
   * needed across threads). Methods keep nothing at module level. A method whose state chains
   * operators or layers refuses `run.workers > 1` (ConfigError); the engine then also keeps its
   * operator solves in process.
   */
  setup?(ctx: SetupContext<O>): S;
  /** Statistics needed for the operators of one group. */
  stats(options: O): LayerStatsRequest;
  /**
   * `together`: all operators of a layer decided from one pass of the unpruned layer (Wanda,
   * SparseGPT). `grouped`: operator groups in forward order (q,k,v → o → gate,up → down), with
   * statistics re-collected after each group so later operators see pruned earlier ones.
   */
  operatorOrder(options: O): 'together' | 'grouped';
  /** Default input mode across layers. */
  defaultMode(options: O): InputMode;
  /**
   * How a solve uses more than one thread. `operators` (the default): a group's operators side
   * by side on the calibration passes' worker threads. `within`: the method's own solve of one
   * operator runs on every core through `ctx.linalg` when it has native kernels
   * (`LinAlg.native`: products, and the method's host passes split by rows), so the engine solves
   * each group in process on all threads instead; without native kernels, as `operators`.
   */
  threadedSolve?: 'operators' | 'within';
  /**
   * Decisions for `ctx.operators`, one per operator, each from that operator, the statistics and
   * the state only: with `--threads N` the engine may pass a group's operators one at a time on
   * different worker threads (`src/prune/parallel-operators.ts`).
   */
  pruneOperators(ctx: OperatorContext<O, S>): OperatorDecision[] | Promise<OperatorDecision[]>;
}

/** Per-layer removal plan. Indices are the units to KEEP, ascending. */
export interface LayerPlan {
  keepChannels?: number[];
  keepKvGroups?: number[];
  /** Added to the bias of a linear (created if absent), HF `[out]` — FLAP's compensation. */
  biasDelta?: Partial<Record<LinearRole, Float32Array>>;
}

/** A method's own report: JSON-serialisable fields (block importances, allocations …). */
export type MethodReport = Record<string, unknown>;

export interface StructuralPlan<R extends MethodReport = MethodReport> {
  layers: LayerPlan[];
  /** Method-specific report fields, saved as `methodReport` in prune_report.json. */
  report?: R;
}

export interface GradientRequest {
  /** Also accumulate the empirical Fisher diagonal (per-sample squared gradients, averaged). */
  fisher: boolean;
}

/** Gradients of the causal-LM loss w.r.t. one linear weight, HF `[out, in]`. */
export interface LinearGradient {
  grad: Float32Array;
  fisher?: Float32Array;
}

/** A linear with its gradients, HF `[rows = out, cols = in]` row-major. */
export interface LinearWithGradient extends LinearGradient {
  weight: Float32Array;
  rows: number;
  cols: number;
}

/**
 * What `layerScores` sees: one layer's linears with their complete gradients (over every
 * calibration window). No target: the scores must not depend on it (a budget re-plans the same
 * scores at many sparsities).
 */
export interface LayerGradientContext<O> extends Omit<MethodContext<O>, 'target'> {
  layer: number;
  /** Every linear of the layer; the arrays are valid during the call only (freed after it). */
  linears: Partial<Record<LinearRole, LinearWithGradient>>;
}

export interface StructuredStatsRequest {
  perLayer: LayerStatsRequest;
  /** Per-block distance between block input and output (CFSP). */
  blockDistance?: 'angular' | 'cosine' | 'mse';
  gradients?: GradientRequest;
}

export interface PlanContext<O, S = unknown> extends MethodContext<O> {
  stats: LayerStats[];
  /** Mean per-token block distance per layer, when requested. */
  blockDistance?: Float64Array;
  /** What `layerScores` returned, per layer (only when gradients were requested). */
  layerScores?: S[];
  /** Host copy of a linear weight in HF orientation. */
  weight(layer: number, role: LinearRole): { data: Float32Array; rows: number; cols: number };
}

export interface StructuredMethod<O, R extends MethodReport = MethodReport, S = unknown> {
  kind: 'structured';
  stats(options: O): StructuredStatsRequest;
  /**
   * Required when `stats` asks for gradients: reduce one layer's gradients to what `plan` needs
   * (e.g. group scores). Called once per layer, last layer first, as soon as that layer's
   * gradients are complete; the engine frees them after the call, so the whole-model gradients
   * never exist at once (streamed models: one layer on the backend, one layer's gradients on the host).
   */
  layerScores?(ctx: LayerGradientContext<O>): S;
  plan(ctx: PlanContext<O, S>): StructuralPlan<R> | Promise<StructuralPlan<R>>;
}

/** Group fake-quantisation of the frozen base during recovery (QA-LoRA style). */
export interface RecoveryQuant {
  bits: number;
  groupSize: number;
}

/** How recovery adapts the model: what the trainer is given. */
export interface RecoveryPlan {
  /** LoRA rank per layer (0: no adapters in that layer). */
  ranks: number[];
  /** LoRA α per layer. */
  alphas: number[];
  /** Fake-quantised base, or null for plain LoRA. */
  quant: RecoveryQuant | null;
  /** Linear roles to adapt; default all linears of the family. */
  targets?: LinearRole[];
  /** Roles deliberately left out, recorded with results. */
  skippedTargets?: LinearRole[];
  /** How ranks were allocated (recorded with results), e.g. `uniform`, `importance`. */
  allocation: string;
}

export interface RecoveryContext<R> {
  model: ModelView;
  /** The method's report of the pruning run, validated by the schedule's `report` schema (undefined without one). */
  report: R;
  /** r̄: the rank asked for (uniform rank, or mean rank of an allocation). */
  rank: number;
  /** α at r̄. */
  alpha: number;
}

/**
 * A method's own recovery schedule, selected by the method's name (`--schedule cfsp`, YAML
 * `schedule: cfsp`). With a `report` schema it reads the method's report saved beside the pruned
 * checkpoint, so it applies only to models this method pruned; without one it applies to any model.
 */
export interface RecoverySchedule<R> {
  description: string;
  /** Validates `methodReport` of prune_report.json into `R`; absent for a schedule that reads no report (`R` = undefined). */
  report?: z.ZodType<R>;
  plan(ctx: RecoveryContext<R>): RecoveryPlan;
}

/**
 * What a method's `sparsity` is a fraction of, so reports can measure it: weights of the decoder
 * linears (zeros included), FFN channels, decoder-layer parameters, or all parameters.
 */
export type TargetScope = 'decoder-linears' | 'ffn-channels' | 'decoder-layers' | 'all-parameters';

export interface MethodMeta<O, R> {
  /** The id: the folder name for discovered methods (`--method NAME`, YAML, results). */
  name: string;
  /** How tables and plots print it (e.g. `LLM-Pruner`); default the name. */
  displayName?: string;
  description: string;
  /** The paper or code this method follows. */
  reference: string;
  granularity: readonly Granularity[];
  /**
   * What the target sparsity is a fraction of (measured in every report). Absent: the method's
   * target has a meaning of its own (its README says which), and only the common fractions are measured.
   */
  targetScope?: TargetScope;
  /** Validated options with defaults; strict (unknown keys are errors). */
  options: z.ZodType<O>;
  /**
   * The recovery recipe of the method's paper (batch, length, data format, LR schedule …), offered
   * as the preset named after the method (`--preset NAME`, YAML `preset: NAME`).
   */
  recoveryRecipe?: RecipePreset;
  /** The method's own recovery schedule, if it has one. */
  recovery?: RecoverySchedule<R> | RecoverySchedule<undefined>;
}

/**
 * A pruning method: options `O`, report `R` (structured methods' plan report, read by its own
 * recovery schedule), and `S`: per-run state (layer-wise methods) or the per-layer gradient
 * scores `layerScores` returns (structured methods).
 */
export type PruningMethod<O = unknown, R extends MethodReport = MethodReport, S = unknown> =
  MethodMeta<O, R> & (LayerwiseMethod<O, S> | StructuredMethod<O, R, S>);

/** Identity helper that keeps the option, report and state types when a plug-in declares itself. */
export function defineMethod<O, R extends MethodReport = MethodReport, S = unknown>(m: PruningMethod<O, R, S>): PruningMethod<O, R, S> {
  return m;
}

/** The name tables and plots print for a method. */
export function displayNameOf(m: Pick<MethodMeta<unknown, MethodReport>, 'name' | 'displayName'>): string {
  return m.displayName ?? m.name;
}
