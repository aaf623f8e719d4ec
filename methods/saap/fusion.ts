/**
 * Homoscedastic-uncertainty fusion of the vector-wise and element-wise importances (saap.md §4):
 * I_fuse = I_vec / (2σ_vec²) + I_elem / (2σ_elem²), σ_m² per scope. Closed form σ_m² = mean of
 * I^(m) over the groups of the scope; or s_m = log σ_m² learnt by Adam on
 * J(s) = mean_G Σ_m ½ e^{−s_m} I^(m)(G) + ½ Σ_m s_m, whose optimum is that same mean.
 */
import type { ModuleType } from './allocation.ts';

export type Metric = 'vec' | 'elem';
export const METRICS: readonly Metric[] = ['vec', 'elem'];
export type SigmaScope = 'global' | 'module_type' | 'layer';
export type SigmaFit = 'closed' | 'adam';

/** σ² used when a metric is identically zero in a scope. */
export const SIGMA2_EPS = 1e-12;

export interface AdamFitOptions {
  /** Initial learning rate (decays as lr / (1 + t / decaySteps)). */
  lr?: number;
  decaySteps?: number;
  maxSteps?: number;
  /** Stop when every |∂J/∂s_m| is below this. */
  tol?: number;
  beta1?: number;
  beta2?: number;
}

export const ADAM_DEFAULTS: Required<AdamFitOptions> = { lr: 0.05, decaySteps: 1000, maxSteps: 5000, tol: 1e-5, beta1: 0.9, beta2: 0.99 };

export interface AdamFitResult {
  /** s_m = log σ_m², one per input mean. */
  logSigma2: number[];
  steps: number;
}

/**
 * Fit s_m = log σ_m² by Adam from s = 0 until |∂J/∂s_m| = ½|1 − e^{−s_m}·mean_m| < tol for all m.
 * Adam moves s by about lr per step, so Taylor-sized means (log 1e-6 ≈ −13.8) need hundreds of
 * steps; β2 = 0.99 keeps the step from collapsing after the large gradients of an approach
 * from below. Throws if the step cap is reached, so an unconverged σ is never used.
 */
export function fitLogSigma2Adam(means: readonly number[], opts: AdamFitOptions = {}): AdamFitResult {
  const o = { ...ADAM_DEFAULTS, ...opts };
  for (const mu of means) if (!(mu > 0) || !Number.isFinite(mu)) throw new Error(`Adam σ fit: metric means must be positive and finite, got ${mu}`);
  const n = means.length;
  const s = new Float64Array(n);
  const m1 = new Float64Array(n);
  const m2 = new Float64Array(n);
  const grad = (k: number) => 0.5 * (1 - Math.exp(-s[k]) * means[k]);
  for (let t = 1; t <= o.maxSteps + 1; t++) {
    let done = true;
    for (let k = 0; k < n; k++) if (Math.abs(grad(k)) >= o.tol) done = false;
    if (done) return { logSigma2: Array.from(s), steps: t - 1 };
    if (t > o.maxSteps) break;
    const lr = o.lr / (1 + t / o.decaySteps);
    for (let k = 0; k < n; k++) {
      const gk = grad(k);
      m1[k] = o.beta1 * m1[k] + (1 - o.beta1) * gk;
      m2[k] = o.beta2 * m2[k] + (1 - o.beta2) * gk * gk;
      const mh = m1[k] / (1 - o.beta1 ** t);
      const vh = m2[k] / (1 - o.beta2 ** t);
      s[k] -= (lr * mh) / (Math.sqrt(vh) + 1e-12);
    }
  }
  const worst = Math.max(...Array.from(s, (_, k) => Math.abs(grad(k))));
  throw new Error(`Adam σ fit did not converge in ${o.maxSteps} steps (max |∂J/∂s| = ${worst.toExponential(2)} ≥ ${o.tol})`);
}

/** The group scores of one (layer, module type) under both metrics. */
export interface UnitScores {
  layer: number;
  type: ModuleType;
  vec: Float64Array;
  elem: Float64Array;
}

export interface ScopeSigma {
  scope: string;
  groups: number;
  sigma2: Record<Metric, number>;
  /** Adam steps to convergence (sigmaFit adam). */
  adamSteps?: number;
}

export function scopeKey(scope: SigmaScope, layer: number, type: ModuleType): string {
  return scope === 'global' ? 'global' : scope === 'module_type' ? type : `layer${layer}.${type}`;
}

function mean(xs: readonly Float64Array[]): { mean: number; count: number } {
  let s = 0;
  let n = 0;
  for (const x of xs) for (let i = 0; i < x.length; i++) { s += x[i]; n++; }
  return { mean: n ? s / n : 0, count: n };
}

/** σ² per metric and scope, then the fused score of every group of every unit. */
export function fuseScores(units: readonly UnitScores[], scope: SigmaScope, fit: SigmaFit, log: (msg: string) => void = () => {},
  adam: AdamFitOptions = {}): { fused: Float64Array[]; sigmas: ScopeSigma[] } {
  const byScope = new Map<string, UnitScores[]>();
  for (const u of units) {
    const k = scopeKey(scope, u.layer, u.type);
    byScope.set(k, [...(byScope.get(k) ?? []), u]);
  }
  const sigmas = new Map<string, ScopeSigma>();
  for (const [key, members] of byScope) {
    const sigma2 = {} as Record<Metric, number>;
    const stats = METRICS.map((m) => mean(members.map((u) => u[m])));
    const zero = METRICS.filter((_, i) => !(stats[i].mean > 0));
    for (const m of zero) log(`saap: metric ${m} is zero on every group of scope '${key}'; using σ² = ${SIGMA2_EPS}`);
    const entry: ScopeSigma = { scope: key, groups: stats[0].count, sigma2 };
    if (fit === 'closed') {
      METRICS.forEach((m, i) => { sigma2[m] = stats[i].mean > 0 ? stats[i].mean : SIGMA2_EPS; });
    } else {
      const live = METRICS.map((_, i) => i).filter((i) => stats[i].mean > 0);
      const r = fitLogSigma2Adam(live.map((i) => stats[i].mean), adam);
      METRICS.forEach((m) => { sigma2[m] = SIGMA2_EPS; });
      live.forEach((i, j) => { sigma2[METRICS[i]] = Math.exp(r.logSigma2[j]); });
      entry.adamSteps = r.steps;
    }
    sigmas.set(key, entry);
  }
  const fused = units.map((u) => {
    const { sigma2 } = sigmas.get(scopeKey(scope, u.layer, u.type))!;
    const f = new Float64Array(u.vec.length);
    for (let i = 0; i < f.length; i++) f[i] = u.vec[i] / (2 * sigma2.vec) + u.elem[i] / (2 * sigma2.elem);
    return f;
  });
  return { fused, sigmas: [...sigmas.values()] };
}
