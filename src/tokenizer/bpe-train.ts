/**
 * A byte-level BPE trainer that writes a standard Hugging Face `tokenizer.json`.
 *
 * Why written by hand: the official `tokenizers` npm bindings expose `train(files)` with no way to
 * set the vocabulary size or the special tokens, and no other maintained JS library trains BPE
 * (`@huggingface/tokenizers`, installed here, runs tokenizers but cannot train them).
 *
 * The algorithm is the one of HF's `BpeTrainer` with a `ByteLevel` pre-tokenizer:
 * 1. Pre-tokenise every text with the GPT-2 pattern (what `ByteLevel` with `use_regex: true`,
 *    `add_prefix_space: false` does), map each pre-token's UTF-8 bytes to the 256 printable
 *    byte-level characters, and count the distinct words.
 * 2. The vocabulary starts with the special tokens (ids 0..S−1, `<unk>` `<s>` `</s>` `<pad>` by
 *    default: LLaMA's ids 0, 1, 2 for unk/BOS/EOS) and then all 256 byte characters in code-point
 *    order, so any text can be encoded without `<unk>`.
 * 3. Repeatedly merge the most frequent adjacent pair (counts weighted by word frequency), until
 *    the vocabulary has `vocabSize` tokens or no pair occurs `minFrequency` times. Ties are broken
 *    by the lexicographic order of the pair (left token's string, then right token's string;
 *    smaller first), which makes training deterministic. A merge whose result is already in the
 *    vocabulary is recorded but adds no token (as HF does).
 *
 * Efficiency: merges work on word *types* (a few tens of thousands for a million words); pair
 * counts are kept in a map and updated only for the words that contain the merged pair (found
 * through a pair → words index); the best pair comes from a lazy max-heap whose stale entries are
 * re-checked when popped.
 *
 * The written tokenizer: model BPE (`vocab`, `merges` as "a b" strings, no unk token, no dropout),
 * ByteLevel pre-tokenizer and decoder, the special tokens as added tokens, a LLaMA-style
 * post-processor that prepends `<s>` (PruneLab itself never lets the library add specials, see
 * hf.ts), and `tokenizer_config.json` with bos `<s>`, eos `</s>`, unk `<unk>`, pad `<pad>`.
 */
import { BinaryHeap } from '../util/heap.ts';
import fs from 'node:fs';
import path from 'node:path';
import { ConfigError } from '../util/errors.ts';

/** The pre-tokenisation pattern of HF's ByteLevel pre-tokenizer (`use_regex: true`). */
export const BYTE_LEVEL_PATTERN = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

export const DEFAULT_SPECIAL_TOKENS = ['<unk>', '<s>', '</s>', '<pad>'] as const;

/** GPT-2's byte → printable character table (bytes_to_unicode). */
export const BYTE_TO_CHAR: readonly string[] = (() => {
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const out = new Array<string>(256);
  let n = 0;
  for (let b = 0; b < 256; b++) out[b] = String.fromCharCode(printable(b) ? b : 256 + n++);
  return out;
})();

const encoder = new TextEncoder();

/** A pre-token's byte-level string (each UTF-8 byte → one character of BYTE_TO_CHAR). */
export function byteLevel(s: string): string {
  let out = '';
  for (const b of encoder.encode(s)) out += BYTE_TO_CHAR[b];
  return out;
}

/** The pre-tokens of `text` as the ByteLevel pre-tokenizer splits it (raw, not byte-mapped). */
export function preTokenize(text: string): string[] {
  return text.match(BYTE_LEVEL_PATTERN) ?? [];
}

/** Counts of the distinct pre-tokens of `texts`, keyed by their byte-level strings. */
export function countWords(texts: Iterable<string>, into: Map<string, number> = new Map()): Map<string, number> {
  const raw = new Map<string, number>();
  for (const text of texts) {
    for (const w of preTokenize(text)) raw.set(w, (raw.get(w) ?? 0) + 1);
  }
  for (const [w, c] of raw) {
    const b = byteLevel(w);
    into.set(b, (into.get(b) ?? 0) + c);
  }
  return into;
}

