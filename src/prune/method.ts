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
 *   gathers per-layer statistics in one dense calibration pass (plus gradients if asked), the
 *   method returns a plan for all layers at once, and shared surgery applies it.
 */
import type { z } from 'zod';
import type { ModelView } from '../model/view.ts';
import type { LinearRole, TapName } from '../model/family.ts';
import type { SparsityPattern } from './masks.ts';

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

export interface OperatorContext<O> extends MethodContext<O> {
  layer: number;
  operators: OperatorView[];
  stats: LayerStats;
}

export interface LayerwiseMethod<O> {
  kind: 'layerwise';
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
  pruneOperators(ctx: OperatorContext<O>): OperatorDecision[] | Promise<OperatorDecision[]>;
}

/** Per-layer removal plan. Indices are the units to KEEP, ascending. */
export interface LayerPlan {
  keepChannels?: number[];
  keepKvGroups?: number[];
  /** Added to the bias of a linear (created if absent), HF `[out]` — FLAP's compensation. */
  biasDelta?: Partial<Record<LinearRole, Float32Array>>;
}

export interface StructuralPlan {
  layers: LayerPlan[];
  /** Method-specific report fields (block importances, allocations …). */
  report?: Record<string, unknown>;
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

export interface StructuredStatsRequest {
  perLayer: LayerStatsRequest;
  /** Per-block distance between block input and output (CFSP). */
  blockDistance?: 'angular' | 'cosine' | 'mse';
  gradients?: GradientRequest;
}

export interface PlanContext<O> extends MethodContext<O> {
  stats: LayerStats[];
  /** Mean per-token block distance per layer, when requested. */
  blockDistance?: Float64Array;
  /** Per layer, per role (only when requested). */
  gradients?: Partial<Record<LinearRole, LinearGradient>>[];
  /** Host copy of a linear weight in HF orientation. */
  weight(layer: number, role: LinearRole): { data: Float32Array; rows: number; cols: number };
}

export interface StructuredMethod<O> {
  kind: 'structured';
  stats(options: O): StructuredStatsRequest;
  plan(ctx: PlanContext<O>): StructuralPlan | Promise<StructuralPlan>;
}

export interface MethodMeta<O> {
  name: string;
  description: string;
  /** The paper or code this method follows. */
  reference: string;
  granularity: readonly Granularity[];
  /** Validated options with defaults; strict (unknown keys are errors). */
  options: z.ZodType<O>;
}

export type PruningMethod<O = unknown> = MethodMeta<O> & (LayerwiseMethod<O> | StructuredMethod<O>);

/** Identity helper that keeps the option type when a plug-in declares itself. */
export function defineMethod<O>(m: PruningMethod<O>): PruningMethod<O> {
  return m;
}
