/**
 * The FISTAPruner per-operator solver (fistapruner.md §1, §3–§5), pure and on Gram matrices.
 *
 * Orientation. PruneLab's statistics sum over tokens with X as `[tokens, in]`:
 *   G = X*ᵀX* (`gram`), C = XᵀX* (`cross`, C_ij = Σ_t X_ti X*_tj), H_d = XᵀX (`denseGram`).
 * The spec writes X as `[in, tokens]`; its X X*ᵀ is exactly our C, so with W `[out, in]`:
 *   B = W·C,  ∇f(W*) = W*·G − B,
 *   f(W*) = ½‖X*W*ᵀ − XWᵀ‖²_F = ½ tr(W*GW*ᵀ) − tr(BW*ᵀ) + ½ tr(WH_dWᵀ).
 * Numerics (`LinAlg`, from the method's context): with float32 (default) every product with a
 * `[cols, cols]` matrix — W·(C − G), W·(G − 2C + H_d) and W·C once, the (W* − W)·G of each FISTA
 * iteration and of each cut, and the power iteration for L — runs on the backend, G staying there
 * for the whole solve. The O(rows·cols) elementwise work (gradient step, soft threshold, momentum,
 * objective, errors) stays on the host in float64: E_total decides the λ search and the winning
 * round. Keeping it costs one upload and one read of `[rows, cols]` per product, O(1/cols) of the
 * product's work. G is made resident (`LinAlg.resident`: on WebAssembly its column panels are
 * sliced and packed once, not per product), products are read back as float32 and widened exactly
 * on use, and no product is computed twice: a round that restarts from W_best reuses its product
 * from its cut, and the first round reuses H(W₀)'s when the cut leaves W₀ unchanged. Each of these
 * gives the values the recomputed product would, so results are unchanged.
 * Where the backend has native host kernels (`LinAlg.native`: OpenBLAS under WebAssembly; issue
 * 12) the same work runs in host memory instead, with the same values: the products by the
 * backend's own product kernel on host Float32Arrays (`NativeKernels.matMul`, the same tiles as
 * the backend product), so no upload, dispatch or read per product; each accepted FISTA step in C
 * (`fistaAcceptStep`, native/fista-kernels.c: `acceptStep`'s float64 operations in its order,
 * its sums per row and then over rows, so its rows split over the addon's threads); and the exact
 * per-row cut in C (`fistaCutRows`, rows over the threads too: a mask is a function of the scores
 * alone); and the other passes over `[rows, cols]` or `[cols, cols]` in C as well, the same
 * operations with the same per-row sums: G's symmetrisation and differences (`fistaPrepareGram`),
 * the float32 change X − W (`fistaChange`) and the error sums (`fistaErrors`). G stays on the
 * backend for the power iteration only. Without
 * them (XNNPACK, WebGPU, no addon) the TypeScript below runs: the reference the native kernels
 * are tested against, bit for bit (test/methods/fistapruner-native.test.ts).
 * With float64 (or no LinAlg) everything runs on the host in float64: the reference.
 *
 * Products are taken of the change D = W* − W from the dense weight, not of W* itself, so that
 * the small output error is not the difference of large float32 terms:
 *   f(W*) = ½ tr(DGDᵀ) − tr(BDᵀ) + c0,  ∇f(W*) = D·G − B,
 *   with B = W·(C − G) (zero without correction) and c0 = ½ tr(W(G − 2C + H_d)Wᵀ) = f(W),
 * the same f and gradient as above (expand W* = W + D; G symmetric). Measured: with W*·G products
 * the float32 path's objective moved 2.4e-4 relative under a change of GEMM kernel alone
 * (stories260K FISTAPruner 50 %, layer 4 down), flipping 10 of 11,008 mask entries; the
 * differences in D are what the solver moves, so their products keep float32's relative precision.
 * λ_max = ‖∇f(0)‖_∞ = max|W·C| is taken once in `prepare`.
 */
import { fromArray, matmul, maxEigenvalueSym, type Mat } from '../../src/linalg/dense.ts';
import { maskForCut, pruneCount, validateSparsity, type Cut } from '../../src/prune/masks.ts';
import type { LinAlg, Matrix, NativeKernels } from '../../src/linalg/linalg.ts';

/** One operator's least-squares problem, all row-major. */
export interface GramProblem {
  rows: number;
  cols: number;
  /** Dense weight W `[rows, cols]` (the target is W applied to the dense input X). */
  weight: ArrayLike<number>;
  /** G = X*ᵀX* `[cols, cols]`. */
  gram: ArrayLike<number>;
  /** C = XᵀX* `[cols, cols]`. */
  cross: ArrayLike<number>;
  /** H_d = XᵀX `[cols, cols]` (only the constant of the objective depends on it). */
  denseGram: ArrayLike<number>;
}

/** A product read back from the backend (float32) or computed on the host (float64). */
export type Vec = Float64Array | Float32Array;

/** The Gram problem with everything FISTA needs precomputed. */
export interface PreparedProblem {
  rows: number;
  cols: number;
  /**
   * The dense weight W `[rows, cols]`: products are of W* − W (see the header). Kept as float32
   * when given so (exact), as B when it is a float32 product: every FISTA pass reads both, and the
   * pass is bound by memory traffic.
   */
  W: Vec;
  /** B = W·(C − G) `[rows, cols]`: ∇f(W*) = (W* − W)·G − B. */
  B: Vec;
  /** c0 = f(W) = ½ tr(W(G − 2C + H_d)Wᵀ): makes f the true output error, ≥ 0. */
  c0: number;
  /** ‖∇f(0)‖_∞ = max|W·C|. */
  lambdaMax: number;
  /** The Gram part it was made from (G in its forms; shared by the operators of one tap). */
  gram: PreparedGram;
  /** `[rows, cols]` arrays reused within the solve, where the products are native (host arrays only). */
  ws?: Workspace;
}

