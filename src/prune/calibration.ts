/**
 * Calibration windows, two ways (`sampling`):
 * - `stream` (default for text files): the corpus tokenized once (one BOS at the start of the
 *   text; a JSON/JSONL corpus's documents joined by blank lines), windows of `seqlen` tokens at
 *   seeded random start offsets, or at explicit offsets replayed from an earlier run;
 * - `documents` (default for JSON/JSONL corpora): one window from one document, as the C4 loaders
 *   of Wanda and SparseGPT take them — pick a document at random, draw again while it has no more
 *   than `seqlen` tokens (BOS included), take a random window of it.
 * What was used (offsets; for documents also each window's row) is always returned, so every run
 * can be reproduced.
 */
import fs from 'node:fs';
import seedrandom from 'seedrandom';
import type { Tokenizer } from '../tokenizer/types.ts';
import { tokenizeText } from '../data/text.ts';
import { isJsonCorpus, readDocuments, type Document } from '../data/documents.ts';
import { ConfigError, DataError } from '../util/errors.ts';

export const CALIB_SAMPLINGS = ['stream', 'documents'] as const;
export type CalibSampling = (typeof CALIB_SAMPLINGS)[number];

export interface CalibrationSpec {
  text: string;
  nsamples: number;
  seqlen: number;
  seed?: number;
  offsets?: number[];
  /** Default: `documents` for a .json/.jsonl corpus, else `stream`. */
  sampling?: CalibSampling;
  /** The document field of a JSON/JSONL corpus (default `text`, as C4's). */
  field?: string;
}

export interface CalibrationProtocol {
  text: string; tokenizer: string; nsamples: number; seqlen: number; seed: number | null; offsets: number[];
  /** Tokens of the stream (stream sampling). */
  textTokens?: number;
  /** Recorded when it is not the text-stream default, so text-file reports read as before. */
  sampling?: CalibSampling;
  field?: string;
  /** Documents sampling: the corpus size, and per window the row (1-based) its document is at; `offsets` are within those documents. */
  documents?: number;
  rows?: number[];
}

export interface CalibrationSet {
  windows: number[][];
  offsets: number[];
  protocol: CalibrationProtocol;
}

/** The sampling a corpus gets unless one is asked for. */
export function defaultSampling(file: string): CalibSampling {
  return isJsonCorpus(file) ? 'documents' : 'stream';
}

/** Parse `--calib-offsets`: a comma list or a file holding one (commas or whitespace). */
export function parseOffsets(value: string): number[] {
  const text = fs.existsSync(value) ? fs.readFileSync(value, 'utf8') : value;
  const parts = text.split(/[\s,]+/).filter((s) => s.length > 0);
  const out = parts.map((p) => Number(p));
  const bad = parts.find((p, i) => !Number.isInteger(out[i]) || out[i] < 0);
  if (bad !== undefined || out.length === 0) {
    throw new ConfigError(`--calib-offsets must be non-negative integers separated by commas (bad entry: '${bad ?? ''}')`);
  }
  return out;
}

export function sampleWindows(tokens: readonly number[], spec: CalibrationSpec): { windows: number[][]; offsets: number[] } {
  const { seqlen } = spec;
  if (!Number.isInteger(seqlen) || seqlen < 2) throw new ConfigError(`calibration seqlen must be an integer ≥ 2 (got ${seqlen})`);
  if (tokens.length < seqlen) {
    throw new DataError(`calibration text has ${tokens.length} tokens, shorter than one window of ${seqlen}`, spec.text);
  }
  let offsets: number[];
  if (spec.offsets) {
    offsets = spec.offsets;
    const bad = offsets.find((o) => o + seqlen > tokens.length);
    if (bad !== undefined) throw new DataError(`calibration offset ${bad} + seqlen ${seqlen} runs past the ${tokens.length} tokens`, spec.text);
  } else {
    if (!Number.isInteger(spec.nsamples) || spec.nsamples < 1) throw new ConfigError(`nsamples must be a positive integer (got ${spec.nsamples})`);
    // Start i drawn uniformly from [0, len − seqlen], as the reference loaders' randint does.
    const rng = seedrandom(`prunelab-calibration:${spec.seed ?? 0}`);
    const span = tokens.length - seqlen + 1;
    offsets = Array.from({ length: spec.nsamples }, () => Math.floor(rng() * span));
  }
  return { windows: offsets.map((o) => tokens.slice(o, o + seqlen)), offsets };
}

