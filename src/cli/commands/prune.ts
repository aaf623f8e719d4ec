import type { CommandModule } from 'yargs';
import fs from 'node:fs';
import path from 'node:path';
import {
  checkpointBytes, emit, handler, log, namedInputs, openModel, startBackend, withCommon, withLongContext, withModel, withOverwrite, type CommonArgs,
} from '../common.ts';
import { parseMethodOptions, parseOptionArgs, resolveMethod } from '../../prune/registry.ts';
import { parsePattern, validateSparsity } from '../../prune/masks.ts';
import { calibrationFromText, parseOffsets } from '../../prune/calibration.ts';
import { pruneModel } from '../../prune/engine.ts';
import { assertWritableAsOneFile, saveModel } from '../../io/load-model.ts';
import { copyTokenizerFiles } from '../../tokenizer/files.ts';
import { ConfigError } from '../../util/errors.ts';
import { checkContextLength } from '../../util/context-length.ts';
import { withCheckpointWriter } from '../../io/checkpoint-writer.ts';
import { needsCalibration } from '../../prune/needs-calibration.ts';
import { countParameters } from '../../model/count.ts';
import type { InputMode } from '../../prune/method.ts';
import { resolveThreads, threadsForModel } from '../../parallel/threads.ts';

type Args = CommonArgs & {
  model: string; tokenizer: string | undefined; method: string; sparsity: number | undefined; pattern: string; workers: number; threads: number | undefined;
  calib: string | undefined; nsamples: number; seqlen: number; seed: number; 'calib-offsets': string | undefined;
  mode: InputMode | undefined; option: string[]; out: string; dtype: 'f32' | 'f16'; overwrite: boolean; 'allow-long-context': boolean;
};

export const pruneCommand: CommandModule<object, Args> = {
  command: 'prune',
  describe: 'prune a model with a method plug-in and write the pruned checkpoint',
  builder: (y) => withLongContext(withOverwrite(withModel(withCommon(y))))
    .option('method', { type: 'string', demandOption: true, describe: 'method name (see `prunelab methods`) or module path' })
    .option('sparsity', { type: 'number', describe: 'target sparsity / pruning ratio in [0, 1) (default 0.5; N/M for an N:M pattern)' })
    .option('pattern', { type: 'string', default: 'unstructured', describe: "'unstructured' or N:M such as 2:4" })
    .option('calib', { type: 'string', describe: 'calibration text file' })
    .option('nsamples', { type: 'number', default: 128 })
    .option('seqlen', { type: 'number', default: 128 })
    .option('seed', { type: 'number', default: 0 })
    .option('calib-offsets', { type: 'string', describe: 'explicit window start offsets (comma list or file)' })
    .option('mode', { choices: ['sequential', 'dense-parallel'] as const, describe: 'input mode across layers (default: the method\'s)' })
    .option('workers', { type: 'number', default: 1, describe: 'worker threads pruning layers concurrently (layer-wise methods, dense-parallel mode)' })
    .option('threads', { type: 'number', describe: 'worker threads for the calibration forward passes, batches split between them (default: all cores; native TensorFlow: 1)' })
    .option('option', { type: 'string', array: true, default: [] as string[], describe: 'method option key=value (repeatable)' })
    .option('out', { type: 'string', demandOption: true, describe: 'output checkpoint directory' })
    .option('dtype', { choices: ['f32', 'f16'] as const, default: 'f32' as const }),
  handler: handler<Args>(async (args) => {
    // Everything is validated before any work, and nothing is written to --out on error.
    const pattern = parsePattern(args.pattern);
    const sparsity = args.sparsity ?? (pattern.kind === 'nm' ? pattern.n / pattern.m : 0.5);
    validateSparsity(sparsity, '--sparsity');
    const method = await resolveMethod(args.method);
    const options = parseMethodOptions(method, parseOptionArgs(args.option));
    if (!args.calib && needsCalibration(method, options)) {
      throw new ConfigError(`method '${method.name}' needs calibration data: pass --calib FILE (a text file; --nsamples and --seqlen set the windows)`);
    }
    if (args['calib-offsets'] && !args.calib) throw new ConfigError('--calib-offsets needs --calib: the offsets index into its tokens');
    const offsets = args['calib-offsets'] ? offsetsArg(args['calib-offsets']) : undefined;
    const inputs = namedInputs(args, ['model', 'tokenizer', 'calib']);
    await withCheckpointWriter({ out: args.out, overwrite: args.overwrite, inputs }, async (w) => {
      const backend = await startBackend(args);
      const { model, tokenizer } = await openModel(args);
      try {
        const threads = threadsForModel(model.mode, resolveThreads(args.threads, backend), args.threads);
        // Before pruning: a checkpoint that could not be written is refused now, not after the work.
        assertWritableAsOneFile(countParameters(model).total, args.dtype, args.out);
        const beyond = args.calib
          ? checkContextLength(model.config, args.seqlen, '--seqlen', { allow: args['allow-long-context'], allowFlag: '--allow-long-context' })
          : false;
        const calib = args.calib
          ? calibrationFromText(tokenizer, { text: args.calib, nsamples: args.nsamples, seqlen: args.seqlen, seed: args.seed, offsets })
          : null;
        log(`prune: ${method.name} at ${sparsity} (${args.pattern})${calib ? `, ${calib.windows.length} × ${args.seqlen} calibration tokens` : ''}`);
        const pruned = await pruneModel(model, {
          method, options, target: { sparsity, pattern }, windows: calib?.windows ?? [],
          calibration: calib?.protocol ?? null, mode: args.mode, workers: args.workers, threads, log: (m) => log(`prune: ${m}`),
        });
        const report = { ...(beyond ? { ...pruned, beyondContext: { seqlen: args.seqlen, contextLength: model.config.maxPositionEmbeddings } } : pruned), execution: model.mode };
        w.ensureSpace(checkpointBytes(countParameters(model).total, args.dtype));
        saveModel(model, w.work, args.dtype);
        await copyTokenizerFiles(args.model, w.work, args.tokenizer);
        fs.writeFileSync(path.join(w.work, 'prune_report.json'), JSON.stringify(report, null, 2) + '\n');
        w.commit();
        emit(args, { ...report, out: args.out, backend, threads } as unknown as Record<string, unknown>, () =>
          `${method.name}: removed ${(report.removed.allParameters * 100).toFixed(2)}% of all parameters, `
          + `${(report.zeros.overall.sparsity * 100).toFixed(2)}% zeros in decoder linears, in ${report.seconds.toFixed(2)} s → ${args.out}`);
      } finally {
        model.dispose();
      }
    });
  }),
};

/** `--calib-offsets`: a comma list, or a file holding one (a missing file is named as such). */
function offsetsArg(value: string): number[] {
  if (!/^[\d\s,]+$/.test(value) && !fs.existsSync(value)) {
    throw new ConfigError(`--calib-offsets: file ${value} not found (give a comma-separated list of window offsets, or a file holding one)`);
  }
  return parseOffsets(value);
}