/**
 * `[rows, cols]` arrays handed out and taken back within one operator's solve. A solve made about
 * forty of them fresh (iterates, changes, products, cuts per round): each cost page faults and
 * zeroing, and their external memory set off a full V8 garbage collection about every 64 MB (37 in
 * a 2-layer prune of the bench's 512×8 model, `node --trace-gc`). Only where the products are native, so every array
 * here is the solver's own host memory (a backend read may be a tensor's storage). An array handed
 * out holds stale values: each user writes every entry before reading one.
 */
export class Workspace {
  private readonly f64: Float64Array[] = [];
  private readonly f32: Float32Array[] = [];
  constructor(readonly size: number) {}

  float64(): Float64Array {
    return this.f64.pop() ?? new Float64Array(this.size);
  }

  float32(): Float32Array {
    return this.f32.pop() ?? new Float32Array(this.size);
  }

  /** Takes arrays back (null, or another size, is left to the collector); an array given twice is kept once. */
  give(...arrays: (Vec | null | undefined)[]): void {
    for (const a of arrays) {
      if (!a || a.length !== this.size) continue;
      if (a instanceof Float64Array) {
        if (!this.f64.includes(a)) this.f64.push(a);
      } else if (!this.f32.includes(a)) this.f32.push(a);
    }
  }
}

/** A `[rows, cols]` float64 array with stale values: from the workspace, else new. */
function f64(pp: PreparedProblem): Float64Array {
  return pp.ws ? pp.ws.float64() : new Float64Array(pp.rows * pp.cols);
}

/** A `[rows, cols]` float32 array with stale values: from the workspace, else new. */
function f32(pp: PreparedProblem): Float32Array {
  return pp.ws ? pp.ws.float32() : new Float32Array(pp.rows * pp.cols);
}

/**
 * The part of a Gram problem that does not depend on the operator's weight: G symmetrised, C − G,
 * G − 2C + H_d, C as the products take it, G on the backend or host, and L once computed. The
 * operators reading one tap (q, k, v; gate, up) share one (`prepareGram` once, `withWeight` per
 * operator): the same values each would compute for itself.
 */
export interface PreparedGram {
  cols: number;
  /** C − G or G − 2C + H_d is nonzero somewhere (intra-layer correction changed the input). */
  corrected: boolean;
  CminusG: Vec;
  M: Vec;
  /** C as the products read it (float32 where they are native: the rounding `upload` makes). */
  cross: ArrayLike<number>;
  /**
   * Symmetrised G (fp32 accumulation leaves it symmetric only up to rounding) in float64, with
   * float64 numerics (the host reference); with float32 G is on the backend or host (below).
   */
  G?: Mat;
  /** G on the backend (float32 numerics, resident for repeated products), else absent. */
  backend?: { la: LinAlg; G: Matrix };
  /**
   * With float32 numerics where the backend has native host kernels (`LinAlg.native`: OpenBLAS):
   * G as float32 in host memory, multiplied by the backend's own product kernel on host arrays
   * (the same tiles, so the same values as the backend product) without the upload, dispatch and
   * read of each product; the backend's G then serves only the power iteration.
   */
  host?: { native: NativeKernels; G: Float32Array };
  /** L by power-iteration count, computed on first use. */
  lipschitz: Map<number, number>;
}

/** The Gram statistics of one tap. */
export type GramStats = Pick<GramProblem, 'cols' | 'gram' | 'cross' | 'denseGram'>;

/** Frees the backend copy of G (no-op on the host). */
export function releaseGram(g: PreparedGram): void {
  if (g.backend) g.backend.la.dispose(g.backend.G);
}

/** Frees what `prepare` made (its Gram part, shared with no other problem). */
export function release(pp: PreparedProblem): void {
  releaseGram(pp.gram);
}

/** X·Y on `la` (X `[rows, n]` host, Y a backend matrix), read back (float32, exact in float64 arithmetic). */
function productOn(la: LinAlg, X: ArrayLike<number>, rows: number, Y: Matrix): Float32Array {
  const x = la.upload(X, rows, Y.rows);
  try {
    const xy = la.matMul(x, Y);
    // Never written to: on the cpu backend this is the tensor's own storage, which outlives dispose unchanged.
    const out = la.read(xy);
    la.dispose(xy);
    return out;
  } finally {
    la.dispose(x);
  }
}

function sameValues(a: ArrayLike<number>, b: ArrayLike<number>): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** One operator's problem, prepared (`prepareGram` then `withWeight`). */
export function prepare(p: GramProblem, la?: LinAlg): PreparedProblem {
  return withWeight(prepareGram(p, la), p.rows, p.weight);
}