/**
 * One window per sample from one document (Wanda's / SparseGPT's `get_c4`): a document drawn
 * uniformly, drawn again while it has ≤ seqlen tokens, then a start drawn uniformly from
 * [0, len − seqlen − 1] (`randint(0, len − seqlen − 1)`). Documents are tokenized when first drawn.
 */
export function sampleDocumentWindows(tokenizer: Tokenizer, docs: readonly Document[], spec: CalibrationSpec): { windows: number[][]; offsets: number[]; rows: number[] } {
  const { seqlen } = spec;
  if (!Number.isInteger(seqlen) || seqlen < 2) throw new ConfigError(`calibration seqlen must be an integer ≥ 2 (got ${seqlen})`);
  if (!Number.isInteger(spec.nsamples) || spec.nsamples < 1) throw new ConfigError(`nsamples must be a positive integer (got ${spec.nsamples})`);
  const rng = seedrandom(`prunelab-calibration-documents:${spec.seed ?? 0}`);
  const tokens = new Map<number, number[]>();
  let tooShort = 0;
  let longest = { tokens: 0, where: '' };
  const windows: number[][] = [];
  const offsets: number[] = [];
  const rows: number[] = [];
  for (let k = 0; k < spec.nsamples; k++) {
    for (;;) {
      const i = Math.floor(rng() * docs.length);
      let t = tokens.get(i);
      if (!t) {
        t = tokenizer.encode(docs[i].text, { addBos: true });
        tokens.set(i, t);
        if (t.length <= seqlen) tooShort++;
        if (t.length > longest.tokens) longest = { tokens: t.length, where: docs[i].where };
      }
      if (t.length > seqlen) {
        const start = Math.floor(rng() * (t.length - seqlen));
        windows.push(t.slice(start, start + seqlen));
        offsets.push(start);
        rows.push(i + 1);
        break;
      }
      // Every document drawn at least once and none long enough: the loop would never end.
      if (tooShort === docs.length) {
        throw new DataError(`no document has more than ${seqlen} tokens (the longest, ${longest.where}, has ${longest.tokens}); `
          + 'lower the calibration seqlen, or use stream sampling', spec.text);
      }
    }
  }
  return { windows, offsets, rows };
}

export function calibrationFromText(tokenizer: Tokenizer, spec: CalibrationSpec): CalibrationSet {
  const sampling = spec.sampling ?? defaultSampling(spec.text);
  const json = isJsonCorpus(spec.text);
  const field = spec.field ?? 'text';
  if (!json && sampling === 'documents') {
    throw new ConfigError(`documents sampling needs a JSON or JSON Lines corpus (.json/.jsonl) with a '${field}' field per document; ${spec.text} is a text file (use stream sampling)`);
  }
  if (!json && spec.field !== undefined) throw new ConfigError(`a calibration field applies to JSON/JSONL corpora; ${spec.text} is a text file`);
  const base = { text: spec.text, tokenizer: tokenizer.id };
  const docs = json ? readDocuments(spec.text, field) : null;
  if (docs && sampling === 'documents') {
    if (spec.offsets) throw new ConfigError('explicit offsets replay stream windows; documents sampling is reproduced by its seed (reports record each window\'s row and offset)');
    const { windows, offsets, rows } = sampleDocumentWindows(tokenizer, docs, spec);
    return {
      windows, offsets,
      protocol: { ...base, nsamples: windows.length, seqlen: spec.seqlen, seed: spec.seed ?? 0, offsets, sampling, field, documents: docs.length, rows },
    };
  }
  // A corpus of documents as one stream: their texts joined by blank lines, one BOS at the start.
  const tokens = docs ? tokenizer.encode(docs.map((d) => d.text).join('\n\n'), { addBos: true }) : tokenizeText(tokenizer, spec.text);
  const { windows, offsets } = sampleWindows(tokens, spec);
  return {
    windows, offsets,
    protocol: {
      ...base, nsamples: windows.length, seqlen: spec.seqlen, seed: spec.offsets ? null : spec.seed ?? 0, offsets, textTokens: tokens.length,
      ...(docs ? { sampling, field, documents: docs.length } : {}),
    },
  };
}
