/** Carry a model's tokenizer files along when a checkpoint is written elsewhere. */
import fs from 'node:fs';
import path from 'node:path';
import { findTokenizerPath } from './load.ts';

const HF_FILES = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'tokenizer.model'];

/** Copy the tokenizer of `modelPath` into `outDir`; llama2.c tokenizers become `tokenizer.bin`. */
export async function copyTokenizerFiles(modelPath: string, outDir: string, explicit?: string): Promise<string[]> {
  const found = await findTokenizerPath(modelPath, explicit);
  if (found === null) return [];
  const copied: string[] = [];
  if (found.endsWith('.bin')) {
    fs.copyFileSync(found, path.join(outDir, 'tokenizer.bin'));
    return ['tokenizer.bin'];
  }
  const dir = fs.statSync(found).isDirectory() ? found : path.dirname(found);
  for (const f of HF_FILES) {
    const src = path.join(dir, f);
    if (fs.existsSync(src) && path.resolve(src) !== path.resolve(outDir, f)) {
      fs.copyFileSync(src, path.join(outDir, f));
      copied.push(f);
    }
  }
  return copied;
}
