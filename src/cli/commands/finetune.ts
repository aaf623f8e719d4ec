import type { CommandModule } from 'yargs';
import fs from 'node:fs';
import path from 'node:path';
import { emit, handler, log, openModel, startBackend, withCommon, withModel, type CommonArgs } from '../common.ts';
import { readPruneReport, recover } from '../../finetune/recovery.ts';
import { resolveRecoverySchedule } from '../../prune/registry.ts';
import { saveModel } from '../../io/load-model.ts';
import { copyTokenizerFiles } from '../../tokenizer/files.ts';
import { ConfigError } from '../../util/errors.ts';

type Args = CommonArgs & {
  model: string; tokenizer: string | undefined; data: string; schedule: string; rank: number;
  steps: number; lr: number; seed: number; seqlen: number; out: string; resume: boolean;
};

export const finetuneCommand: CommandModule<object, Args> = {
  command: 'finetune',
  describe: 'recover a pruned model with LoRA (uniform ranks, or the schedule a pruning method declares), merged',
  builder: (y) => withModel(withCommon(y))
    .option('data', { type: 'string', demandOption: true, describe: 'training text file (a held-out split is kept)' })
    .option('schedule', { type: 'string', default: 'uniform', describe: "'uniform', or the name of a method that declares a recovery schedule (see `prunelab methods`)" })
    .option('rank', { type: 'number', default: 8, describe: 'LoRA rank r̄ (the mean rank for schedules that allocate ranks per layer)' })
    .option('steps', { type: 'number', default: 100 })
    .option('lr', { type: 'number', default: 1e-4 })
    .option('seed', { type: 'number', default: 0 })
    .option('seqlen', { type: 'number', default: 128 })
    .option('resume', { type: 'boolean', default: false, describe: 'continue from the checkpoint in --out/.train' })
    .option('out', { type: 'string', demandOption: true }),
  handler: handler<Args>(async (args) => {
    if (!fs.existsSync(args.data)) throw new ConfigError(`--data ${args.data} not found`);
    const schedule = await resolveRecoverySchedule(args.schedule);
    const backend = await startBackend(args);
    const { model, tokenizer } = await openModel(args);
    const r = recover(model, tokenizer, {
      schedule, rank: args.rank, steps: args.steps, lr: args.lr, data: args.data, seed: args.seed,
      seqLen: args.seqlen, pruneReport: readPruneReport(args.model),
      checkpointDir: path.join(args.out, '.train'), resume: args.resume,
      onProgress: (p) => { if (p.step % 10 === 0 || p.step === p.steps) log(`finetune: step ${p.step}/${p.steps} loss ${p.loss.toFixed(4)} lr ${p.lr.toExponential(2)}`); },
    });
    saveModel(model, args.out);
    await copyTokenizerFiles(args.model, args.out, args.tokenizer);
    const report = readPruneReport(args.model);
    if (report) fs.writeFileSync(path.join(args.out, 'prune_report.json'), JSON.stringify(report, null, 2) + '\n');
    fs.rmSync(path.join(args.out, '.train'), { recursive: true, force: true });
    model.dispose();
    emit(args, { out: args.out, backend, schedule: r.schedule, heldOut: r.heldOut, steps: r.step, skippedTargets: r.skippedTargets, log: r.log },
      () => `held-out NLL ${r.heldOut.before.toFixed(4)} → ${r.heldOut.after?.toFixed(4) ?? "n/a"} after ${r.step} steps → ${args.out}`);
  }),
};
