/**
 * Bad checkpoints and inputs get clear errors that name the file and the problem.
 */
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { HAVE_SHARED, NO_SHARED_REASON, setupBackend, shared, tmpDir, STORIES_BIN } from './support.ts';
import { loadModel } from '../src/io/load-model.ts';
import { readSafetensors, writeSafetensors } from '../src/io/safetensors.ts';
import { findTokenizerForModel, checkTokenizerMatchesModel, loadTokenizer } from '../src/tokenizer/load.ts';
import { perplexityOfText } from '../src/eval/perplexity.ts';
import { CheckpointError, DataError, TokenizerError } from '../src/util/errors.ts';

function copyFixture(name: string): string {
  const dir = tmpDir(name);
  for (const f of fs.readdirSync(shared('golden', name))) fs.copyFileSync(shared('golden', name, f), path.join(dir, f));
  fs.chmodSync(dir, 0o755);
  for (const f of fs.readdirSync(dir)) fs.chmodSync(path.join(dir, f), 0o644);
  return dir;
}

function rejects(fn: () => unknown, kind: new (...a: never[]) => Error, ...fragments: string[]): void {
  assert.throws(fn, (e: Error) => {
    assert.ok(e instanceof kind, `expected ${kind.name}, got ${e.name}: ${e.message}`);
    for (const f of fragments) assert.ok(e.message.includes(f), `message ${JSON.stringify(e.message)} lacks ${JSON.stringify(f)}`);
    return true;
  });
}

describe('checkpoint and input errors', { skip: HAVE_SHARED ? false : NO_SHARED_REASON }, () => {
  before(setupBackend);

  it('truncated safetensors', () => {
    const dir = copyFixture('llama-tiny');
    const file = path.join(dir, 'model.safetensors');
    const buf = fs.readFileSync(file);
    fs.writeFileSync(file, buf.subarray(0, buf.length - 100));
    rejects(() => loadModel(dir), CheckpointError, 'model.safetensors', 'truncated');
  });

  it('header/shape mismatch between the file and config.json', () => {
    const dir = copyFixture('llama-tiny');
    const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
    cfg.intermediate_size = 96;
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(cfg));
    rejects(() => loadModel(dir), CheckpointError, dir, 'gate_proj.weight', '[80,48]', '[96,48]');
  });

  it('header whose offsets disagree with the dtype and shape', () => {
    const dir = copyFixture('llama-tiny');
    const file = path.join(dir, 'model.safetensors');
    const buf = fs.readFileSync(file);
    const n = Number(buf.readBigUInt64LE(0));
    const header = buf.subarray(8, 8 + n).toString('utf8').replace('"shape":[97,48]', '"shape":[96,48]');
    fs.writeFileSync(file, Buffer.concat([buf.subarray(0, 8), Buffer.from(header), buf.subarray(8 + n)]));
    rejects(() => loadModel(dir), CheckpointError, 'model.safetensors', 'shape [96,48]');
  });

  it('missing shard', () => {
    const dir = copyFixture('llama-tiny-sharded-f16');
    fs.rmSync(path.join(dir, 'model-00002-of-00002.safetensors'));
    rejects(() => loadModel(dir), CheckpointError, 'missing shard', 'model-00002-of-00002.safetensors');
  });

  it('unknown model_type', () => {
    const dir = copyFixture('llama-tiny');
    const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
    cfg.model_type = 'gpt2';
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(cfg));
    rejects(() => loadModel(dir), CheckpointError, 'config.json', "unknown model_type \"gpt2\"", 'llama');
  });

  it('NaN in weights is refused, naming the tensor', () => {
    const dir = copyFixture('llama-tiny');
    const file = path.join(dir, 'model.safetensors');
    const tensors = readSafetensors(file);
    tensors.get('model.layers.1.mlp.up_proj.weight')!.data[5] = NaN;
    writeSafetensors(file, tensors);
    rejects(() => loadModel(dir), CheckpointError, 'model.layers.1.mlp.up_proj.weight', 'non-finite');
  });

  it('missing tokenizer', async () => {
    const dir = copyFixture('llama-tiny');
    await assert.rejects(findTokenizerForModel(dir), (e: Error) => e instanceof TokenizerError && e.message.includes('--tokenizer'));
  });

  it('tokenizer vocabulary larger than the model embedding', async () => {
    const tok = await loadTokenizer(shared('models/stories260K/tok512.bin'));
    assert.throws(() => checkTokenizerMatchesModel(tok, 97, 'llama-tiny'), (e: Error) =>
      e instanceof TokenizerError && e.message.includes('512') && e.message.includes('97'));
  });

  it('text shorter than one window', async () => {
    const { model } = loadModel(STORIES_BIN);
    const tok = await loadTokenizer(shared('models/stories260K/tok512.bin'));
    const file = path.join(tmpDir('short'), 'short.txt');
    fs.writeFileSync(file, 'Once upon a time.');
    await assert.rejects(() => perplexityOfText(model, tok, file, { seqlen: 128 }), (e: Error) =>
      e instanceof DataError && e.message.includes('short.txt') && e.message.includes('shorter than one window'));
    model.dispose();
  });
});