export function prepareGram(p: GramStats, la?: LinAlg): PreparedGram {
  const { cols } = p;
  for (const k of ['gram', 'cross', 'denseGram'] as const) checkLen(p[k], cols * cols, k);
  const onBackend = la !== undefined && la.numerics === 'float32';
  const native = onBackend ? la.native : undefined;
  // The differences are formed in float64 from the float32 statistics, before any product (with
  // native products stored as float32 at once: the rounding the upload would make); natively
  // (`fistaPrepareGram`: the same operations, rows over threads) where the statistics come as
  // Float64Arrays, as the engine gives them.
  const n2 = cols * cols;
  const CminusG = native ? new Float32Array(n2) : new Float64Array(n2);
  const M = native ? new Float32Array(n2) : new Float64Array(n2);
  let G: Float64Array | null = null;
  let G32: Float32Array | null = null;
  let corrected: boolean;
  if (native?.fistaPrepareGram && p.gram instanceof Float64Array && p.cross instanceof Float64Array
    && p.denseGram instanceof Float64Array && CminusG instanceof Float32Array && M instanceof Float32Array) {
    G32 = new Float32Array(n2);
    corrected = native.fistaPrepareGram(p.gram, p.cross, p.denseGram, cols, G32, CminusG, M) !== 0;
  } else {
    G = Float64Array.from(p.gram);
    symmetrise(G, cols);
    corrected = differences(G, p.cross instanceof Float64Array ? p.cross : Float64Array.from(p.cross),
      p.denseGram instanceof Float64Array ? p.denseGram : Float64Array.from(p.denseGram), CminusG, M);
    if (onBackend) G32 = Float32Array.from(G);
  }
  let backend: PreparedGram['backend'];
  if (onBackend) {
    const g = la.upload(G32!, cols, cols);
    try {
      backend = { la, G: la.resident(g) };
    } finally {
      la.dispose(g);
    }
  }
  const cross = native && !(p.cross instanceof Float32Array) ? Float32Array.from(p.cross) : p.cross;
  return {
    cols, corrected, CminusG, M, cross, G: onBackend ? undefined : { rows: cols, cols, data: G! },
    backend, host: native ? { native, G: G32! } : undefined, lipschitz: new Map(),
  };
}

/** The problem of one operator (weight `[rows, cols]`) on a prepared Gram part: B, c0 and λ_max from its products. */
export function withWeight(g: PreparedGram, rows: number, weight: ArrayLike<number>): PreparedProblem {
  const { cols } = g;
  const la = g.backend?.la;
  checkLen(weight, rows * cols, 'weight');
  // The weight's values, read in float64 exactly (a Float32Array as it is: no float64 copy).
  const Wv: Float32Array | Float64Array = weight instanceof Float32Array ? weight : Float64Array.from(weight);
  const native = g.host?.native;
  const W32 = native ? Float32Array.from(Wv) : null;
  const times = (M: ArrayLike<number>): Vec => {
    if (!la) return matmul({ rows, cols, data: Float64Array.from(Wv) }, fromArray(cols, cols, M)).data;
    // Float32 as `upload` rounds them.
    if (native) return hostProduct(native, W32!, M instanceof Float32Array ? M : Float32Array.from(M), rows, cols);
    const m = la.upload(M, cols, cols);
    try {
      return productOn(la, Wv, rows, m);
    } finally {
      la.dispose(m);
    }
  };
  // Without correction (X* = X) B and c0 are zero up to G's symmetrisation: still computed, exactly as defined.
  const B = g.corrected ? times(g.CminusG) : new Float32Array(rows * cols);
  let c0 = 0;
  let WM: Vec | null = null;
  if (g.corrected) {
    WM = times(g.M);
    for (let i = 0; i < WM.length; i++) c0 += WM[i]! * Wv[i]!;
  }
  const WC = times(g.cross);
  let lmax = 0;
  for (let i = 0; i < WC.length; i++) lmax = Math.max(lmax, Math.abs(WC[i]!));
  const Wkept = Wv instanceof Float32Array ? W32 ?? Float32Array.from(Wv) : Wv;
  const ws = native ? new Workspace(rows * cols) : undefined;
  ws?.give(WC, WM);
  return { rows, cols, W: Wkept, B, c0: 0.5 * c0, lambdaMax: lmax, gram: g, ws };
}

/** G ← (G + Gᵀ)/2 in place (row-major `[n, n]`), in 64 × 64 tiles: the column walk stays in cache. */
function symmetrise(g: Float64Array, n: number): void {
  const T = 64;
  for (let i0 = 0; i0 < n; i0 += T) {
    const i1 = Math.min(i0 + T, n);
    for (let j0 = i0; j0 < n; j0 += T) {
      const j1 = Math.min(j0 + T, n);
      for (let i = i0; i < i1; i++) {
        for (let j = Math.max(j0, i + 1); j < j1; j++) {
          const s = 0.5 * (g[i * n + j]! + g[j * n + i]!);
          g[i * n + j] = s;
          g[j * n + i] = s;
        }
      }
    }
  }
}

/** C − G and G − 2C + H_d, formed in float64 (stored in `cmg`, `m`); whether either is nonzero anywhere. */
function differences(g: Float64Array, c: Float64Array, hd: Float64Array, cmg: Float64Array | Float32Array, m: Float64Array | Float32Array): boolean {
  let nonzero = 0;
  for (let i = 0; i < g.length; i++) {
    const ci = c[i]!, gi = g[i]!;
    const d = ci - gi;
    const e = gi - 2 * ci + hd[i]!;
    cmg[i] = d;
    m[i] = e;
    nonzero |= Number(d !== 0) | Number(e !== 0);
  }
  return nonzero !== 0;
}

/**
 * X·Y (X `[rows, n]`, Y `[n, n]`, float32 host arrays) by the backend's product kernel
 * (`NativeKernels.matMul`), into `out` when given (every entry is written).
 */
function hostProduct(native: NativeKernels, X: Float32Array, Y: Float32Array, rows: number, n: number, out: Float32Array = new Float32Array(rows * n)): Float32Array {
  native.matMul(X, Y, out, rows, n, n, false, false);
  return out;
}

