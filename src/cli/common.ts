/**
 * What every CLI command shares: `--backend`, `--json`, model/tokenizer opening, and the rule
 * that stdout carries exactly one JSON object (logs go to stderr).
 */
import type { Argv } from 'yargs';
import { BACKEND_CHOICES, initBackend, type BackendChoice, type ConcreteBackend } from '../backend/index.ts';
import { loadModel, type LoadedModel } from '../io/load-model.ts';
import { checkTokenizerMatchesModel, findTokenizerForModel } from '../tokenizer/load.ts';
import type { Tokenizer } from '../tokenizer/types.ts';
import { FileSystemError, isErrnoException, PruneLabError } from '../util/errors.ts';
import { reportProgress } from '../util/supervision.ts';

export interface CommonArgs {
  backend: BackendChoice;
  json: boolean;
}

export function withCommon<T>(y: Argv<T>): Argv<T & CommonArgs> {
  return y
    .option('backend', { choices: BACKEND_CHOICES, default: 'auto' as BackendChoice, describe: 'compute backend (auto = fastest that loads)' })
    .option('json', { type: 'boolean', default: false, describe: 'print exactly one JSON object on stdout' });
}

export function withModel<T>(y: Argv<T>): Argv<T & { model: string; tokenizer: string | undefined }> {
  return y
    .option('model', { type: 'string', demandOption: true, describe: 'HF checkpoint directory or llama2.c .bin' })
    .option('tokenizer', { type: 'string', describe: 'tokenizer path (default: found beside the model)' });
}

/** A progress line on stderr; the last one is what an interrupt reports as done. */
export function log(msg: string): void {
  process.stderr.write(`${msg}\n`);
  reportProgress(msg);
}

export async function startBackend(args: CommonArgs): Promise<ConcreteBackend> {
  return initBackend(args.backend, false);
}

export async function openModel(args: { model: string; tokenizer?: string }): Promise<LoadedModel & { tokenizer: Tokenizer }> {
  const loaded = loadModel(args.model);
  const tokenizer = await findTokenizerForModel(args.model, args.tokenizer);
  checkTokenizerMatchesModel(tokenizer, loaded.model.config.vocabSize, args.model);
  return { ...loaded, tokenizer };
}

/** Print a result: one JSON object with --json, else a readable rendering. */
export function emit(args: CommonArgs, result: Record<string, unknown>, human?: () => string): void {
  if (args.json) process.stdout.write(JSON.stringify(result) + '\n');
  else process.stdout.write((human ? human() : JSON.stringify(result, null, 2)) + '\n');
}

/**
 * Report a failure: one line on stderr (a stack trace only for a bug, not for bad input or a
 * file-system error), one JSON object on stdout with --json; exit code 2 for user-facing errors,
 * 1 for bugs.
 */
export function reportError(e: unknown, json: boolean): void {
  const err = isErrnoException(e) ? FileSystemError.from(e) : e instanceof Error ? e : new Error(String(e));
  const known = err instanceof PruneLabError;
  if (json) {
    const code = err instanceof FileSystemError ? { code: err.code } : {};
    process.stdout.write(JSON.stringify({ error: err.message, kind: err.name, ...code }) + '\n');
  }
  process.stderr.write(`prunelab: ${known ? err.message : err.stack ?? err.message}\n`);
  // An error may carry its own code (an interrupted experiment: 128 + the signal number).
  const own = (err as { exitCode?: unknown }).exitCode;
  process.exitCode = typeof own === 'number' && own > 0 ? own : known ? 2 : 1;
}

/** Wrap a handler: errors are reported by `reportError`. */
export function handler<A extends CommonArgs>(fn: (args: A) => Promise<void>): (args: A) => Promise<void> {
  return async (args: A) => {
    try {
      await fn(args);
    } catch (e) {
      reportError(e, args.json);
    }
  };
}
