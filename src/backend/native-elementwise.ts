/**
 * The forward pass's non-product kernels of the WebAssembly backend, native and on every core.
 *
 * With the products on OpenBLAS (src/backend/openblas.ts) the wasm backend's single-threaded
 * elementwise kernels were a third of a prefill's wall time on two cores (Softmax, Multiply, Add,
 * Sigmoid, Mean, Square: 16% of its CPU time on one). Where the addon is built, these kernels are
 * replaced by native/elementwise-kernels.c, vectorised (AVX-512 / AVX2 as the CPU has them) and
 * split over the addon's thread pool, working in place on the WebAssembly heap like the GEMM:
 *
 * - Add, Sub, Multiply of float32 operands of the same size, or one of them a scalar, a trailing
 *   block repeated over the other (a bias row, a mask over heads, RoPE's tables over a batch) or
 *   one value per row (RMSNorm's scale): bit-identical to the wasm kernels (one IEEE operation);
 * - Square, Rsqrt (1 / sqrt, as the wasm kernel): bit-identical;
 * - Sigmoid, Exp, and Softmax over the last axis: within a few ulp of the exact value;
 * - Sum over leading or trailing axes: the wasm kernel's one running float32 sum (bit-identical),
 *   without its transpose; Transpose swapping the last two axes or keeping the last: exact copies;
 * - Mean over the last axis: 16 partial sums in a fixed order (the wasm kernel sums in one
 *   running float, so the last bits differ; the partial sums are the more accurate);
 * - four fused kernels of the decoder block, each one call where the composed ops took several
 *   (a stories260K prefill's kernel calls are mostly per-call overhead), in the float32 operations
 *   of the kernels above that they replace (products by the addon's own tiled product), so with
 *   the same bits:
 *   RoPE (`ROPE_KERNEL`, src/model/ops.ts `applyRope`; eight calls): x ⊙ cos + swap(x) ⊙ sin (but
 *   for the sign of a zero, and a non-finite x, which the swap's 0/1 product turns to NaN), with a
 *   gradient of its own (the same kernel); RMSNorm (`RMSNORM_KERNEL`; six calls), SiLU(gate) ⊙
 *   up (`SILU_MUL_KERNEL`; three) and grouped attention (`ATTENTION_KERNEL`, src/model/ops.ts
 *   `groupedAttention`; sixteen: the scale, layouts by group, two batched products, the mask, the
 *   softmax, the layout back), taken only while no gradient tape records (their gradients need the
 *   composed ops' intermediate values, so under a tape the composed ops run);
 * - the calibration statistics' column sums of squares (`COLUMN_SQUARE_SUMS_KERNEL`, src/prune/stats.ts
 *   `columnSquareSums`): Square then Sum in one pass, each square rounded before its add.
 *
 * Every other dtype, shape, broadcast or axis goes to the wasm kernel. Results do not depend on
 * the thread count (blocks fixed by the shape). Installed with the OpenBLAS products and removed
 * with them: `--matmul xnnpack` keeps the whole wasm backend as it ships.
 */
import * as tf from '@tensorflow/tfjs';

