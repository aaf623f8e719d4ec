/**
 * Warm starts W₀ (fistapruner.md §6), all computed from the operator's own Gram matrix G = X*ᵀX*
 * (a PruneLab choice; the paper does not say how its warm-start weights were obtained).
 */
import { maskNM, maskPerMatrix, maskPerRow } from '../../src/prune/masks.ts';
import { ConfigError } from '../../src/util/errors.ts';
import type { Cut } from './fista.ts';

export const WARM_STARTS = ['wanda', 'sparsegpt', 'dense', 'magnitude'] as const;
export type WarmStart = (typeof WARM_STARTS)[number];

export interface WarmStartInput {
  weight: Float32Array;
  rows: number;
  cols: number;
  /** G = X*ᵀX* `[cols, cols]`. */
  gram: Float64Array;
  cut: Cut;
}

function masked(w: Float32Array, mask: Uint8Array): Float64Array {
  const out = new Float64Array(w.length);
  for (let i = 0; i < w.length; i++) if (mask[i]) out[i] = w[i]!;
  return out;
}

/** Wanda: |W_ij|·‖X*_j‖ with ‖X*_j‖ = √G_jj, per output row (N:M per row and block). */
export function wandaWarmStart(x: WarmStartInput): Float64Array {
  const { weight, rows, cols, gram, cut } = x;
  const s = new Float64Array(weight.length);
  for (let c = 0; c < cols; c++) {
    const norm = Math.sqrt(Math.max(0, gram[c * cols + c]!));
    for (let r = 0; r < rows; r++) s[r * cols + c] = Math.abs(weight[r * cols + c]!) * norm;
  }
  const mask = cut.kind === 'nm' ? maskNM(s, rows, cols, cut.n, cut.m) : maskPerRow(s, rows, cols, cut.sparsity);
  return masked(weight, mask);
}

/** Magnitude, with the same comparison group as the final cut (row, matrix or N:M). */
export function magnitudeWarmStart(x: WarmStartInput): Float64Array {
  const { weight, rows, cols, cut } = x;
  const s = Float64Array.from(weight, Math.abs);
  const mask = cut.kind === 'nm' ? maskNM(s, rows, cols, cut.n, cut.m)
    : cut.kind === 'row' ? maskPerRow(s, rows, cols, cut.sparsity) : maskPerMatrix(s, rows, cols, cut.sparsity);
  return masked(weight, mask);
}

/** Shape of the pure SparseGPT entry point another module provides (`methods/sparsegpt/obs.ts`). */
type SparsegptPrune = (W: Float32Array, rows: number, cols: number, H: Float64Array, opts: Record<string, unknown>) => unknown;

const SPARSEGPT_MODULE = new URL('../sparsegpt/obs.ts', import.meta.url);

async function loadSparsegpt(): Promise<SparsegptPrune> {
  let mod: { sparsegptPrune?: unknown };
  try {
    // A computed specifier: the module is optional, so the typecheck must not require it.
    mod = (await import(SPARSEGPT_MODULE.href)) as { sparsegptPrune?: unknown };
  } catch (e) {
    throw new ConfigError(`fistapruner: warmStart 'sparsegpt' needs methods/sparsegpt/obs.ts (sparsegptPrune), which could not be loaded `
      + `(${(e as Error).message.split('\n')[0]}); use --option warmStart=wanda|magnitude|dense`);
  }
  if (typeof mod.sparsegptPrune !== 'function') {
    throw new ConfigError('fistapruner: methods/sparsegpt/obs.ts does not export a function sparsegptPrune');
  }
  return mod.sparsegptPrune as SparsegptPrune;
}

/** Accepts the pruned weights as an array, or an object carrying them (and maybe a mask). */
function sparsegptWeights(r: unknown, n: number): Float64Array {
  const obj = r as { weight?: unknown; W?: unknown; mask?: unknown } | null;
  const w = r instanceof Float32Array || r instanceof Float64Array ? r : obj?.weight ?? obj?.W;
  if (!(w instanceof Float32Array || w instanceof Float64Array) || w.length !== n) {
    throw new Error('fistapruner: sparsegptPrune returned no weight array of the operator\'s size');
  }
  const out = Float64Array.from(w);
  if (obj && obj.mask instanceof Uint8Array && obj.mask.length === n) {
    for (let i = 0; i < n; i++) if (!obj.mask[i]) out[i] = 0;
  }
  return out;
}

/** SparseGPT (OBS updates) with Hessian H ∝ G. */
export async function sparsegptWarmStart(x: WarmStartInput): Promise<Float64Array> {
  const prune = await loadSparsegpt();
  // obs.ts options: { sparsity } or { n, m } (prune n of every m), reference blocksize/percdamp.
  const opts: Record<string, unknown> = x.cut.kind === 'nm' ? { n: x.cut.n, m: x.cut.m } : { sparsity: x.cut.sparsity };
  return sparsegptWeights(await prune(Float32Array.from(x.weight), x.rows, x.cols, Float64Array.from(x.gram), opts), x.weight.length);
}

export async function warmStartWeights(kind: WarmStart, x: WarmStartInput): Promise<Float64Array> {
  switch (kind) {
    case 'wanda': return wandaWarmStart(x);
    case 'magnitude': return magnitudeWarmStart(x);
    case 'dense': return Float64Array.from(x.weight);
    case 'sparsegpt': return sparsegptWarmStart(x);
  }
}
