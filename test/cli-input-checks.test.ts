/**
 * Input that used to be accepted silently and give garbage: a tokenizer that does not fit the
 * model, `--max-windows` that is not a positive integer, windows beyond a LLaMA model's trained
 * context; and messages that now name the real problem.
 */
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { HAVE_SHARED, NO_SHARED_REASON, REPO_ROOT, setupBackend, shared, STORIES_BIN, STORIES_TOK, tmpDir } from './support.ts';
import { runCli } from './cli-support.ts';
import { checkTokenizerMatchesModel, loadTokenizer } from '../src/tokenizer/load.ts';
import { parseHfConfig } from '../src/io/hf-config.ts';
import { CheckpointError, TokenizerError } from '../src/util/errors.ts';

const TEXT = shared('text', 'tinystories-sample.txt');

/** The first `n` records of a llama2.c tokenizer file (int32 max_token_length, then score, length, bytes). */
function truncatedLlama2cTokenizer(file: string, n: number): string {
  const buf = fs.readFileSync(file);
  let off = 4;
  for (let i = 0; i < n; i++) off += 8 + buf.readInt32LE(off + 4);
  const out = path.join(tmpDir('tok'), `tok${n}.bin`);
  fs.writeFileSync(out, buf.subarray(0, off));
  return out;
}

describe('tokenizer and model vocabularies, both ways', { skip: HAVE_SHARED ? false : NO_SHARED_REASON }, () => {
  before(setupBackend);

  it('a llama2.c tokenizer smaller than the model is refused (it gave perplexity 3.9e11, exit 0)', async () => {
    const tok256 = truncatedLlama2cTokenizer(STORIES_TOK, 256);
    assert.equal((await loadTokenizer(tok256)).vocabSize, 256);
    const r = runCli(['eval', 'ppl', '--model', STORIES_BIN, '--tokenizer', tok256, '--text', TEXT, '--seqlen', '64', '--max-windows', '2']);
    assert.equal(r.status, 2, r.stderr);
    assert.equal(r.json?.kind, 'TokenizerError');
    assert.match(String(r.json?.error), /llama2\.c tokenizer .* has 256 tokens but the model's vocabulary has 512; a llama2\.c tokenizer must match the model exactly/);
    assert.equal(r.json?.ppl, undefined);
  });

  it('an HF tokenizer may be smaller than a padded vocabulary: accepted, padding returned', async () => {
    const tok = await loadTokenizer(path.join(REPO_ROOT, 'data/brown-llama'));
    assert.deepEqual(checkTokenizerMatchesModel(tok, tok.vocabSize + 64, 'padded'), { padding: 64 });
    assert.deepEqual(checkTokenizerMatchesModel(tok, tok.vocabSize, 'exact'), { padding: 0 });
    assert.throws(() => checkTokenizerMatchesModel(tok, tok.vocabSize - 1, 'small'), (e: Error) =>
      e instanceof TokenizerError && e.message.includes(`has ${tok.vocabSize} tokens but the model's vocabulary has only ${tok.vocabSize - 1}`));
    // Every id it produces is below its own vocabulary size, hence below the model's.
    const ids = tok.encode(fs.readFileSync(TEXT, 'utf8').slice(0, 5000), { addBos: true });
    assert.ok(Math.max(...ids) < tok.vocabSize);
  });
});

describe('eval ppl arguments', { skip: HAVE_SHARED ? false : NO_SHARED_REASON }, () => {
  for (const k of ['0', '-1', '1.5']) {
    it(`--max-windows ${k} is an error (it printed ppl: null, exit 0)`, () => {
      const r = runCli(['eval', 'ppl', '--model', STORIES_BIN, '--text', TEXT, '--seqlen', '64', '--max-windows', k]);
      assert.equal(r.status, 2, r.stderr);
      assert.match(String(r.json?.error), new RegExp(`--max-windows must be a positive integer.*got ${k.replace('.', '\\.')}`));
      assert.doesNotMatch(r.stderr, /backend wasm/, 'refused before any work');
    });
  }

  it("--seqlen beyond a LLaMA model's context is an error unless --allow-long-context, which the result records", () => {
    const args = ['eval', 'ppl', '--model', STORIES_BIN, '--text', TEXT, '--seqlen', '1024', '--max-windows', '1'];
    const refused = runCli(args);
    assert.equal(refused.status, 2, refused.stderr);
    assert.match(String(refused.json?.error), /--seqlen 1024 exceeds the model's trained context of 512 positions.*--allow-long-context/);
    const allowed = runCli([...args, '--allow-long-context']);
    assert.equal(allowed.status, 0, allowed.stderr);
    const protocol = allowed.json?.protocol as { beyondContext?: boolean; contextLength?: number };
    assert.equal(protocol.beyondContext, true);
    assert.equal(protocol.contextLength, 512);
    // Within the context nothing changes in the protocol.
    const within = runCli(['eval', 'ppl', '--model', STORIES_BIN, '--text', TEXT, '--seqlen', '512', '--max-windows', '1']);
    assert.equal(within.status, 0, within.stderr);
    assert.equal((within.json?.protocol as Record<string, unknown>).beyondContext, undefined);
  });
});

describe('zero-shot arguments, checked before loading anything', () => {
  it('an unknown task name and a --limit that scores nothing are errors', () => {
    const typo = runCli(['eval', 'zeroshot', '--model', 'no-such-model', '--task', 'piqaa']);
    assert.equal(typo.status, 2, typo.stderr);
    assert.match(String(typo.json?.error), /unknown task 'piqaa': expected one of piqa, /);
    const none = runCli(['eval', 'zeroshot', '--model', 'no-such-model', '--task', 'piqa', '--limit', '0']);
    assert.equal(none.status, 2, none.stderr);
    assert.match(String(none.json?.error), /--limit must be a positive integer/);
  });
});

describe('messages', () => {
  it('hidden size not divisible by the head count names both, not head_dim', () => {
    const raw = { model_type: 'llama', vocab_size: 32, hidden_size: 100, num_hidden_layers: 1, num_attention_heads: 3, intermediate_size: 64 };
    assert.throws(() => parseHfConfig(raw, 'config.json'), (e: Error) =>
      e instanceof CheckpointError && /hidden_size 100 is not divisible by num_attention_heads 3/.test(e.message) && !/'head_dim' must be/.test(e.message));
    const opt = { model_type: 'opt', vocab_size: 32, hidden_size: 100, num_hidden_layers: 1, num_attention_heads: 3, ffn_dim: 64, max_position_embeddings: 64 };
    assert.throws(() => parseHfConfig(opt, 'config.json'), /hidden_size 100 is not divisible by num_attention_heads 3/);
    // An explicit head_dim is still taken as given.
    assert.equal(parseHfConfig({ ...raw, head_dim: 32 }, 'config.json').headDim, 32);
  });
});