/** The addon's elementwise entry points (native/elementwise-kernels.c). */
export interface ElementwiseAddon {
  ewBinary(heap: ArrayBuffer, op: number, mode: number, n: number, inner: number, aOff: number, bOff: number, outOff: number): void;
  ewUnary(heap: ArrayBuffer, op: number, n: number, xOff: number, outOff: number): void;
  ewRows(heap: ArrayBuffer, op: number, rows: number, cols: number, xOff: number, outOff: number): void;
  /** The vector width in use: avx512f, avx2, sse2 (baseline off x86); with a name, first switch to it if the CPU has it ('' = the widest). */
  ewSimd(use?: string): string;
  /** Column sums (`byColumns` 1) or row sums (0) of a `[rows, cols]` matrix, in the wasm Sum's order. */
  ewSum(heap: ArrayBuffer, rows: number, cols: number, byColumns: number, xOff: number, outOff: number): void;
  /** x permuted by `perm` (last two axes swapped, or any permutation keeping the last axis); `perm` and x's shape follow. */
  ewTranspose(heap: ArrayBuffer, xOff: number, outOff: number, rank: number, ...permThenShape: number[]): void;
  /** RoPE of `[rows, width]` x with `[T, width]` tables (row r reads row r mod T); absent from an addon built before it. */
  ewRope?(heap: ArrayBuffer, rows: number, T: number, width: number, span: number, xOff: number, cosOff: number, sinOff: number, outOff: number): void;
  /** RMSNorm of `[rows, cols]` x with a `[cols]` scale, eps as its float32 bit pattern; absent from an addon built before it (which lacks SiLU·up too). */
  ewRmsNorm?(heap: ArrayBuffer, rows: number, cols: number, xOff: number, wOff: number, outOff: number, epsBits: number): void;
  /** `groupedAttention` in one call (native/elementwise-kernels.c `attention`); absent from an addon built before it. */
  ewAttention?(heap: ArrayBuffer, B: number, Tq: number, Tk: number, H: number, KV: number, hd: number, step: number,
    qOff: number, kOff: number, vOff: number, maskOff: number, hasMask: number, outOff: number, scaleBits: number): void;
  /** Column sums of x ⊙ x of a `[rows, cols]` matrix (each square rounded first: Square then Sum); absent from an addon built before it. */
  ewSumSquares?(heap: ArrayBuffer, rows: number, cols: number, xOff: number, outOff: number): void;
}

/**
 * The fused RoPE kernel: inputs x `[rows, width]`, cos, sin and sinSwapped `[T, width]` (sin with
 * each head's two blocks of `span` dims swapped, for the gradient), attrs { span }. Registered for
 * the wasm backend only, with the native kernels.
 */
export const ROPE_KERNEL = 'PrunelabRope';

/** x `[rows, cols]`, weight `[cols]`; attrs { eps }: x · rsqrt(mean(x²) + eps) · weight per row. */
export const RMSNORM_KERNEL = 'PrunelabRmsNorm';
/** gate, up of one shape: SiLU(gate) ⊙ up. */
export const SILU_MUL_KERNEL = 'PrunelabSiluMul';
/**
 * q `[B*Tq, H*hd]`, k, v `[B*Tk, KV*hd]`, optional mask `[g*Tq, Tk]`; attrs { B, Tq, Tk, H, KV, hd,
 * scale, step }: src/model/ops.ts `groupedAttention` (step: groups per batched product).
 */
export const ATTENTION_KERNEL = 'PrunelabAttention';
/** x `[rows, cols]` → `[cols]`: Σ over rows of x² (calibration statistics: `sum(square(x), 0)` in one pass, the same bits). */
export const COLUMN_SQUARE_SUMS_KERNEL = 'PrunelabColumnSquareSums';

/** A float32's bit pattern (how the fused kernels take their float attributes). */
function float32Bits(x: number): number {
  const f = new Float32Array([x]);
  return new Uint32Array(f.buffer)[0]!;
}

/** Whether the active backend has the fused RoPE kernel. */
export function ropeKernelActive(): boolean {
  return tf.getKernel(ROPE_KERNEL, tf.getBackend()) !== undefined;
}

/** Whether a fused kernel without a gradient (RMSNorm, SiLU·up, attention) may run: the backend has it and no gradient tape records. */
export function fusedKernelUsable(name: typeof RMSNORM_KERNEL | typeof SILU_MUL_KERNEL | typeof ATTENTION_KERNEL | typeof COLUMN_SQUARE_SUMS_KERNEL): boolean {
  return !tf.engine().isTapeOn() && tf.getKernel(name, tf.getBackend()) !== undefined;
}

