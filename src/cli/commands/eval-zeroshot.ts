import type { CommandModule } from 'yargs';
import { evaluateTask, resolveTask, type MetricPreset } from '../../eval/zeroshot.ts';
import { ConfigError } from '../../util/errors.ts';
import { emit, handler, openModel, startBackend, withCommon, withModel, type CommonArgs } from '../common.ts';

type Args = CommonArgs & {
  model: string; tokenizer: string | undefined; task: string; limit: number | undefined;
  'batch-size': number; preset: MetricPreset; 'no-bos': boolean;
};

export const evalZeroshotCommand: CommandModule<object, Args> = {
  command: 'zeroshot',
  describe: 'zero-shot multiple choice (acc and acc_norm as lm-evaluation-harness scores them)',
  builder: (y) => withModel(withCommon(y))
    .option('task', { type: 'string', demandOption: true, describe: 'task name (piqa, arc_easy, …) or a JSONL file' })
    .option('limit', { type: 'number', describe: 'first N rows only' })
    .option('batch-size', { type: 'number', default: 32 })
    .option('preset', { choices: ['default', 'acc'] as const, default: 'default' as MetricPreset, describe: 'metric map' })
    .option('no-bos', { type: 'boolean', default: false, describe: 'do not prepend BOS to contexts' }),
  handler: handler<Args>(async (args) => {
    // Checked before loading anything: a typo in the task, or a limit that would score nothing.
    if (args.limit !== undefined && !(Number.isInteger(args.limit) && args.limit >= 1)) {
      throw new ConfigError(`--limit must be a positive integer, or left out to score every row (got ${args.limit})`);
    }
    resolveTask(args.task);
    const backend = await startBackend(args);
    const { model, tokenizer } = await openModel(args);
    const t0 = performance.now();
    const r = await evaluateTask(model, tokenizer, args.task, {
      limit: args.limit ?? null, batchSize: args['batch-size'], preset: args.preset, addBos: !args['no-bos'],
    });
    const seconds = (performance.now() - t0) / 1000;
    model.dispose();
    emit(args, { ...r, backend, execution: model.mode, seconds } as unknown as Record<string, unknown>, () =>
      `${r.task}: acc ${r.acc.toFixed(4)}${r.acc_norm !== null ? `, acc_norm ${r.acc_norm.toFixed(4)}` : ''} over ${r.n} rows [${backend}, ${seconds.toFixed(1)} s]`);
  }),
};
