/**
 * llama2.c tokenizer: hand-traced merges on a tiny hand-written vocabulary, the real tok512.bin,
 * and finding the tokenizer beside a llama2.c checkpoint.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { Llama2cTokenizer } from '../src/tokenizer/llama2c.ts';
import { checkTokenizerMatchesModel, findTokenizerForModel, findTokenizerPath, loadTokenizer } from '../src/tokenizer/load.ts';
import { TokenizerError } from '../src/util/errors.ts';
import { HAVE_SHARED, NO_SHARED_REASON, SHARED_DATA, STORIES_TOK, tmpDir } from './support.ts';

const TOK512 = STORIES_TOK;
const HAVE_TOK512 = HAVE_SHARED;
const SKIP = NO_SHARED_REASON;
const DATA = SHARED_DATA;
const tmp = (): string => tmpDir('tok');

/** Serialise a llama2.c tokenizer file from (piece, score) records. */
function tokBin(records: [string, number][]): Buffer {
  const parts: Buffer[] = [];
  const head = Buffer.alloc(4);
  head.writeInt32LE(Math.max(...records.map(([p]) => Buffer.byteLength(p))));
  parts.push(head);
  for (const [piece, score] of records) {
    const r = Buffer.alloc(8);
    r.writeFloatLE(score, 0);
    r.writeInt32LE(Buffer.byteLength(piece), 4);
    parts.push(r, Buffer.from(piece, 'utf8'));
  }
  return Buffer.concat(parts);
}

/**
 * The llama2.c layout (0 <unk>, 1 <s>, 2 </s>, 3..258 byte tokens) plus:
 * 259 " " -10, 260 "a" -10, 261 "b" -10, 262 "ab" -1, 263 "ba" -1, 264 " a" -5, 265 " ab" -3,
 * 266 "bb" -2e10 (at or below run.c's -1e10 starting score: never merged).
 */
function tinyRecords(): [string, number][] {
  const r: [string, number][] = [['<unk>', 0], ['\n<s>\n', 0], ['\n</s>\n', 0]];
  for (let b = 0; b < 256; b++) r.push([`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`, 0]);
  r.push([' ', -10], ['a', -10], ['b', -10], ['ab', -1], ['ba', -1], [' a', -5], [' ab', -3], ['bb', -2e10]);
  return r;
}

function writeTiny(dir: string, name = 'tiny.bin'): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, tokBin(tinyRecords()));
  return file;
}

test('tiny vocab: hand-traced encodes', () => {
  const tok = Llama2cTokenizer.fromFile(writeTiny(tmp()));
  assert.equal(tok.vocabSize, 267);
  assert.equal(tok.bosId, 1);
  assert.equal(tok.eosId, 2);
  // Empty text: no dummy prefix.
  assert.deepEqual(tok.encode(''), []);
  assert.deepEqual(tok.encode('', { addBos: true }), [1]);
  // [" ", a] → " a".
  assert.deepEqual(tok.encode('a'), [264]);
  assert.deepEqual(tok.encode('a', { addBos: true }), [1, 264]);
  // [" ", a, b]: "ab" (-1) beats " a" (-5) although it is further right; then " ab" (-3).
  assert.deepEqual(tok.encode('ab'), [265]);
  // [" ", a, b, a]: "ab" and "ba" tie at -1 and the first one wins → [" ", ab, a] → [" ab", a].
  // (Last-wins would give [" ", a, ba] → [" a", ba] = [264, 263].)
  assert.deepEqual(tok.encode('aba'), [265, 260]);
  // 'é' is not in the vocabulary: its UTF-8 bytes C3 A9 become byte tokens 0xC3+3, 0xA9+3.
  assert.deepEqual(tok.encode('é'), [259, 198, 172]);
  assert.deepEqual(tok.encode('aé'), [264, 198, 172]);
  // 4-byte code point (U+1F600 = F0 9F 98 80) → four byte tokens.
  assert.deepEqual(tok.encode('😀'), [259, 0xf0 + 3, 0x9f + 3, 0x98 + 3, 0x80 + 3]);
  // "bb" scores -2e10, not above run.c's initial best score of -1e10: no merge.
  assert.deepEqual(tok.encode('bb'), [259, 261, 261]);
});