/**
 * (X − W)·G for a row-major `[rows, cols]` X (the product the solver works with, see the header);
 * `D32`: X − W already rounded to float32 (saves a pass on upload).
 */
export function timesGram(pp: PreparedProblem, X: Float64Array, D32?: Float32Array, out?: Float32Array): Vec {
  if (pp.gram.host) {
    const d = D32 ?? change32(pp, X);
    // G is exactly symmetric (symmetrised in float64, then rounded entry by entry): the product's
    // values with G packed the cheaper way.
    const product = out ?? f32(pp);
    pp.gram.host.native.matMulSymmetric(d, pp.gram.host.G, product, pp.rows, pp.cols);
    if (d !== D32) pp.ws?.give(d);
    return product;
  }
  if (pp.gram.backend) return productOn(pp.gram.backend.la, D32 ?? change(pp, X), pp.rows, pp.gram.backend.G);
  return matmul({ rows: pp.rows, cols: pp.cols, data: change(pp, X) }, hostGram(pp)).data;
}

function hostGram(pp: PreparedProblem): Mat {
  if (!pp.gram.G) throw new Error('fistapruner: float32 problem has no float64 G');
  return pp.gram.G;
}

/** X − W rounded to float32 (as `upload` rounds `change`'s values); natively where there is a kernel. */
function change32(pp: PreparedProblem, X: Float64Array): Float32Array {
  const d = f32(pp);
  const kernel = pp.gram.host?.native.fistaChange;
  if (kernel && pp.W instanceof Float32Array) {
    kernel(X, pp.W, d, pp.rows, pp.cols);
    return d;
  }
  for (let i = 0; i < X.length; i++) d[i] = X[i]! - pp.W[i]!;
  return d;
}

/** X − W, the change from the dense weight. */
function change(pp: PreparedProblem, X: Float64Array): Float64Array {
  const d = new Float64Array(X.length);
  for (let i = 0; i < X.length; i++) d[i] = X[i]! - pp.W[i]!;
  return d;
}

export function gradient(pp: PreparedProblem, Wstar: Float64Array): Float64Array {
  const g = Float64Array.from(timesGram(pp, Wstar));
  for (let i = 0; i < g.length; i++) g[i]! -= pp.B[i]!;
  return g;
}

/** f(W*) = ½ tr(DGDᵀ) − tr(BDᵀ) + c0 with D = W* − W, given DG = timesGram(W*); accumulated per row. */
export function smoothObjective(pp: PreparedProblem, Wstar: Float64Array, DG: Vec): number {
  return errorSums(pp, Wstar, DG)[0] + pp.c0;
}

/**
 * [Σ (X − W)(½PX − B), Σ (X − WK)(PX − PK)] for PX = timesGram(X), PK = timesGram(WK) (the
 * second 0 without WK): f(X) − c0 and E_round, each summed per row (in lanes) and then over rows in row
 * order; by the native kernel (`fistaErrors`, rows over threads, the same operations) where the
 * arrays are float32 as it takes them.
 */
function errorSums(pp: PreparedProblem, X: Float64Array, PX: Vec, WK?: Float64Array, PK?: Vec): [number, number] {
  const kernel = pp.gram.host?.native.fistaErrors;
  const { rows, cols, W, B } = pp;
  if (kernel && PX instanceof Float32Array && W instanceof Float32Array && B instanceof Float32Array && (PK === undefined || PK instanceof Float32Array)) {
    const sums = new Float64Array(2);
    kernel(X, PX, W, B, WK ?? null, PK ?? null, sums, rows, cols);
    return [sums[0]!, sums[1]!];
  }
  let smooth = 0;
  let round = 0;
  const rounding = WK !== undefined && PK !== undefined;
  const lanes = new Float64Array(2 * LANES);
  for (let r = 0; r < rows; r++) {
    lanes.fill(0);
    for (let c = 0, j = r * cols; c < cols; c++, j++) {
      const q = c & (LANES - 1);
      const x = X[j]!;
      const px = PX[j]!;
      lanes[q] += (x - W[j]!) * (0.5 * px - B[j]!);
      if (rounding) lanes[LANES + q] += (x - WK[j]!) * (px - PK[j]!);
    }
    smooth += laneTotal(lanes, 0);
    round += laneTotal(lanes, LANES);
  }
  return [smooth, round];
}

/**
 * A row's sums (errorSums, acceptStep; native/fista-kernels.c the same) are summed in LANES lanes:
 * the entry in column c goes to lane c mod 8, each lane in column order, and the row's sum is
 * ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)), which the native kernels vectorise (one chain
 * per sum cost an add's latency per entry there).
 */
const LANES = 8;

function laneTotal(l: Float64Array, o: number): number {
  return ((l[o]! + l[o + 1]!) + (l[o + 2]! + l[o + 3]!)) + ((l[o + 4]! + l[o + 5]!) + (l[o + 6]! + l[o + 7]!));
}

/** F(W*) = f(W*) + λ‖W*‖₁. */
export function objective(pp: PreparedProblem, Wstar: Float64Array, lambda: number, WG = timesGram(pp, Wstar)): number {
  return objective1(pp, Wstar, WG, lambda);
}