// dx = dy ⊙ cos + swap(dy) ⊙ swap(sin): the same kernel with the swapped table (the swap is its own
// inverse), and the same float32 operations as the composed ops' gradient. The tables are constants.
tf.registerGradient({
  kernelName: ROPE_KERNEL,
  inputsToSave: ['cos', 'sin', 'sinSwapped'],
  gradFunc: (dy, saved, attrs) => {
    const [cos, sin, sinSwapped] = saved as tf.Tensor[];
    const constant = (): never => { throw new Error('RoPE tables are constants: no gradient flows to them'); };
    return {
      x: () => tf.engine().runKernel(ROPE_KERNEL, { x: dy as tf.Tensor, cos: cos!, sin: sinSwapped!, sinSwapped: sin! }, attrs as unknown as tf.NamedAttrMap) as tf.Tensor,
      cos: constant, sin: constant, sinSwapped: constant,
    };
  },
});

// The codes of native/elementwise-kernels.c.
const OP = { add: 0, sub: 1, mul: 2, rsub: 3, siluMul: 4 } as const;
const MODE = { same: 0, scalar: 1, tile: 2, column: 3 } as const;
const UNARY = { square: 0, rsqrt: 1, sigmoid: 2, exp: 3 } as const;
const ROWS = { mean: 0, softmax: 1 } as const;

interface WasmBackendInternals {
  dataIdMap: { get(id: object): { memoryOffset: number } | undefined };
  makeOutput(shape: number[], dtype: 'float32'): tf.TensorInfo;
  wasm: { HEAPU8: Uint8Array };
}

const KERNELS = [tf.Add, tf.Sub, tf.Multiply, tf.Square, tf.Rsqrt, tf.Sigmoid, tf.Exp, tf.Mean, tf.Softmax, tf.Sum, tf.Transpose] as const;

let originals: Map<string, tf.KernelConfig> | null = null;

/** Whether the native kernels are in place (for results and tests). */
export function nativeElementwiseInstalled(): boolean {
  return originals !== null;
}

/** Put the native kernels in place on the wasm backend (once per thread; later calls do nothing). */
export function installNativeElementwise(lib: ElementwiseAddon): void {
  if (originals) return;
  const found = new Map<string, tf.KernelConfig>();
  for (const name of KERNELS) {
    const k = tf.getKernel(name, 'wasm');
    if (k) found.set(name, k);
  }
  originals = found;
  for (const [name, k] of found) {
    tf.unregisterKernel(name, 'wasm');
    tf.registerKernel({ ...k, kernelFunc: nativeKernel(name, lib, k.kernelFunc) });
  }
  if (lib.ewRope && !tf.getKernel(ROPE_KERNEL, 'wasm')) tf.registerKernel({ kernelName: ROPE_KERNEL, backendName: 'wasm', kernelFunc: ropeKernel(lib.ewRope.bind(lib)) });
  if (lib.ewRmsNorm && !tf.getKernel(RMSNORM_KERNEL, 'wasm')) {
    tf.registerKernel({ kernelName: RMSNORM_KERNEL, backendName: 'wasm', kernelFunc: rmsNormKernel(lib.ewRmsNorm.bind(lib)) });
    tf.registerKernel({ kernelName: SILU_MUL_KERNEL, backendName: 'wasm', kernelFunc: siluMulKernel(lib) });
  }
  if (lib.ewAttention && !tf.getKernel(ATTENTION_KERNEL, 'wasm')) {
    tf.registerKernel({ kernelName: ATTENTION_KERNEL, backendName: 'wasm', kernelFunc: attentionKernel(lib.ewAttention.bind(lib)) });
  }
  if (lib.ewSumSquares && !tf.getKernel(COLUMN_SQUARE_SUMS_KERNEL, 'wasm')) {
    tf.registerKernel({ kernelName: COLUMN_SQUARE_SUMS_KERNEL, backendName: 'wasm', kernelFunc: columnSquareSumsKernel(lib.ewSumSquares.bind(lib)) });
  }
}

