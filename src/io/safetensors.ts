/**
 * safetensors reader (header first, each tensor's bytes on demand; F32/F16/BF16, and U8 codes); the
 * writer is in safetensors-writer.ts (re-exported here).
 *
 * Written by hand: the format is an 8-byte header length, a JSON header and raw little-endian
 * data, and no maintained npm package reads it lazily by byte ranges with the validation we
 * want (offsets against file size and each other, shapes against byte counts).
 */
import { CheckpointError } from '../util/errors.ts';
import { readRange, fileSize } from './byte-range.ts';
import { DTYPE_BYTES, isStoredDtype, readAllF32, STORED_DTYPES, type StoredDtype, type TensorRefs } from './stored-tensor.ts';
import { numel, type NamedTensors } from '../model/tensor-data.ts';

export { f32ToF16, f32ToBf16, writeSafetensors } from './safetensors-writer.ts';

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

/** What to do about a damaged file. */
const REDO = 'download or write the file again';

const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

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
        `truncated: tensor '${name}' ends at byte ${dataStart + end} but the file has ${size} bytes (${REDO})`, file);
    }
    if (!isStoredDtype(e.dtype)) {
      throw new CheckpointError(
        `tensor '${name}' has unsupported dtype ${e.dtype} (supported: ${STORED_DTYPES.join(', ')}): save the checkpoint with F32, F16 or BF16 `
          + 'weights (in transformers: model.to(torch.bfloat16).save_pretrained(dir))', file);
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
        `tensors '${p.name}' (data bytes ${p.begin}–${p.end}) and '${q.name}' (${q.begin}–${q.end}) overlap: the header is corrupt (${REDO})`, file);
    }
  }
  return { file, size, dataStart, tensors, metadata };
}

/** Read every tensor of a safetensors file (or those `only` keeps) as fp32. */
export function readSafetensors(file: string, only?: (name: string) => boolean): NamedTensors {
  return readAllF32(readSafetensorsHeader(file).tensors, only);
}