export interface BpeTrainOptions {
  /** Total vocabulary size: special tokens + 256 byte characters + merged tokens. */
  vocabSize: number;
  /** Added tokens with the first ids; default `<unk>` `<s>` `</s>` `<pad>`. */
  specialTokens?: readonly string[];
  /** A pair must occur at least this often (weighted by word counts) to be merged; default 2. */
  minFrequency?: number;
}

export interface TrainedBpe {
  /** Token string of every id (special tokens first). */
  vocab: string[];
  /** Merges in rank order, as pairs of token strings. */
  merges: [string, string][];
  specialTokens: string[];
  /** Pair counts at the time of each merge (diagnostics, tests). */
  mergeCounts: number[];
}

/** Max-heap entry: a pair and the count it had when pushed. */
interface HeapEntry {
  count: number;
  a: number;
  b: number;
}

/** Higher count first, then the lexicographically smaller pair (deterministic ties). */
function pairBefore(tokens: string[]): (x: HeapEntry, y: HeapEntry) => boolean {
  return (x, y) => {
    if (x.count !== y.count) return x.count > y.count;
    const xa = tokens[x.a];
    const ya = tokens[y.a];
    if (xa !== ya) return xa < ya;
    return tokens[x.b] < tokens[y.b];
  };
}

/** Pair key: ids below 2^21, so a·2^21 + b stays an exact integer. */
const KEY_SHIFT = 2 ** 21;
const pairKey = (a: number, b: number) => a * KEY_SHIFT + b;

/** Train on word counts (from {@link countWords}). */
export function trainBpeFromCounts(counts: ReadonlyMap<string, number>, options: BpeTrainOptions): TrainedBpe {
  const specialTokens = [...(options.specialTokens ?? DEFAULT_SPECIAL_TOKENS)];
  const minFrequency = options.minFrequency ?? 2;
  const base = specialTokens.length + 256;
  if (!Number.isInteger(options.vocabSize) || options.vocabSize < base) {
    throw new ConfigError(`BPE vocabulary size must be an integer ≥ ${base} (special tokens + 256 bytes), got ${options.vocabSize}`);
  }
  if (options.vocabSize > KEY_SHIFT) throw new ConfigError(`BPE vocabulary size must be at most ${KEY_SHIFT}`);
  if (new Set(specialTokens).size !== specialTokens.length) throw new ConfigError('special tokens must be distinct');

  const vocab: string[] = [...specialTokens];
  const idOf = new Map<string, number>();
  specialTokens.forEach((t, i) => idOf.set(t, i));
  for (const ch of [...BYTE_TO_CHAR].sort()) {
    if (idOf.has(ch)) throw new ConfigError(`special token '${ch}' collides with a byte character`);
    idOf.set(ch, vocab.length);
    vocab.push(ch);
  }

  // Word types in a fixed (sorted) order, as symbol-id sequences.
  const wordTexts = [...counts.keys()].sort();
  const words: number[][] = wordTexts.map((w) => Array.from(w, (ch) => {
    const id = idOf.get(ch);
    if (id === undefined) throw new ConfigError(`word '${w}' holds '${ch}', which is not a byte-level character (use countWords)`);
    return id;
  }));
  const freq = wordTexts.map((w) => counts.get(w) as number);

  const pairCount = new Map<number, number>();
  const where = new Map<number, Set<number>>();
  const addPairs = (w: number, sign: 1 | -1, touched: Map<number, number> | null) => {
    const s = words[w];
    const c = freq[w] * sign;
    for (let i = 0; i + 1 < s.length; i++) {
      const k = pairKey(s[i], s[i + 1]);
      const before = pairCount.get(k) ?? 0;
      if (touched && !touched.has(k)) touched.set(k, before);
      const after = before + c;
      if (after === 0) pairCount.delete(k);
      else pairCount.set(k, after);
      if (sign > 0) {
        let set = where.get(k);
        if (!set) where.set(k, (set = new Set()));
        set.add(w);
      }
    }
  };
  words.forEach((_, w) => addPairs(w, 1, null));

  const heap = new BinaryHeap<HeapEntry>(pairBefore(vocab));
  for (const [k, c] of pairCount) heap.push({ count: c, a: Math.floor(k / KEY_SHIFT), b: k % KEY_SHIFT });

  const merges: [string, string][] = [];
  const mergeCounts: number[] = [];
  while (vocab.length < options.vocabSize) {
    const top = heap.pop();
    if (!top) break;
    const k = pairKey(top.a, top.b);
    const current = pairCount.get(k) ?? 0;
    if (current !== top.count) {
      // Stale: the count fell since this entry was pushed (rises push fresh entries).
      if (current > 0 && current < top.count) heap.push({ count: current, a: top.a, b: top.b });
      continue;
    }
    if (current < minFrequency) break;
    const { a, b } = top;
    const text = vocab[a] + vocab[b];
    let z = idOf.get(text);
    if (z === undefined) {
      z = vocab.length;
      vocab.push(text);
      idOf.set(text, z);
    }
    merges.push([vocab[a], vocab[b]]);
    mergeCounts.push(current);

    const touched = new Map<number, number>();
    for (const w of where.get(k) ?? []) {
      const s = words[w];
      let hit = false;
      for (let i = 0; i + 1 < s.length; i++) if (s[i] === a && s[i + 1] === b) { hit = true; break; }
      if (!hit) continue;
      addPairs(w, -1, touched);
      const merged: number[] = [];
      for (let i = 0; i < s.length; i++) {
        if (i + 1 < s.length && s[i] === a && s[i + 1] === b) {
          merged.push(z);
          i++;
        } else {
          merged.push(s[i]);
        }
      }
      words[w] = merged;
      addPairs(w, 1, touched);
    }
    where.delete(k);
    for (const [tk, before] of touched) {
      const after = pairCount.get(tk) ?? 0;
      if (after > before) heap.push({ count: after, a: Math.floor(tk / KEY_SHIFT), b: tk % KEY_SHIFT });
    }
  }
  return { vocab, merges, specialTokens, mergeCounts };
}

