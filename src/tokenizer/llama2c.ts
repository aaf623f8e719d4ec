/**
 * The llama2.c tokenizer (`tokenizer.bin` / `tok512.bin`), encoding and decoding exactly as
 * llama2.c's run.c does.
 *
 * File format (little-endian): int32 max_token_length, then vocab_size records of
 * (float32 score, int32 byte length, bytes). The vocab size is not stored in the file.
 *
 * Pieces are arbitrary byte strings (not necessarily valid UTF-8), so internally every piece is
 * held as a "binary string" (one JS char per byte, latin1). Concatenation and lookup then work
 * on bytes exactly as run.c's sprintf/strcmp do.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { BinaryHeap } from '../util/heap.ts';
import { TokenizerError } from '../util/errors.ts';
import type { Tokenizer } from './types.ts';

export const LLAMA2C_BOS = 1;
export const LLAMA2C_EOS = 2;
/** Byte b is token b + 3 (ids 0..2 are <unk>, <s>, </s>). */
const BYTE_OFFSET = 3;
/** run.c starts its best-score search at -1e10 (merges scoring at or below it never apply). */
const MIN_SCORE = -1e10;

const utf8 = new TextEncoder();

function toBinary(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('latin1');
}

export class Llama2cTokenizer implements Tokenizer {
  readonly id: string;
  readonly vocabSize: number;
  readonly bosId = LLAMA2C_BOS;
  readonly eosId = LLAMA2C_EOS;
  readonly maxTokenLength: number;
  /** Pieces as binary strings, by id. */
  private readonly pieces: string[];
  private readonly scores: Float32Array;
  /** Piece → id (the first id on duplicate pieces). */
  private readonly lookup = new Map<string, number>();

  constructor(pieces: Uint8Array[], scores: Float32Array, maxTokenLength: number, id: string) {
    this.pieces = pieces.map(toBinary);
    this.scores = scores;
    this.maxTokenLength = maxTokenLength;
    this.vocabSize = pieces.length;
    this.id = id;
    this.pieces.forEach((p, i) => {
      if (!this.lookup.has(p)) this.lookup.set(p, i);
    });
  }

  /** Load a tokenizer file; `vocabSize` omitted = read records until end of file. */
  static fromFile(file: string, vocabSize?: number): Llama2cTokenizer {
    let buf: Buffer;
    try {
      buf = readFileSync(file);
    } catch (e) {
      throw new TokenizerError(`cannot read llama2.c tokenizer: ${(e as Error).message}`, file);
    }
    return Llama2cTokenizer.fromBuffer(buf, file, vocabSize);
  }

  /** Parse tokenizer bytes; `file` names the source in errors and in `id`. */
  static fromBuffer(buf: Uint8Array, file: string, vocabSize?: number): Llama2cTokenizer {
    const fail = (msg: string): never => {
      throw new TokenizerError(`not a valid llama2.c tokenizer file: ${msg}`, file);
    };
    if (vocabSize !== undefined && !(Number.isInteger(vocabSize) && vocabSize > 0)) {
      fail(`vocab size must be a positive integer, got ${vocabSize}`);
    }
    const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    if (buf.byteLength < 4) fail(`${buf.byteLength} bytes, shorter than the 4-byte header`);
    const maxTokenLength = view.getInt32(0, true);
    if (maxTokenLength <= 0) fail(`max_token_length is ${maxTokenLength}`);

    const pieces: Uint8Array[] = [];
    const scores: number[] = [];
    let off = 4;
    while (vocabSize === undefined ? off < buf.byteLength : pieces.length < vocabSize) {
      const i = pieces.length;
      if (off + 8 > buf.byteLength) {
        fail(`truncated at token ${i} (offset ${off}, file has ${buf.byteLength} bytes)`);
      }
      const score = view.getFloat32(off, true);
      const len = view.getInt32(off + 4, true);
      off += 8;
      if (len < 0 || len > maxTokenLength) {
        fail(`token ${i} at offset ${off - 4} has length ${len} (max_token_length ${maxTokenLength})`);
      }
      if (off + len > buf.byteLength) {
        fail(`truncated in token ${i}: needs ${off + len} bytes, file has ${buf.byteLength}`);
      }
      pieces.push(buf.subarray(off, off + len));
      scores.push(score);
      off += len;
    }
    if (pieces.length <= LLAMA2C_EOS) fail(`only ${pieces.length} tokens (need <unk>, <s>, </s>)`);
    const hash = createHash('sha256').update(buf).digest('hex').slice(0, 12);
    return new Llama2cTokenizer(pieces, Float32Array.from(scores), maxTokenLength, `llama2c:${basename(file)}@${hash}`);
  }

