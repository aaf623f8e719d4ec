/**
 * Text corpora → token streams. A text is tokenized once as one sequence with a single BOS at
 * the very start (the standard WikiText-2 protocol, protocol.md §1.1).
 */
import fs from 'node:fs';
import type { Tokenizer } from '../tokenizer/types.ts';
import { DataError } from '../util/errors.ts';

export function readText(file: string): string {
  if (!fs.existsSync(file)) throw new DataError('text file not found', file);
  return fs.readFileSync(file, 'utf8');
}

export function tokenizeText(tokenizer: Tokenizer, file: string): number[] {
  return tokenizer.encode(readText(file), { addBos: true });
}

/** Start offsets of the non-overlapping windows [i·seqlen, (i+1)·seqlen); the tail is dropped. */
export function windowStarts(numTokens: number, seqlen: number, maxWindows: number | null, file: string): number[] {
  if (!Number.isInteger(seqlen) || seqlen < 2) throw new DataError(`seqlen must be an integer ≥ 2 (got ${seqlen})`, file);
  const count = Math.floor(numTokens / seqlen);
  if (count === 0) {
    throw new DataError(`text has ${numTokens} tokens, shorter than one window of ${seqlen}`, file);
  }
  const n = maxWindows === null ? count : Math.min(count, maxWindows);
  return Array.from({ length: n }, (_, i) => i * seqlen);
}
