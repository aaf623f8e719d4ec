/**
 * The byte-level BPE trainer: merges on a corpus counted by hand (with ties), determinism, the
 * vocabulary size, and the written tokenizer.json loading through HfTokenizer with exact round
 * trips.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import {
  BYTE_TO_CHAR, countWords, tokenizerJson, trainBpe, trainBpeFromCounts, writeBpeTokenizer,
} from '../src/tokenizer/bpe-train.ts';
import { HfTokenizer } from '../src/tokenizer/hf.ts';
import { ConfigError } from '../src/util/errors.ts';
import { tmpDir } from './support.ts';

/** Sennrich et al.'s example: low ×5, lower ×2, newest ×6, widest ×3. */
const CLASSIC = new Map([['low', 5], ['lower', 2], ['newest', 6], ['widest', 3]]);

describe('BPE training', () => {
  it('merges the most frequent pair first, ties by lexicographic order (counted by hand)', () => {
    const bpe = trainBpeFromCounts(CLASSIC, { vocabSize: 1000 });
    // Pair counts: e s 9, s t 9, w e 8 (lower 2 + newest 6), l o 7, o w 7, n e 6, e w 6, …
    // 1. (e,s) 9 ties (s,t) 9: 'e' < 's'.       2. (es,t) 9.
    // 3. (l,o) 7 ties (o,w) 7.                   4. (lo,w) 7.
    // 5. newest = n e w est: (n,e) (e,w) (w,est) 6 each; (w,e) is down to 2 → (e,w).
    // 6. (ew,est) 6 ties (n,ew) 6: 'ew' < 'n'.   7. (n,ewest) 6.
    // 8. widest = w i d est: (d,est) (i,d) (w,i) 3 each → (d,est).  9. (i,dest).  10. (w,idest).
    // 11. lower = low e r: (low,e) 2, (e,r) 2 → (e,r).  12. (low,er). Then every pair occurs once.
    assert.deepEqual(bpe.merges, [
      ['e', 's'], ['es', 't'], ['l', 'o'], ['lo', 'w'], ['e', 'w'], ['ew', 'est'], ['n', 'ewest'],
      ['d', 'est'], ['i', 'dest'], ['w', 'idest'], ['e', 'r'], ['low', 'er'],
    ]);
    assert.deepEqual(bpe.mergeCounts, [9, 9, 7, 7, 6, 6, 6, 3, 3, 3, 2, 2]);
    // Special tokens first (LLaMA ids), then the 256 byte characters in code-point order.
    assert.deepEqual(bpe.vocab.slice(0, 4), ['<unk>', '<s>', '</s>', '<pad>']);
    assert.deepEqual(bpe.vocab.slice(4, 260), [...BYTE_TO_CHAR].sort());
    assert.equal(bpe.vocab.length, 260 + 12);
    assert.equal(bpe.vocab[260], 'es');
    assert.equal(bpe.vocab[271], 'lower');
  });

  it('stops at the vocabulary size or below minFrequency (default 2)', () => {
    assert.equal(trainBpeFromCounts(CLASSIC, { vocabSize: 263 }).merges.length, 3);
    assert.deepEqual(trainBpeFromCounts(CLASSIC, { vocabSize: 1000, minFrequency: 3 }).mergeCounts, [9, 9, 7, 7, 6, 6, 6, 3, 3, 3]);
    const withRare = new Map([...CLASSIC, ['xyz', 1]]);
    assert.equal(trainBpeFromCounts(withRare, { vocabSize: 1000 }).merges.length, 12);
    assert.deepEqual(trainBpeFromCounts(withRare, { vocabSize: 1000, minFrequency: 1 }).merges.slice(12), [['x', 'y'], ['xy', 'z']]);
    assert.throws(() => trainBpeFromCounts(CLASSIC, { vocabSize: 259 }), ConfigError);
  });

  it('is deterministic: the order of the counts does not matter', () => {
    const reversed = new Map([...CLASSIC].reverse());
    assert.deepEqual(trainBpeFromCounts(reversed, { vocabSize: 1000 }), trainBpeFromCounts(CLASSIC, { vocabSize: 1000 }));
    const text = ['The cat sat on the mat. The cat ate the rat!', '  Two  spaces\n\nand 42 numbers, 4242.'];
    assert.deepEqual(JSON.stringify(tokenizerJson(trainBpe(text, { vocabSize: 300 }))),
      JSON.stringify(tokenizerJson(trainBpe([...text], { vocabSize: 300 }))));
  });

  it('counts byte-level pre-tokens as the ByteLevel pre-tokenizer splits them', () => {
    const c = countWords(["the cat's hat, the hat", 'é\n\nx']);
    // Spaces attach to the following word as 'Ġ'; é is two bytes; "\n\nx" splits as \n, \n, x.
    assert.deepEqual(Object.fromEntries(c), {
      the: 1, 'Ġcat': 1, "'s": 1, 'Ġhat': 2, ',': 1, 'Ġthe': 1, 'Ã©': 1, 'Ċ': 2, x: 1,
    });
  });
});

describe('trained tokenizer.json through HfTokenizer', () => {
  const corpus = [
    'The newest lower widest low. The newest, the lowest!\n\n"Quoted" text -- with dashes; 1961 and 3.5 %.',
    'Unicode: café, naïve, 日本語, emoji 🙂 — and	tabs  and   runs of spaces.\n',
  ];

  it('loads, round-trips text exactly (seen and unseen), and keeps merged words whole', async () => {
    const dir = tmpDir('bpe');
    try {
      const bpe = trainBpe(corpus, { vocabSize: 320 });
      writeBpeTokenizer(dir, bpe);
      const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
      assert.equal(cfg.bos_token, '<s>');
      assert.equal(cfg.eos_token, '</s>');
      const tok = await HfTokenizer.fromDirectory(dir);
      assert.equal(tok.bosId, 1);
      assert.equal(tok.eosId, 2);
      assert.equal(tok.vocabSize, bpe.vocab.length);
      for (const text of [...corpus, 'Never seen: Zürich 𝔘𝔫𝔦𝔠𝔬𝔡𝔢, ¿qué? \u0000 \r\n end', ' leading space', 'x']) {
        const ids = tok.encode(text);
        assert.equal(tok.decode(ids), text, JSON.stringify(text));
        assert.ok(ids.every((i) => i >= 4 && i < bpe.vocab.length), 'no special or unknown ids');
      }
      // BOS only when asked, and dropped on decode.
      const withBos = tok.encode('The newest', { addBos: true });
      assert.equal(withBos[0], 1);
      assert.equal(tok.decode(withBos), 'The newest');
      // Encoding replays the merges: a frequent training word is one token.
      const idOf = new Map(bpe.vocab.map((t, i) => [t, i]));
      assert.ok(idOf.has('Ġnewest'), 'Ġnewest was merged');
      assert.deepEqual(tok.encode(' newest'), [idOf.get('Ġnewest')]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
