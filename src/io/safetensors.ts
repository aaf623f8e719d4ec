/**
 * safetensors reader (header first, each tensor's bytes on demand; F32/F16/BF16, and U8 codes) and
 * writer (F32/F16, and tensors given as stored bytes).
 *
 * Written by hand: the format is an 8-byte header length, a JSON header and raw little-endian
 * data, and no maintained npm package reads it lazily by byte ranges with the validation we
 * want (offsets against file size and each other, shapes against byte counts).
 */
import fs from 'node:fs';
import { CheckpointError } from '../util/errors.ts';
import { readRange, fileSize } from './byte-range.ts';
import { DTYPE_BYTES, isStoredDtype, readAllF32, STORED_DTYPES, type StoredDtype, type StoredTensor, type TensorRefs } from './stored-tensor.ts';
import { numel, type HostTensor, type NamedTensors } from '../model/tensor-data.ts';

export type SafetensorsDtype = StoredDtype;

/** The format's own bound on the JSON header; a larger length means this is not a safetensors file. */
const MAX_HEADER_BYTES = 100 * 2 ** 20;

export interface SafetensorsHeader {
  file: string;
  /** File size in bytes. */
  size: number;
  /** Absolute position of the data section (8 + header length). */
  dataStart: number;
  /** Tensors in header order; `offset` is absolute in the file. */
  tensors: TensorRefs;
  metadata: Record<string, unknown> | null;
}

const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

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
  let e = exp - 127 + 15;
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

/**
 * Read and validate the header of a safetensors file (no tensor bytes): every entry's dtype,
 * shape and offsets, offsets inside the file and not overlapping, byte counts matching shapes.
 * Positions beyond 2 GiB are fine.
 */
export function readSafetensorsHeader(file: string): SafetensorsHeader {
  const size = fileSize(file);
  if (size < 8) throw new CheckpointError(`truncated: ${size} bytes, less than the 8-byte header length`, file);
  const headerLen = Buffer.from(readRange(file, 0, 8)).readBigUInt64LE(0);
  if (headerLen > BigInt(size - 8)) {
    throw new CheckpointError(`truncated: header declares ${headerLen} bytes but the file has ${size - 8} after the length`, file);
  }
  if (headerLen > BigInt(MAX_HEADER_BYTES)) {
    throw new CheckpointError(`header length ${headerLen} exceeds the format's 100 MiB limit: not a safetensors file`, file);
  }
  const dataStart = 8 + Number(headerLen);
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(readRange(file, 8, dataStart - 8)).toString('utf8'));
  } catch (e) {
    throw new CheckpointError(`header is not valid JSON (${(e as Error).message})`, file);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    throw new CheckpointError('header is not a JSON object of tensors', file);
  }
  const tensors: TensorRefs = new Map();
  let metadata: Record<string, unknown> | null = null;
  const spans: { name: string; begin: number; end: number }[] = [];
  for (const [name, raw] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      metadata = raw as Record<string, unknown>;
      continue;
    }
    const e = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown } | null;
    const shape = e?.shape;
    const offsets = e?.data_offsets;
    if (!e || typeof e.dtype !== 'string' || !Array.isArray(shape) || !shape.every(isCount)
      || !Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount) || offsets[0] > offsets[1]) {
      throw new CheckpointError(
        `tensor '${name}' has a malformed header entry (need dtype, shape of non-negative integers, ` +
          `data_offsets [begin, end] with begin ≤ end): ${JSON.stringify(raw)}`, file);
    }
    const [begin, end] = offsets as [number, number];
    if (dataStart + end > size) {
      throw new CheckpointError(
        `truncated: tensor '${name}' ends at byte ${dataStart + end} but the file has ${size} bytes`, file);
    }
    if (!isStoredDtype(e.dtype)) {
      throw new CheckpointError(
        `tensor '${name}' has unsupported dtype ${e.dtype} (supported: ${STORED_DTYPES.join(', ')})`, file);
    }
    const expected = numel(shape as number[]) * DTYPE_BYTES[e.dtype];
    if (end - begin !== expected) {
      throw new CheckpointError(
        `tensor '${name}' shape [${shape}] ${e.dtype} needs ${expected} bytes but its offsets span ${end - begin}`, file);
    }
    if (end > begin) spans.push({ name, begin, end });
    tensors.set(name, { name, dtype: e.dtype, shape: (shape as number[]).slice(), file, offset: dataStart + begin, byteLength: expected });
  }
  // Overlapping ranges mean a corrupt or hand-edited header: two tensors would share bytes.
  spans.sort((a, b) => a.begin - b.begin || a.end - b.end);
  for (let i = 1; i < spans.length; i++) {
    const [p, q] = [spans[i - 1], spans[i]];
    if (q.begin < p.end) {
      throw new CheckpointError(
        `tensors '${p.name}' (data bytes ${p.begin}–${p.end}) and '${q.name}' (${q.begin}–${q.end}) overlap`, file);
    }
  }
  return { file, size, dataStart, tensors, metadata };
}

/** Read every tensor of a safetensors file (or those `only` keeps) as fp32. */
export function readSafetensors(file: string, only?: (name: string) => boolean): NamedTensors {
  return readAllF32(readSafetensorsHeader(file).tensors, only);
}

/**
 * Write tensors (sorted by name, as the reference writer does): fp32 host tensors in F32 or F16,
 * and tensors given as stored bytes (`StoredTensor`, e.g. U8 codes) as they are.
 */
export function writeSafetensors(file: string, tensors: ReadonlyMap<string, HostTensor | StoredTensor>, dtype: 'F32' | 'F16' = 'F32',
  metadata: Record<string, string> = { format: 'pt' }): void {
  const names = [...tensors.keys()].sort();
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const name of names) {
    const t = tensors.get(name) as HostTensor | StoredTensor;
    const own = 'bytes' in t ? t.dtype : dtype;
    const bytes = numel(t.shape) * DTYPE_BYTES[own];
    if ('bytes' in t && t.bytes.byteLength !== bytes) throw new Error(`writeSafetensors: '${name}' [${t.shape}] ${own} needs ${bytes} bytes, got ${t.bytes.byteLength}`);
    header[name] = { dtype: own, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let headerStr = JSON.stringify(header);
  headerStr += ' '.repeat((8 - (Buffer.byteLength(headerStr) % 8)) % 8);
  const headerBuf = Buffer.from(headerStr, 'utf8');
  const out = Buffer.alloc(8 + headerBuf.length + offset);
  out.writeBigUInt64LE(BigInt(headerBuf.length), 0);
  headerBuf.copy(out, 8);
  let pos = 8 + headerBuf.length;
  for (const name of names) {
    const t = tensors.get(name) as HostTensor | StoredTensor;
    if ('bytes' in t) {
      Buffer.from(t.bytes.buffer, t.bytes.byteOffset, t.bytes.byteLength).copy(out, pos);
      pos += t.bytes.byteLength;
      continue;
    }
    const { data } = t;
    if (dtype === 'F32') {
      Buffer.from(data.buffer, data.byteOffset, data.byteLength).copy(out, pos);
      pos += data.byteLength;
    } else {
      for (let i = 0; i < data.length; i++, pos += 2) out.writeUInt16LE(f32ToF16(data[i]), pos);
    }
  }
  // In pieces: one write call takes at most 2 GiB - 1 bytes (writeFileSync refuses a larger buffer).
  const fd = fs.openSync(file, 'w');
  try {
    for (let done = 0; done < out.length;) done += fs.writeSync(fd, out, done, Math.min(2 ** 30, out.length - done));
  } finally {
    fs.closeSync(fd);
  }
}
