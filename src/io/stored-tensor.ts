/**
 * Tensors as a checkpoint stores them: a dtype (F32, F16 or BF16), a shape and little-endian
 * bytes. A `TensorRef` says where one tensor lies in which file; its bytes are read only when
 * asked, kept in the stored dtype on the host, and widened to fp32 one tensor at a time for
 * compute — so a bf16 model costs 2 bytes per weight on the host, not 4.
 */
import { readRange, readRangeInto } from './byte-range.ts';
import { numel, type NamedTensors } from '../model/tensor-data.ts';

/** U8: packed integer codes of a quantised export (io/quantized-checkpoint.ts). */
export type StoredDtype = 'F32' | 'F16' | 'BF16' | 'U8';
export const STORED_DTYPES: readonly StoredDtype[] = ['F32', 'F16', 'BF16', 'U8'];
export const DTYPE_BYTES: Record<StoredDtype, number> = { F32: 4, F16: 2, BF16: 2, U8: 1 };

export function isStoredDtype(s: string): s is StoredDtype {
  return (STORED_DTYPES as readonly string[]).includes(s);
}

/** One tensor's bytes in its stored dtype. */
export interface StoredTensor {
  dtype: StoredDtype;
  shape: number[];
  bytes: Uint8Array;
}

/** Where a tensor lies: plain data (no file handle), so refs can be kept, copied or sent to workers. */
export interface TensorRef {
  /** The name as written in the file (before any renaming by the reader). */
  readonly name: string;
  readonly dtype: StoredDtype;
  readonly shape: readonly number[];
  readonly file: string;
  /** Absolute byte position of the first byte in `file`. */
  readonly offset: number;
  readonly byteLength: number;
}

/** A checkpoint's tensors by (normalised) HF name, none read yet. */
export type TensorRefs = Map<string, TensorRef>;

export function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f ? NaN : s * Infinity;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}

/** fp32 copy of 16-bit values (F16 or BF16); both widen exactly. */
function widenHalves(dtype: 'F16' | 'BF16', halves: Uint16Array): Float32Array {
  const out = new Float32Array(halves.length);
  if (dtype === 'F16') {
    for (let i = 0; i < halves.length; i++) out[i] = f16ToF32(halves[i]);
  } else {
    // bf16 is the top half of an fp32.
    const u = new Uint32Array(out.buffer);
    for (let i = 0; i < halves.length; i++) u[i] = halves[i] << 16;
  }
  return out;
}

/** The fp32 values of a stored tensor, always in a new array (the stored bytes stay untouched). */
export function widenToF32(t: StoredTensor): Float32Array {
  const n = numel(t.shape);
  if (t.bytes.byteLength !== n * DTYPE_BYTES[t.dtype]) {
    throw new Error(`${t.dtype} tensor of shape [${t.shape}] needs ${n * DTYPE_BYTES[t.dtype]} bytes, got ${t.bytes.byteLength}`);
  }
  if (t.dtype === 'F32') {
    const out = new Float32Array(n);
    new Uint8Array(out.buffer).set(t.bytes);
    return out;
  }
  if (t.dtype === 'U8') return Float32Array.from(t.bytes);
  // A Uint16Array view needs an even byte offset; copy only when the bytes are not so placed.
  const b = t.bytes.byteOffset % 2 === 0 ? t.bytes : t.bytes.slice();
  return widenHalves(t.dtype, new Uint16Array(b.buffer, b.byteOffset, n));
}

/**
 * The first value of a stored tensor that is NaN or ±Infinity, found from the bit patterns
 * (16-bit exponent all ones) without widening the tensor; null when every value is finite.
 */
export function firstNonFinite(t: StoredTensor): { index: number; value: number } | null {
  const n = numel(t.shape);
  if (t.dtype === 'U8') return null;
  if (t.dtype === 'F32') {
    const b = t.bytes.byteOffset % 4 === 0 ? t.bytes : t.bytes.slice();
    const f = new Float32Array(b.buffer, b.byteOffset, n);
    for (let i = 0; i < n; i++) if (!Number.isFinite(f[i])) return { index: i, value: f[i]! };
    return null;
  }
  const b = t.bytes.byteOffset % 2 === 0 ? t.bytes : t.bytes.slice();
  const h = new Uint16Array(b.buffer, b.byteOffset, n);
  const exp = t.dtype === 'BF16' ? 0x7f80 : 0x7c00;
  for (let i = 0; i < n; i++) {
    if ((h[i]! & exp) === exp) return { index: i, value: widenHalves(t.dtype, h.subarray(i, i + 1))[0]! };
  }
  return null;
}

/** Read one tensor's bytes in its stored dtype. */
export function readStored(ref: TensorRef): StoredTensor {
  return { dtype: ref.dtype, shape: ref.shape.slice(), bytes: readRange(ref.file, ref.offset, ref.byteLength) };
}

/** Read one tensor as fp32 (F32 straight into the result, without an intermediate copy). */
export function readF32(ref: TensorRef): Float32Array {
  if (ref.dtype !== 'F32') return widenToF32(readStored(ref));
  const out = new Float32Array(numel(ref.shape));
  readRangeInto(ref.file, ref.offset, new Uint8Array(out.buffer));
  return out;
}

/** Read every tensor of `refs` as fp32, in the refs' order (the eager API, built on the lazy one). */
export function readAllF32(refs: TensorRefs, only?: (name: string) => boolean): NamedTensors {
  const out: NamedTensors = new Map();
  for (const [name, ref] of refs) {
    if (only && !only(name)) continue;
    out.set(name, { shape: ref.shape.slice(), data: readF32(ref) });
  }
  return out;
}

/** Elements held by `refs` (all of them, or those `only` keeps). */
export function refsNumel(refs: TensorRefs, only?: (name: string) => boolean): number {
  let n = 0;
  for (const [name, ref] of refs) if (!only || only(name)) n += numel(ref.shape);
  return n;
}
