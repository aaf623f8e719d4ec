/**
 * The solvers' native kernels where the WebAssembly backend's products run on OpenBLAS
 * (src/backend/openblas.ts, native/openblas-kernels.c): LAPACK for SparseGPT's factor, in place
 * in the WebAssembly heap, and the host kernels `LinAlg.native` offers. With XNNPACK (or no
 * addon, or another backend) there are none and `backend.ts` keeps its blocked matMul algorithms.
 */
import * as tf from '@tensorflow/tfjs';
import { openblasAddon, wasmMatmulKernel } from '../backend/openblas.ts';
import { NotPositiveDefiniteError } from './dense.ts';
import type { NativeKernels } from './linalg.ts';

interface WasmBackendInternals {
  dataIdMap: { get(id: object): { memoryOffset: number } | undefined };
  wasm: { HEAPU8: Uint8Array };
}

function addon(): ReturnType<typeof openblasAddon> {
  if (tf.getBackend() !== 'wasm' || wasmMatmulKernel() !== 'openblas') return null;
  const lib = openblasAddon();
  // An addon built before these kernels existed has only the products.
  return lib && typeof lib.upperCholeskyOfInverse === 'function' ? lib : null;
}

/** The host kernels, or undefined where the products are not OpenBLAS's. */
export function nativeKernels(): NativeKernels | undefined {
  const lib = addon();
  if (!lib || typeof lib.obsSweepBlock !== 'function' || typeof lib.hostGemm !== 'function') return undefined;
  return {
    obsSweepBlock: lib.obsSweepBlock.bind(lib),
    matMul: (a, b, c, m, n, k, transA, transB) => lib.hostGemm(a, b, c, m, n, k, transA ? 1 : 0, transB ? 1 : 0),
    matMulSymmetric: (a, s, c, m, n) => lib.hostGemm(a, s, c, m, n, n, 0, 2),
    ...(typeof lib.fistaAcceptStep === 'function' ? { fistaAcceptStep: lib.fistaAcceptStep.bind(lib) } : {}),
    ...(typeof lib.fistaCutRows === 'function' ? { fistaCutRows: lib.fistaCutRows.bind(lib) } : {}),
    ...(typeof lib.fistaChange === 'function' ? { fistaChange: lib.fistaChange.bind(lib) } : {}),
    ...(typeof lib.fistaErrors === 'function' ? { fistaErrors: lib.fistaErrors.bind(lib) } : {}),
    ...(typeof lib.fistaPrepareGram === 'function' ? { fistaPrepareGram: lib.fistaPrepareGram.bind(lib) } : {}),
    ...(typeof lib.maskRows === 'function' ? { maskRows: lib.maskRows.bind(lib) } : {}),
    ...(typeof lib.maskRowsScaled === 'function' ? { maskRowsScaled: lib.maskRowsScaled.bind(lib) } : {}),
    ...(typeof lib.maskedCopy === 'function' ? { maskedCopy: lib.maskedCopy.bind(lib) } : {}),
    ...(typeof lib.countZeros === 'function' ? { countZeros: lib.countZeros.bind(lib) } : {}),
  };
}

/**
 * U upper with A⁻¹ = UᵀU by LAPACK (spotrf, strtri on one thread: the same for any thread
 * count), or null where the products are not OpenBLAS's. Reads A's upper triangle (the lower one
 * of A reversed, as backend.ts's reversed factorisation). The kernel works in place on a copy of
 * A, a fresh tensor nothing else refers to: a·1 (exact; tf.clone would share A's memory, and the
 * wasm tf.reverse of a 4096² matrix takes 0.7 s where the kernel reverses it in ~20 ms).
 */
export function nativeUpperCholeskyOfInverse(a: tf.Tensor2D): tf.Tensor2D | null {
  const lib = addon();
  if (!lib) return null;
  const n = a.shape[0];
  const r = tf.tidy(() => tf.mul(a, 1) as tf.Tensor2D);
  const backend = tf.backend() as unknown as WasmBackendInternals;
  const offset = backend.dataIdMap.get(r.dataId)!.memoryOffset / 4;
  const [pivot, value] = lib.upperCholeskyOfInverse(backend.wasm.HEAPU8.buffer as ArrayBuffer, offset, n);
  if (pivot >= 0) {
    r.dispose();
    throw new NotPositiveDefiniteError(n - 1 - pivot, value, n,
      `factorised in reverse order: the trailing block from index ${n - 1 - pivot} is not positive definite`);
  }
  return r;
}