/** L = 1.01 · λ_max(G) by power iteration: an upper bound of the gradient's Lipschitz constant. */
export function lipschitz(pp: PreparedProblem, powerIters: number): number {
  const known = pp.gram.lipschitz.get(powerIters);
  if (known !== undefined) return known;
  const L = 1.01 * (pp.gram.backend ? pp.gram.backend.la.maxEigenvalueSym(pp.gram.backend.G, powerIters) : maxEigenvalueSym(hostGram(pp), powerIters));
  pp.gram.lipschitz.set(powerIters, L);
  return L;
}

/** Smallest λ for which W* = 0 is optimal: ‖∇f(0)‖_∞ = max |W·C|. */
export function lambdaMax(pp: PreparedProblem): number {
  return pp.lambdaMax;
}

/**
 * Keep-mask of the exact cut on |W| (ties: lower index pruned first, see masks.ts); the per-row
 * cut by the native kernel where given (`NativeKernels.fistaCutRows`: the same mask, a mask being
 * a function of the scores alone), the others and any NaN (whose error masks.ts words) here.
 */
export function cutMask(W: ArrayLike<number>, rows: number, cols: number, cut: Cut, native?: NativeKernels): Uint8Array {
  if (W instanceof Float64Array) {
    const mask = nativeCut(W, rows, cols, cut, native, new Float64Array(W.length));
    if (mask) return mask;
  }
  // A plain loop: Float64Array.from with a map function is several times slower in V8.
  const a = new Float64Array(W.length);
  for (let i = 0; i < a.length; i++) a[i] = Math.abs(W[i]!);
  return maskForCut(a, rows, cols, cut);
}

/**
 * The per-row cut by `NativeKernels.fistaCutRows` where it applies: the mask, with `out` (may be
 * W) = W masked; null where it does not (another cut, k = 0, no kernel) or W holds a NaN.
 */
function nativeCut(W: Float64Array, rows: number, cols: number, cut: Cut, native: NativeKernels | undefined, out: Float64Array): Uint8Array | null {
  if (!native?.fistaCutRows || cut.kind !== 'row' || W.length !== rows * cols) return null;
  validateSparsity(cut.sparsity, 'sparsity');
  const k = pruneCount(cols, cut.sparsity);
  if (k === 0) return null;
  const mask = new Uint8Array(W.length);
  return native.fistaCutRows(W, rows, cols, k, mask, out) < 0 ? mask : null;
}

/** H(W): W with the cut applied (into `out`, any values, else a new array) and its mask (`native`: see cutMask). */
export function hardThreshold(W: Float64Array, rows: number, cols: number, cut: Cut, native?: NativeKernels,
  out: Float64Array = new Float64Array(W.length)): { W: Float64Array; mask: Uint8Array } {
  const nmask = nativeCut(W, rows, cols, cut, native, out);
  if (nmask) return { W: out, mask: nmask };
  const mask = cutMask(W, rows, cols, cut);
  for (let i = 0; i < W.length; i++) out[i] = mask[i] ? W[i]! : 0;
  return { W: out, mask };
}

export interface FistaRun {
  /** W_K (before the cut). */
  W: Float64Array;
  /** timesGram(W_K) = (W_K − W)·G. */
  WG: Vec;
  iterations: number;
  /** F(W_k) for k = 0 … K (F includes λ‖·‖₁). */
  objective: number[];
  stoppedEarly: boolean;
  /** Monotone FISTA: iterations whose candidate was rejected (W_k = W_{k−1}); 0 otherwise. */
  rejected: number;
}

export interface FistaArgs {
  W0: Float64Array;
  /** timesGram(W₀) = (W₀ − W)·G when the caller already has it (the product is then not computed again). */
  W0G?: Vec;
  lambda: number;
  L: number;
  iters: number;
  /** Early stop when ‖W_{k+1} − W_k‖_F ≤ tol · ‖W_k‖_F (Eq. 6 as PruneLab reads it). */
  tol: number;
  /** In-place projection applied after every soft threshold (projected FISTA), if given. */
  project?: (W: Float64Array) => void;
  /** false: plain proximal gradient (ISTA), a descent method — for diagnostics and tests. */
  momentum?: boolean;
  /**
   * Monotone FISTA (MFISTA; Beck & Teboulle, IEEE TIP 2009, §V): a candidate that raises F is
   * rejected (W_k = W_{k−1}) and the momentum point is built from both, so F(W_k) never rises.
   * Default false: the paper's standard FISTA.
   */
  monotone?: boolean;
}

/**
 * Constant-step FISTA (Beck & Teboulle 2009; paper Eqs. 4a–4d). One product with G per
 * iteration: P_k = (W_k − W)·G is kept, and (Y_k − W)·G = P_k + β(P_k − P_{k−1}) follows by linearity, so
 * the gradient at Y and the objective at W come without a second product.
 *
 * With `monotone` (MFISTA, Beck & Teboulle, IEEE TIP 18(11), 2009, §V):
 *   Z_k = prox_{λ/L}(Y_k − ∇f(Y_k)/L);  W_k = Z_k if F(Z_k) ≤ F(W_{k−1}) else W_{k−1};
 *   Y_{k+1} = W_k + (t_k/t_{k+1})(Z_k − W_k) + ((t_k − 1)/t_{k+1})(W_k − W_{k−1}).
 * When Z_k is accepted this is exactly the standard update; when it is rejected,
 * Y_{k+1} = W_{k−1} + (t_k/t_{k+1})(Z_k − W_{k−1}). F(Z_k) comes from Z_k·G, the one product of
 * the iteration, so MFISTA costs no extra product either. The early stop tests the accepted
 * iterate W (‖W_k − W_{k−1}‖_F ≤ tol·‖W_{k−1}‖_F); a rejected step leaves W unchanged by
 * construction, not by convergence, and never stops the run. `momentum: false` means t_k ≡ 1
 * (ISTA) in both variants.
 */