  encode(text: string, options: { addBos?: boolean } = {}): number[] {
    if (text.length === 0) return options.addBos ? [LLAMA2C_BOS] : [];
    const tokens: number[] = [];
    // run.c pushes the " " token as a dummy prefix, then tokenizes the text. Since a lone
    // " " is itself one code point, tokenizing " " + text gives the same sequence (and the
    // same byte fallback should " " be missing from the vocab, where run.c would push -1).
    const bytes = utf8.encode(' ' + text);
    // Group bytes like run.c: a start byte plus up to 3 following continuation bytes.
    let start = 0;
    for (let i = 0; i < bytes.length; i++) {
      const next = i + 1 < bytes.length ? bytes[i + 1] : 0;
      if ((next & 0xc0) === 0x80 && i + 1 - start < 4) continue;
      const chunk = bytes.subarray(start, i + 1);
      const id = this.lookup.get(String.fromCharCode(...chunk));
      if (id !== undefined) tokens.push(id);
      else for (const b of chunk) tokens.push(this.byteToken(b));
      start = i + 1;
    }
    const merged = this.merge(tokens);
    // run.c puts BOS in the list before merging; with llama2.c's vocabularies BOS ("\n<s>\n")
    // never concatenates into a vocab entry, so prepending afterwards gives the same ids.
    if (options.addBos) merged.unshift(LLAMA2C_BOS);
    return merged;
  }

  /**
   * run.c's merge loop: while some adjacent pair concatenates to a vocab piece scoring above
   * -1e10, merge the best-scoring pair (the leftmost one on ties, as run.c's strict `>` scan
   * gives). run.c rescans the whole list per merge (quadratic); this keeps the candidate pairs
   * in a heap ordered by (score desc, position asc) over a linked list, which picks the same
   * pair at every step, so long texts (whole evaluation sets) tokenize in n log n.
   */
  private merge(tokens: number[]): number[] {
    const n = tokens.length;
    const ids = Int32Array.from(tokens);
    const next = new Int32Array(n).map((_, i) => (i + 1 < n ? i + 1 : -1));
    const prev = new Int32Array(n).map((_, i) => i - 1);
    // A node's version changes whenever its token changes or it dies; heap entries carry the
    // versions they were made with, so stale ones are recognised and dropped when popped.
    const version = new Int32Array(n);
    // Highest score first; on ties the leftmost pair, as run.c's strict `>` scan picks.
    const heap = new BinaryHeap<PairEntry>((a, b) => a.score > b.score || (a.score === b.score && a.left < b.left));
    const offer = (left: number): void => {
      const right = next[left];
      if (left < 0 || right < 0) return;
      const id = this.lookup.get(this.pieces[ids[left]] + this.pieces[ids[right]]);
      if (id === undefined || !(this.scores[id] > MIN_SCORE)) return;
      heap.push({ score: this.scores[id], left, right, id, vl: version[left], vr: version[right] });
    };
    for (let i = 0; i + 1 < n; i++) offer(i);
    for (let e = heap.pop(); e; e = heap.pop()) {
      if (version[e.left] !== e.vl || version[e.right] !== e.vr) continue;
      // Merge right into left; left keeps its position (list order = original index order).
      ids[e.left] = e.id;
      version[e.left]++;
      version[e.right] = -1;
      next[e.left] = next[e.right];
      if (next[e.right] >= 0) prev[next[e.right]] = e.left;
      offer(prev[e.left]);
      offer(e.left);
    }
    const out: number[] = [];
    for (let i = n > 0 ? 0 : -1; i >= 0; i = next[i]) out.push(ids[i]);
    return out;
  }

  private byteToken(b: number): number {
    const id = b + BYTE_OFFSET;
    if (id >= this.vocabSize) {
      throw new TokenizerError(
        `byte fallback needs token ${id} for byte 0x${b.toString(16)}, but the vocabulary has ${this.vocabSize} tokens`,
        this.id,
      );
    }
    return id;
  }

  decode(ids: readonly number[]): string {
    const out: number[] = [];
    // The first piece is treated as following BOS, as SentencePiece does: it strips the space
    // that encode's dummy prefix added, so decode(encode(s)) === s with or without BOS.
    let prev = LLAMA2C_BOS;
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
        throw new TokenizerError(`token id ${id} is outside the vocabulary (size ${this.vocabSize})`, this.id);
      }
      if (id > LLAMA2C_EOS) {
        let piece = this.pieces[id];
        if (prev === LLAMA2C_BOS && piece.startsWith(' ')) piece = piece.slice(1);
        // run.c: sscanf(piece, "<0x%02hhX>") turns byte pieces into the raw byte.
        // sscanf reports a conversion once the hex digits are read, whatever follows them.
        const m = /^<0x([0-9A-Fa-f]{1,2})/.exec(piece);
        if (m) out.push(parseInt(m[1], 16));
        else for (let k = 0; k < piece.length; k++) out.push(piece.charCodeAt(k));
      }
      prev = id;
    }
    return Buffer.from(out).toString('utf8');
  }

  /** The raw piece bytes of a token id (for inspection and tests). */
  piece(id: number): Uint8Array {
    return Buffer.from(this.pieces[id], 'latin1');
  }

  score(id: number): number {
    return this.scores[id];
  }
}

interface PairEntry {
  score: number;
  /** Node indices of the pair; `left` is also its position for tie-breaking. */
  left: number;
  right: number;
  /** The merged token. */
  id: number;
  vl: number;
  vr: number;
}

/** Binary max-heap of merge candidates: higher score first, then smaller position. */