test('tiny vocab: decode as run.c does', () => {
  const tok = Llama2cTokenizer.fromFile(writeTiny(tmp()));
  assert.equal(tok.decode([265, 260]), 'aba');
  assert.equal(tok.decode([1, 265, 260, 2]), 'aba');
  assert.equal(tok.decode([259, 198, 172]), 'é');
  // A leading space is kept unless the piece follows BOS (or starts the sequence).
  assert.equal(tok.decode([260, 264]), 'a a');
  assert.equal(tok.decode([260, 1, 264]), 'aa');
  assert.equal(tok.decode([0, 260, 2]), 'a');
  assert.equal(tok.decode([0x41 + 3]), 'A');
  assert.equal(tok.decode([]), '');
  assert.throws(() => tok.decode([267]), TokenizerError);
  for (const s of ['a', 'ab', 'aba', 'é', 'bb', 'b a ab ba é 😀']) assert.equal(tok.decode(tok.encode(s)), s);
});

test('tiny vocab: explicit vocab size, id, garbled files', () => {
  const dir = tmp();
  const file = writeTiny(dir);
  const bytes = fs.readFileSync(file);
  const hash = createHash('sha256').update(bytes).digest('hex').slice(0, 12);
  assert.equal(Llama2cTokenizer.fromFile(file).id, `llama2c:tiny.bin@${hash}`);

  // Only the first 262 records: "ab" (262) and later pieces do not exist, so no merges.
  const small = Llama2cTokenizer.fromFile(file, 262);
  assert.equal(small.vocabSize, 262);
  assert.deepEqual(small.encode('ab'), [259, 260, 261]);

  const bad = (name: string, data: Buffer, vocabSize?: number): void => {
    const f = path.join(dir, name);
    fs.writeFileSync(f, data);
    assert.throws(
      () => Llama2cTokenizer.fromFile(f, vocabSize),
      (e: unknown) => e instanceof TokenizerError && e.message.includes(f),
      name,
    );
  };
  bad('cut-in-record.bin', bytes.subarray(0, bytes.length - 2)); // last piece lacks 1 of its 2 bytes
  bad('short-header.bin', bytes.subarray(0, 3));
  bad('too-few.bin', bytes, 300); // the file holds 267 records
  const negLen = Buffer.from(bytes);
  negLen.writeInt32LE(-5, 4 + 4); // first record's length
  bad('neg-length.bin', negLen);
  assert.throws(() => Llama2cTokenizer.fromFile(path.join(dir, 'nope.bin')), TokenizerError);
});

test('tok512.bin: hand-traced ids, round trips, BOS', (t) => {
  if (!HAVE_TOK512) return t.skip(SKIP);
  const tok = Llama2cTokenizer.fromFile(TOK512);
  assert.equal(tok.vocabSize, 512);
  // sha256 prefix from the data README.
  assert.equal(tok.id, 'llama2c:tok512.bin@037cb335abb2');
  // Pieces/scores in tok512.bin: " " 410, "a" 412, "t" 413, "h" 415, "e" 411,
  // " a" 261 (-2), " t" 259 (-0), "he" 260 (-1), " th" 308 (-49), " the" 265 (-6).
  assert.deepEqual(tok.encode('a'), [261]);
  // [" ", t, h, e] → " t" (-0 beats "he" -1) → [" t", h, e] → "he" (-1 beats " th" -49) → " the".
  assert.deepEqual(tok.encode('the'), [265]);
  // 'ü' (C3 BC) has no piece: byte tokens 198, 191 after the " " token.
  assert.deepEqual(tok.encode('ü'), [410, 198, 191]);
  assert.equal(tok.decode([1, 410, 198, 191, 2]), 'ü');

  const golden = 'Once upon a time, there was a little girl named Lily. She loved to play outside in the park.';
  const ids = tok.encode(golden);
  assert.equal(tok.decode(ids), golden);
  assert.equal(ids[0], tok.encode('Once')[0]);
  const withBos = tok.encode(golden, { addBos: true });
  assert.deepEqual(withBos, [1, ...ids]);
  assert.equal(tok.decode(withBos), golden);

  for (const s of ['Lily said: “Héllo, wörld!” — 中文 😀 ñ™…', 'tab\tnew\nline  two  spaces', ' leading space']) {
    assert.equal(tok.decode(tok.encode(s)), s, s);
    assert.ok(tok.encode(s).every((id) => id >= 3 && id < 512));
  }
});