export function fista(pp: PreparedProblem, a: FistaArgs): FistaRun {
  const n = pp.rows * pp.cols;
  const B = pp.B;
  const Wd = pp.W;
  let W = f64(pp);
  W.set(a.W0);
  let P = a.W0G ?? timesGram(pp, W);
  if (!(a.L > 0)) return { W, WG: P, iterations: 0, objective: [objective1(pp, W, P, a.lambda)], stoppedEarly: true, rejected: 0 };
  const monotone = a.monotone === true;
  const lambda = a.lambda;
  let t = 1;
  const step = 1 / a.L;
  const thr = lambda * step;
  // Z = prox(Y − ∇f(Y)/L) is formed in the pass that forms Y from the last iterates, so Y and Y·G
  // are never stored; the same float64 operations in the same order as forming them first. Three
  // float64 buffers rotate (W, Z and the next Z); Z − W_dense in float32 is what is uploaded.
  const prox = (y: number, yg: number, b: number): number => soft(y - step * (yg - b), thr);
  // Y₀ = W₀: the first prox step is the accepted step's pass with Z = W and β = 0 (Y = W exactly;
  // only the sign of a zero v can differ, and soft maps both to +0), which also sums f(W₀).
  let Z = f64(pp);
  const D32 = pp.gram.backend ? f32(pp) : null;
  const sums = new Float64Array(4);
  acceptStep(pp, W, P, W, P, 0, step, thr, Z, D32, sums);
  let F = sums[0]! + pp.c0 + lambda * l1Norm(W);
  const objective = [F];
  let l1 = sums[3]!;
  let spare: Float64Array | null = null;
  let freeP: Float32Array | null = null;
  let k = 0;
  let rejected = 0;
  let stoppedEarly = false;
  let next: Float64Array | null = null;
  while (k < a.iters) {
    if (a.project) {
      a.project(Z);
      l1 = 0;
      for (let i = 0; i < n; i++) l1 += Math.abs(Z[i]!);
      if (D32) for (let i = 0; i < n; i++) D32[i] = Z[i]! - Wd[i]!;
    }
    // A product buffer this run made and no longer needs is reused (not the caller's W0G).
    const PZ = timesGram(pp, Z, D32 ?? undefined, freeP ?? undefined);
    freeP = null;
    const tn = a.momentum === false ? 1 : (1 + Math.sqrt(1 + 4 * t * t)) / 2;
    k++;
    next = spare ?? f64(pp);
    let l1n = 0;
    // F(Z) first only where it decides (MFISTA); otherwise it is summed in the update pass below.
    const FzFirst = monotone ? smoothObjective(pp, Z, PZ) + lambda * l1 : NaN;
    if (monotone && !(FzFirst <= F)) {
      // Rejected: W_k = W_{k−1}; Y_{k+1} = W_{k−1} + (t_k/t_{k+1})(Z_k − W_{k−1}).
      const c = t / tn;
      for (let i = 0; i < n; i++) {
        const z = prox(W[i]! + c * (Z[i]! - W[i]!), P[i]! + c * (PZ[i]! - P[i]!), B[i]!);
        next[i] = z;
        l1n += Math.abs(z);
        if (D32) D32[i] = z - Wd[i]!;
      }
      t = tn;
      rejected++;
      objective.push(F);
      spare = Z;
      if (PZ instanceof Float32Array) freeP = PZ;
    } else {
      const beta = (t - 1) / tn;
      const [smooth, dd, ww, l1z] = acceptStep(pp, Z, PZ, W, P, beta, step, thr, next, D32, sums);
      l1n = l1z;
      const Fz = monotone ? FzFirst : smooth + pp.c0 + lambda * l1;
      spare = W;
      if (P !== a.W0G && P instanceof Float32Array) freeP = P;
      W = Z;
      P = PZ;
      F = Fz;
      t = tn;
      objective.push(F);
      if (Math.sqrt(dd) <= a.tol * Math.sqrt(ww) || (dd === 0 && ww === 0)) {
        stoppedEarly = k < a.iters;
        break;
      }
    }
    Z = next;
    l1 = l1n;
  }
  // Back to the workspace: every buffer of the run but the result (W, P) and the caller's W0G.
  if (pp.ws) for (const b of [Z, next, spare, D32, freeP]) if (b && b !== W && b !== P && b !== a.W0G) pp.ws.give(b);
  return { W, WG: P, iterations: k, objective, stoppedEarly, rejected };
}

/**
 * The accepted step of `fista` in one pass (a function of its own, monomorphic: V8 optimises it
 * as a whole, not by on-stack replacement inside `fista`): with D = Z − W_dense it sums
 * smoothObjective's per-row terms of F(Z) in its order, ‖Z − W‖² and ‖W‖² (the early stop), and
 * forms next = prox(Y − ∇f(Y)/L) at Y = Z + β(Z − W) (so (Y − W_dense)·G = PZ + β(PZ − P)), its ℓ1
 * norm and (float32) next − W_dense. Returns `sums` = [smooth, ‖Z − W‖², ‖W‖², ‖next‖₁]. Each
 * sum is summed per row (in lanes: `laneTotal`), then over rows in row order: rows are independent, so the native kernel
 * splits them over threads with these very sums.
 */
