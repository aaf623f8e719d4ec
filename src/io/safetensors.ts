/**
 * safetensors reader (F32/F16/BF16 → fp32) and writer (F32/F16).
 *
 * Written by hand: the format is an 8-byte header length, a JSON header and raw little-endian
 * data, and no maintained npm package decodes F16/BF16 into Float32Array with the validation we
 * want (offsets against file size, shapes against byte counts).
 */
import fs from 'node:fs';
import { CheckpointError } from '../util/errors.ts';
import { numel, type HostTensor, type NamedTensors } from '../model/tensor-data.ts';

export type SafetensorsDtype = 'F32' | 'F16' | 'BF16';
const BYTES: Record<SafetensorsDtype, number> = { F32: 4, F16: 2, BF16: 2 };

interface HeaderEntry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f ? NaN : s * Infinity;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}

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

function decode(dtype: SafetensorsDtype, bytes: Buffer): Float32Array {
  // Copy into an aligned buffer (file offsets need not be 4-aligned); hosts are little-endian.
  const aligned = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
  if (dtype === 'F32') return new Float32Array(aligned);
  const halves = new Uint16Array(aligned);
  const out = new Float32Array(halves.length);
  if (dtype === 'F16') {
    for (let i = 0; i < halves.length; i++) out[i] = f16ToF32(halves[i]);
  } else {
    const u = new Uint32Array(out.buffer);
    for (let i = 0; i < halves.length; i++) u[i] = halves[i] << 16;
  }
  return out;
}

/** Read the header of a safetensors file, validating it against the file size. */
export function readSafetensorsHeader(file: string): { entries: Map<string, HeaderEntry>; dataStart: number; size: number } {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch {
    throw new CheckpointError('file not found or unreadable', file);
  }
  try {
    const size = fs.fstatSync(fd).size;
    if (size < 8) throw new CheckpointError(`truncated: ${size} bytes, less than the 8-byte header length`, file);
    const lenBuf = Buffer.alloc(8);
    fs.readSync(fd, lenBuf, 0, 8, 0);
    const headerLen = Number(lenBuf.readBigUInt64LE(0));
    if (headerLen > size - 8) {
      throw new CheckpointError(`truncated: header declares ${headerLen} bytes but the file has ${size - 8} after the length`, file);
    }
    const headerBuf = Buffer.alloc(headerLen);
    fs.readSync(fd, headerBuf, 0, headerLen, 8);
    let json: Record<string, unknown>;
    try {
      json = JSON.parse(headerBuf.toString('utf8')) as Record<string, unknown>;
    } catch (e) {
      throw new CheckpointError(`header is not valid JSON (${(e as Error).message})`, file);
    }
    const dataStart = 8 + headerLen;
    const entries = new Map<string, HeaderEntry>();
    for (const [name, raw] of Object.entries(json)) {
      if (name === '__metadata__') continue;
      const e = raw as HeaderEntry;
      if (!Array.isArray(e.shape) || !Array.isArray(e.data_offsets) || typeof e.dtype !== 'string') {
        throw new CheckpointError(`tensor '${name}' has a malformed header entry`, file);
      }
      const [begin, end] = e.data_offsets;
      if (dataStart + end > size) {
        throw new CheckpointError(
          `truncated: tensor '${name}' ends at byte ${dataStart + end} but the file has ${size} bytes`, file);
      }
      if (!(e.dtype in BYTES)) {
        throw new CheckpointError(`tensor '${name}' has unsupported dtype ${e.dtype} (supported: F32, F16, BF16)`, file);
      }
      const expected = numel(e.shape) * BYTES[e.dtype as SafetensorsDtype];
      if (end - begin !== expected) {
        throw new CheckpointError(
          `tensor '${name}' shape [${e.shape}] ${e.dtype} needs ${expected} bytes but its offsets span ${end - begin}`, file);
      }
      entries.set(name, e);
    }
    return { entries, dataStart, size };
  } finally {
    fs.closeSync(fd);
  }
}

/** Read every tensor of a safetensors file as fp32. */
export function readSafetensors(file: string, only?: (name: string) => boolean): NamedTensors {
  const { entries, dataStart } = readSafetensorsHeader(file);
  const buf = fs.readFileSync(file);
  const out: NamedTensors = new Map();
  for (const [name, e] of entries) {
    if (only && !only(name)) continue;
    const [begin, end] = e.data_offsets;
    const data = decode(e.dtype as SafetensorsDtype, buf.subarray(dataStart + begin, dataStart + end));
    out.set(name, { shape: e.shape.slice(), data });
  }
  return out;
}

/** Write tensors (sorted by name, as the reference writer does) in F32 or F16. */
export function writeSafetensors(file: string, tensors: NamedTensors, dtype: 'F32' | 'F16' = 'F32',
  metadata: Record<string, string> = { format: 'pt' }): void {
  const names = [...tensors.keys()].sort();
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const name of names) {
    const t = tensors.get(name) as HostTensor;
    const bytes = numel(t.shape) * BYTES[dtype];
    header[name] = { dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
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
    const { data } = tensors.get(name) as HostTensor;
    if (dtype === 'F32') {
      Buffer.from(data.buffer, data.byteOffset, data.byteLength).copy(out, pos);
      pos += data.byteLength;
    } else {
      for (let i = 0; i < data.length; i++, pos += 2) out.writeUInt16LE(f32ToF16(data[i]), pos);
    }
  }
  fs.writeFileSync(file, out);
}