/** Count the words of `texts` and train. */
export function trainBpe(texts: Iterable<string>, options: BpeTrainOptions): TrainedBpe {
  return trainBpeFromCounts(countWords(texts), options);
}

/** The `tokenizer.json` object of a trained tokenizer. */
export function tokenizerJson(bpe: TrainedBpe): Record<string, unknown> {
  const vocab: Record<string, number> = {};
  bpe.vocab.forEach((t, i) => { vocab[t] = i; });
  const bos = bpe.specialTokens.includes('<s>') ? '<s>' : null;
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: bpe.specialTokens.map((content, id) => ({
      id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true,
    })),
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: bos === null ? null : {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [
        { SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } },
        { SpecialToken: { id: bos, type_id: 1 } }, { Sequence: { id: 'B', type_id: 1 } },
      ],
      special_tokens: { [bos]: { id: bos, ids: [bpe.vocab.indexOf(bos)], tokens: [bos] } },
    },
    decoder: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges: bpe.merges.map(([a, b]) => `${a} ${b}`),
    },
  };
}

/** The `tokenizer_config.json` object (special tokens by name, no clean-up of spaces). */
export function tokenizerConfigJson(bpe: TrainedBpe, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const has = (t: string) => (bpe.specialTokens.includes(t) ? t : null);
  return {
    tokenizer_class: 'PreTrainedTokenizerFast',
    bos_token: has('<s>'),
    eos_token: has('</s>'),
    unk_token: has('<unk>'),
    pad_token: has('<pad>'),
    add_bos_token: true,
    add_eos_token: false,
    clean_up_tokenization_spaces: false,
    ...extra,
  };
}

/** Write `tokenizer.json` and `tokenizer_config.json` into `dir` (created if needed). */
export function writeBpeTokenizer(dir: string, bpe: TrainedBpe, extraConfig: Record<string, unknown> = {}): void {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(tokenizerJson(bpe)) + '\n');
  fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify(tokenizerConfigJson(bpe, extraConfig), null, 2) + '\n');
}