/** Put the wasm backend's own kernels back (`--matmul xnnpack`; tests compare against them). */
export function uninstallNativeElementwise(): void {
  if (!originals) return;
  for (const [name, k] of originals) {
    tf.unregisterKernel(name, 'wasm');
    tf.registerKernel(k);
  }
  originals = null;
  for (const name of [ROPE_KERNEL, RMSNORM_KERNEL, SILU_MUL_KERNEL, ATTENTION_KERNEL, COLUMN_SQUARE_SUMS_KERNEL]) if (tf.getKernel(name, 'wasm')) tf.unregisterKernel(name, 'wasm');
}

function nativeKernel(name: string, lib: ElementwiseAddon, fallback: tf.KernelFunc): tf.KernelFunc {
  switch (name) {
    case tf.Add: return binaryKernel(lib, OP.add, fallback);
    case tf.Sub: return binaryKernel(lib, OP.sub, fallback);
    case tf.Multiply: return binaryKernel(lib, OP.mul, fallback);
    case tf.Square: return unaryKernel(lib, UNARY.square, fallback);
    case tf.Rsqrt: return unaryKernel(lib, UNARY.rsqrt, fallback);
    case tf.Sigmoid: return unaryKernel(lib, UNARY.sigmoid, fallback);
    case tf.Exp: return unaryKernel(lib, UNARY.exp, fallback);
    case tf.Mean: return meanKernel(lib, fallback);
    case tf.Softmax: return softmaxKernel(lib, fallback);
    case tf.Sum: return sumKernel(lib, fallback);
    case tf.Transpose: return transposeKernel(lib, fallback);
    default: return fallback;
  }
}

const offset = (b: WasmBackendInternals, t: tf.TensorInfo): number => b.dataIdMap.get(t.dataId)!.memoryOffset / 4;
/** The heap's buffer, read after makeOutput: an allocation may have grown (replaced) it. */
const heapOf = (b: WasmBackendInternals): ArrayBuffer => b.wasm.HEAPU8.buffer as ArrayBuffer;

/** `shape` without its leading 1s. */
function stripOnes(shape: readonly number[]): number[] {
  let i = 0;
  while (i < shape.length && shape[i] === 1) i++;
  return shape.slice(i);
}

/**
 * How the smaller operand `small` lies over the output `out` (which the other operand fills):
 * a scalar, a repeated trailing block (`inner` = its size), one value per run of `inner`
 * outputs (its shape is out's leading dims then 1s), or null (another broadcast).
 */
function layOver(small: readonly number[], out: readonly number[]): { mode: number; inner: number } | null {
  const n = tf.util.sizeFromShape(out as number[]), ns = tf.util.sizeFromShape(small as number[]);
  if (ns === 1) return { mode: MODE.scalar, inner: 1 };
  const s = stripOnes(small);
  if (s.length <= out.length && s.every((d, i) => d === out[out.length - s.length + i])) return { mode: MODE.tile, inner: ns };
  const padded = [...new Array<number>(out.length - small.length).fill(1), ...small];
  let lead = 0; // padded = out[0..lead) then 1s
  while (lead < out.length && padded[lead] === out[lead]) lead++;
  if (padded.slice(lead).every((d) => d === 1) && ns * (n / ns) === n) return { mode: MODE.column, inner: n / ns };
  return null;
}

function binaryKernel(lib: ElementwiseAddon, op: number, fallback: tf.KernelFunc): tf.KernelFunc {
  return (args) => {
    const { a, b } = args.inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
    const backend = args.backend as unknown as WasmBackendInternals;
    if (a.dtype !== 'float32' || b.dtype !== 'float32') return fallback(args);
    const outShape = tf.backend_util.assertAndGetBroadcastShape(a.shape, b.shape);
    const n = tf.util.sizeFromShape(outShape), na = tf.util.sizeFromShape(a.shape), nb = tf.util.sizeFromShape(b.shape);
    // The full operand (as many values as the output) is `a`, or `b` with the operation turned round.
    let full = a, other = b, code = op;
    let lay: { mode: number; inner: number } | null = null;
    if (na === n && nb === n) lay = { mode: MODE.same, inner: 1 };
    else if (na === n) lay = layOver(b.shape, outShape);
    else if (nb === n) {
      lay = layOver(a.shape, outShape);
      [full, other] = [b, a];
      code = op === OP.sub ? OP.rsub : op;
    }
    if (!lay) return fallback(args);
    const out = backend.makeOutput(outShape, 'float32');
    if (n === 0) return out;
    lib.ewBinary(heapOf(backend), code, lay.mode, n, lay.inner, offset(backend, full), offset(backend, other), offset(backend, out));
    return out;
  };
}

