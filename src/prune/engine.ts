/**
 * The pruning engine: owns the calibration passes and the layer loop, collects the statistics a
 * method declares, calls its scoring/decision functions, and applies the result with the shared
 * masks and surgery. Returns a report of what was actually removed.
 */
import * as tf from '@tensorflow/tfjs';
import type { CausalLM } from '../model/causal-lm.ts';
import type { LinearRole, TapName } from '../model/family.ts';
import { countParameters } from '../model/count.ts';
import { modelView, type ModelView } from '../model/view.ts';
import type {
  GradientRequest, InputMode, LayerStats, LayerStatsRequest, LayerwiseMethod, LinearWithGradient, MethodReport, OperatorDecision, PruneTarget,
  PruningMethod, StructuralPlan, StructuredMethod,
} from './method.ts';
import { checkTarget, validatePlan } from './contract.ts';
import { moduleOf } from './registry.ts';
import { embedWindows, type HiddenStates } from './stats.ts';
import { readLinear, writeLinear } from './linear-io.ts';
import { maskedCopy } from './masks.ts';
import { addBias, removeFfnChannels, removeKvGroups } from './surgery.ts';
import { layerGradients } from './gradients.ts';
import { buildReport, type PruneReport } from './report.ts';
import { ConfigError } from '../util/errors.ts';
import { pruneLayersParallel } from './parallel.ts';
import { statsNeedData } from './needs-calibration.ts';
import { inProcessPasses, pruningPasses, type LayerPasses } from '../parallel/layer-passes.ts';
import { resolveThreads, threadsForModel } from '../parallel/threads.ts';
import { activeBackend } from '../backend/index.ts';
import { checkBudget, searchKnob, type BudgetRecord, type ParamBudget } from './budget.ts';
import { backendLinAlg } from '../linalg/backend.ts';
import type { RemoteMethod } from './parallel-operators.ts';
import type { LinAlg, NativeKernels, Numerics } from '../linalg/linalg.ts';
import { memLog } from '../util/mem-log.ts';

export interface PruneRequest<O, R extends MethodReport = MethodReport> {
  method: PruningMethod<O, R>;
  options: O;
  target: PruneTarget;
  /**
   * A parameter budget (structured methods): the engine finds the method's own sparsity knob that
   * removes this fraction of the named scope; `target.sparsity` is then replaced by that knob.
   */
  budget?: ParamBudget;
  /** Calibration windows (may be empty for data-free methods). */
  windows: number[][];
  calibration?: object | null;
  mode?: InputMode;
  /** Worker threads pruning layers concurrently (layer-wise methods, dense-parallel mode); default 1 (in-process). */
  workers?: number;
  /**
   * Threads for the calibration forward passes run in this process (statistics and layer
   * outputs, split by batch over worker threads each with its own backend); default 1 (in
   * process). Results do not depend on it.
   */
  threads?: number;
  /**
   * `threads` is the most, not a given: the passes start in process and move to a pool for the
   * remaining layers only when that pays for its start-up, as `eval ppl` decides (`AutoPasses`).
   * The CLI's default (no `--threads`); an explicit count is used as given.
   */
  autoThreads?: boolean;
  /** The per-operator solvers' numerics (layer-wise methods): float32 on the backend (default) or the host float64 reference. */
  numerics?: Numerics;
  log?: (msg: string) => void;
  onLayer?: (layer: number, total: number) => void;
  /** Prune only decoder layers first..last (inclusive; layer-wise methods, in process); default all. */
  layers?: { first: number; last: number };
}

/** Operators of a layer grouped by shared input, in forward order (q,k,v → o → gate,up → down). */
export function operatorGroups(model: CausalLM): { input: TapName; roles: LinearRole[] }[] {
  const groups: { input: TapName; roles: LinearRole[] }[] = [];
  for (const l of model.spec.linears) {
    const last = groups[groups.length - 1];
    if (last && last.input === l.input) last.roles.push(l.role);
    else groups.push({ input: l.input, roles: [l.role] });
  }
  return groups;
}

function applyDecision(model: CausalLM, layer: number, d: OperatorDecision, rows: number, cols: number, original: Float32Array,
  native?: Pick<NativeKernels, 'maskedCopy'>): number {
  const w = d.weight ?? original;
  if (w.length !== rows * cols || d.mask.length !== rows * cols) {
    throw new Error(`layer ${layer} ${d.role}: decision has the wrong size`);
  }
  const out = new Float32Array(w.length);
  const zeros = native?.maskedCopy ? native.maskedCopy(w, d.mask, out) : maskedCopy(w, d.mask, out);
  writeLinear(model, layer, d.role, out, rows, cols);
  return zeros;
}

