/**
 * Row gathers and contiguous slices on the WebAssembly backend as copies inside its heap.
 *
 * The wasm `GatherV2` kernel computes every element's source index in C++ (28 ns per element
 * measured: 8.4 CPU-ms for a prefill's 512 embedding rows of 576), and the wasm `Slice` copies
 * its whole input to the host before taking the slice (63 CPU-ms for 512 rows of the SmolLM-135M
 * embedding; `LinAlg`'s block slices of a Hessian copied all of it per block). Here a gather of
 * whole rows along axis 0 is a `copyWithin` of the heap per row, and a slice one per contiguous
 * run (a block of rows: one run; a block of columns: one run per row, when rows are ≥ 16 wide);
 * every other case goes to the wasm kernel. The values are copies, so the same bit for bit (tested in
 * test/wasm-copies.test.ts); indices out of range go to the wasm kernel, which reports them.
 */
import * as tf from '@tensorflow/tfjs';

interface WasmBackendInternals {
  dataIdMap: { get(id: object): { memoryOffset: number } | undefined };
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  disposeData(id: object): void;
  wasm: { HEAPU8: Uint8Array };
}

/** Four-byte dtypes, copied as 32-bit words. */
const WORD_TYPES: readonly tf.DataType[] = ['float32', 'int32'];

let originals: { gather: tf.KernelConfig; slice: tf.KernelConfig } | null = null;

/** Put the copying kernels in place on the wasm backend (once per thread; later calls do nothing). */
export function installWasmCopies(): void {
  if (originals) return;
  const gather = tf.getKernel(tf.GatherV2, 'wasm');
  const slice = tf.getKernel(tf.Slice, 'wasm');
  if (!gather || !slice) return;
  originals = { gather, slice };
  tf.unregisterKernel(tf.GatherV2, 'wasm');
  tf.registerKernel({ ...gather, kernelFunc: gatherRows(gather.kernelFunc) });
  tf.unregisterKernel(tf.Slice, 'wasm');
  tf.registerKernel({ ...slice, kernelFunc: contiguousSlice(slice.kernelFunc) });
}

/** Put the wasm backend's own kernels back (tests compare against them). */
export function uninstallWasmCopies(): void {
  if (!originals) return;
  tf.unregisterKernel(tf.GatherV2, 'wasm');
  tf.registerKernel(originals.gather);
  tf.unregisterKernel(tf.Slice, 'wasm');
  tf.registerKernel(originals.slice);
  originals = null;
}

const wordOffset = (b: WasmBackendInternals, t: tf.TensorInfo): number => b.dataIdMap.get(t.dataId)!.memoryOffset / 4;

function gatherRows(fallback: tf.KernelFunc): tf.KernelFunc {
  return (args) => {
    const { x, indices } = args.inputs as { x: tf.TensorInfo; indices: tf.TensorInfo };
    const { axis, batchDims } = args.attrs as { axis: number; batchDims: number };
    const backend = args.backend as unknown as WasmBackendInternals;
    if (x.shape.length === 0 || tf.util.parseAxisParam(axis, x.shape)[0] !== 0 || (batchDims ?? 0) !== 0
      || !WORD_TYPES.includes(x.dtype) || indices.dtype !== 'int32') return fallback(args);
    const rows = x.shape[0]!;
    const rowSize = tf.util.sizeFromShape(x.shape.slice(1));
    const n = tf.util.sizeFromShape(indices.shape);
    const out = backend.makeOutput([...indices.shape, ...x.shape.slice(1)], x.dtype);
    if (n === 0 || rowSize === 0) return out;
    // Read the heap after makeOutput: an allocation may have grown (replaced) it.
    const heap = new Int32Array(backend.wasm.HEAPU8.buffer);
    const [xo, io, oo] = [wordOffset(backend, x), wordOffset(backend, indices), wordOffset(backend, out)];
    for (let i = 0; i < n; i++) {
      const row = heap[io + i]!;
      if (row < 0 || row >= rows) {
        backend.disposeData(out.dataId);
        return fallback(args);
      }
      heap.copyWithin(oo + i * rowSize, xo + row * rowSize, xo + (row + 1) * rowSize);
    }
    return out;
  };
}

/** Runs shorter than this go to the wasm kernel (one `copyWithin` per run costs more than its copy). */
const MIN_RUN = 16;

function contiguousSlice(fallback: tf.KernelFunc): tf.KernelFunc {
  return (args) => {
    const { x } = args.inputs as { x: tf.TensorInfo };
    const { begin, size } = args.attrs as { begin: number | number[]; size: number | number[] };
    const backend = args.backend as unknown as WasmBackendInternals;
    if (!WORD_TYPES.includes(x.dtype) || x.shape.length === 0) return fallback(args);
    const [b, s] = tf.slice_util.parseSliceParams(x, begin, size);
    const rank = x.shape.length;
    const stride = [...tf.util.computeStrides(x.shape), 1];
    // Axis d: the outermost one below which the slice takes whole rows of x; each (outer index)
    // is then one contiguous run of `run` elements.
    let d = rank - 1;
    while (d > 0 && b[d] === 0 && s[d] === x.shape[d]) d--;
    const run = s[d]! * stride[d]!;
    const runs = tf.util.sizeFromShape(s.slice(0, d));
    const n = runs * run;
    if (n > 0 && runs > 1 && run < MIN_RUN) return fallback(args);
    const out = backend.makeOutput(s, x.dtype);
    if (n === 0) return out;
    const heap = new Int32Array(backend.wasm.HEAPU8.buffer);
    const xo = wordOffset(backend, x), oo = wordOffset(backend, out);
    const at = new Array<number>(d).fill(0); // odometer over the axes before d
    for (let r = 0; r < runs; r++) {
      let src = xo + b[d]! * stride[d]!;
      for (let a = 0; a < d; a++) src += (b[a]! + at[a]!) * stride[a]!;
      heap.copyWithin(oo + r * run, src, src + run);
      for (let a = d - 1; a >= 0 && ++at[a]! === s[a]; a--) at[a] = 0;
    }
    return out;
  };
}