function unaryKernel(lib: ElementwiseAddon, op: number, fallback: tf.KernelFunc): tf.KernelFunc {
  return (args) => {
    const { x } = args.inputs as { x: tf.TensorInfo };
    const backend = args.backend as unknown as WasmBackendInternals;
    if (x.dtype !== 'float32') return fallback(args);
    const out = backend.makeOutput([...x.shape], 'float32');
    const n = tf.util.sizeFromShape(x.shape);
    if (n > 0) lib.ewUnary(heapOf(backend), op, n, offset(backend, x), offset(backend, out));
    return out;
  };
}

/**
 * A float32 reduction of x over `axis` as a `[rows, cols]` view: over leading axes (byColumns: one
 * output per column) or trailing ones (one per row; every axis counts as trailing, one row), with
 * the output's shape; null for any other axes, dtype, or an empty reduction (the wasm kernel's
 * zeros or NaNs).
 */
function reductionView(x: tf.TensorInfo, axis: number | number[], keepDims: boolean):
  { axes: number[]; rows: number; cols: number; byColumns: 0 | 1; outShape: number[] } | null {
  const rank = x.shape.length;
  if (x.dtype !== 'float32' || rank === 0) return null;
  const axes = [...tf.util.parseAxisParam(axis, x.shape)].sort((p, q) => p - q);
  const leading = axes.every((a, i) => a === i), trailing = axes.every((a, i) => a === rank - axes.length + i);
  const reduced = axes.reduce((p, a) => p * x.shape[a]!, 1);
  if (axes.length === 0 || !(leading || trailing) || reduced === 0) return null;
  const n = tf.util.sizeFromShape(x.shape);
  const byColumns = leading && !trailing ? 1 : 0;
  const outShape = keepDims ? x.shape.map((d, i) => (axes.includes(i) ? 1 : d)) : x.shape.filter((_, i) => !axes.includes(i));
  return { axes, rows: byColumns ? reduced : n / reduced, cols: byColumns ? n / reduced : reduced, byColumns, outShape };
}

function meanKernel(lib: ElementwiseAddon, fallback: tf.KernelFunc): tf.KernelFunc {
  return (args) => {
    const { x } = args.inputs as { x: tf.TensorInfo };
    const { axis, keepDims } = args.attrs as { axis: number | number[]; keepDims: boolean };
    const backend = args.backend as unknown as WasmBackendInternals;
    const v = reductionView(x, axis, keepDims);
    // The last axis only (or every axis of a vector).
    if (!v || v.byColumns || v.axes.length !== 1) return fallback(args);
    const out = backend.makeOutput(v.outShape, 'float32');
    if (v.rows > 0) lib.ewRows(heapOf(backend), ROWS.mean, v.rows, v.cols, offset(backend, x), offset(backend, out));
    return out;
  };
}

function softmaxKernel(lib: ElementwiseAddon, fallback: tf.KernelFunc): tf.KernelFunc {
  return (args) => {
    const { logits } = args.inputs as { logits: tf.TensorInfo };
    const { dim } = args.attrs as { dim: number };
    const backend = args.backend as unknown as WasmBackendInternals;
    const rank = logits.shape.length;
    if (logits.dtype !== 'float32' || rank === 0 || (dim !== -1 && dim !== rank - 1)) return fallback(args);
    const cols = logits.shape[rank - 1]!;
    if (cols === 0) return fallback(args);
    const rows = tf.util.sizeFromShape(logits.shape) / cols;
    const out = backend.makeOutput([...logits.shape], 'float32');
    if (rows > 0) lib.ewRows(heapOf(backend), ROWS.softmax, rows, cols, offset(backend, logits), offset(backend, out));
    return out;
  };
}