/** The part of a statistics request that concerns one tap. */
export function statsForTap(req: LayerStatsRequest, tap: TapName): LayerStatsRequest {
  const out: LayerStatsRequest = {};
  for (const key of ['colSqSum', 'colSum', 'gram', 'cross', 'denseGram'] as const) {
    if (req[key]?.includes(tap)) out[key] = [tap];
  }
  return out;
}

/** What pruning one layer needs besides the model: shared by the layer loop and parallel workers. */
export interface LayerJob<O> {
  method: LayerwiseMethod<O, unknown>;
  options: O;
  target: PruneTarget;
  log: (msg: string) => void;
  /** The read-only view methods see, taken once per run (per worker thread). */
  view: ModelView;
  /** The method's per-run state (`setup`'s result). */
  state: unknown;
  /** Sees every decision as it is applied. */
  onDecision?: (d: OperatorDecision) => void;
  /** Where the statistics passes run (default in process). */
  passes?: LayerPasses;
  /** The solvers' linear algebra (default: float32 on the active backend). */
  linalg?: LinAlg;
  /** How the passes' pool workers load the method to solve a group's operators side by side (default null: in process). */
  remote?: RemoteMethod | null;
}

/**
 * Prune the operators of layer i in place from the layer's input states (null for data-free
 * methods), group by group; returns the layer's report entry.
 */
export async function pruneLayerInPlace<O>(model: CausalLM, i: number, states: HiddenStates | null, job: LayerJob<O>): Promise<Record<string, unknown>> {
  // Streamed weights: the layer stays on the backend while it is pruned, then goes back to the host.
  return model.withParts([i], () => pruneHeldLayer(model, i, states, job));
}

async function pruneHeldLayer<O>(model: CausalLM, i: number, states: HiddenStates | null, job: LayerJob<O>): Promise<Record<string, unknown>> {
  const m = job.method;
  const statsReq = m.stats(job.options);
  const grouped = m.operatorOrder(job.options) === 'grouped';
  const groups = grouped ? operatorGroups(model) : [{ input: 'attnIn' as TapName, roles: model.spec.linears.map((l) => l.role) }];
  // Dense snapshot of this layer: the target of intra-layer correction, made only when a group's
  // statistics compare the dense input with the current one (a second copy of the layer otherwise).
  const wantsDense = grouped && states !== null && (statsReq.cross !== undefined || statsReq.denseGram !== undefined);
  const dense: Partial<Record<LinearRole, tf.Tensor2D>> = {};
  if (wantsDense) for (const l of model.spec.linears) dense[l.role] = tf.clone(model.linearParams(i, l.role).weight);
  try {
    const info: Record<string, unknown> = { layer: i, operators: {} as Record<string, unknown> };
    let stats: LayerStats = {};
    const passes = job.passes ?? inProcessPasses;
    const applied = new Set<LinearRole>();
    const denseOf = (roles: Set<LinearRole>) => Object.fromEntries([...roles].map((r) => [r, dense[r]!])) as Partial<Record<LinearRole, tf.Tensor2D>>;
    const linalg = job.linalg ?? backendLinAlg();
    if (states && !grouped) stats = await passes.stats(model, i, states, statsReq);
    for (const group of groups) {
      // A group's operators read only their own input tap: collect just that one.
      // The dense weights of the operators pruned so far: the others are still dense (none: X = X*, one run).
      if (states && grouped) stats = await passes.stats(model, i, states, statsForTap(statsReq, group.input), wantsDense ? denseOf(applied) : undefined);
      const ops = group.roles.map((role) => {
        const h = readLinear(model, i, role);
        return { role, weight: h.data, rows: h.rows, cols: h.cols, input: model.spec.linears.find((l) => l.role === role)!.input };
      });
      memLog(`layer ${i} ${group.roles.join(',')} stats`);
      const ctx = { model: job.view, options: job.options, target: job.target, log: job.log, layer: i, operators: ops, stats, state: job.state, linalg };
      const decisions = await passes.solve({ method: m as LayerwiseMethod<unknown, unknown>, ctx, remote: job.remote ?? null });
      for (const d of decisions) {
        const op = ops.find((o) => o.role === d.role);
        if (!op) throw new Error(`method returned a decision for '${d.role}', not in this group`);
        const zeros = applyDecision(model, i, d, op.rows, op.cols, op.weight, linalg.native);
        applied.add(d.role);
        job.onDecision?.(d);
        (info.operators as Record<string, unknown>)[d.role] = { zeros, total: op.rows * op.cols, ...d.info };
      }
      memLog(`layer ${i} ${group.roles.join(',')} pruned`);
    }
    return info;
  } finally {
    tf.dispose(Object.values(dense));
  }
}

