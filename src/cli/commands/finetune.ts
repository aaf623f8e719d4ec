import type { CommandModule } from 'yargs';
import fs from 'node:fs';
import path from 'node:path';
import {
  checkpointBytes, checkpointFormat, emit, handler, log, namedInputs, openModel, parseByteSize, startBackend, withCheckpointFormat, withCommon,
  withLongContext, withModel, withOverwrite, type CommonArgs, type FormatArgs,
} from '../common.ts';
import { readPruneReport, recover } from '../../finetune/recovery.ts';
import { DATA_FORMATS, resolveRecipe, type RecipeInput } from '../../finetune/recipes.ts';
import { LR_SCHEDULES } from '../../train/lr-schedule.ts';
import { listMethods, resolveRecoverySchedule } from '../../prune/registry.ts';
import { saveModel } from '../../io/load-model.ts';
import { writeQuantizedCheckpoint } from '../../io/quantized-checkpoint.ts';
import { copyTokenizerFiles } from '../../tokenizer/files.ts';
import { ConfigError } from '../../util/errors.ts';
import { checkContextLength } from '../../util/context-length.ts';
import { withCheckpointWriter } from '../../io/checkpoint-writer.ts';
import { countParameters } from '../../model/count.ts';

/** Training state inside the resumable work folder `<out>.partial` (src/io/checkpoint-writer.ts). */
const TRAIN_STATE = '.train';

/** Recipe flags: yargs name → recipe key (recipes.ts). None has a yargs default, so a preset's values apply. */
const RECIPE_FLAGS = {
  schedule: 'schedule', rank: 'rank', alpha: 'alpha', dropout: 'dropout', targets: 'targets', steps: 'steps', epochs: 'epochs',
  lr: 'lr', 'lr-schedule': 'lrSchedule', warmup: 'warmup', 'micro-batch': 'microBatch', 'grad-accum': 'gradAccum',
  seqlen: 'seqlen', format: 'format', template: 'template', 'train-on-inputs': 'trainOnInputs', 'held-out': 'heldOut',
} as const;

type Args = CommonArgs & FormatArgs & {
  model: string; tokenizer: string | undefined; data: string; preset: string | undefined; seed: number; out: string; resume: boolean;
  overwrite: boolean; 'allow-long-context': boolean;
} & { [K in keyof typeof RECIPE_FLAGS]?: string | number | boolean };

/** The recipe the flags ask for: the preset, the flags given, then the CLI's defaults (uniform, 100 steps). */
function recipeFromArgs(args: Args): ReturnType<typeof resolveRecipe> {
  const input: Record<string, unknown> = {};
  if (args.preset !== undefined) input.preset = args.preset;
  for (const [flag, key] of Object.entries(RECIPE_FLAGS)) {
    const v = args[flag as keyof typeof RECIPE_FLAGS];
    if (v === undefined) continue;
    input[key] = key === 'targets' ? String(v).split(',').map((t) => t.trim()).filter(Boolean) : v;
  }
  return resolveRecipe(input as RecipeInput, { schedule: 'uniform', steps: 100 });
}

