/**
 * `LinAlg` (src/linalg/linalg.ts) on the active TensorFlow.js backend, in float32.
 *
 * Every product is a plain 2-D `tf.matMul` on explicitly transposed operands: on the
 * WebAssembly backend's own GEMM (XNNPACK) only that kernel is fast (measured,
 * `test/linalg-backend.test.ts` prints it: 768³ plain 103 ms, transposeB 1316 ms, transpose +
 * plain 107 ms). With the products on OpenBLAS every variant is as fast, and the transposes and
 * column panels are skipped (`modelLayout()`, src/backend/layout.ts). The factorisations
 * are recursive 2×2 block algorithms whose leaves (≤ LEAF columns) are factored on the host in
 * float64 (`dense.ts`) and whose O(n³) work is matMuls on the backend:
 *   A = [A11 ·; A21 A22]:  X11 = L11⁻¹ (recursion),  L21 = A21·X11ᵀ,  S = A22 − L21·L21ᵀ,
 *   X22 = L22⁻¹ (recursion on S),  X21 = −X22·L21·X11   ⇒   L⁻¹ = [X11 0; X21 X22].
 * Only A's lower triangle is read (as LAPACK potrf), so a Gram matrix symmetric only up to
 * rounding is accepted. A matrix of at most LEAF columns is therefore factored entirely in
 * float64 and only rounded to float32 at the end.
 */
import * as tf from '@tensorflow/tfjs';
import { cholesky as hostCholesky, lowerTriangularInverse, NotPositiveDefiniteError } from './dense.ts';
import type { LinAlg, MatMulOptions, Matrix, Numerics } from './linalg.ts';
import { PruneLabError } from '../util/errors.ts';
import { mulberry32 } from '../util/random.ts';
import { nativeKernels, nativeUpperCholeskyOfInverse } from './native.ts';
import { modelLayout } from '../backend/layout.ts';

/** Columns factored on the host in float64 (a leaf costs ~LEAF³/3 host flops, a few ms). */
export const LEAF = 128;

class TfMatrix implements Matrix {
  /** Column panels of t, made once by `resident` (products with a wide right operand). */
  panels?: tf.Tensor2D[];
  constructor(readonly t: tf.Tensor2D) {}
  get rows(): number { return this.t.shape[0]; }
  get cols(): number { return this.t.shape[1]; }
}

function T(a: Matrix): tf.Tensor2D {
  if (!(a instanceof TfMatrix)) throw new PruneLabError('linalg: a matrix from another LinAlg was passed');
  if (a.t.isDisposed) throw new PruneLabError('linalg: the matrix was already disposed');
  return a.t;
}
const M = (t: tf.Tensor2D): TfMatrix => new TfMatrix(t);

function checkSquare(a: Matrix, what: string): void {
  if (a.rows !== a.cols) throw new PruneLabError(`linalg ${what}: needs a square matrix, got ${a.rows}×${a.cols}`);
}

/**
 * a·b as plain 2-D matMuls over column panels of b: XNNPACK (WebAssembly) packs the whole of b
 * per call and streams it past every row tile, so a wide b falls out of cache (measured, 2048³:
 * 1272 ms whole, 776 ms in panels of 256, 903 ms in panels of 128; a [4096, 2048]·[2048, 128]
 * panel runs at ≈30 GFLOP/s). Other backends get one call.
 */
function mm(a: tf.Tensor2D, b: tf.Tensor2D): tf.Tensor2D {
  if (!panelled(b)) return tf.matMul(a, b);
  return tf.tidy(() => tf.concat2d(columnPanels(b).map((p): tf.Tensor2D => tf.matMul(a, p)), 1));
}
const PANEL = 256;

function panelled(b: tf.Tensor2D): boolean {
  return b.shape[1] > 2 * PANEL && modelLayout().columnPanels;
}

