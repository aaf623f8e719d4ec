/**
 * A model's weights on the host, by HF name and layout, in their stored dtype where that is
 * cheap: BF16/F16 as 16-bit halves (2 bytes a weight), widened to fp32 one tensor at a time when
 * a layer goes onto the backend. A tensor written back (a pruned layer) keeps its 16-bit dtype
 * when every value is exactly representable in it (masking only zeroes values), else becomes F32.
 * A tensor can also stay in its checkpoint file until it is used (`putFile`): it is read by byte
 * range on every `get`, so weights no one has changed cost no host memory at all.
 */
import { f16ToF32, readF32, widenToF32, type TensorRef } from '../io/stored-tensor.ts';
import { numel } from './tensor-data.ts';
import { f32ToF16 } from '../io/safetensors.ts';
import type { HostTensor, NamedTensors } from './tensor-data.ts';

export type HostDtype = 'F32' | 'F16' | 'BF16';

interface HostEntry {
  shape: number[];
  dtype: HostDtype;
  /** F32: the values; F16/BF16: the 16-bit patterns; null: still in its file (`ref`). */
  data: Float32Array | Uint16Array | null;
  ref?: TensorRef;
}

/** fp32 values → bf16 patterns, or null when one of them is not exactly a bf16. */
function exactBf16(data: Float32Array): Uint16Array | null {
  const u = new Uint32Array(data.buffer, data.byteOffset, data.length);
  const out = new Uint16Array(data.length);
  for (let i = 0; i < u.length; i++) {
    if ((u[i]! & 0xffff) !== 0) return null;
    out[i] = u[i]! >>> 16;
  }
  return out;
}

/** fp32 values → f16 patterns, or null when one of them does not round-trip exactly. */
function exactF16(data: Float32Array): Uint16Array | null {
  const out = new Uint16Array(data.length);
  for (let i = 0; i < data.length; i++) {
    const h = f32ToF16(data[i]!);
    if (!Object.is(f16ToF32(h), data[i])) return null;
    out[i] = h;
  }
  return out;
}

export class HostStore {
  private readonly entries = new Map<string, HostEntry>();

  /** Keep a tensor as stored: fp32 values, or the 16-bit patterns of an F16/BF16 tensor. */
  putStored(name: string, shape: readonly number[], dtype: HostDtype, data: Float32Array | Uint16Array): void {
    this.entries.set(name, { shape: shape.slice(), dtype, data });
  }

  /** Leave a tensor in its checkpoint file; it is read (and widened) on every `get`. */
  putFile(name: string, ref: TensorRef): void {
    if (ref.dtype === 'U8') throw new Error(`putFile: '${name}' is U8, not a weight dtype`);
    this.entries.set(name, { shape: ref.shape.slice(), dtype: ref.dtype, data: null, ref });
  }

  /**
   * Keep fp32 values under `name`, in the dtype it had before (or `prefer`) when exact, else F32.
   * The array is kept, not copied.
   */
  putF32(name: string, t: HostTensor, prefer?: HostDtype): void {
    const want = prefer ?? this.entries.get(name)?.dtype ?? 'F32';
    const halves = want === 'BF16' ? exactBf16(t.data) : want === 'F16' ? exactF16(t.data) : null;
    this.entries.set(name, halves ? { shape: t.shape.slice(), dtype: want, data: halves } : { shape: t.shape.slice(), dtype: 'F32', data: t.data });
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  delete(name: string): void {
    this.entries.delete(name);
  }

  names(): string[] {
    return [...this.entries.keys()];
  }

  dtypeOf(name: string): HostDtype | undefined {
    return this.entries.get(name)?.dtype;
  }

  /** A tensor's fp32 values (a new array for 16-bit and file entries; the kept array for F32 ones). */
  get(name: string): HostTensor | undefined {
    const e = this.entries.get(name);
    if (!e) return undefined;
    if (e.data === null) return { shape: e.shape.slice(), data: readF32(e.ref!) };
    if (e.dtype === 'F32') return { shape: e.shape.slice(), data: e.data as Float32Array };
    const h = e.data as Uint16Array;
    return { shape: e.shape.slice(), data: widenToF32({ dtype: e.dtype, shape: e.shape, bytes: new Uint8Array(h.buffer, h.byteOffset, h.byteLength) }) };
  }

  /** Whether `name` is still only in its file (never written back). */
  inFile(name: string): boolean {
    return this.entries.get(name)?.data === null;
  }

  /** Bytes held in host memory (tensors left in their files count nothing). */
  bytes(): number {
    let n = 0;
    for (const e of this.entries.values()) n += e.data?.byteLength ?? 0;
    return n;
  }

  /** Elements of every tensor, in memory or in a file. */
  numel(): number {
    let n = 0;
    for (const e of this.entries.values()) n += numel(e.shape);
    return n;
  }

  /**
   * Every tensor for an export, each widened to fp32 only when its `data` is read, and again on
   * every read (read it once into a local): writing a checkpoint holds one widened tensor at a
   * time, never a whole-model fp32 copy.
   */
  lazyNamedTensors(): NamedTensors {
    const out: NamedTensors = new Map();
    for (const [name, e] of this.entries) {
      const get = () => this.get(name)!.data;
      out.set(name, { shape: e.shape.slice(), get data() { return get(); } });
    }
    return out;
  }

  /** Every tensor as fp32 (a whole-model copy: for small models and exports). */
  toNamedTensors(): NamedTensors {
    const out: NamedTensors = new Map();
    for (const name of this.entries.keys()) out.set(name, this.get(name)!);
    return out;
  }
}
