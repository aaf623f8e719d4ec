import type { CommandModule } from 'yargs';
import fs from 'node:fs';
import path from 'node:path';
import { emit, handler, log, startBackend, withCommon, type CommonArgs } from '../common.ts';
import { runExperiment, ExperimentInterrupted } from '../../experiment/runner.ts';
import { executeRun, methodRegistryInfo, pluginModulesOf } from '../../experiment/pipeline.ts';
import { listMethods } from '../../prune/registry.ts';
import { readResults, readResultsFile } from '../../experiment/results.ts';
import { renderTable } from '../../experiment/table.ts';
import { plotResults } from '../../experiment/plot.ts';
import { SPARSITY_AXES, type SparsityAxis } from '../../experiment/report-data.ts';
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
    await listMethods(); // the methods declare the recovery presets the file may name
    const registry = await methodRegistryInfo(pluginModulesOf(args.file));
    const backend = await startBackend(args);
    try {
      const summary = await runExperiment(args.file, {
        executeRun, shard: args.shard, validateMethod: registry.validateMethod, usesPatterns: registry.usesPatterns,
        recoverySchedules: registry.recoverySchedules,
      });
      const rows = readResults(summary.outputDir);
      const table = renderTable(rows, { format: args.format, layout: 'paper', displayName: registry.displayName });
      const plots = await plotResults(rows, path.join(summary.outputDir, 'plots'), registry.displayName);
      if (plots.length > 0) log(`plots: ${path.relative(process.cwd(), path.join(summary.outputDir, 'plots')) || '.'}/ (${plots.length} SVG)`);
      emit(args, { ...summary, backend, table, plots } as unknown as Record<string, unknown>, () => table);
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

type TableArgs = CommonArgs & { results: string; format: 'md' | 'latex'; layout: 'paper' | 'wide'; metrics: 'default' | 'acc'; axis: SparsityAxis };

export const tableCommand: CommandModule<object, TableArgs> = {
  command: 'table <results>',
  describe: 'render results (results.csv or the experiment folder) as a paper-style table',
  builder: (y) => withCommon(y)
    .positional('results', { type: 'string', demandOption: true })
    .option('format', { choices: ['md', 'latex'] as const, default: 'md' as const })
    .option('layout', { choices: ['paper', 'wide'] as const, default: 'paper' as const })
    .option('metrics', { choices: ['default', 'acc'] as const, default: 'default' as const, describe: 'accuracy per task: the default map (acc_norm where protocol.md says), or acc everywhere' })
    .option('axis', { choices: SPARSITY_AXES, default: 'decoder' as SparsityAxis, describe: 'group rows by the measured fraction removed of decoder-layer parameters, all parameters, the method\'s own scope, or by target' }),
  handler: handler<TableArgs>(async (args) => {
    const { displayName } = await methodRegistryInfo();
    const table = renderTable(rowsFrom(args.results), { format: args.format, layout: args.layout, metrics: args.metrics, displayName, axis: args.axis });
    emit(args, { table }, () => table);
  }),
};

type PlotArgs = CommonArgs & { results: string; out: string; axis: SparsityAxis };

export const plotCommand: CommandModule<object, PlotArgs> = {
  command: 'plot <results>',
  describe: 'SVG charts: measured sparsity vs perplexity per method and kind, speed vs quality for structured models',
  builder: (y) => withCommon(y)
    .positional('results', { type: 'string', demandOption: true })
    .option('out', { type: 'string', demandOption: true })
    .option('axis', { choices: SPARSITY_AXES, default: 'decoder' as SparsityAxis, describe: 'x axis: measured fraction removed (decoder, all, scope) or target' }),
  handler: handler<PlotArgs>(async (args) => {
    makeWritableDir(args.out, `--out ${args.out}`);
    const { displayName } = await methodRegistryInfo();
    const files = await plotResults(rowsFrom(args.results), args.out, displayName, args.axis);
    emit(args, { files }, () => files.map((f) => path.relative(process.cwd(), f)).join('\n'));
  }),
};