/**
 * Sum over leading axes (column sums of the `[lead, rest]` view: Wanda's ‖X_j‖², the statistics'
 * column sums) or trailing axes (row sums): the same float32 running sum as the wasm kernel, which
 * first transposes the reduced axes inward (the transpose was most of its time). Others: the wasm kernel.
 */
function sumKernel(lib: ElementwiseAddon, fallback: tf.KernelFunc): tf.KernelFunc {
  return (args) => {
    const { x } = args.inputs as { x: tf.TensorInfo };
    const { axis, keepDims } = args.attrs as { axis: number | number[]; keepDims: boolean };
    const backend = args.backend as unknown as WasmBackendInternals;
    const v = reductionView(x, axis, keepDims);
    if (!v) return fallback(args);
    const out = backend.makeOutput(v.outShape, 'float32');
    if (v.rows * v.cols > 0) lib.ewSum(heapOf(backend), v.rows, v.cols, v.byColumns, offset(backend, x), offset(backend, out));
    return out;
  };
}

/** Transposes that swap the last two axes or keep the last one (attention's head shuffles, weights read as `[out, in]`). */
function transposeKernel(lib: ElementwiseAddon, fallback: tf.KernelFunc): tf.KernelFunc {
  return (args) => {
    const { x } = args.inputs as { x: tf.TensorInfo };
    const { perm } = args.attrs as { perm: number[] };
    const backend = args.backend as unknown as WasmBackendInternals;
    const rank = x.shape.length;
    if (x.dtype !== 'float32' || rank < 2 || rank > 6 || perm.length !== rank) return fallback(args);
    const swap = perm[rank - 1] === rank - 2 && perm[rank - 2] === rank - 1 && perm.slice(0, -2).every((p, i) => p === i);
    if (!swap && perm[rank - 1] !== rank - 1) return fallback(args);
    const out = backend.makeOutput(perm.map((p) => x.shape[p]!), 'float32');
    if (tf.util.sizeFromShape(x.shape) > 0) lib.ewTranspose(heapOf(backend), offset(backend, x), offset(backend, out), rank, ...perm, ...x.shape);
    return out;
  };
}

function ropeKernel(ewRope: NonNullable<ElementwiseAddon['ewRope']>): tf.KernelFunc {
  return (args) => {
    const { x, cos, sin } = args.inputs as { x: tf.TensorInfo; cos: tf.TensorInfo; sin: tf.TensorInfo };
    const { span } = args.attrs as { span: number };
    const backend = args.backend as unknown as WasmBackendInternals;
    const [rows, width] = x.shape as [number, number];
    const T = cos.shape[0]!;
    if (x.shape.length !== 2 || cos.shape[1] !== width || sin.shape[0] !== T || sin.shape[1] !== width || rows % T !== 0) {
      throw new Error(`${ROPE_KERNEL}: x ${x.shape.join('×')} does not fit tables ${cos.shape.join('×')}`);
    }
    const out = backend.makeOutput([rows, width], 'float32');
    if (rows * width > 0) ewRope(heapOf(backend), rows, T, width, span, offset(backend, x), offset(backend, cos), offset(backend, sin), offset(backend, out));
    return out;
  };
}

