/**
 * Positioned reads of one byte range of a file. Checkpoints are read tensor by tensor this way,
 * never whole (`readFileSync` refuses files over 2 GiB and would hold every weight at once).
 * Positions are plain numbers: exact up to 2^53 bytes.
 */
import fs from 'node:fs';
import { CheckpointError } from '../util/errors.ts';

/** One `readSync` call reads at most 2^31 - 1 bytes; stay well below. */
const CHUNK = 1 << 30;

/**
 * Fill `into` with the bytes of `file` from `position` on. Throws a CheckpointError naming the
 * file when it is unreadable or ends early (a file that shrank after its header was read).
 */
export function readRangeInto(file: string, position: number, into: Uint8Array): void {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (e) {
    throw new CheckpointError(`cannot open: ${(e as Error).message}`, file);
  }
  try {
    let done = 0;
    while (done < into.byteLength) {
      let n: number;
      try {
        n = fs.readSync(fd, into, done, Math.min(CHUNK, into.byteLength - done), position + done);
      } catch (e) {
        throw new CheckpointError(`cannot read bytes ${position + done}–${position + into.byteLength}: ${(e as Error).message}`, file);
      }
      if (n === 0) {
        throw new CheckpointError(
          `ends at byte ${position + done}, before the ${into.byteLength} bytes expected from byte ${position}`, file);
      }
      done += n;
    }
  } finally {
    fs.closeSync(fd);
  }
}

/** The `length` bytes of `file` from `position` on, in a fresh (unpooled, aligned) buffer. */
export function readRange(file: string, position: number, length: number): Uint8Array {
  // Unpooled, so byteOffset is 0 and typed views of it are aligned; not zero-filled (all overwritten).
  const out = Buffer.allocUnsafeSlow(length);
  readRangeInto(file, position, out);
  return out;
}

/** Size of a file in bytes, or a CheckpointError naming it. */
export function fileSize(file: string): number {
  try {
    return fs.statSync(file).size;
  } catch {
    throw new CheckpointError('file not found or unreadable', file);
  }
}
