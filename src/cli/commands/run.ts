import type { CommandModule } from 'yargs';
import fs from 'node:fs';
import path from 'node:path';
import { emit, handler, startBackend, withCommon, type CommonArgs } from '../common.ts';
import { runExperiment, ExperimentInterrupted } from '../../experiment/runner.ts';
import { executeRun, methodValidator, patternMethodNames } from '../../experiment/pipeline.ts';
import { readResults, readResultsFile } from '../../experiment/results.ts';
import { renderTable } from '../../experiment/table.ts';
import { plotResults } from '../../experiment/plot.ts';
import { DataError } from '../../util/errors.ts';
import { makeWritableDir } from '../../util/writable-dir.ts';

type RunArgs = CommonArgs & { file: string; shard: string | undefined; format: 'md' | 'latex' };

export const runCommand: CommandModule<object, RunArgs> = {
  command: 'run <file>',
  describe: 'run an experiment YAML (grid of models × methods × sparsities × seeds × recovery); re-running resumes',
  builder: (y) => withCommon(y)
    .positional('file', { type: 'string', demandOption: true, describe: 'experiment YAML' })
    .option('shard', { type: 'string', describe: 'run slice i/n of the grid (0-based i)' })
    .option('format', { choices: ['md', 'latex'] as const, default: 'md' as const, describe: 'table printed at the end' }),
  handler: handler<RunArgs>(async (args) => {
    const [validateMethod, patternMethods] = await Promise.all([methodValidator(), patternMethodNames()]);
    const backend = await startBackend(args);
    try {
      const summary = await runExperiment(args.file, {
        executeRun, shard: args.shard, validateMethod, usesPatterns: (m) => patternMethods.has(m),
      });
      const rows = readResults(summary.outputDir);
      const table = renderTable(rows, { format: args.format, layout: 'paper' });
      emit(args, { ...summary, backend, table } as unknown as Record<string, unknown>, () => table);
    } catch (e) {
      if (e instanceof ExperimentInterrupted) process.exitCode = e.exitCode;
      throw e;
    }
  }),
};

function rowsFrom(target: string) {
  if (!fs.existsSync(target)) throw new DataError('no such results file or folder', target);
  return fs.statSync(target).isDirectory() ? readResults(target) : readResultsFile(target).rows;
}

type TableArgs = CommonArgs & { results: string; format: 'md' | 'latex'; layout: 'paper' | 'wide'; metrics: 'default' | 'wanda' };

export const tableCommand: CommandModule<object, TableArgs> = {
  command: 'table <results>',
  describe: 'render results (results.csv or the experiment folder) as a paper-style table',
  builder: (y) => withCommon(y)
    .positional('results', { type: 'string', demandOption: true })
    .option('format', { choices: ['md', 'latex'] as const, default: 'md' as const })
    .option('layout', { choices: ['paper', 'wide'] as const, default: 'paper' as const })
    .option('metrics', { choices: ['default', 'wanda'] as const, default: 'default' as const, describe: 'accuracy per task: default map or acc everywhere' }),
  handler: handler<TableArgs>(async (args) => {
    const table = renderTable(rowsFrom(args.results), { format: args.format, layout: args.layout, metrics: args.metrics });
    emit(args, { table }, () => table);
  }),
};

type PlotArgs = CommonArgs & { results: string; out: string };

export const plotCommand: CommandModule<object, PlotArgs> = {
  command: 'plot <results>',
  describe: 'SVG charts: sparsity vs perplexity per method, speed vs quality',
  builder: (y) => withCommon(y)
    .positional('results', { type: 'string', demandOption: true })
    .option('out', { type: 'string', demandOption: true }),
  handler: handler<PlotArgs>(async (args) => {
    makeWritableDir(args.out, `--out ${args.out}`);
    const files = await plotResults(rowsFrom(args.results), args.out);
    emit(args, { files }, () => files.map((f) => path.relative(process.cwd(), f)).join('\n'));
  }),
};