function rmsNormKernel(ewRmsNorm: NonNullable<ElementwiseAddon['ewRmsNorm']>): tf.KernelFunc {
  return (args) => {
    const { x, weight } = args.inputs as { x: tf.TensorInfo; weight: tf.TensorInfo };
    const { eps } = args.attrs as { eps: number };
    const backend = args.backend as unknown as WasmBackendInternals;
    const [rows, cols] = x.shape as [number, number];
    if (x.shape.length !== 2 || weight.shape.length !== 1 || weight.shape[0] !== cols || cols === 0) {
      throw new Error(`${RMSNORM_KERNEL}: x ${x.shape.join('×')} and weight ${weight.shape.join('×')} do not fit`);
    }
    const out = backend.makeOutput([rows, cols], 'float32');
    // eps as the float32 the composed ops' scalar tensor holds.
    if (rows > 0) ewRmsNorm(heapOf(backend), rows, cols, offset(backend, x), offset(backend, weight), offset(backend, out), float32Bits(eps));
    return out;
  };
}

function siluMulKernel(lib: ElementwiseAddon): tf.KernelFunc {
  return (args) => {
    const { gate, up } = args.inputs as { gate: tf.TensorInfo; up: tf.TensorInfo };
    const backend = args.backend as unknown as WasmBackendInternals;
    if (!tf.util.arraysEqual(gate.shape, up.shape)) throw new Error(`${SILU_MUL_KERNEL}: gate ${gate.shape.join('×')} and up ${up.shape.join('×')} differ`);
    const out = backend.makeOutput([...gate.shape], 'float32');
    const n = tf.util.sizeFromShape(gate.shape);
    if (n > 0) lib.ewBinary(heapOf(backend), OP.siluMul, MODE.same, n, 1, offset(backend, gate), offset(backend, up), offset(backend, out));
    return out;
  };
}

interface AttentionAttrs { B: number; Tq: number; Tk: number; H: number; KV: number; hd: number; scale: number; step: number }

function attentionKernel(ewAttention: NonNullable<ElementwiseAddon['ewAttention']>): tf.KernelFunc {
  return (args) => {
    const { q, k, v, mask } = args.inputs as { q: tf.TensorInfo; k: tf.TensorInfo; v: tf.TensorInfo; mask?: tf.TensorInfo };
    const a = args.attrs as unknown as AttentionAttrs;
    const backend = args.backend as unknown as WasmBackendInternals;
    const g = a.H / a.KV;
    const fits = (t: tf.TensorInfo, rows: number, cols: number) => t.shape.length === 2 && t.shape[0] === rows && t.shape[1] === cols;
    if (!fits(q, a.B * a.Tq, a.H * a.hd) || !fits(k, a.B * a.Tk, a.KV * a.hd) || !fits(v, a.B * a.Tk, a.KV * a.hd)
      || (mask && !fits(mask, g * a.Tq, a.Tk)) || !Number.isInteger(g)) {
      throw new Error(`${ATTENTION_KERNEL}: q ${q.shape.join('×')}, k ${k.shape.join('×')}, v ${v.shape.join('×')} do not fit ${JSON.stringify(a)}`);
    }
    const out = backend.makeOutput([a.B * a.Tq, a.H * a.hd], 'float32');
    ewAttention(heapOf(backend), a.B, a.Tq, a.Tk, a.H, a.KV, a.hd, a.step, offset(backend, q), offset(backend, k), offset(backend, v),
      mask ? offset(backend, mask) : 0, mask ? 1 : 0, offset(backend, out), float32Bits(a.scale));
    return out;
  };
}

function columnSquareSumsKernel(ewSumSquares: NonNullable<ElementwiseAddon['ewSumSquares']>): tf.KernelFunc {
  return (args) => {
    const { x } = args.inputs as { x: tf.TensorInfo };
    const backend = args.backend as unknown as WasmBackendInternals;
    if (x.shape.length !== 2 || x.dtype !== 'float32') throw new Error(`${COLUMN_SQUARE_SUMS_KERNEL}: x must be a float32 matrix, got ${x.dtype} ${x.shape.join('×')}`);
    const [rows, cols] = x.shape as [number, number];
    const out = backend.makeOutput([cols], 'float32');
    if (cols > 0) ewSumSquares(heapOf(backend), rows, cols, offset(backend, x), offset(backend, out));
    return out;
  };
}
