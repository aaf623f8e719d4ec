/**
 * A common parameter budget for structured methods. Each structured method has its own knob
 * (`sparsity`: FFN channels for CFSP and the SP baselines, decoder-linear weights for full FLAP, a
 * per-layer ratio for LLM-Pruner, all parameters for SAAP), so equal knobs remove unequal amounts.
 * A budget names what it is a fraction of — decoder-layer parameters (the tables' default axis) or
 * all parameters — and the engine turns it into the method's own knob: it plans (statistics are
 * gathered once; plans are cheap) at knob values found by bisection and keeps the knob whose plan
 * removes the fraction closest to the budget, counted from the plan's shapes exactly as the report
 * later measures the pruned model.
 */
import type { LinearRole } from '../model/family.ts';
import type { ModelView } from '../model/view.ts';
import { countParametersOf } from '../model/count.ts';
import type { LayerPlan, StructuralPlan } from './method.ts';
import { ConfigError, PruneLabError } from '../util/errors.ts';

export type BudgetScope = 'decoder-layers' | 'all-parameters';
export const BUDGET_SCOPES: readonly BudgetScope[] = ['decoder-layers', 'all-parameters'];

export interface ParamBudget {
  /** What the fraction is of. */
  scope: BudgetScope;
  /** Fraction of the scope's parameters to remove, in (0, 1). */
  fraction: number;
}

/** What a budgeted run records (prune_report.json `budget`). */
export interface BudgetRecord extends ParamBudget {
  /** The method's own sparsity knob that was used. */
  knob: number;
  /** Fraction of the scope removed by the plan at that knob. */
  planned: number;
  /** Plans evaluated by the search. */
  evaluations: number;
}

const SCOPE_WORDS: Record<BudgetScope, string> = { 'decoder-layers': 'decoder-layer parameters', 'all-parameters': 'all parameters' };

export function checkBudget(b: ParamBudget): void {
  if (!BUDGET_SCOPES.includes(b.scope)) throw new ConfigError(`budget scope must be one of ${BUDGET_SCOPES.join(', ')}, got '${String(b.scope)}'`);
  if (typeof b.fraction !== 'number' || !Number.isFinite(b.fraction) || b.fraction <= 0 || b.fraction >= 1) {
    throw new ConfigError(`a parameter budget must be a fraction with 0 < budget < 1, got ${String(b.fraction)}`);
  }
}

/**
 * Fraction of `scope` a plan removes: parameters recounted from the shapes the plan leaves (a
 * removed unit takes its weights and bias entries with it; a bias delta on a linear without bias
 * adds one), the same count the pruning report makes of the pruned model.
 */
export function plannedFraction(view: ModelView, plan: StructuralPlan, scope: BudgetScope): number {
  const config = structuredClone(view.config) as typeof view.config & { layers: { numHeads: number; numKvHeads: number; intermediateSize: number }[] };
  plan.layers.forEach((lp: LayerPlan, i) => {
    const s = config.layers[i];
    if (lp.keepChannels) s.intermediateSize = lp.keepChannels.length;
    if (lp.keepKvGroups) {
      s.numHeads = (s.numHeads / s.numKvHeads) * lp.keepKvGroups.length;
      s.numKvHeads = lp.keepKvGroups.length;
    }
  });
  const hasBias = (i: number, role: LinearRole) => view.hasBias(i, role) || plan.layers[i]?.biasDelta?.[role] !== undefined;
  const positions = view.parameters.byType.positions;
  const after = countParametersOf(config, hasBias, positions === undefined ? null : positions / view.config.hiddenSize);
  const key = scope === 'decoder-layers' ? 'decoderLayers' : 'total';
  return 1 - after[key] / view.parameters[key];
}

/** Bisection steps on the knob: its resolution is 2⁻²⁴ ≈ 6e-8, finer than one unit of any real model. */
const STEPS = 24;
/** The largest knob tried (knobs are fractions below 1). */
const KNOB_MAX = 1 - 1e-9;

/**
 * The knob whose plan removes the fraction of `budget.scope` closest to `budget.fraction`, assuming
 * (as every structured method here does) that a larger knob removes no less. A knob the method
 * refuses (a ConfigError: it would empty a layer, exceed a ratio cap …) counts as beyond reach.
 * A budget outside what the method reaches is a ConfigError naming the method and the range.
 */
export async function searchKnob(method: string, view: ModelView, budget: ParamBudget,
  planAt: (knob: number) => Promise<StructuralPlan>): Promise<{ knob: number; plan: StructuralPlan; record: BudgetRecord }> {
  checkBudget(budget);
  let evaluations = 0;
  const at = async (knob: number): Promise<{ knob: number; plan: StructuralPlan; f: number } | null> => {
    evaluations++;
    try {
      const plan = await planAt(knob);
      return { knob, plan, f: plannedFraction(view, plan, budget.scope) };
    } catch (err) {
      if (err instanceof ConfigError) return null;
      throw err;
    }
  };
  const lowest = await at(0);
  if (!lowest) throw new PruneLabError(`method '${method}' refuses a sparsity of 0, so no budget can be converted to its knob`);
  let below = lowest;
  if (lowest.f >= budget.fraction) {
    throw new ConfigError(`method '${method}' cannot meet a budget of ${pct(budget.fraction)} of ${SCOPE_WORDS[budget.scope]} on this model: `
      + `it removes at least ${pct(lowest.f)}; give a larger budget`);
  }
  // The largest knob the method accepts: the top of its range, bisected for when it refuses the largest.
  let top = await at(KNOB_MAX);
  if (!top) {
    let lo = below;
    let hiKnob = KNOB_MAX;
    for (let i = 0; i < STEPS; i++) {
      const mid = await at((lo.knob + hiKnob) / 2);
      if (mid) lo = mid;
      else hiKnob = (lo.knob + hiKnob) / 2;
    }
    top = lo;
  }
  if (top.f < budget.fraction) {
    throw new ConfigError(`method '${method}' cannot reach a budget of ${pct(budget.fraction)} of ${SCOPE_WORDS[budget.scope]} on this model: `
      + `its sparsity removes ${pct(lowest.f)}–${pct(top.f)}; give a budget in that range`);
  }
  // Invariant: below.f < budget ≤ above.f; a refused knob lies beyond every accepted one, so it
  // narrows the interval from above while `above` keeps the last accepted plan.
  let above = top;
  let hiKnob = top.knob;
  for (let i = 0; i < STEPS; i++) {
    const knob = (below.knob + hiKnob) / 2;
    const mid = await at(knob);
    if (mid && mid.f < budget.fraction) below = mid;
    else {
      hiKnob = knob;
      if (mid) above = mid;
    }
  }
  const chosen = budget.fraction - below.f <= above.f - budget.fraction ? below : above;
  return { knob: chosen.knob, plan: chosen.plan, record: { ...budget, knob: chosen.knob, planned: chosen.f, evaluations } };
}

function pct(x: number): string {
  return `${(x * 100).toFixed(2)}%`;
}