function acceptStep(pp: PreparedProblem, Z: Float64Array, PZ: Vec, W: Float64Array, P: Vec, beta: number, step: number, thr: number,
  next: Float64Array, D32: Float32Array | null, sums: Float64Array): Float64Array {
  const B = pp.B;
  const Wd = pp.W;
  const native = pp.gram.host?.native.fistaAcceptStep;
  if (native && D32 && PZ instanceof Float32Array && P instanceof Float32Array && B instanceof Float32Array && Wd instanceof Float32Array) {
    native(Z, PZ, W, P, B, Wd, next, D32, sums, pp.rows, pp.cols, beta, step, thr);
    return sums;
  }
  const cols = pp.cols;
  let dd = 0;
  let ww = 0;
  let l1n = 0;
  let smooth = 0;
  const lanes = new Float64Array(4 * LANES);
  for (let r = 0, i = 0; r < pp.rows; r++) {
    lanes.fill(0);
    for (let c = 0; c < cols; c++, i++) {
      const q = c & (LANES - 1);
      const zi = Z[i]!;
      const pzi = PZ[i]!;
      const bi = B[i]!;
      const wdi = Wd[i]!;
      const wi = W[i]!;
      lanes[q] += (zi - wdi) * (0.5 * pzi - bi);
      const d = zi - wi;
      lanes[LANES + q] += d * d;
      lanes[2 * LANES + q] += wi * wi;
      const v = zi + beta * d - step * (pzi + beta * (pzi - P[i]!) - bi);
      // soft(v, thr) written out (see there): |z| = m.
      const a = Math.abs(v) - thr;
      const m = 0.5 * (a + Math.abs(a));
      const z = m - 2 * m * Number(v < 0);
      next[i] = z;
      lanes[3 * LANES + q] += m;
      if (D32) D32[i] = z - wdi;
    }
    smooth += laneTotal(lanes, 0);
    dd += laneTotal(lanes, LANES);
    ww += laneTotal(lanes, 2 * LANES);
    l1n += laneTotal(lanes, 3 * LANES);
  }
  sums[0] = smooth;
  sums[1] = dd;
  sums[2] = ww;
  sums[3] = l1n;
  return sums;
}

/**
 * The soft threshold sign(v)·max(|v| − t, 0) without a branch: with m = max(|v| − t, 0) formed as
 * ½(a + |a|) (exact: a + a = 2a) and the sign applied as m − 2m·[v < 0] (exact: −m). The same
 * value as `v > t ? v − t : v < −t ? v + t : 0` (rounding is sign-symmetric), but the branch on the
 * sign mispredicts on half the entries: 8 vs 2 ns per entry measured in V8 (node 20, random data).
 * Differs only in the sign of zero and for NaN (propagated, not zeroed).
 */
export function soft(v: number, t: number): number {
  const a = Math.abs(v) - t;
  const m = 0.5 * (a + Math.abs(a));
  return m - 2 * m * Number(v < 0);
}

function l1Norm(W: Float64Array): number {
  let l1 = 0;
  for (let i = 0; i < W.length; i++) l1 += Math.abs(W[i]!);
  return l1;
}

function objective1(pp: PreparedProblem, W: Float64Array, WG: Vec, lambda: number): number {
  return smoothObjective(pp, W, WG) + lambda * l1Norm(W);
}

/** E = ‖W'X* − WX‖²_F = 2 f(W'), given W'G. */
export function outputError(pp: PreparedProblem, W: Float64Array, WG: Vec): number {
  return 2 * smoothObjective(pp, W, WG);
}

/** E_round = ‖(W' − W_K)X*‖²_F = tr(ΔGΔᵀ) with ΔG = W'G − W_K G (summed per row, see errorSums). */
export function roundingError(pp: PreparedProblem, W1: Float64Array, W1G: Vec, WK: Float64Array, WKG: Vec): number {
  return errorSums(pp, W1, W1G, WK, WKG)[1];
}

/**
 * The λ rule of §5: ratio > ξ (rounding dominates: FISTA not sparse enough) → λ becomes a lower
 * bound and grows; otherwise it becomes an upper bound and shrinks. Geometric mean inside a
 * bracket, ×10 / ÷10 outside one.
 */
export function nextLambda(lambda: number, ratio: number, xi: number, bracket: { lo: number | null; hi: number | null }): number {
  if (ratio > xi) bracket.lo = lambda;
  else bracket.hi = lambda;
  if (bracket.lo !== null && bracket.hi !== null) return Math.sqrt(bracket.lo * bracket.hi);
  return bracket.hi === null ? lambda * 10 : lambda / 10;
}

export interface SolveOptions {
  cut: Cut;
  itersPerRound: number;
  maxRounds: number;
  ratioThreshold: number;
  tol: number;
  powerIters: number;
  /** λ₀; default 1e-3 · max|B|. */
  lambda0?: number;
  projectEveryIteration: boolean;
  /** Count H(W₀) as a candidate for W_best. */
  warmStartCandidate: boolean;
  /** Masked FISTA with λ = 0 on W_best's support (PruneLab extension). */
  refit: boolean;
  /** Monotone FISTA (MFISTA) in every solve, the refit included; default false (standard FISTA). */
  monotone?: boolean;
}

export interface RoundLog {
  lambda: number;
  iterations: number;
  eTotal: number;
  eRound: number;
  ratio: number;
  /** F(W_k) over the round's iterations (length iterations + 1). */
  objective: number[];
  /** Rejected MFISTA candidates in the round (0 for standard FISTA). */
  rejected: number;
}