/** op(a)·op(b): transposed operands as explicit transposes where the layout asks for them (XNNPACK). */
function mmT(a: tf.Tensor2D, b: tf.Tensor2D, transposeA: boolean, transposeB: boolean): tf.Tensor2D {
  if (!modelLayout().explicitTransposes) return tf.matMul(a, b, transposeA, transposeB);
  return tf.tidy(() => mm(transposeA ? tf.transpose(a) : a, transposeB ? tf.transpose(b) : b));
}

/**
 * b in column panels of PANEL. Slicing is not free on WebAssembly (`tf.slice` copies its whole
 * input to the host first), and XNNPACK packs each new right operand: a matrix multiplied many
 * times keeps its panels (`resident`), which measured 1.5× faster per product than slicing anew
 * (512×1408·1408×1408: 72 vs 105–120 ms).
 */
function columnPanels(b: tf.Tensor2D): tf.Tensor2D[] {
  const n = b.shape[1];
  const out: tf.Tensor2D[] = [];
  for (let j = 0; j < n; j += PANEL) out.push(b.slice([0, j], [b.shape[0], Math.min(PANEL, n - j)]));
  return out;
}

/** a·b with b's resident panels when it has them. */
function mmWith(a: tf.Tensor2D, b: Matrix): tf.Tensor2D {
  const panels = b instanceof TfMatrix ? b.panels : undefined;
  if (!panels) return mm(a, T(b));
  return tf.tidy(() => tf.concat2d(panels.map((p): tf.Tensor2D => tf.matMul(a, p)), 1));
}

/** L⁻¹ and (optionally) L of A = LLᵀ, `offset`: A's first index in the caller's matrix (for pivot errors). */
function invChol(A: tf.Tensor2D, offset: number, wantL: boolean, leaf: number): { X: tf.Tensor2D; L?: tf.Tensor2D } {
  const n = A.shape[0];
  if (n <= leaf) {
    const a = Float64Array.from(A.dataSync());
    let L;
    try {
      L = hostCholesky({ rows: n, cols: n, data: a });
    } catch (e) {
      if (e instanceof NotPositiveDefiniteError) throw new NotPositiveDefiniteError(e.pivot + offset, e.value, offset + n);
      throw e;
    }
    const X = tf.tensor2d(Float32Array.from(lowerTriangularInverse(L).data), [n, n]);
    return { X, L: wantL ? tf.tensor2d(Float32Array.from(L.data), [n, n]) : undefined };
  }
  // Split at a multiple of LEAF so the leaves are full.
  const k = leaf * Math.ceil(n / leaf / 2);
  const m = n - k;
  // Each step in its own tidy, so slices, transposes and partial products are freed as soon as
  // used: kept to the caller's tidy they summed to several times A (on WebAssembly a heap that
  // never shrinks: SparseGPT's 5632² Hessian grew it by gigabytes). The same operations in the
  // same order, so the same values.
  const { X: X11, L: L11 } = tf.tidy(() => invChol(A.slice([0, 0], [k, k]), offset, wantL, leaf));
  const L21 = tf.tidy(() => mmT(A.slice([k, 0], [m, k]), X11, false, true));
  const { X: X22, L: L22 } = tf.tidy(() => invChol(tf.sub(A.slice([k, k], [m, m]), mmT(L21, L21, false, true)), offset + k, wantL, leaf));
  const X21 = tf.tidy(() => tf.neg(mm(X22, mm(L21, X11))) as tf.Tensor2D);
  const X = tf.tidy(() => tf.concat2d([tf.concat2d([X11, tf.zeros([k, m]) as tf.Tensor2D], 1), tf.concat2d([X21, X22], 1)], 0));
  tf.dispose([X11, X21, X22]);
  const L = wantL ? tf.tidy(() => tf.concat2d([tf.concat2d([L11!, tf.zeros([k, m]) as tf.Tensor2D], 1), tf.concat2d([L21, L22!], 1)], 0)) : undefined;
  tf.dispose([L21, ...(L11 ? [L11] : []), ...(L22 ? [L22] : [])]);
  return { X, L };
}

