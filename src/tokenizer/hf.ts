/**
 * Hugging Face `tokenizer.json` tokenizers via `@huggingface/tokenizers`.
 *
 * The library's own special-token handling (post-processor templates) is switched off:
 * `encode` never lets the library add BOS/EOS and prepends BOS itself when asked, so BOS
 * handling is explicit and the same for every tokenizer kind.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { Tokenizer as LibTokenizer } from '@huggingface/tokenizers';
import { TokenizerError } from '../util/errors.ts';
import type { Tokenizer } from './types.ts';

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** tokenizer_config.json holds special tokens either as strings or as AddedToken objects. */
function tokenString(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (isObject(v) && typeof v.content === 'string') return v.content;
  return null;
}

/** Read a JSON object file; a missing optional file gives null. */
async function readJson(file: string, required: boolean): Promise<{ json: Json; raw: Buffer } | null> {
  let raw: Buffer;
  try {
    raw = await readFile(file);
  } catch (e) {
    if (!required && (e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new TokenizerError(`cannot read: ${(e as Error).message}`, file);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw.toString('utf8'));
  } catch (e) {
    throw new TokenizerError(`not valid JSON: ${(e as Error).message}`, file);
  }
  if (!isObject(parsed)) throw new TokenizerError('expected a JSON object', file);
  return { json: parsed, raw };
}

export class HfTokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly bosId: number | null;
  readonly eosId: number | null;
  /** Ids that decode drops: BOS, EOS, pad and the tokens marked special. */
  private readonly skipIds: Set<number>;

  private constructor(
    readonly id: string,
    private readonly lib: LibTokenizer,
    private readonly cleanUpSpaces: boolean,
    specials: { bos: number | null; eos: number | null; pad: number | null },
  ) {
    this.bosId = specials.bos;
    this.eosId = specials.eos;
    // Ids run to the largest one in vocab + added tokens (model embeddings may pad beyond).
    let maxId = -1;
    for (const v of lib.get_vocab(true).values()) maxId = Math.max(maxId, v);
    this.vocabSize = maxId + 1;
    this.skipIds = new Set([...lib.get_added_tokens_decoder().values()].filter((t) => t.special).map((t) => t.id));
    for (const s of [specials.bos, specials.eos, specials.pad]) if (s !== null) this.skipIds.add(s);
  }

  /**
   * Load `tokenizer.json` (required) and `tokenizer_config.json` (optional: bos/eos/pad token
   * strings) from `dir`. When tokenizer_config.json names no BOS/EOS, the model's
   * `config.json` in the same directory is consulted for `bos_token_id` / `eos_token_id`.
   */
  static async fromDirectory(dir: string): Promise<HfTokenizer> {
    const tokFile = join(dir, 'tokenizer.json');
    const { json, raw } = (await readJson(tokFile, true))!;
    const tokConfig = (await readJson(join(dir, 'tokenizer_config.json'), false))?.json ?? {};
    let lib: LibTokenizer;
    try {
      // The library iterates `added_tokens` unconditionally; hand-written files may omit it.
      lib = new LibTokenizer({ added_tokens: [], ...json }, tokConfig);
    } catch (e) {
      throw new TokenizerError(`cannot build tokenizer: ${(e as Error).message}`, tokFile);
    }
    const idOf = (key: string): number | null => {
      const s = tokenString(tokConfig[key]);
      return s === null ? null : (lib.token_to_id(s) ?? null);
    };
    let bos = idOf('bos_token');
    let eos = idOf('eos_token');
    if (bos === null || eos === null) {
      const modelConfig = (await readJson(join(dir, 'config.json'), false).catch(() => null))?.json;
      if (bos === null && typeof modelConfig?.bos_token_id === 'number') bos = modelConfig.bos_token_id;
      if (eos === null && typeof modelConfig?.eos_token_id === 'number') eos = modelConfig.eos_token_id;
    }
    const hash = createHash('sha256').update(raw).digest('hex').slice(0, 12);
    return new HfTokenizer(
      `hf:${basename(resolve(dir))}@${hash}`,
      lib,
      // Only clean up (" ." → ".") when the config asks for it: otherwise round trips break.
      tokConfig.clean_up_tokenization_spaces === true,
      { bos, eos, pad: idOf('pad_token') },
    );
  }

  encode(text: string, options: { addBos?: boolean } = {}): number[] {
    const ids = text.length === 0 ? [] : this.lib.encode(text, { add_special_tokens: false }).ids;
    if (options.addBos && this.bosId !== null) ids.unshift(this.bosId);
    return ids;
  }

  decode(ids: readonly number[]): string {
    const kept = ids.filter((i) => !this.skipIds.has(i));
    // The library throws on an empty id list.
    if (kept.length === 0) return '';
    return this.lib.decode(kept, { skip_special_tokens: true, clean_up_tokenization_spaces: this.cleanUpSpaces });
  }
}
