/**
 * Row gathers and contiguous slices on the WebAssembly backend as copies inside its heap.
 *
 * The wasm `GatherV2` kernel computes every element's source index in C++ (28 ns per element
 * measured: 8.4 CPU-ms for a prefill's 512 embedding rows of 576), and the wasm `Slice` copies
 * its whole input to the host before taking the slice (63 CPU-ms for 512 rows of the SmolLM-135M
 * embedding). Their commonest forms — whole rows along axis 0, and a slice that is one
 * contiguous run of the input — are a `copyWithin` of the heap per row (per slice) here; every
 * other case goes to the wasm kernel. The values are copies, so the same bit for bit (tested in
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

function contiguousSlice(fallback: tf.KernelFunc): tf.KernelFunc {
  return (args) => {
    const { x } = args.inputs as { x: tf.TensorInfo };
    const { begin, size } = args.attrs as { begin: number | number[]; size: number | number[] };
    const backend = args.backend as unknown as WasmBackendInternals;
    if (!WORD_TYPES.includes(x.dtype)) return fallback(args);
    const [b, s] = tf.slice_util.parseSliceParams(x, begin, size);
    if (!tf.slice_util.isSliceContinous(x.shape, b, s)) return fallback(args);
    const n = tf.util.sizeFromShape(s);
    const out = backend.makeOutput(s, x.dtype);
    if (n === 0) return out;
    const start = wordOffset(backend, x) + tf.slice_util.computeFlatOffset(b, tf.util.computeStrides(x.shape));
    new Int32Array(backend.wasm.HEAPU8.buffer).copyWithin(wordOffset(backend, out), start, start + n);
    return out;
  };
}
