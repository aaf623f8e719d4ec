/**
 * HF tokenizer over a hand-written BPE tokenizer.json (LLaMA-style: Metaspace, byte fallback),
 * whose ids are traced by hand below, plus loading and model-directory lookup.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { HfTokenizer } from '../src/tokenizer/hf.ts';
import { findTokenizerForModel, loadTokenizer } from '../src/tokenizer/load.ts';
import { TokenizerError } from '../src/util/errors.ts';

const special = (id: number, content: string) => ({
  id,
  content,
  single_word: false,
  lstrip: false,
  rstrip: false,
  normalized: false,
  special: true,
});

/**
 * Vocabulary: <unk> 0, <s> 1, </s> 2, ▁ 3, a 4, b 5, c 6, ab 7, ▁ab 8, ▁c 9, <0xC3> 10, <0xA9> 11.
 * Merges by rank: (a b) 0, (▁ ab) 1, (▁ c) 2. The post-processor would add <s> (the library's
 * special-token handling), which HfTokenizer must not use.
 */
const TOKENIZER_JSON = {
  version: '1.0',
  added_tokens: [special(0, '<unk>'), special(1, '<s>'), special(2, '</s>')],
  normalizer: null,
  pre_tokenizer: { type: 'Metaspace', replacement: '▁', prepend_scheme: 'first', split: false },
  post_processor: {
    type: 'TemplateProcessing',
    single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
    pair: [{ Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }],
    special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } },
  },
  decoder: {
    type: 'Sequence',
    decoders: [
      { type: 'Replace', pattern: { String: '▁' }, content: ' ' },
      { type: 'ByteFallback' },
      { type: 'Fuse' },
      { type: 'Strip', content: ' ', start: 1, stop: 0 },
    ],
  },
  model: {
    type: 'BPE',
    dropout: null,
    unk_token: '<unk>',
    continuing_subword_prefix: null,
    end_of_word_suffix: null,
    fuse_unk: true,
    byte_fallback: true,
    vocab: { '<unk>': 0, '<s>': 1, '</s>': 2, '▁': 3, a: 4, b: 5, c: 6, ab: 7, '▁ab': 8, '▁c': 9, '<0xC3>': 10, '<0xA9>': 11 },
    merges: ['a b', '▁ ab', '▁ c'],
  },
};

function makeDir(opts: { config?: object | null; name?: string } = {}): string {
  const dir = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'prunelab-hf-')), opts.name ?? 'tiny-bpe');
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(TOKENIZER_JSON));
  const config = opts.config === undefined ? { bos_token: '<s>', eos_token: '</s>', clean_up_tokenization_spaces: false } : opts.config;
  if (config !== null) fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify(config));
  return dir;
}

test('hand-written BPE: ids, BOS, decode', async () => {
  const dir = makeDir();
  const tok = await HfTokenizer.fromDirectory(dir);
  assert.equal(tok.vocabSize, 12);
  assert.equal(tok.bosId, 1);
  assert.equal(tok.eosId, 2);
  const hash = createHash('sha256').update(fs.readFileSync(path.join(dir, 'tokenizer.json'))).digest('hex').slice(0, 12);
  assert.equal(tok.id, `hf:tiny-bpe@${hash}`);

  // "ab c" → Metaspace "▁ab▁c" → [▁ a b ▁ c] → (a b) → [▁ ab ▁ c] → (▁ ab) → [▁ab ▁ c] → (▁ c) → [▁ab ▁c].
  assert.deepEqual(tok.encode('ab c'), [8, 9]);
  // BOS exactly once, and only when asked (the template's <s> is not used).
  assert.deepEqual(tok.encode('ab c', { addBos: true }), [1, 8, 9]);
  // "é" → "▁é": ▁ is in the vocab, é is not → byte fallback C3 A9.
  assert.deepEqual(tok.encode('é'), [3, 10, 11]);
  // "x": no piece and no <0x78> byte token → <unk>.
  assert.deepEqual(tok.encode('x'), [3, 0]);
  assert.deepEqual(tok.encode(''), []);
  assert.deepEqual(tok.encode('', { addBos: true }), [1]);

  assert.equal(tok.decode([8, 9]), 'ab c');
  assert.equal(tok.decode([1, 8, 9, 2]), 'ab c');
  assert.equal(tok.decode([3, 10, 11]), 'é');
  assert.equal(tok.decode([1, 2]), '');
  assert.equal(tok.decode([]), '');
});

