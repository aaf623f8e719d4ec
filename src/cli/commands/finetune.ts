import type { CommandModule } from 'yargs';
import fs from 'node:fs';
import path from 'node:path';
import {
  checkpointBytes, emit, handler, log, namedInputs, openModel, startBackend, withCommon, withLongContext, withModel, withOverwrite, type CommonArgs,
} from '../common.ts';
import { readPruneReport, recover } from '../../finetune/recovery.ts';
import { resolveRecoverySchedule } from '../../prune/registry.ts';
import { saveModel } from '../../io/load-model.ts';
import { copyTokenizerFiles } from '../../tokenizer/files.ts';
import { ConfigError } from '../../util/errors.ts';
import { checkContextLength } from '../../util/context-length.ts';
import { withCheckpointWriter } from '../../io/checkpoint-writer.ts';
import { countParameters } from '../../model/count.ts';

/** Training state inside the resumable work folder `<out>.partial` (src/io/checkpoint-writer.ts). */
const TRAIN_STATE = '.train';

type Args = CommonArgs & {
  model: string; tokenizer: string | undefined; data: string; schedule: string; rank: number;
  steps: number; lr: number; seed: number; seqlen: number; out: string; resume: boolean; overwrite: boolean; 'allow-long-context': boolean;
};

export const finetuneCommand: CommandModule<object, Args> = {
  command: 'finetune',
  describe: 'recover a pruned model with LoRA (uniform ranks, or the schedule a pruning method declares), merged',
  builder: (y) => withLongContext(withOverwrite(withModel(withCommon(y))))
    .option('data', { type: 'string', demandOption: true, describe: 'training text file (a held-out split is kept)' })
    .option('schedule', { type: 'string', default: 'uniform', describe: "'uniform', or the name of a method that declares a recovery schedule (see `prunelab methods`)" })
    .option('rank', { type: 'number', default: 8, describe: 'LoRA rank r̄ (the mean rank for schedules that allocate ranks per layer)' })
    .option('steps', { type: 'number', default: 100 })
    .option('lr', { type: 'number', default: 1e-4 })
    .option('seed', { type: 'number', default: 0 })
    .option('seqlen', { type: 'number', default: 128 })
    .option('resume', { type: 'boolean', default: false, describe: 'continue the unfinished run kept in <out>.partial' })
    .option('out', { type: 'string', demandOption: true }),
  handler: handler<Args>(async (args) => {
    if (!fs.existsSync(args.data)) throw new ConfigError(`--data ${args.data} not found`);
    const schedule = await resolveRecoverySchedule(args.schedule);
    const inputs = namedInputs(args, ['model', 'tokenizer', 'data']);
    const resumable = { resume: args.resume, state: TRAIN_STATE };
    await withCheckpointWriter({ out: args.out, overwrite: args.overwrite, inputs, resumable }, async (w) => {
      const backend = await startBackend(args);
      const { model, tokenizer } = await openModel(args);
      try {
        checkContextLength(model.config, args.seqlen, '--seqlen', { allow: args['allow-long-context'], allowFlag: '--allow-long-context' });
        const trainState = path.join(w.work, TRAIN_STATE);
        const r = recover(model, tokenizer, {
          schedule, rank: args.rank, steps: args.steps, lr: args.lr, data: args.data, seed: args.seed,
          seqLen: args.seqlen, pruneReport: readPruneReport(args.model),
          checkpointDir: trainState, resume: args.resume,
          onProgress: (p) => { if (p.step % 10 === 0 || p.step === p.steps) log(`finetune: step ${p.step}/${p.steps} loss ${p.loss.toFixed(4)} lr ${p.lr.toExponential(2)}`); },
        });
        w.ensureSpace(checkpointBytes(countParameters(model).total, 'f32'));
        saveModel(model, w.work);
        await copyTokenizerFiles(args.model, w.work, args.tokenizer);
        const report = readPruneReport(args.model);
        if (report) fs.writeFileSync(path.join(w.work, 'prune_report.json'), JSON.stringify(report, null, 2) + '\n');
        fs.rmSync(trainState, { recursive: true, force: true });
        w.commit();
        emit(args, { out: args.out, backend, schedule: r.schedule, heldOut: r.heldOut, steps: r.step, skippedTargets: r.skippedTargets, log: r.log },
          () => `held-out NLL ${r.heldOut.before.toFixed(4)} → ${r.heldOut.after?.toFixed(4) ?? "n/a"} after ${r.step} steps → ${args.out}`);
      } finally {
        model.dispose();
      }
    });
  }),
};
