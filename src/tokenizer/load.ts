/** Finding and loading the tokenizer that belongs to a model. */
import { readdir, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { TokenizerError } from '../util/errors.ts';
import { HfTokenizer } from './hf.ts';
import { Llama2cTokenizer } from './llama2c.ts';
import type { Tokenizer } from './types.ts';

const SET_HINT = 'pass --tokenizer PATH to set it';

async function kind(path: string): Promise<'dir' | 'file' | null> {
  try {
    const s = await stat(path);
    return s.isDirectory() ? 'dir' : 'file';
  } catch {
    return null;
  }
}

/**
 * Load a tokenizer from `path`: a directory holding `tokenizer.json` (or that file itself) →
 * HF tokenizer; a `.bin` file → llama2.c tokenizer.
 */
export async function loadTokenizer(path: string): Promise<Tokenizer> {
  const k = await kind(path);
  if (k === null) throw new TokenizerError('tokenizer not found (no such file or directory)', path);
  if (k === 'dir') {
    if ((await kind(join(path, 'tokenizer.json'))) !== 'file') {
      throw new TokenizerError('directory has no tokenizer.json', path);
    }
    return HfTokenizer.fromDirectory(path);
  }
  if (basename(path) === 'tokenizer.json') return HfTokenizer.fromDirectory(dirname(path));
  if (path.endsWith('.bin')) return Llama2cTokenizer.fromFile(path);
  throw new TokenizerError(
    'unknown tokenizer format: expected a directory with tokenizer.json, a tokenizer.json file or a llama2.c .bin file',
    path,
  );
}

/**
 * Where the tokenizer of a model is. An explicit path wins. Otherwise: an HF model directory (or
 * a file inside one, e.g. model.safetensors) uses its tokenizer.json; a llama2.c `.bin`
 * checkpoint uses `tokenizer.bin` beside it, else the single `tok*.bin` beside it.
 * `looked` lists the places tried when nothing was found.
 */
async function locateTokenizer(modelPath: string, explicit?: string): Promise<{ found: string | null; looked: string[] }> {
  if (explicit !== undefined) {
    if ((await kind(explicit)) === null) throw new TokenizerError('tokenizer not found (no such file or directory)', explicit);
    return { found: explicit, looked: [] };
  }
  const k = await kind(modelPath);
  if (k === null) return { found: null, looked: [] };
  const dir = k === 'dir' ? modelPath : dirname(modelPath);

  if (k === 'dir' || !modelPath.endsWith('.bin')) {
    const tokJson = join(dir, 'tokenizer.json');
    if ((await kind(tokJson)) === 'file') return { found: dir, looked: [tokJson] };
    // An HF directory exported from a llama2.c model carries its tokenizer as tokenizer.bin.
    const tokBin = join(dir, 'tokenizer.bin');
    return { found: (await kind(tokBin)) === 'file' ? tokBin : null, looked: [tokJson, tokBin] };
  }

  // llama2.c checkpoint: tokenizer.bin first, then tok*.bin (e.g. tok512.bin) beside it.
  const preferred = join(dir, 'tokenizer.bin');
  const looked = [preferred, join(dir, 'tok*.bin')];
  if ((await kind(preferred)) === 'file') return { found: preferred, looked };
  const self = resolve(modelPath);
  const candidates = (await readdir(dir))
    .filter((n) => n.startsWith('tok') && n.endsWith('.bin'))
    .map((n) => join(dir, n))
    .filter((p) => resolve(p) !== self)
    .sort();
  if (candidates.length > 1) {
    throw new TokenizerError(
      `several tokenizers beside the model (${candidates.map((c) => basename(c)).join(', ')}); ${SET_HINT}`,
      modelPath,
    );
  }
  return { found: candidates[0] ?? null, looked };
}

/**
 * The path of a model's tokenizer (see {@link findTokenizerForModel} for the search), or null
 * when there is none. Throws TokenizerError when an explicit path does not exist or several
 * llama2.c tokenizers are equally likely.
 */
export async function findTokenizerPath(modelPath: string, explicit?: string): Promise<string | null> {
  return (await locateTokenizer(modelPath, explicit)).found;
}

/**
 * The tokenizer for a model. An explicit path wins. Otherwise: an HF model directory (or a file
 * inside one, e.g. model.safetensors) uses its tokenizer.json; a llama2.c `.bin` checkpoint uses
 * `tokenizer.bin` beside it, else the single `tok*.bin` beside it. When nothing is found the
 * TokenizerError says where it looked and that `--tokenizer PATH` sets it.
 */
export async function findTokenizerForModel(modelPath: string, explicit?: string): Promise<Tokenizer> {
  const { found, looked } = await locateTokenizer(modelPath, explicit);
  if (found !== null) return loadTokenizer(found);
  if (looked.length === 0) {
    throw new TokenizerError(`model not found, so no tokenizer beside it; ${SET_HINT}`, modelPath);
  }
  throw new TokenizerError(`no tokenizer found for model: looked for ${looked.join(' and ')}; ${SET_HINT}`, modelPath);
}

/**
 * The tokenizer's ids must fit the model's vocabulary, checked both ways. A llama2.c tokenizer
 * stores no vocabulary size (its loader reads records to the end of the file), so it must match
 * the model exactly: a shorter one is a different tokenizer whose ids mean other tokens. An HF
 * tokenizer may have fewer ids than the model embeds (HF models pad their embedding to a round
 * number), never more: ids past the embedding cannot be looked up. Returns the padding (model
 * ids the tokenizer never produces).
 */
export function checkTokenizerMatchesModel(tok: Tokenizer, modelVocabSize: number, modelPath: string): { padding: number } {
  const hint = 'wrong tokenizer for this model? (--tokenizer PATH sets it)';
  if (tok instanceof Llama2cTokenizer && tok.vocabSize !== modelVocabSize) {
    throw new TokenizerError(
      `llama2.c tokenizer ${tok.id} has ${tok.vocabSize} tokens but the model's vocabulary has ${modelVocabSize}; ` +
        `a llama2.c tokenizer must match the model exactly: ${hint}`,
      modelPath,
    );
  }
  if (tok.vocabSize > modelVocabSize) {
    throw new TokenizerError(
      `tokenizer ${tok.id} has ${tok.vocabSize} tokens but the model's vocabulary has only ${modelVocabSize}: ${hint}`,
      modelPath,
    );
  }
  return { padding: modelVocabSize - tok.vocabSize };
}