test('special tokens as AddedToken objects; no tokenizer_config.json', async () => {
  const objs = await HfTokenizer.fromDirectory(
    makeDir({ config: { bos_token: { __type: 'AddedToken', content: '<s>' }, eos_token: { content: '</s>' } } }),
  );
  assert.equal(objs.bosId, 1);
  assert.equal(objs.eosId, 2);

  const bare = await HfTokenizer.fromDirectory(makeDir({ config: null }));
  assert.equal(bare.bosId, null);
  assert.deepEqual(bare.encode('ab c', { addBos: true }), [8, 9]);

  // Without tokenizer_config.json, the model's config.json supplies the ids.
  const withModelConfig = makeDir({ config: null });
  fs.writeFileSync(path.join(withModelConfig, 'config.json'), JSON.stringify({ bos_token_id: 1, eos_token_id: 2 }));
  const t = await HfTokenizer.fromDirectory(withModelConfig);
  assert.equal(t.bosId, 1);
  assert.deepEqual(t.encode('ab c', { addBos: true }), [1, 8, 9]);
});

test('missing or unparsable tokenizer.json', async () => {
  const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'prunelab-hf-'));
  await assert.rejects(HfTokenizer.fromDirectory(empty), (e: unknown) => {
    assert.ok(e instanceof TokenizerError);
    assert.ok(e.message.includes(path.join(empty, 'tokenizer.json')), e.message);
    return true;
  });
  const garbled = makeDir();
  fs.writeFileSync(path.join(garbled, 'tokenizer.json'), '{"model": ');
  await assert.rejects(HfTokenizer.fromDirectory(garbled), (e: unknown) => {
    assert.ok(e instanceof TokenizerError && e.message.includes(path.join(garbled, 'tokenizer.json')), String(e));
    return true;
  });
  const noModel = makeDir();
  fs.writeFileSync(path.join(noModel, 'tokenizer.json'), JSON.stringify({ added_tokens: [] }));
  await assert.rejects(HfTokenizer.fromDirectory(noModel), TokenizerError);
});

test('loadTokenizer / findTokenizerForModel for HF directories', async () => {
  const dir = makeDir({ name: 'my-model' });
  assert.match((await loadTokenizer(dir)).id, /^hf:my-model@/);
  assert.match((await loadTokenizer(path.join(dir, 'tokenizer.json'))).id, /^hf:my-model@/);
  assert.match((await findTokenizerForModel(dir)).id, /^hf:my-model@/);
  // A file inside the model directory (e.g. the weights) finds the same tokenizer.
  fs.writeFileSync(path.join(dir, 'model.safetensors'), '');
  assert.match((await findTokenizerForModel(path.join(dir, 'model.safetensors'))).id, /^hf:my-model@/);

  const bare = fs.mkdtempSync(path.join(os.tmpdir(), 'prunelab-hf-'));
  await assert.rejects(findTokenizerForModel(bare), (e: unknown) => {
    assert.ok(e instanceof TokenizerError);
    assert.ok(e.message.includes(path.join(bare, 'tokenizer.json')));
    assert.match(e.message, /--tokenizer PATH/);
    return true;
  });
  await assert.rejects(loadTokenizer(bare), TokenizerError);
  // Explicit wins even when the model directory has no tokenizer.
  assert.match((await findTokenizerForModel(bare, dir)).id, /^hf:my-model@/);
});
