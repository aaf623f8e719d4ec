/**
 * The `prunelab` command line. Each command lives in `commands/`; this file only wires them.
 */
import yargs from 'yargs';
import { inspectCommand } from './commands/inspect.ts';
import { evalPplCommand } from './commands/eval-ppl.ts';
import { evalZeroshotCommand } from './commands/eval-zeroshot.ts';
import { evalSpeedCommand } from './commands/eval-speed.ts';
import { generateCommand } from './commands/generate.ts';
import { convertCommand } from './commands/convert.ts';
import { pruneCommand } from './commands/prune.ts';
import { methodsCommand } from './commands/methods.ts';
import { finetuneCommand } from './commands/finetune.ts';
import { pretrainCommand } from './commands/pretrain.ts';
import { runCommand, tableCommand, plotCommand } from './commands/run.ts';

export async function main(argv: string[]): Promise<void> {
  await yargs(argv)
    .scriptName('prunelab')
    .command(inspectCommand)
    .command('eval', 'evaluate a model', (y) => y.command(evalPplCommand).command(evalZeroshotCommand).command(evalSpeedCommand)
      .demandCommand(1, 'name an evaluation: ppl, zeroshot or speed'))
    .command(generateCommand)
    .command(convertCommand)
    .command(pruneCommand)
    .command(methodsCommand)
    .command(finetuneCommand)
    .command(pretrainCommand)
    .command(runCommand)
    .command(tableCommand)
    .command(plotCommand)
    .demandCommand(1, 'name a command (see --help)')
    .strict()
    .help()
    .parseAsync();
}

