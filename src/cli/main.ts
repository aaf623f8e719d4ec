/**
 * The `prunelab` command line. Each command lives in `commands/`; this file only wires them.
 */
import yargs from 'yargs';
import { UsageError } from '../util/errors.ts';
import { reportError } from './common.ts';
import { flushed } from './supervisor.ts';
import { wantsJson } from './json-flag.ts';
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

/** The raw text given for `--key` (`--key v` or `--key=v`), for messages about values yargs mangled. */
function rawValue(argv: readonly string[], key: string): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === `--${key}`) return argv[i + 1];
    if (argv[i].startsWith(`--${key}=`)) return argv[i].slice(key.length + 3);
  }
  return undefined;
}

/** yargs turns `--sparsity abc` into NaN: refuse it, quoting what was typed. */
function refuseNaN(argv: readonly string[]): (args: Record<string, unknown>) => void {
  return (args) => {
    for (const [key, v] of Object.entries(args)) {
      const values = Array.isArray(v) ? v : [v];
      // Options are spelled with dashes; yargs adds camelCase copies, skipped here.
      if (/[A-Z]/.test(key) || !values.some((x) => typeof x === 'number' && Number.isNaN(x))) continue;
      const raw = rawValue(argv, key);
      throw new UsageError(`--${key} expects a number, got ${raw === undefined ? 'something else' : JSON.stringify(raw)} (see prunelab ${commandOf(argv)} --help)`);
    }
  };
}

/** The command named on the line (`prune`, `eval ppl`), for the help hint. */
function commandOf(argv: readonly string[]): string {
  const words = argv.filter((a) => !a.startsWith('-')).slice(0, 2);
  return words[0] === 'eval' ? words.join(' ') : words[0] ?? '';
}

/** Parse and run; argument errors throw UsageError (the caller reports them). */
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
    .demandCommand(1, 'name a command')
    .middleware(refuseNaN(argv))
    .strict()
    .help()
    .fail((msg, err) => {
      if (err) throw err;
      const cmd = commandOf(argv);
      throw new UsageError(`${msg.replace(/\s+/g, ' ').trim()} (see prunelab ${cmd ? `${cmd} ` : ''}--help)`);
    })
    .exitProcess(false)
    .parseAsync();
}

/**
 * The command process (run by the supervisor, src/cli/supervisor.ts): run, report argument
 * errors like any other (one JSON object with --json, exit code 2), then exit once stdout and
 * stderr are flushed. Exiting explicitly keeps a stray handle (a worker thread shutting down, a
 * timer) from holding a finished command; waiting for the flush keeps a slow reader of a large
 * report from getting half of it.
 */
export async function runMain(argv: string[]): Promise<never> {
  // If the supervisor dies, stop too (SIGTERM: the same clean path as an interrupt).
  process.on('disconnect', () => process.kill(process.pid, 'SIGTERM'));
  try {
    await main(argv);
  } catch (e) {
    reportError(e, wantsJson(argv));
  }
  await Promise.all([flushed(process.stdout), flushed(process.stderr)]);
  process.exit(process.exitCode ?? 0);
}

