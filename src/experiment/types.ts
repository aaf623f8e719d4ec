/**
 * The contract between the experiment runner and the pipeline that does the work of a run.
 * The runner knows nothing about models: it hands a `RunSpec` to an injected `ExecuteRun`
 * and turns the returned `RunResult` into a CSV row and a JSON record.
 */
import type { Recipe, RecipeRecord } from '../finetune/recipes.ts';
import type { BudgetScope } from '../prune/budget.ts';
import type { CalibSampling } from '../prune/calibration.ts';
import type { WebGPUAdapter } from '../backend/webgpu.ts';

/** `unstructured`, or `N:M` = N of every M consecutive input weights of a row are zero. */
export type Pattern = 'unstructured' | `${number}:${number}`;

export type CalibrationMode = 'sequential' | 'dense-parallel';
/** `none`, `uniform`, or the name of a method that declares a recovery schedule. */
export type RecoverySchedule = string;

export interface RunCalibration {
  /** Absolute path of the calibration text. */
  text: string;
  nsamples: number;
  seqlen: number;
  /** Sampling seed: `calibration.seed` from the YAML, else the run's seed. Null when offsets are given. */
  seed: number | null;
  /** Window start offsets to replay (from `calibration.offsets`), else null: the pipeline samples. */
  offsets: number[] | null;
  /** Null: each method's default input mode. */
  mode: CalibrationMode | null;
  /** As written in the YAML (absent: the corpus's default, prune/calibration.ts). */
  sampling?: CalibSampling;
  field?: string;
}

/** Recovery of a run: none, or a resolved recipe (finetune/recipes.ts) with its data. */
export type RunRecovery =
  | { schedule: 'none' }
  | { schedule: RecoverySchedule; /** absolute */ data: string; /** template files absolute */ recipe: Recipe };

export interface PerplexityEval {
  id: string;
  /** Absolute path of the evaluation text. */
  text: string;
  seqlen: number;
  maxWindows: number | null;
}

export interface ZeroShotEval {
  /** Column id: the task name, or the file's base name for a `.jsonl` path. */
  id: string;
  /** Task name (e.g. `piqa`) or absolute path of a `.jsonl` task file. */
  task: string;
  limit: number | null;
}

export interface SpeedEval {
  promptTokens: number;
  newTokens: number;
  batch: number;
  warmup: number;
  repeats: number;
}

export interface RunEvaluations {
  perplexity: PerplexityEval[];
  zeroshot: ZeroShotEval[];
  speed: SpeedEval | null;
}

/** One cell of the grid, fully resolved. Paths are absolute. */
export interface RunSpec {
  /** Stable id: readable prefix + short hash of `settings` (see grid.ts). */
  id: string;
  experiment: string;
  kind: 'dense' | 'pruned';
  model: { id: string; path: string; tokenizer: string | null };
  /** Null for the dense run. */
  /** `workers`: a run setting (not part of the run's identity: results do not depend on it). */
  /** `budget`: the sparsity is a parameter budget of this scope (structured methods). */
  method: { name: string; options: Record<string, unknown>; workers?: number; budget?: BudgetScope } | null;
  /** Null for the dense run and for methods that do not take patterns (structured). */
  pattern: Pattern | null;
  /** Target sparsity (N/M for an N:M pattern, 0 for dense). */
  sparsity: number;
  seed: number;
  /** Null for the dense run or when the experiment declares no calibration. */
  calibration: RunCalibration | null;
  recovery: RunRecovery;
  /** Identical for every run of the experiment, dense included (same protocol). */
  evaluations: RunEvaluations;
  /** The experiment's output folder (absolute); runs/<id>.json lives under it. */
  outputDir: string;
  /** The canonical, machine-independent settings the id hashes (YAML paths as written). */
  settings: Record<string, unknown>;
}

/** Extra protocol fields a measurement reports (tokenizer, BOS handling, template id ...). */
export type ProtocolFields = object;

export interface PerplexityMeasure {
  ppl: number;
  windows: number;
  protocol?: ProtocolFields;
}

export interface ZeroShotMeasure {
  acc: number;
  /** Null where the task has no length-normalised variant (e.g. LAMBADA). */
  acc_norm: number | null;
  /** Number of examples scored. */
  n: number;
  protocol?: ProtocolFields;
}

/** A ratio to the dense model with its spread over interleaved repeats (src/eval/spread.ts). */
export interface RatioWithSpread {
  ratio: number;
  lo: number;
  hi: number;
}

export interface SpeedMeasure {
  prefillTokensPerS: number;
  decodeTokensPerS: number;
  /**
   * Structured models: throughput relative to the dense model, both measured in alternation in the
   * same run (> 1 = faster than dense).
   */
  vsDense?: { prefill: RatioWithSpread; decode: RatioWithSpread; rounds: number; statistic: string };
  protocol?: ProtocolFields;
}

/** What the pipeline reports for one run. Every declared evaluation must be present. */
export interface RunResult {
  /** Backend the run executed on (`wasm`, `node-gpu` ...). */
  backend: string;
  /** Where the weights lived: all on the backend, or streamed from the host one layer at a time. */
  execution?: 'resident' | 'streamed';
  /** What it ran on, in words; set on WebGPU (the adapter). */
  device?: string;
  /** The WebGPU adapter, when the backend is webgpu. */
  adapter?: WebGPUAdapter;
  /** What the wasm backend's matrix products ran on (src/backend/openblas.ts). */
  matmul?: 'openblas' | 'xnnpack';
  model: { hash: string; family: string; dtype: string; tokenizerHash?: string };
  /**
   * Measured fractions removed, zeros counted as removed, so every kind of result shares one axis:
   * of decoder-layer parameters, of all parameters, and of the method's own scope (what its target
   * is a fraction of; null when the method's target has a meaning of its own).
   */
  sparsity: {
    decoderLayers: number;
    allParameters: number;
    scope: { name: string; fraction: number } | null;
    paramsBefore: number;
    paramsAfter: number;
  };
  /** Realised calibration window starts (hashed into the row, stored in the record). */
  calibration?: { offsets: number[] };
  /** The prune engine's report (per-matrix sparsity, kept counts, peak memory ...): JSON-serialisable. */
  pruningReport?: unknown;
  /**
   * `recipe`: the recipe as run (steps from epochs, warm-up, data sizes filled in); `evaluated`:
   * which model the evaluations saw (`fp32-merged`, or `int4-dequantized` after group fine-tuning).
   */
  recovery?: { merged: boolean; evaluated?: string; recipe?: RecipeRecord; log?: unknown };
  perplexity: Record<string, PerplexityMeasure>;
  zeroshot: Record<string, ZeroShotMeasure>;
  speed?: SpeedMeasure;
  /** Seconds per stage; the runner measures the total itself. */
  timings: { calibrateS?: number; pruneS?: number; recoverS?: number; evalS?: number };
}

export interface RunContext {
  /** Aborted on SIGINT/SIGTERM: stop early by throwing; a result returned anyway is still recorded. */
  signal: AbortSignal;
  log: (line: string) => void;
}

export type ExecuteRun = (run: RunSpec, ctx: RunContext) => Promise<RunResult> | RunResult;