function workerCount(n: number | undefined): number {
  const w = n ?? 1;
  if (!Number.isInteger(w) || w < 1) throw new ConfigError(`workers must be a positive integer, got ${String(w)}`);
  return w;
}

/** Threads the calibration passes ran on, or undefined when there were none (data-free, or workers). */
async function pruneLayerwise<O>(model: CausalLM, req: PruneRequest<O>, m: LayerwiseMethod<O, unknown>, mode: InputMode,
  perLayer: Record<string, unknown>[]): Promise<number | undefined> {
  const log = req.log ?? (() => {});
  const statsReq = m.stats(req.options);
  const needsData = statsNeedData(statsReq);
  if (needsData && req.windows.length === 0) throw new ConfigError(`method '${req.method.name}' needs calibration data (--calib FILE, or calibration: in an experiment)`);
  const workers = workerCount(req.workers);
  const view = modelView(model);
  // Set up once here even when workers do the layers: a method refuses a run it cannot do before any work.
  const state = m.setup?.({ model: view, options: req.options, target: req.target, log, run: { mode, workers, numerics: req.numerics } });
  if (workers > 1) {
    if (mode !== 'dense-parallel') throw new ConfigError(`workers = ${workers} needs --mode dense-parallel: in sequential mode each layer waits for the previous one`);
    await pruneLayersParallel(model, {
      methodName: moduleOf(req.method) ?? req.method.name, options: req.options, target: req.target, windows: needsData ? req.windows : null,
      workers, numerics: req.numerics, log, onLayer: req.onLayer,
    }, perLayer);
    return undefined;
  }
  let states: HiddenStates | null = needsData ? embedWindows(model, req.windows) : null;
  memLog('embedded');
  const { first, last } = req.layers ?? { first: 0, last: model.numLayers - 1 };
  const remote = states ? remoteMethod(req, m, view, mode, log) : null;
  const passes = states ? calibrationPasses(model, req, states.batches.length, last, log, remote !== null) : inProcessPasses;
  const job: LayerJob<O> = { method: m, options: req.options, target: req.target, log, view, state, passes, linalg: backendLinAlg(req.numerics), remote };
  try {
    for (let i = 0; i <= last; i++) {
      // Layers before the range only carry the states forward.
      if (i < first) {
        if (states) states = await model.withParts([i], async () => (await passes.run(model, i, states!)).states);
        perLayer.push({ layer: i, pruned: false });
        continue;
      }
      // One upload of the layer (streamed weights) for its dense pass, its pruning and its output pass.
      states = await model.withParts([i], async () => {
        const denseNext = states && mode === 'dense-parallel' && i < last ? (await passes.run(model, i, states)).states : null;
        perLayer.push(await pruneLayerInPlace(model, i, states, job));
        if (!states) return null;
        return mode === 'dense-parallel' ? denseNext : i < last ? (await passes.run(model, i, states)).states : null;
      });
      req.onLayer?.(i + 1, model.numLayers);
      memLog(`layer ${i} done`);
      log(`layer ${i + 1}/${model.numLayers} pruned`);
    }
    for (let i = last + 1; i < model.numLayers; i++) perLayer.push({ layer: i, pruned: false });
  } finally {
    await passes.close();
  }
  return needsData ? passes.threads : undefined;
}

/**
 * How the passes' pool workers load the method to solve operators side by side (each worker sets
 * the method up for itself); null, solved in process, for a method built in code (no module to
 * load), on one thread, for a method whose solve is threaded itself on this backend
 * (`threadedSolve: 'within'` with native kernels), or for a method whose per-run state cannot be
 * split over threads: one that refuses `run.workers > 1` (e.g. fistapruner's λ chained from the
 * previous layer).
 */
function remoteMethod<O>(req: PruneRequest<O>, m: LayerwiseMethod<O, unknown>, view: ModelView, mode: InputMode, log: (msg: string) => void): RemoteMethod | null {
  const module = moduleOf(req.method);
  const threads = req.threads ?? 1;
  if (!module || threads <= 1) return null;
  const run = { mode, workers: 1, numerics: req.numerics };
  try {
    m.setup?.({ model: view, options: req.options, target: req.target, log: () => {}, run: { ...run, workers: threads } });
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    log(`operators solved in process (${e.message})`);
    return null;
  }
  if (m.threadedSolve === 'within' && backendLinAlg(req.numerics).native) {
    log(`operators solved in process on ${threads} threads (the method's solve splits its own work over them)`);
    return null;
  }
  return { module, run };
}

