import type { CommandModule } from 'yargs';
import fs from 'node:fs';
import path from 'node:path';
import {
  checkpointBytes, checkpointFormat, emit, handler, log, namedInputs, openModel, parseByteSize, startBackend, withCheckpointFormat, withCommon,
  withLongContext, withModel, withOverwrite, type CommonArgs, type FormatArgs,
} from '../common.ts';
import { parseMethodOptions, parseOptionArgs, resolveMethod } from '../../prune/registry.ts';
import { parsePattern, validateSparsity } from '../../prune/masks.ts';
import { CALIB_SAMPLINGS, calibrationFromText, parseOffsets, type CalibSampling } from '../../prune/calibration.ts';
import { pruneModel } from '../../prune/engine.ts';
import { openCheckpoint, saveModel } from '../../io/load-model.ts';
import { storedWeightDtype } from '../../io/hf-checkpoint.ts';
import { copyTokenizerFiles } from '../../tokenizer/files.ts';
import { ConfigError } from '../../util/errors.ts';
import { checkContextLength } from '../../util/context-length.ts';
import { withCheckpointWriter } from '../../io/checkpoint-writer.ts';
import { needsCalibration } from '../../prune/needs-calibration.ts';
import { countParameters } from '../../model/count.ts';
import type { InputMode } from '../../prune/method.ts';
import { resolveThreads, threadsForModel } from '../../parallel/threads.ts';
import { BUDGET_SCOPES, checkBudget, type BudgetScope } from '../../prune/budget.ts';

type Args = CommonArgs & FormatArgs & {
  model: string; tokenizer: string | undefined; method: string; sparsity: number | undefined; pattern: string; workers: number; threads: number | undefined;
  calib: string | undefined; 'calib-sampling': CalibSampling | undefined; 'calib-field': string | undefined; nsamples: number; seqlen: number; seed: number; 'calib-offsets': string | undefined;
  mode: InputMode | undefined; budget: BudgetScope | undefined; option: string[]; layers: string | undefined; out: string; overwrite: boolean; 'allow-long-context': boolean;
};