export const finetuneCommand: CommandModule<object, Args> = {
  command: 'finetune',
  describe: 'recover a pruned model with LoRA (uniform ranks, or the schedule a pruning method declares), merged',
  builder: (y) => withCheckpointFormat(withLongContext(withOverwrite(withModel(withCommon(y)))), 'f32: small merged LoRA updates would round away in 16 bits')
    .option('data', { type: 'string', demandOption: true, describe: 'training data: a text file (a held-out split is kept), or instruction JSON/JSONL with --format alpaca-json' })
    .option('preset', { type: 'string', describe: 'a named recipe: a method that declares its paper\'s recovery recipe (see `prunelab methods`); every flag below overrides it' })
    .option('schedule', { type: 'string', describe: "'uniform' (default), or the name of a method that declares a recovery schedule (see `prunelab methods`)" })
    .option('rank', { type: 'number', describe: 'LoRA rank r̄ (the mean rank for schedules that allocate ranks per layer; default 8)' })
    .option('alpha', { type: 'number', describe: 'LoRA α at r̄ (default 16)' })
    .option('dropout', { type: 'number', describe: 'LoRA dropout (default 0.05)' })
    .option('targets', { type: 'string', describe: 'linears to adapt, comma-separated roles (q,k,v,o,gate,up,down; OPT fc1,fc2); default all' })
    .option('steps', { type: 'number', describe: 'optimiser steps (default 100 unless --epochs or a preset gives the length)' })
    .option('epochs', { type: 'number', describe: 'passes over the training data instead of --steps (steps counted as HF Trainer counts them)' })
    .option('lr', { type: 'number', describe: 'peak learning rate (default 1e-4)' })
    .option('lr-schedule', { type: 'string', choices: LR_SCHEDULES, describe: 'after the warm-up: cosine (default), linear or constant (HF Trainer\'s)' })
    .option('warmup', { type: 'number', describe: 'warm-up steps (default min(100, 10% of the steps))' })
    .option('micro-batch', { type: 'number', describe: 'windows or examples per forward pass (default 4)' })
    .option('grad-accum', { type: 'number', describe: 'micro-batches per optimiser step; effective batch = micro-batch × grad-accum (default 1)' })
    .option('seqlen', { type: 'number', describe: 'window length of text, cutoff of instruction examples (default 128)' })
    .option('format', { type: 'string', choices: DATA_FORMATS, describe: 'text (default) or alpaca-json: instruction records (instruction, input, output)' })
    .option('template', { type: 'string', describe: 'prompt template of alpaca-json data: alpaca (default) or a template JSON file' })
    .option('train-on-inputs', { type: 'boolean', describe: 'alpaca-json: predict the prompt tokens too (default: loss on the response only)' })
    .option('held-out', { type: 'number', describe: 'held-out data: a fraction in (0, 1) or a number of windows/examples (default 0.1)' })
    .option('seed', { type: 'number', default: 0 })
    .option('resume', { type: 'boolean', default: false, describe: 'continue the unfinished run kept in <out>.partial' })
    .option('out', { type: 'string', demandOption: true }),
  handler: handler<Args>(async (args) => {
    if (!fs.existsSync(args.data)) throw new ConfigError(`--data ${args.data} not found`);
    await listMethods(); // the methods declare the presets
    const recipe = recipeFromArgs(args);
    parseByteSize(args['shard-size'], '--shard-size');
    const schedule = await resolveRecoverySchedule(recipe.schedule);
    const inputs = namedInputs(args, ['model', 'tokenizer', 'data']);
    const resumable = { resume: args.resume, state: TRAIN_STATE };
    await withCheckpointWriter({ out: args.out, overwrite: args.overwrite, inputs, resumable }, async (w) => {
      const backend = await startBackend(args);
      const { model, tokenizer } = await openModel(args);
      try {
        checkContextLength(model.config, recipe.seqlen, '--seqlen', { allow: args['allow-long-context'], allowFlag: '--allow-long-context' });
        const trainState = path.join(w.work, TRAIN_STATE);
        const r = await recover(model, tokenizer, {
          schedule, recipe, data: args.data, seed: args.seed, pruneReport: readPruneReport(args.model),
          checkpointDir: trainState, resume: args.resume,
          onProgress: (p) => { if (p.step % 10 === 0 || p.step === p.steps) log(`finetune: step ${p.step}/${p.steps} loss ${p.loss.toFixed(4)} lr ${p.lr.toExponential(2)}`); },
        });
        // f32 unless asked: small merged LoRA updates would round away in a 16-bit dtype.
        const format = checkpointFormat(args, 'f32');
        w.ensureSpace(checkpointBytes(countParameters(model).total, format.dtype));
        saveModel(model, w.work, format);
        await copyTokenizerFiles(args.model, w.work, args.tokenizer);
        // Group fine-tuning: the quantised model itself beside the fp32 merge (io/quantized-checkpoint.ts).
        const quantized = r.quantized && r.quantized.size > 0 ? r.quantized : null;
        if (quantized) {
          writeQuantizedCheckpoint(path.join(w.work, 'quantized'), model, quantized);
          await copyTokenizerFiles(args.model, path.join(w.work, 'quantized'), args.tokenizer);
        }
        const report = readPruneReport(args.model);
        if (report) fs.writeFileSync(path.join(w.work, 'prune_report.json'), JSON.stringify(report, null, 2) + '\n');
        fs.rmSync(trainState, { recursive: true, force: true });
        w.commit();
        const quantizedOut = quantized ? path.join(args.out, 'quantized') : null;
        emit(args, { out: args.out, quantizedOut, evaluated: r.evaluated, backend, execution: model.mode, schedule: r.schedule, recipe: r.recipe, heldOut: r.heldOut, steps: r.step, skippedTargets: r.skippedTargets, log: r.log },
          () => `held-out NLL ${r.heldOut.before.toFixed(4)} → ${r.heldOut.after?.toFixed(4) ?? "n/a"} after ${r.step} steps → ${args.out}`);
      } finally {
        model.dispose();
      }
    });
  }),
};