/** The calibration passes of a run over layers ..lastLayer: `req.threads` as given, or decided when `req.autoThreads`. */
function calibrationPasses(model: CausalLM, req: PruneRequest<unknown, MethodReport>, batches: number, lastLayer: number, log: (msg: string) => void,
  solves = false): LayerPasses {
  const threads = threadsForModel(model.mode, threadCount(req.threads), req.threads, 'threads');
  return pruningPasses(model, { threads, auto: req.autoThreads === true, batches, lastLayer, solves, log });
}

/** `threads` of a request: a positive integer, 1 on native TensorFlow (its own thread pool). */
function threadCount(n: number | undefined): number {
  let backend: ReturnType<typeof activeBackend>;
  try { backend = activeBackend(); } catch { backend = 'wasm'; }
  return resolveThreads(n ?? 1, backend, 'threads');
}

async function pruneStructured<O, R extends MethodReport>(model: CausalLM, req: PruneRequest<O, R>, m: StructuredMethod<O, R>,
  perLayer: Record<string, unknown>[]): Promise<{ report: R | undefined; budget: BudgetRecord | undefined }> {
  const log = req.log ?? (() => {});
  const sreq = m.stats(req.options);
  const needsPass = statsNeedData(sreq.perLayer) || sreq.blockDistance !== undefined;
  if ((needsPass || sreq.gradients) && req.windows.length === 0) throw new ConfigError(`method '${req.method.name}' needs calibration data (--calib FILE, or calibration: in an experiment)`);
  // Checked before any pass: whole-model gradients are never kept, so a method must reduce each layer's.
  if (sreq.gradients && !m.layerScores) {
    throw new Error(`method '${req.method.name}' asks for gradients in stats() but defines no layerScores(ctx) to reduce one layer's gradients to its scores (see src/prune/method.ts)`);
  }
  if (req.workers !== undefined && workerCount(req.workers) > 1) {
    throw new ConfigError(`method '${req.method.name}' is structured: it plans all layers at once; workers > 1 applies to layer-wise methods only`);
  }
  const stats: LayerStats[] = [];
  const distance = sreq.blockDistance ? new Float64Array(model.numLayers) : undefined;
  if (needsPass) {
    // One dense pass: every statistic comes from the unpruned model.
    let states: HiddenStates | null = embedWindows(model, req.windows);
    const passes = calibrationPasses(model, req, states.batches.length, model.numLayers - 1, log);
    try {
      for (let i = 0; i < model.numLayers && states; i++) {
        stats.push(await passes.stats(model, i, states, sreq.perLayer));
        const next = await passes.run(model, i, states, sreq.blockDistance);
        if (distance) distance[i] = next.distance / (req.windows.length * req.windows[0].length);
        states = next.states;
        req.onLayer?.(i + 1, model.numLayers);
      }
    } finally {
      await passes.close();
    }
  } else {
    for (let i = 0; i < model.numLayers; i++) stats.push({});
  }
  const view = modelView(model);
  const layerScores = sreq.gradients ? gradientScores(model, req, m, sreq.gradients, view) : undefined;
  const planAt = async (sparsity: number, planLog: (msg: string) => void) => {
    const p = await m.plan({
      model: view, options: req.options, target: { ...req.target, sparsity }, log: planLog, stats, blockDistance: distance, layerScores,
      weight: (layer, role) => {
        const h = readLinear(model, layer, role);
        return { data: h.data, rows: h.rows, cols: h.cols };
      },
    });
    // Validate the whole plan before touching any weight, so a bad plan changes nothing.
    validatePlan(p, view, req.method.name);
    return p;
  };
  let plan: StructuralPlan<R>;
  let budget: BudgetRecord | undefined;
  if (req.budget) {
    // Plans are searched silently; the choice is logged once.
    const found = await searchKnob(req.method.name, view, req.budget, (k) => planAt(k, () => {}));
    plan = found.plan as StructuralPlan<R>;
    budget = found.record;
    log(`budget ${req.budget.fraction} of ${req.budget.scope}: ${req.method.name} sparsity ${found.knob.toPrecision(6)} removes ${found.record.planned.toFixed(6)} (${found.record.evaluations} plans)`);
  } else {
    plan = await planAt(req.target.sparsity, log);
  }
  plan.layers.forEach((lp, i) => model.withParts([i], () => {
    const before = { ...model.config.layers[i] };
    for (const [role, delta] of Object.entries(lp.biasDelta ?? {}) as [LinearRole, Float32Array][]) addBias(model, i, role, delta);
    if (lp.keepChannels) removeFfnChannels(model, i, lp.keepChannels);
    if (lp.keepKvGroups) removeKvGroups(model, i, lp.keepKvGroups);
    perLayer.push({ layer: i, before, after: { ...model.config.layers[i] } });
  }));
  return { report: plan.report, budget };
}

