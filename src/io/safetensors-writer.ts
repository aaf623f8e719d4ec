/**
 * safetensors writing, tensor by tensor: the header is laid out first from the list of tensors
 * (names, shapes, dtypes), then each tensor's bytes go to their place with positioned writes in
 * whatever order the tensors arrive — a model streamed layer by layer never needs all its weights
 * in one buffer. `ShardedSafetensorsWriter` splits a checkpoint into HF's standard shards
 * (`model-00001-of-0000N.safetensors` and `model.safetensors.index.json`).
 *
 * Within a file the data follows the names in sorted order, as the reference writer lays it out.
 */
import fs from 'node:fs';
import path from 'node:path';
import { DTYPE_BYTES, widenToF32, type StoredDtype, type StoredTensor } from './stored-tensor.ts';
import { numel, type HostTensor } from '../model/tensor-data.ts';

/** A tensor as the writer takes it: fp32 values, or bytes in a stored dtype. */
export type WritableTensor = HostTensor | StoredTensor;

/** What a file will hold, known before any data: the dtype is the one written. */
export interface PlannedTensor {
  name: string;
  shape: readonly number[];
  dtype: StoredDtype;
}

export const INDEX_FILE = 'model.safetensors.index.json';
export const SINGLE_FILE = 'model.safetensors';

const f32Buf = new Float32Array(1);
const u32Buf = new Uint32Array(f32Buf.buffer);

/** Round-to-nearest-even fp32 → fp16 bits. */
export function f32ToF16(v: number): number {
  f32Buf[0] = v;
  const x = u32Buf[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && half & 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && half & 1)) half++;
  return sign | half;
}