/** L⁻¹B by block forward substitution: X_k = L_kk⁻¹(B_k − L_k,<k · X_<k), diagonal blocks inverted on the host. */
function solveLowerT(L: tf.Tensor2D, B: tf.Tensor2D, leaf: number): tf.Tensor2D {
  const n = L.shape[0];
  const parts: tf.Tensor2D[] = [];
  for (let k0 = 0; k0 < n; k0 += leaf) {
    const nb = Math.min(leaf, n - k0);
    let rhs = B.slice([k0, 0], [nb, B.shape[1]]);
    if (k0 > 0) rhs = tf.sub(rhs, mm(L.slice([k0, 0], [nb, k0]), tf.concat(parts, 0)));
    const d = Float64Array.from(L.slice([k0, k0], [nb, nb]).dataSync());
    const inv = tf.tensor2d(Float32Array.from(lowerTriangularInverse({ rows: nb, cols: nb, data: d }).data), [nb, nb]);
    parts.push(mm(inv, rhs));
  }
  return parts.length === 1 ? parts[0]! : tf.concat(parts, 0);
}

/** `leaf`: the host-factored block size (tests use small ones to exercise the recursion). */
export function backendLinAlg(numerics: Numerics = 'float32', leaf = LEAF): LinAlg {
  if (!Number.isInteger(leaf) || leaf < 1) throw new PruneLabError(`linalg: leaf must be a positive integer, got ${leaf}`);
  return {
    numerics,
    backend: tf.getBackend(),
    native: nativeKernels(),
    upload(data, rows, cols) {
      if (data.length !== rows * cols) throw new PruneLabError(`linalg upload: ${data.length} values for ${rows}×${cols}`);
      return M(tf.tensor2d(data instanceof Float32Array ? data : Float32Array.from(data), [rows, cols], 'float32'));
    },
    read: (a) => T(a).dataSync() as Float32Array,
    dispose(...a) {
      for (const m of a) {
        if (!(m instanceof TfMatrix)) continue;
        if (!m.t.isDisposed) m.t.dispose();
        if (m.panels) tf.dispose(m.panels);
        m.panels = undefined;
      }
    },
    scope<R extends Matrix | Matrix[] | void | number>(f: () => R): R {
      // tf.tidy keeps the tensors it returns: hand it the tensors behind the handles.
      let out!: R;
      tf.tidy(() => {
        out = f();
        if (out instanceof TfMatrix) return out.t;
        if (Array.isArray(out)) return out.map((m) => T(m));
        return undefined;
      });
      return out;
    },
    matMul: (a, b, o: MatMulOptions = {}) => M(tf.tidy(() => {
      const ta = o.transposeA ?? false, tb = o.transposeB ?? false;
      // b's resident panels serve a plain right operand (XNNPACK); otherwise one product.
      if (!tb && (!ta || modelLayout().explicitTransposes)) return mmWith(ta ? tf.transpose(T(a)) : T(a), b);
      return mmT(T(a), T(b), ta, tb);
    })),
    resident(b) {
      const r = new TfMatrix(tf.clone(T(b)));
      if (panelled(r.t)) r.panels = tf.tidy(() => columnPanels(r.t).map((p) => tf.keep(p)));
      return r;
    },
    gram: (x) => M(mmT(T(x), T(x), true, false)),
    subMatMul: (c, a, b) => M(tf.tidy(() => tf.sub(T(c), mm(T(a), T(b))))),
    slice: (a, row, col, rows, cols) => M(T(a).slice([row, col], [rows, cols])),
    transpose: (a) => M(tf.transpose(T(a))),
    concatCols: (a, b) => M(tf.concat2d([T(a), T(b)], 1)),
    axpby: (alpha, a, beta, b) => M(tf.tidy(() => tf.add(tf.mul(T(a), alpha), tf.mul(T(b), beta)))),
    mul: (a, b) => M(tf.mul(T(a), T(b))),
    softThreshold: (a, t) => M(tf.tidy(() => tf.mul(tf.sign(T(a)), tf.relu(tf.sub(tf.abs(T(a)), t))))),
    dot(a, b) {
      const x = T(a).dataSync();
      const y = T(b).dataSync();
      if (x.length !== y.length) throw new PruneLabError(`linalg dot: ${a.rows}×${a.cols} and ${b.rows}×${b.cols}`);
      let s = 0;
      for (let i = 0; i < x.length; i++) s += x[i]! * y[i]!;
      return s;
    },
    cholesky(a) {
      checkSquare(a, 'cholesky');
      return M(tf.tidy(() => { const r = invChol(T(a), 0, true, leaf); r.X.dispose(); return r.L!; }));
    },
    inverseCholesky(a) {
      checkSquare(a, 'inverseCholesky');
      return M(tf.tidy(() => invChol(T(a), 0, false, leaf).X));
    },
    solveLower(l, b) {
      checkSquare(l, 'solveLower');
      if (b.rows !== l.rows) throw new PruneLabError(`linalg solveLower: ${l.rows}×${l.cols} and ${b.rows}×${b.cols} do not conform`);
      return M(tf.tidy(() => solveLowerT(T(l), T(b), leaf)));
    },
    spdInverse(a) {
      checkSquare(a, 'spdInverse');
      return M(tf.tidy(() => { const X = invChol(T(a), 0, false, leaf).X; return mmT(X, X, true, false); }));
    },
    upperCholeskyOfInverse(a) {
      checkSquare(a, 'upperCholeskyOfInverse');
      const n = a.rows;
      // Under OpenBLAS, LAPACK in place (measured at 4096: ~0.5 s against several seconds of
      // blocked matMuls, slices and reads); a matrix of at most `leaf` columns stays on the
      // float64 host path below.
      if (n > leaf) {
        const u = nativeUpperCholeskyOfInverse(T(a));
        if (u) return M(u);
      }
      // With J the order reversal: JAJ = L̃L̃ᵀ gives A = VVᵀ, V = JL̃J upper, so A⁻¹ = V⁻ᵀV⁻¹ and
      // U = V⁻¹ = J·L̃⁻¹·J (as dense.ts upperCholeskyOfInverse).
      return M(tf.tidy(() => {
        try {
          // The reversed copy of A is freed before X is reversed back.
          return tf.reverse(tf.tidy(() => invChol(tf.reverse(T(a), [0, 1]), 0, false, leaf).X), [0, 1]);
        } catch (e) {
          if (e instanceof NotPositiveDefiniteError) {
            throw new NotPositiveDefiniteError(n - 1 - e.pivot, e.value, n,
              `factorised in reverse order: the trailing block from index ${n - 1 - e.pivot} is not positive definite`);
          }
          throw e;
        }
      }));
    },
    maxEigenvalueSym(a, iters, seed = 0) {
      checkSquare(a, 'maxEigenvalueSym');
      const n = a.rows;
      if (n === 0) return 0;
      if (!Number.isInteger(iters) || iters < 1) throw new PruneLabError(`maxEigenvalueSym: iters must be a positive integer, got ${iters}`);
      const rand = mulberry32(seed);
      const x0 = new Float32Array(n);
      for (let i = 0; i < n; i++) x0[i] = 0.5 + rand(); // positive start, as dense.ts
      const A = T(a);
      const lambda = tf.tidy(() => {
        let x = tf.div(tf.tensor2d(x0, [n, 1]), tf.norm(tf.tensor2d(x0, [n, 1])));
        for (let it = 0; it < iters; it++) {
          const y = tf.matMul(A, x);
          // A·x = 0 for a random x: A = 0 (almost surely); dividing by max(‖y‖, tiny) keeps x = 0.
          x = tf.div(y, tf.maximum(tf.norm(y), 1e-30));
        }
        return tf.sum(tf.mul(x, tf.matMul(A, x))).dataSync()[0]!;
      });
      if (!Number.isFinite(lambda)) throw new PruneLabError(`maxEigenvalueSym: non-finite estimate ${lambda} (NaN or Inf in the matrix?)`);
      return lambda;
    },
  };
}
