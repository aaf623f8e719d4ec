import type { CommandModule } from 'yargs';
import fs from 'node:fs';
import path from 'node:path';
import { emit, handler, startBackend, withCommon, withModel, type CommonArgs } from '../common.ts';
import { loadModel, saveModel } from '../../io/load-model.ts';
import { copyTokenizerFiles } from '../../tokenizer/files.ts';

type Args = CommonArgs & { model: string; tokenizer: string | undefined; out: string; dtype: 'f32' | 'f16' };

export const convertCommand: CommandModule<object, Args> = {
  command: 'convert',
  describe: 'write a checkpoint (HF directory or llama2.c .bin) as an HF directory, F32 or F16',
  builder: (y) => withModel(withCommon(y))
    .option('out', { type: 'string', demandOption: true, describe: 'output directory' })
    .option('dtype', { choices: ['f32', 'f16'] as const, default: 'f32' as const }),
  handler: handler<Args>(async (args) => {
    const backend = await startBackend(args);
    const { model } = loadModel(args.model);
    saveModel(model, args.out, args.dtype);
    const tokenizerFiles = await copyTokenizerFiles(args.model, args.out, args.tokenizer);
    model.dispose();
    const files = fs.readdirSync(args.out).sort();
    const bytes = files.reduce((a, f) => a + fs.statSync(path.join(args.out, f)).size, 0);
    emit(args, { out: args.out, dtype: args.dtype, files, bytes, tokenizerFiles, backend },
      () => `wrote ${args.out} (${files.join(', ')}; ${bytes} bytes)`);
  }),
};
