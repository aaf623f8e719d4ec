/**
 * What the engine enforces on every method, before any statistics are collected or any weight is
 * touched: the target's pattern is one the method declares (structured methods refuse N:M rather
 * than ignore it), N:M fits every operator's input width and agrees with the sparsity, and a
 * structured plan is valid as a whole (indices, ranges, bias lengths) before surgery starts, so a
 * bad plan changes nothing. The CLI and the experiment pipeline both reach these through the engine.
 */
import type { ModelView } from '../model/view.ts';
import type { LinearRole } from '../model/family.ts';
import type { MethodMeta, MethodReport, PruneTarget, StructuralPlan } from './method.ts';
import { validateSparsity } from './masks.ts';
import { ConfigError, PruneLabError } from '../util/errors.ts';

export function patternLabel(target: PruneTarget): string {
  return target.pattern.kind === 'nm' ? `${target.pattern.n}:${target.pattern.m}` : 'unstructured';
}

/** Throws ConfigError when the method cannot take `target` on this model. */
export function checkTarget(method: Pick<MethodMeta<unknown, MethodReport>, 'name' | 'granularity'> & { kind: string }, target: PruneTarget, model: ModelView): void {
  validateSparsity(target.sparsity, 'sparsity');
  const g = method.granularity;
  const p = target.pattern;
  if (p.kind === 'nm') {
    if (!g.includes('n:m')) {
      throw new ConfigError(`method '${method.name}' does not take N:M patterns (its granularity: ${g.join(', ')}); drop --pattern / pattern:`);
    }
    const implied = p.n / p.m;
    if (Math.abs(target.sparsity - implied) > 1e-9) {
      throw new ConfigError(`pattern ${p.n}:${p.m} prunes ${p.n} of every ${p.m} weights, a sparsity of ${implied}; `
        + `the requested sparsity ${target.sparsity} contradicts it (give --sparsity ${implied} or leave it out)`);
    }
    for (const l of model.spec.linears) {
      model.config.layers.forEach((shape, i) => {
        const cols = l.inDim(shape, model.config);
        if (cols % p.m !== 0) {
          throw new ConfigError(`pattern ${p.n}:${p.m} does not fit: layer ${i} ${l.role} has ${cols} inputs, not a multiple of ${p.m}`);
        }
      });
    }
  } else if (method.kind === 'layerwise' && !g.includes('unstructured')) {
    throw new ConfigError(`method '${method.name}' takes only N:M patterns (its granularity: ${g.join(', ')}); give --pattern N:M`);
  }
}

function checkIndices(keep: unknown, total: number, what: string, layer: number): void {
  if (!Array.isArray(keep)) throw new PruneLabError(`plan, layer ${layer}: ${what} to keep must be an array of indices`);
  if (keep.length === 0) throw new ConfigError(`layer ${layer}: the plan would remove every ${what} (${total}); keep at least one`);
  for (let i = 0; i < keep.length; i++) {
    const k = keep[i] as unknown;
    if (typeof k !== 'number' || !Number.isInteger(k) || k < 0 || k >= total || (i > 0 && k <= (keep[i - 1] as number))) {
      throw new PruneLabError(`plan, layer ${layer}: ${what} indices to keep must be ascending, unique integers in 0..${total - 1}; entry ${i} is ${String(k)}`);
    }
  }
}

/**
 * Validate a structured plan against the model it will be applied to. Throws PruneLabError (a
 * method defect) or ConfigError (a target the model cannot meet) — before any weight changes.
 */
export function validatePlan(plan: StructuralPlan<MethodReport>, model: ModelView, method: string): void {
  if (!plan || !Array.isArray(plan.layers)) throw new PruneLabError(`method '${method}' returned no plan layers`);
  if (plan.layers.length !== model.numLayers) {
    throw new PruneLabError(`method '${method}': the plan covers ${plan.layers.length} of ${model.numLayers} layers`);
  }
  const roles = new Set<string>(model.spec.linears.map((l) => l.role));
  plan.layers.forEach((lp, i) => {
    const s = model.config.layers[i];
    if (lp.keepChannels !== undefined) checkIndices(lp.keepChannels, s.intermediateSize, 'FFN channel', i);
    if (lp.keepKvGroups !== undefined) checkIndices(lp.keepKvGroups, s.numKvHeads, 'attention head group', i);
    for (const [role, delta] of Object.entries(lp.biasDelta ?? {})) {
      if (!roles.has(role)) throw new PruneLabError(`plan, layer ${i}: bias delta for '${role}', which ${model.config.family} has not`);
      const l = model.spec.linears.find((x) => x.role === (role as LinearRole))!;
      const out = l.outDim(s, model.config);
      if (!(delta instanceof Float32Array) || delta.length !== out) {
        throw new PruneLabError(`plan, layer ${i}: bias delta for ${role} must be a Float32Array of ${out} entries (the unpruned output width)`);
      }
      for (let k = 0; k < delta.length; k++) {
        if (!Number.isFinite(delta[k])) throw new PruneLabError(`plan, layer ${i}: bias delta for ${role} has a non-finite entry at ${k}`);
      }
    }
  });
}
