import type { CommandModule } from 'yargs';
import fs from 'node:fs';
import path from 'node:path';
import {
  checkpointBytes, checkpointFormat, emit, handler, namedInputs, parseByteSize, startBackend, withCheckpointFormat, withCommon, withModel, withOverwrite,
  type CommonArgs, type FormatArgs,
} from '../common.ts';
import { loadModel, openCheckpoint, saveModel } from '../../io/load-model.ts';
import { checkpointSource } from '../../io/checkpoint-source.ts';
import { storedWeightDtype, writeHfCheckpointFrom } from '../../io/hf-checkpoint.ts';
import { withCheckpointWriter } from '../../io/checkpoint-writer.ts';
import { countParameters } from '../../model/count.ts';
import { numel } from '../../model/tensor-data.ts';
import { copyTokenizerFiles } from '../../tokenizer/files.ts';
import { checkTokenizerMatchesModel, findTokenizerPath, loadTokenizer } from '../../tokenizer/load.ts';

type Args = CommonArgs & FormatArgs & { model: string; tokenizer: string | undefined; out: string; overwrite: boolean };

/** A pruned checkpoint's report describes the converted copy too (same masks and shapes). */
const CARRIED = ['prune_report.json'];

export const convertCommand: CommandModule<object, Args> = {
  command: 'convert',
  describe: 'write a checkpoint (HF directory or llama2.c .bin) as an HF directory: F32, F16 or BF16, one file or shards',
  builder: (y) => withCheckpointFormat(withOverwrite(withModel(withCommon(y))))
    .option('out', { type: 'string', demandOption: true, describe: 'output directory (must be new or empty unless --overwrite)' }),
  handler: handler<Args>(async (args) => {
    parseByteSize(args['shard-size'], '--shard-size');
    const inputs = namedInputs(args, ['model', 'tokenizer']);
    await withCheckpointWriter({ out: args.out, overwrite: args.overwrite, inputs }, async (w) => {
      const backend = await startBackend(args);
      const ckpt = openCheckpoint(args.model);
      const format = checkpointFormat(args, storedWeightDtype(ckpt.tensors));
      // The tokenizer travels with the checkpoint, so it is checked against the model here too.
      const tokenizerPath = await findTokenizerPath(args.model, args.tokenizer);
      if (tokenizerPath !== null) checkTokenizerMatchesModel(await loadTokenizer(tokenizerPath), ckpt.config.vocabSize, args.model);
      if (ckpt.quantized) {
        // A quantised export is dequantised by loading it.
        const { model } = loadModel(args.model);
        try {
          w.ensureSpace(checkpointBytes(countParameters(model).total, format.dtype));
          saveModel(model, w.work, format);
        } finally {
          model.dispose();
        }
      } else {
        // Tensor by tensor from the input's files: no backend, one tensor in memory, any size.
        const source = checkpointSource(ckpt);
        w.ensureSpace(checkpointBytes(source.entries.reduce((a, e) => a + numel(e.shape), 0), format.dtype));
        await writeHfCheckpointFrom(w.work, source.config, source.entries, source.tensors, format);
      }
      const tokenizerFiles = await copyTokenizerFiles(args.model, w.work, args.tokenizer);
      if (fs.statSync(args.model).isDirectory()) {
        for (const f of CARRIED) if (fs.existsSync(path.join(args.model, f))) fs.copyFileSync(path.join(args.model, f), path.join(w.work, f));
      }
      const { files, bytes } = w.commit();
      emit(args, { out: args.out, dtype: format.dtype, files, bytes, tokenizerFiles, backend },
        () => `wrote ${args.out} (${files.join(', ')}; ${bytes} bytes)`);
    });
  }),
};