test('tok512.bin: a whole text file round-trips', (t) => {
  const file = path.join(DATA, 'text/tinystories-sample.txt');
  if (!HAVE_TOK512 || !fs.existsSync(file)) return t.skip(`…/shared/data not found: ${TOK512} or ${file} is missing`);
  const tok = Llama2cTokenizer.fromFile(TOK512);
  const text = fs.readFileSync(file, 'utf8');
  const ids = tok.encode(text);
  assert.ok(ids.length > text.length / 8 && ids.length < text.length);
  assert.equal(tok.decode(ids), text);
});

test('findTokenizerForModel / loadTokenizer for llama2.c checkpoints', async () => {
  const dir = tmp();
  const model = path.join(dir, 'model.bin');
  fs.writeFileSync(model, Buffer.alloc(28));

  // Nothing beside the model: the error says where it looked and how to set it.
  await assert.rejects(findTokenizerForModel(model), (e: unknown) => {
    assert.ok(e instanceof TokenizerError);
    assert.match(e.message, /tokenizer\.bin/);
    assert.match(e.message, /tok\*\.bin/);
    assert.match(e.message, /--tokenizer PATH/);
    return true;
  });
  assert.equal(await findTokenizerPath(model), null);

  writeTiny(dir, 'tok267.bin');
  assert.match((await findTokenizerForModel(model)).id, /^llama2c:tok267\.bin@/);
  assert.equal(await findTokenizerPath(model), path.join(dir, 'tok267.bin'));
  // A second tok*.bin is ambiguous...
  writeTiny(dir, 'tok999.bin');
  await assert.rejects(findTokenizerForModel(model), /several tokenizers.*--tokenizer PATH/);
  // ...unless tokenizer.bin is there, which comes first.
  writeTiny(dir, 'tokenizer.bin');
  assert.match((await findTokenizerForModel(model)).id, /^llama2c:tokenizer\.bin@/);
  assert.equal(await findTokenizerPath(model), path.join(dir, 'tokenizer.bin'));
  // An explicit path wins.
  const other = writeTiny(tmp(), 'explicit.bin');
  assert.match((await findTokenizerForModel(model, other)).id, /^llama2c:explicit\.bin@/);

  assert.match((await loadTokenizer(other)).id, /^llama2c:explicit\.bin@/);
  await assert.rejects(loadTokenizer(path.join(dir, 'missing.bin')), TokenizerError);
  await assert.rejects(loadTokenizer(path.join(dir, 'model.txt')), TokenizerError);
});

test('checkTokenizerMatchesModel', () => {
  const tok = Llama2cTokenizer.fromFile(writeTiny(tmp()));
  assert.deepEqual(checkTokenizerMatchesModel(tok, 267, 'm.bin'), { padding: 0 });
  // A llama2.c file stores no vocabulary size: a shorter one is another tokenizer, not padding (issue 14).
  assert.throws(
    () => checkTokenizerMatchesModel(tok, 320, 'm.bin'),
    (e: unknown) => e instanceof TokenizerError && /has 267 tokens but the model's vocabulary has 320; .*must match the model exactly/.test(e.message),
  );
  assert.throws(
    () => checkTokenizerMatchesModel(tok, 256, 'm.bin'),
    (e: unknown) => e instanceof TokenizerError && /267/.test(e.message) && /256/.test(e.message) && /m\.bin/.test(e.message),
  );
});
