/**
 * Calibration windows: a text file tokenized once (one BOS at the start of the text), windows
 * of `seqlen` tokens at seeded random start offsets, or at explicit offsets replayed from an
 * earlier run. The offsets used are always returned, so every run can be reproduced.
 */
import fs from 'node:fs';
import seedrandom from 'seedrandom';
import type { Tokenizer } from '../tokenizer/types.ts';
import { tokenizeText } from '../data/text.ts';
import { ConfigError, DataError } from '../util/errors.ts';

export interface CalibrationSpec {
  text: string;
  nsamples: number;
  seqlen: number;
  seed?: number;
  offsets?: number[];
}

export interface CalibrationSet {
  windows: number[][];
  offsets: number[];
  protocol: { text: string; tokenizer: string; nsamples: number; seqlen: number; seed: number | null; offsets: number[]; textTokens: number };
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

export function calibrationFromText(tokenizer: Tokenizer, spec: CalibrationSpec): CalibrationSet {
  const tokens = tokenizeText(tokenizer, spec.text);
  const { windows, offsets } = sampleWindows(tokens, spec);
  return {
    windows, offsets,
    protocol: {
      text: spec.text, tokenizer: tokenizer.id, nsamples: windows.length, seqlen: spec.seqlen,
      seed: spec.offsets ? null : spec.seed ?? 0, offsets, textTokens: tokens.length,
    },
  };
}