export const pruneCommand: CommandModule<object, Args> = {
  command: 'prune',
  describe: 'prune a model with a method plug-in and write the pruned checkpoint',
  builder: (y) => withCheckpointFormat(withLongContext(withOverwrite(withModel(withCommon(y)))))
    .option('method', { type: 'string', demandOption: true, describe: 'method name (see `prunelab methods`) or module path' })
    .option('sparsity', { type: 'number', describe: 'target sparsity / pruning ratio in [0, 1) (default 0.5; N/M for an N:M pattern)' })
    .option('budget', {
      choices: BUDGET_SCOPES, describe: 'structured methods: --sparsity is a budget, the fraction of these parameters to remove; the method\'s own sparsity is found to meet it',
    })
    .option('pattern', { type: 'string', default: 'unstructured', describe: "'unstructured' or N:M such as 2:4" })
    .option('calib', { type: 'string', describe: 'calibration corpus: a text file, or JSON/JSONL documents' })
    .option('calib-sampling', {
      choices: CALIB_SAMPLINGS, describe: 'stream: windows of the whole corpus as one text; documents: one window from one random document long enough (default: documents for .json/.jsonl, else stream)',
    })
    .option('calib-field', { type: 'string', describe: 'the document field of a JSON/JSONL corpus (default text)' })
    .option('nsamples', { type: 'number', default: 128 })
    .option('seqlen', { type: 'number', default: 128 })
    .option('seed', { type: 'number', default: 0 })
    .option('calib-offsets', { type: 'string', describe: 'explicit window start offsets (comma list or file)' })
    .option('mode', { choices: ['sequential', 'dense-parallel'] as const, describe: 'input mode across layers (default: the method\'s)' })
    .option('workers', { type: 'number', default: 1, describe: 'worker threads pruning layers concurrently (layer-wise methods, dense-parallel mode)' })
    .option('threads', { type: 'number', describe: 'worker threads for the calibration forward passes, batches split between them (default: all cores when the passes are long enough to pay for starting them; native TensorFlow: 1)' })
    .option('layers', { type: 'string', describe: 'prune only decoder layers A-B (inclusive, from 0; e.g. 0-1) or one layer A: layer-wise methods' })
    .option('option', { type: 'string', array: true, default: [] as string[], describe: 'method option key=value (repeatable)' })
    .option('out', { type: 'string', demandOption: true, describe: 'output checkpoint directory' }),
  handler: handler<Args>(async (args) => {
    // Everything is validated before any work, and nothing is written to --out on error.
    const pattern = parsePattern(args.pattern);
    const sparsity = args.sparsity ?? (pattern.kind === 'nm' ? pattern.n / pattern.m : 0.5);
    validateSparsity(sparsity, '--sparsity');
    const method = await resolveMethod(args.method);
    const budget = args.budget ? { scope: args.budget, fraction: sparsity } : undefined;
    if (budget) {
      checkBudget(budget);
      if (method.kind !== 'structured') throw new ConfigError(`--budget applies to structured methods; '${method.name}' is layer-wise and its --sparsity already is a fraction of decoder-linear weights`);
    }
    const options = parseMethodOptions(method, parseOptionArgs(args.option));
    if (!args.calib && needsCalibration(method, options)) {
      throw new ConfigError(`method '${method.name}' needs calibration data: pass --calib FILE (a text file; --nsamples and --seqlen set the windows)`);
    }
    if (args['calib-offsets'] && !args.calib) throw new ConfigError('--calib-offsets needs --calib: the offsets index into its tokens');
    if ((args['calib-sampling'] || args['calib-field']) && !args.calib) throw new ConfigError('--calib-sampling and --calib-field need --calib: they say how its windows are taken');
    const offsets = args['calib-offsets'] ? offsetsArg(args['calib-offsets']) : undefined;
    parseByteSize(args['shard-size'], '--shard-size');
    const layers = args.layers === undefined ? undefined : layerRangeArg(args.layers);
    const inputs = namedInputs(args, ['model', 'tokenizer', 'calib']);
    await withCheckpointWriter({ out: args.out, overwrite: args.overwrite, inputs }, async (w) => {
      const backend = await startBackend(args);
      const { model, tokenizer } = await openModel(args);
      try {
        const threads = threadsForModel(model.mode, resolveThreads(args.threads, backend), args.threads);
        const beyond = args.calib
          ? checkContextLength(model.config, args.seqlen, '--seqlen', { allow: args['allow-long-context'], allowFlag: '--allow-long-context' })
          : false;
        const calib = args.calib
          ? calibrationFromText(tokenizer, {
            text: args.calib, nsamples: args.nsamples, seqlen: args.seqlen, seed: args.seed, offsets, sampling: args['calib-sampling'], field: args['calib-field'],
          })
          : null;
        log(`prune: ${method.name} at ${budget ? `a budget of ${sparsity} of ${budget.scope}` : sparsity} (${args.pattern})${calib ? `, ${calib.windows.length} × ${args.seqlen} calibration tokens` : ''}`);
        const pruned = await pruneModel(model, {
          method, options, target: { sparsity, pattern }, budget, windows: calib?.windows ?? [],
          calibration: calib?.protocol ?? null, mode: args.mode, workers: args.workers, threads, layers, log: (m) => log(`prune: ${m}`),
          // The default (all cores) only where the passes pay for the pool's start-up; an explicit --threads is used as given.
          autoThreads: args.threads === undefined,
        });
        const report = {
          ...pruned,
          ...(beyond ? { beyondContext: { seqlen: args.seqlen, contextLength: model.config.maxPositionEmbeddings } } : {}),
          ...(layers ? { layerRange: layers } : {}),
          execution: model.mode,
        };
        const format = checkpointFormat(args, storedWeightDtype(openCheckpoint(args.model).tensors));
        w.ensureSpace(checkpointBytes(countParameters(model).total, format.dtype));
        saveModel(model, w.work, format);
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

/** `--layers A-B` or `--layers A` (decoder layers, from 0); the model's own bound is checked by the engine. */
function layerRangeArg(value: string): { first: number; last: number } {
  const m = /^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$/.exec(value);
  if (!m) throw new ConfigError(`--layers ${value}: expected a layer range such as 0-1 (first-last, inclusive, from 0) or one layer such as 3`);
  const first = Number(m[1]);
  const last = m[2] === undefined ? first : Number(m[2]);
  if (last < first) throw new ConfigError(`--layers ${value}: the last layer comes before the first`);
  return { first, last };
}

/** `--calib-offsets`: a comma list, or a file holding one (a missing file is named as such). */
function offsetsArg(value: string): number[] {
  if (!/^[\d\s,]+$/.test(value) && !fs.existsSync(value)) {
    throw new ConfigError(`--calib-offsets: file ${value} not found (give a comma-separated list of window offsets, or a file holding one)`);
  }
  return parseOffsets(value);
}
