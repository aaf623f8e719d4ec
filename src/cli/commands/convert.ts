import type { CommandModule } from 'yargs';
import fs from 'node:fs';
import path from 'node:path';
import {
  checkpointBytes, emit, handler, namedInputs, startBackend, withCommon, withModel, withOverwrite, type CommonArgs,
} from '../common.ts';
import { loadModel, saveModel } from '../../io/load-model.ts';
import { withCheckpointWriter } from '../../io/checkpoint-writer.ts';
import { countParameters } from '../../model/count.ts';
import { copyTokenizerFiles } from '../../tokenizer/files.ts';
import { checkTokenizerMatchesModel, findTokenizerPath, loadTokenizer } from '../../tokenizer/load.ts';

type Args = CommonArgs & { model: string; tokenizer: string | undefined; out: string; dtype: 'f32' | 'f16'; overwrite: boolean };

/** A pruned checkpoint's report describes the converted copy too (same masks and shapes). */
const CARRIED = ['prune_report.json'];

export const convertCommand: CommandModule<object, Args> = {
  command: 'convert',
  describe: 'write a checkpoint (HF directory or llama2.c .bin) as an HF directory, F32 or F16',
  builder: (y) => withOverwrite(withModel(withCommon(y)))
    .option('out', { type: 'string', demandOption: true, describe: 'output directory (must be new or empty unless --overwrite)' })
    .option('dtype', { choices: ['f32', 'f16'] as const, default: 'f32' as const }),
  handler: handler<Args>(async (args) => {
    const inputs = namedInputs(args, ['model', 'tokenizer']);
    await withCheckpointWriter({ out: args.out, overwrite: args.overwrite, inputs }, async (w) => {
      const backend = await startBackend(args);
      const { model } = loadModel(args.model);
      try {
        // The tokenizer travels with the checkpoint, so it is checked against the model here too.
        const tokenizerPath = await findTokenizerPath(args.model, args.tokenizer);
        if (tokenizerPath !== null) checkTokenizerMatchesModel(await loadTokenizer(tokenizerPath), model.config.vocabSize, args.model);
        w.ensureSpace(checkpointBytes(countParameters(model).total, args.dtype));
        saveModel(model, w.work, args.dtype);
        const tokenizerFiles = await copyTokenizerFiles(args.model, w.work, args.tokenizer);
        if (fs.statSync(args.model).isDirectory()) {
          for (const f of CARRIED) if (fs.existsSync(path.join(args.model, f))) fs.copyFileSync(path.join(args.model, f), path.join(w.work, f));
        }
        const { files, bytes } = w.commit();
        emit(args, { out: args.out, dtype: args.dtype, files, bytes, tokenizerFiles, backend, execution: model.mode },
          () => `wrote ${args.out} (${files.join(', ')}; ${bytes} bytes)`);
      } finally {
        model.dispose();
      }
    });
  }),
};