/**
 * Each layer's gradients reduced by the method's `layerScores` as soon as they are complete (last
 * layer first); the gradients are dropped after, so only the scores of every layer are kept.
 */
function gradientScores<O, R extends MethodReport>(model: CausalLM, req: PruneRequest<O, R>, m: StructuredMethod<O, R>, greq: GradientRequest,
  view: ModelView): unknown[] {
  const reduce = m.layerScores!.bind(m);
  const scores = new Array<unknown>(model.numLayers);
  layerGradients(model, req.windows, greq, (layer, grads) => {
    const linears: Partial<Record<LinearRole, LinearWithGradient>> = {};
    for (const [role, g] of Object.entries(grads) as [LinearRole, LinearWithGradient][]) {
      const w = readLinear(model, layer, role);
      linears[role] = { ...g, weight: w.data, rows: w.rows, cols: w.cols };
    }
    scores[layer] = reduce({ model: view, options: req.options, log: req.log ?? (() => {}), layer, linears });
  });
  return scores;
}

/** A layer range is for layer-wise methods run in process, and must lie inside the model. */
function checkLayerRange(r: { first: number; last: number }, layers: number, workers: number | null, method: string): void {
  if (workers === null) throw new ConfigError(`method '${method}' is structured: it plans all layers at once, so a layer range does not apply`);
  if (workers > 1) throw new ConfigError('a layer range prunes in process: use workers = 1');
  if (!Number.isInteger(r.first) || !Number.isInteger(r.last) || r.first < 0 || r.first > r.last || r.last >= layers) {
    throw new ConfigError(`layer range ${r.first}-${r.last} is not within the model's layers 0-${layers - 1}`);
  }
}

export async function pruneModel<O, R extends MethodReport = MethodReport>(model: CausalLM, req: PruneRequest<O, R>): Promise<PruneReport<R>> {
  checkTarget(req.method, req.target, modelView(model));
  if (req.budget) {
    checkBudget(req.budget);
    if (req.method.kind !== 'structured') {
      throw new ConfigError(`a parameter budget applies to structured methods; '${req.method.name}' is layer-wise and its sparsity already is a fraction of decoder-linear weights (drop the budget)`);
    }
  }
  const t0 = performance.now();
  const paramsBefore = countParameters(model);
  const shapesBefore = model.config.layers.map((l) => ({ ...l }));
  let peakBytes = tf.memory().numBytes;
  const sample = () => { peakBytes = Math.max(peakBytes, tf.memory().numBytes); };
  const perLayer: Record<string, unknown>[] = [];
  const m = req.method;
  let methodReport: R | undefined;
  let budget: BudgetRecord | undefined;
  const onLayer = req.onLayer;
  const wrapped = { ...req, onLayer: (i: number, n: number) => { sample(); onLayer?.(i, n); } };
  let mode: InputMode | 'global';
  let threadsUsed: number | undefined;
  if (req.layers) checkLayerRange(req.layers, model.numLayers, m.kind === 'layerwise' ? (req.workers ?? 1) : null, m.name);
  // Streamed weights are on the backend only inside withParts: sample there too.
  const previousWatch = model.onWorkingSet;
  model.onWorkingSet = () => { sample(); previousWatch?.(); };
  try {
    if (m.kind === 'layerwise') {
      mode = req.mode ?? m.defaultMode(req.options);
      threadsUsed = await pruneLayerwise(model, wrapped, m, mode, perLayer);
    } else {
      if (req.mode === 'sequential') {
        throw new ConfigError(`method '${m.name}' decides all layers from one dense calibration pass; --mode sequential does not apply`);
      }
      mode = 'global';
      ({ report: methodReport, budget } = await pruneStructured(model, wrapped, m, perLayer));
    }
  } finally {
    model.onWorkingSet = previousWatch;
  }
  sample();
  return buildReport(model, {
    method: m.name, options: req.options as Record<string, unknown>, target: budget ? { ...req.target, sparsity: budget.knob } : req.target, mode, calibration: req.calibration ?? null,
    paramsBefore, shapesBefore, perLayer, methodReport, seconds: (performance.now() - t0) / 1000, peakTensorBytes: peakBytes, threadsUsed,
    // A budgeted run's target is the budget: its scope is what the run is measured against.
    targetScope: budget?.scope ?? m.targetScope ?? (m.kind === 'layerwise' ? 'decoder-linears' : undefined), budget,
  });
}