export interface SolveResult {
  /** W_best: the cut candidate with the smallest output error. */
  weight: Float64Array;
  mask: Uint8Array;
  /** λ of the round that produced W_best (λ₀ when it is the warm start). */
  lambda: number;
  eTotal: number;
  /** Output error of H(W₀) (always computed, for the log). */
  warmStartError: number;
  lambdaMax: number;
  L: number;
  rounds: RoundLog[];
  /** Which candidate won: the warm start, a round index, or the refit. */
  best: 'warm-start' | 'refit' | number;
  refitError?: number;
}

function errorRatio(eRound: number, eTotal: number): number {
  if (eTotal > 0) return eRound / eTotal;
  return eRound > 0 ? Infinity : 0;
}

/** Algorithm 1: FISTA rounds with λ bisection on E_round/E_total, returning W_best; products on `la` (see the header). */
export function solveOperator(p: GramProblem, W0: Float64Array, o: SolveOptions, la?: LinAlg): SolveResult {
  const pp = prepare(p, la);
  try {
    return solvePrepared(pp, W0, o);
  } finally {
    release(pp);
  }
}

/** `solveOperator` on a prepared Gram part (shared by the operators of one tap; the caller releases it). */
export function solveWithGram(g: PreparedGram, rows: number, weight: ArrayLike<number>, W0: Float64Array, o: SolveOptions): SolveResult {
  return solvePrepared(withWeight(g, rows, weight), W0, o);
}

function solvePrepared(pp: PreparedProblem, W0: Float64Array, o: SolveOptions): SolveResult {
  const { rows, cols } = pp;
  checkLen(W0, rows * cols, 'warm start');
  const L = lipschitz(pp, o.powerIters);
  const lmax = lambdaMax(pp);
  let lambda = o.lambda0 ?? 1e-3 * lmax;
  const native = pp.gram.host?.native;
  const project = o.projectEveryIteration
    ? (W: Float64Array) => {
      if (nativeCut(W, rows, cols, o.cut, native, W)) return;
      const m = cutMask(W, rows, cols, o.cut);
      for (let i = 0; i < W.length; i++) if (!m[i]) W[i] = 0;
    }
    : undefined;

  const warm = hardThreshold(W0, rows, cols, o.cut, native, f64(pp));
  const warmG = timesGram(pp, warm.W);
  const warmErr = outputError(pp, warm.W, warmG);
  type Candidate = { W: Float64Array; G: Vec; mask: Uint8Array; e: number; lambda: number; tag: SolveResult['best'] };
  let best: Candidate | null =
    o.warmStartCandidate ? { W: warm.W, G: warmG, mask: warm.mask, e: warmErr, lambda, tag: 'warm-start' } : null;

  const rounds: RoundLog[] = [];
  const bracket = { lo: null as number | null, hi: null as number | null };
  let start = W0;
  // A warm start the cut leaves as it is (Wanda's, magnitude's) has its product already.
  let startG: Vec | undefined = sameValues(warm.W, W0) ? warmG : undefined;
  for (let r = 0; r < o.maxRounds; r++) {
    const run = fista(pp, { W0: start, W0G: startG, lambda, L, iters: o.itersPerRound, tol: o.tol, project, monotone: o.monotone });
    const cut = hardThreshold(run.W, rows, cols, o.cut, native, f64(pp));
    const cutG = timesGram(pp, cut.W);
    // E_total = 2 f(W') (outputError) and E_round in one pass.
    const [smooth, eRound] = errorSums(pp, cut.W, cutG, run.W, run.WG);
    const eTotal = 2 * (smooth + pp.c0);
    const ratio = errorRatio(eRound, eTotal);
    rounds.push({ lambda, iterations: run.iterations, eTotal, eRound, ratio, objective: run.objective, rejected: run.rejected });
    const ws = pp.ws;
    if (!best || eTotal < best.e) {
      // The candidate replaced (not the warm start's, freed below) is free again.
      if (ws && best && best.tag !== 'warm-start') ws.give(best.W, best.G);
      best = { W: cut.W, G: cutG, mask: cut.mask, e: eTotal, lambda, tag: r };
    } else ws?.give(cut.W, cutG);
    // The run's iterate and product are needed no further (its product is the start's own after no iteration).
    if (ws) for (const b of [run.W, run.WG]) if (b !== best.W && b !== best.G) ws.give(b);
    if (ws && r === 0 && best.tag !== 'warm-start') ws.give(warm.W, warmG);
    lambda = nextLambda(lambda, ratio, o.ratioThreshold, bracket);
    start = best.W;
    startG = best.G;
  }
  if (!best) best = { W: warm.W, G: warmG, mask: warm.mask, e: warmErr, lambda, tag: 'warm-start' };

  let refitError: number | undefined;
  if (o.refit) {
    const mask = best.mask;
    const keep = (W: Float64Array) => { for (let i = 0; i < W.length; i++) if (!mask[i]) W[i] = 0; };
    const run = fista(pp, { W0: best.W, W0G: best.G, lambda: 0, L, iters: o.itersPerRound, tol: o.tol, project: keep, monotone: o.monotone });
    refitError = outputError(pp, run.W, run.WG);
    if (refitError < best.e) best = { W: run.W, G: run.WG, mask, e: refitError, lambda: best.lambda, tag: 'refit' };
  }
  return {
    weight: best.W, mask: best.mask, lambda: best.lambda, eTotal: best.e, warmStartError: warmErr,
    lambdaMax: lmax, L, rounds, best: best.tag, refitError,
  };
}

function checkLen(a: ArrayLike<number>, n: number, what: string): void {
  if (a.length !== n) throw new Error(`fistapruner: ${what} has ${a.length} entries, expected ${n}`);
}