/** Round-to-nearest-even fp32 → bf16 bits (the top half of the fp32); NaN stays a quiet NaN. */
export function f32ToBf16(v: number): number {
  f32Buf[0] = v;
  const x = u32Buf[0];
  if ((x & 0x7fffffff) > 0x7f800000) return (x >>> 16) | 0x40;
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

/** Elements converted per write: bounds the temporary buffer whatever the tensor's size. */
const CHUNK_ELEMENTS = 1 << 20;

/** `data` as little-endian bytes of `dtype`, handed over in chunks (the last chunk's buffer is reused). */
function* encodeChunks(data: Float32Array, dtype: 'F32' | 'F16' | 'BF16'): Generator<Uint8Array> {
  if (dtype === 'F32') {
    yield new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    return;
  }
  const narrow = dtype === 'F16' ? f32ToF16 : f32ToBf16;
  const halves = new Uint16Array(Math.min(CHUNK_ELEMENTS, data.length));
  for (let start = 0; start < data.length; start += CHUNK_ELEMENTS) {
    const n = Math.min(CHUNK_ELEMENTS, data.length - start);
    for (let i = 0; i < n; i++) halves[i] = narrow(data[start + i]);
    yield new Uint8Array(halves.buffer, 0, 2 * n);
  }
}

/** The header bytes (padded to 8 with spaces) and each tensor's offset within the data section. */
function layoutHeader(tensors: readonly PlannedTensor[], metadata: Record<string, string>): { header: Buffer; offsets: Map<string, number>; dataBytes: number } {
  const sorted = [...tensors].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const json: Record<string, unknown> = { __metadata__: metadata };
  const offsets = new Map<string, number>();
  let offset = 0;
  for (const t of sorted) {
    if (offsets.has(t.name)) throw new Error(`safetensors writer: tensor '${t.name}' planned twice`);
    const bytes = numel(t.shape) * DTYPE_BYTES[t.dtype];
    json[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offsets.set(t.name, offset);
    offset += bytes;
  }
  let text = JSON.stringify(json);
  text += ' '.repeat((8 - (Buffer.byteLength(text) % 8)) % 8);
  const body = Buffer.from(text, 'utf8');
  const header = Buffer.alloc(8 + body.length);
  header.writeBigUInt64LE(BigInt(body.length), 0);
  body.copy(header, 8);
  return { header, offsets, dataBytes: offset };
}

/** One safetensors file being written: header first, then each planned tensor exactly once, in any order. */
export class SafetensorsFileWriter {
  readonly bytes: number;
  private readonly fd: number;
  private readonly planned: Map<string, PlannedTensor>;
  private readonly positions = new Map<string, number>();
  private readonly pending: Set<string>;

  constructor(readonly file: string, tensors: readonly PlannedTensor[], metadata: Record<string, string> = { format: 'pt' }) {
    const { header, offsets, dataBytes } = layoutHeader(tensors, metadata);
    this.planned = new Map(tensors.map((t) => [t.name, t]));
    for (const [name, off] of offsets) this.positions.set(name, header.length + off);
    this.pending = new Set(offsets.keys());
    this.bytes = header.length + dataBytes;
    this.fd = fs.openSync(file, 'w');
    try {
      this.writeAt(header, 0);
      // The full size up front: a tensor written last still lands at its place.
      fs.ftruncateSync(this.fd, this.bytes);
    } catch (e) {
      fs.closeSync(this.fd);
      throw e;
    }
  }

  private writeAt(bytes: Uint8Array, position: number): void {
    let done = 0;
    while (done < bytes.byteLength) done += fs.writeSync(this.fd, bytes, done, bytes.byteLength - done, position + done);
  }

  /** Write one planned tensor, converted to its planned dtype (stored bytes of that dtype go as they are). */
  put(name: string, t: WritableTensor): void {
    const plan = this.planned.get(name);
    if (!plan) throw new Error(`safetensors writer: tensor '${name}' is not planned for ${this.file}`);
    if (!this.pending.has(name)) throw new Error(`safetensors writer: tensor '${name}' written twice`);
    if (t.shape.length !== plan.shape.length || t.shape.some((d, i) => d !== plan.shape[i])) {
      throw new Error(`safetensors writer: tensor '${name}' has shape [${t.shape}], planned [${plan.shape}]`);
    }
    this.pending.delete(name);
    let position = this.positions.get(name) as number;
    if ('bytes' in t && t.dtype === plan.dtype) {
      const need = numel(plan.shape) * DTYPE_BYTES[plan.dtype];
      if (t.bytes.byteLength !== need) throw new Error(`safetensors writer: '${name}' [${t.shape}] ${t.dtype} needs ${need} bytes, got ${t.bytes.byteLength}`);
      this.writeAt(t.bytes, position);
      return;
    }
    if (plan.dtype === 'U8' || ('bytes' in t && t.dtype === 'U8')) {
      throw new Error(`safetensors writer: tensor '${name}' cannot change between ${'bytes' in t ? t.dtype : 'fp32'} and ${plan.dtype}`);
    }
    const data = 'bytes' in t ? widenToF32(t) : t.data;
    for (const chunk of encodeChunks(data, plan.dtype)) {
      this.writeAt(chunk, position);
      position += chunk.byteLength;
    }
  }

  /** Close the file; every planned tensor must have been written. */
  close(): void {
    fs.closeSync(this.fd);
    if (this.pending.size > 0) {
      throw new Error(`safetensors writer: ${this.pending.size} planned tensor(s) never written to ${this.file}, e.g. '${[...this.pending][0]}'`);
    }
  }

  /** Close without the completeness check (the caller is failing anyway and removes the file). */
  abandon(): void {
    try {
      fs.closeSync(this.fd);
    } catch {
      // already closed
    }
  }
}

/** Write a whole set of tensors to one file (sorted by name; fp32 ones as `dtype`, stored ones as they are). */
export function writeSafetensors(file: string, tensors: ReadonlyMap<string, WritableTensor>, dtype: 'F32' | 'F16' | 'BF16' = 'F32',
  metadata: Record<string, string> = { format: 'pt' }): void {
  const plan = [...tensors].map(([name, t]) => ({ name, shape: t.shape, dtype: 'bytes' in t ? t.dtype : dtype }));
  const w = new SafetensorsFileWriter(file, plan, metadata);
  try {
    for (const [name, t] of tensors) w.put(name, t);
  } catch (e) {
    w.abandon();
    throw e;
  }
  w.close();
}

/** Bytes of a tensor's data as planned. */
export function plannedBytes(t: PlannedTensor): number {
  return numel(t.shape) * DTYPE_BYTES[t.dtype];
}

/**
 * Group tensors into shards of at most `maxShardBytes` of data each, in the given order (a
 * tensor larger than the limit gets a shard of its own), as HF's splitter does.
 */
export function planShards(tensors: readonly PlannedTensor[], maxShardBytes: number): PlannedTensor[][] {
  const shards: PlannedTensor[][] = [];
  let current: PlannedTensor[] = [];
  let size = 0;
  for (const t of tensors) {
    const b = plannedBytes(t);
    if (current.length > 0 && size + b > maxShardBytes) {
      shards.push(current);
      current = [];
      size = 0;
    }
    current.push(t);
    size += b;
  }
  if (current.length > 0 || shards.length === 0) shards.push(current);
  return shards;
}

export function shardFileName(k: number, of: number): string {
  const pad = (n: number) => String(n).padStart(5, '0');
  return `model-${pad(k + 1)}-of-${pad(of)}.safetensors`;
}

/**
 * A checkpoint's weights in `dir`: one `model.safetensors` when the data fits in `maxShardBytes`,
 * else HF shards and `model.safetensors.index.json` (`metadata.total_size`: the bytes of tensor
 * data, `weight_map`: tensor → shard file). Tensors are put one at a time, in any order.
 */
export class ShardedSafetensorsWriter {
  readonly files: string[];
  private readonly shardOf = new Map<string, SafetensorsFileWriter>();
  private readonly writers: SafetensorsFileWriter[] = [];
  private readonly weightMap: Record<string, string> = {};
  private readonly totalSize: number;

  constructor(private readonly dir: string, tensors: readonly PlannedTensor[], maxShardBytes: number) {
    if (!(maxShardBytes > 0)) throw new Error(`sharded writer: shard size must be positive, got ${maxShardBytes}`);
    const shards = planShards(tensors, maxShardBytes);
    this.files = shards.length === 1 ? [SINGLE_FILE] : shards.map((_, k) => shardFileName(k, shards.length));
    this.totalSize = tensors.reduce((a, t) => a + plannedBytes(t), 0);
    try {
      shards.forEach((planned, k) => {
        const w = new SafetensorsFileWriter(path.join(dir, this.files[k]), planned);
        this.writers.push(w);
        for (const t of planned) {
          this.shardOf.set(t.name, w);
          this.weightMap[t.name] = this.files[k];
        }
      });
    } catch (e) {
      this.abandon();
      throw e;
    }
  }

  put(name: string, t: WritableTensor): void {
    const w = this.shardOf.get(name);
    if (!w) throw new Error(`sharded writer: tensor '${name}' is not planned`);
    w.put(name, t);
  }

  /** Close every shard (all tensors written) and write the index when there are several; returns the file names. */
  finish(): string[] {
    // Every file closed before the first complaint is raised.
    const failures: unknown[] = [];
    for (const w of this.writers) {
      try {
        w.close();
      } catch (e) {
        failures.push(e);
      }
    }
    if (failures.length > 0) throw failures[0];
    if (this.files.length > 1) {
      const sorted = Object.fromEntries(Object.entries(this.weightMap).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
      const index = { metadata: { total_size: this.totalSize }, weight_map: sorted };
      fs.writeFileSync(path.join(this.dir, INDEX_FILE), JSON.stringify(index, null, 2) + '\n');
      return [...this.files, INDEX_FILE];
    }
    return [...this.files];
  }

  abandon(): void {
    for (const w of this.writers) w.abandon();
  }
}
