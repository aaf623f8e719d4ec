/**
 * Operators of one group solved concurrently (issue 12, "parallel over independent operators").
 * The operators of a group read the same input statistics and a layer-wise method decides each
 * from its own weight and those statistics, so each can go to a forward-pool worker on its own:
 * the worker runs the method's own `pruneOperators` on that one operator (the in-process code
 * path, its own backend's linear algebra), and the decisions come back in the group's order.
 */
import type { ForwardPool, SolveResult, SolveTask } from '../parallel/forward-pool.ts';
import type { LayerStats, LayerwiseMethod, OperatorContext, OperatorDecision, RunSettings } from './method.ts';
import { modelView, type ModelView } from '../model/view.ts';
import type { CausalLM } from '../model/causal-lm.ts';
import { resolveMethod } from './registry.ts';
import { backendLinAlg } from '../linalg/backend.ts';

/** How a worker finds and sets up the method (null: it cannot, the operators are solved in process). */
export interface RemoteMethod {
  /** The method's module file (`moduleOf`). */
  module: string;
  run: RunSettings;
}

/** A group's decision as the engine asks for it: the method, its context, and how a worker gets the method. */
export interface OperatorSolve {
  method: LayerwiseMethod<unknown, unknown>;
  ctx: OperatorContext<unknown, unknown>;
  remote: RemoteMethod | null;
}

/** In process: the method's `pruneOperators` on the whole group. */
export async function solveInProcess(s: OperatorSolve): Promise<OperatorDecision[]> {
  return await s.method.pruneOperators(s.ctx);
}

/** Work of one operator's solve, for ordering the tasks (largest first): rows × cols², the cost of a W·G product. */
const work = (o: { rows: number; cols: number }): number => o.rows * o.cols * o.cols;

/**
 * One task per operator on `pool`, largest first so that the last to finish is a small one;
 * decisions and log lines in the group's operator order. A group of one operator, or a method a
 * worker cannot load, is solved in process.
 */
export async function solveOnPool(pool: ForwardPool, s: OperatorSolve): Promise<OperatorDecision[]> {
  const { ctx, remote } = s;
  if (!remote || ctx.operators.length < 2) return solveInProcess(s);
  const order = ctx.operators.map((_, k) => k).sort((a, b) => work(ctx.operators[b]!) - work(ctx.operators[a]!));
  const tasks: SolveTask[] = order.map((k) => {
    const op = ctx.operators[k]!;
    const stats: LayerStats = {};
    if (ctx.stats[op.input]) stats[op.input] = ctx.stats[op.input];
    return { type: 'solve', method: remote.module, options: ctx.options, target: ctx.target, run: remote.run, layer: ctx.layer, operators: [op], stats };
  });
  const results = await pool.run(tasks);
  const byOperator = new Array<SolveResult>(order.length);
  order.forEach((k, t) => { byOperator[k] = results[t]!; });
  const out: OperatorDecision[] = [];
  for (const r of byOperator) {
    for (const msg of r.logs) ctx.log(msg);
    out.push(...r.decisions);
  }
  return out;
}

/** A worker's copy of the method, set up once per worker as `setup` asks (per run and per thread: a pool serves one run). */
interface WorkerMethod {
  method: LayerwiseMethod<unknown, unknown>;
  state: unknown;
  view: ModelView;
}

const loaded = new Map<string, WorkerMethod>();

/** Worker side of a `solve` task: the method's `pruneOperators` on the task's operators. */
export async function solveTask(model: CausalLM, task: SolveTask): Promise<SolveResult> {
  let w = loaded.get(task.method);
  if (!w) {
    const m = await resolveMethod(task.method);
    if (m.kind !== 'layerwise') throw new Error(`method '${task.method}' is not layer-wise; operator solves apply to layer-wise methods only`);
    const view = modelView(model);
    const method = m as LayerwiseMethod<unknown, unknown>;
    // The main thread's setup has already logged what it had to say.
    const state = method.setup?.({ model: view, options: task.options, target: task.target, log: () => {}, run: task.run });
    w = { method, state, view };
    loaded.set(task.method, w);
  }
  const logs: string[] = [];
  const decisions = await w.method.pruneOperators({
    model: w.view, options: task.options, target: task.target, log: (msg) => logs.push(msg), layer: task.layer,
    operators: task.operators, stats: task.stats, state: w.state, linalg: backendLinAlg(task.run.numerics),
  });
  return { decisions, logs };
}
