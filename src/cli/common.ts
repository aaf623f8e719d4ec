/**
 * What every CLI command shares: `--backend`, `--json`, model/tokenizer opening, and the rule
 * that stdout carries exactly one JSON object (logs go to stderr).
 */
import type { Argv } from 'yargs';
import { activeAdapter, BACKEND_CHOICES, initBackend, type BackendChoice, type ConcreteBackend } from '../backend/index.ts';
import { loadModel, type LoadedModel } from '../io/load-model.ts';
import { setDeviceMemory, wasmAbortAsResourceError } from '../backend/memory.ts';
import { describeWasmMatmul, MATMUL_CHOICES, MATMUL_ENV, type MatmulChoice } from '../backend/openblas.ts';
import { parseByteSize } from '../util/byte-size.ts';

export { parseByteSize };
import { checkTokenizerMatchesModel, findTokenizerForModel } from '../tokenizer/load.ts';
import type { Tokenizer } from '../tokenizer/types.ts';
import { FileSystemError, isErrnoException, PruneLabError } from '../util/errors.ts';
import { WEIGHT_DTYPES, type CheckpointFormat, type WeightDtype } from '../io/hf-checkpoint.ts';
import { reportProgress } from '../util/supervision.ts';

export interface CommonArgs {
  backend: BackendChoice;
  matmul?: MatmulChoice | undefined;
  json: boolean;
  'device-memory'?: string | undefined;
}

export function withCommon<T>(y: Argv<T>): Argv<T & CommonArgs> {
  return y
    .option('backend', { choices: BACKEND_CHOICES, default: 'auto' as BackendChoice, describe: 'compute backend (auto = fastest that loads; webgpu on a software adapter only when named)' })
    .option('matmul', {
      choices: MATMUL_CHOICES,
      describe: `the wasm backend's matrix products: openblas (native, every core, with the elementwise kernels; needs libopenblas-dev at install), xnnpack (the backend's own, all kernels as it ships), auto = openblas where built (default; also ${MATMUL_ENV})`,
    })
    .option('json', { type: 'boolean', default: false, describe: 'print exactly one JSON object on stdout' })
    .option('device-memory', {
      type: 'string',
      describe: 'backend memory budget for weights, e.g. 2GiB or 500MB (default for wasm: its 4 GiB heap minus 1 GiB): a model over it is streamed, one layer at a time on the backend',
    });
}

export function withModel<T>(y: Argv<T>): Argv<T & { model: string; tokenizer: string | undefined }> {
  return y
    .option('model', { type: 'string', demandOption: true, describe: 'HF checkpoint directory or llama2.c .bin' })
    .option('tokenizer', { type: 'string', describe: 'tokenizer path (default: found beside the model)' });
}

/** `--overwrite` of every command that writes a model folder (src/io/checkpoint-writer.ts). */
export function withOverwrite<T>(y: Argv<T>): Argv<T & { overwrite: boolean }> {
  return y.option('overwrite', {
    type: 'boolean', default: false,
    describe: 'replace a non-empty --out (only once the new checkpoint is complete)',
  });
}

/** `--allow-long-context`: LLaMA windows beyond max_position_embeddings (src/util/context-length.ts). */
export function withLongContext<T>(y: Argv<T>): Argv<T & { 'allow-long-context': boolean }> {
  return y.option('allow-long-context', {
    type: 'boolean', default: false,
    describe: "allow --seqlen beyond a LLaMA model's trained context (max_position_embeddings); recorded in the result",
  });
}

/** The inputs a command reads, named by flag, for the --out checks (absent ones left out). */
export function namedInputs<A extends object>(args: A, flags: readonly (keyof A & string)[]): { flag: string; path: string }[] {
  return flags.flatMap((f) => (typeof args[f] === 'string' && args[f] !== '' ? [{ flag: `--${f}`, path: args[f] as string }] : []));
}

/** A checkpoint's bytes on disk, near enough for a free-space check: its weights at the dtype plus 64 KiB. */
export function checkpointBytes(params: number, dtype: WeightDtype): number {
  return params * (dtype === 'f32' ? 4 : 2) + 65_536;
}

export interface FormatArgs {
  dtype: WeightDtype | undefined;
  'shard-size': string;
}

/** `--dtype` and `--shard-size` of every command that writes a model folder. */
export function withCheckpointFormat<T>(y: Argv<T>, defaultDtype = "the input's stored dtype"): Argv<T & FormatArgs> {
  return y
    .option('dtype', { choices: WEIGHT_DTYPES, describe: `weight dtype written (default: ${defaultDtype})` })
    .option('shard-size', {
      type: 'string', default: '2GB',
      describe: 'most bytes per safetensors shard (e.g. 2GB, 500MB, 1GiB); one model.safetensors when everything fits',
    }) as Argv<T & FormatArgs>;
}

/** The format to write: `--dtype` or else `fallback` (the input's stored dtype), and the shard size. */
export function checkpointFormat(args: FormatArgs, fallback: WeightDtype): CheckpointFormat {
  return { dtype: args.dtype ?? fallback, shardBytes: parseByteSize(args['shard-size'], '--shard-size') };
}

/**
 * A progress line on stderr; the last one is what an interrupt reports as done. The supervisor
 * hears of it first: a line already on the terminal (which a user, or a test, interrupts after
 * reading) must not be missing from the interrupt's report because the child died between the
 * two writes (seen once in CI: `lastProgress` null after the line had been printed).
 */
export function log(msg: string): void {
  reportProgress(msg);
  process.stderr.write(`${msg}\n`);
}

export async function startBackend(args: CommonArgs): Promise<ConcreteBackend> {
  const budget = args['device-memory'];
  setDeviceMemory(budget === undefined ? null : parseByteSize(budget, '--device-memory'));
  // Through the environment, so worker threads started later make the same choice.
  if (args.matmul !== undefined) process.env[MATMUL_ENV] = args.matmul;
  return initBackend(args.backend, false);
}

/** Load the model and its tokenizer, checked against each other (the padding is noted on stderr). */
export async function openModel(args: { model: string; tokenizer?: string }): Promise<LoadedModel & { tokenizer: Tokenizer; vocabPadding: number }> {
  const loaded = loadModel(args.model);
  let padding: number;
  let tokenizer: Tokenizer;
  try {
    tokenizer = await findTokenizerForModel(args.model, args.tokenizer);
    ({ padding } = checkTokenizerMatchesModel(tokenizer, loaded.model.config.vocabSize, args.model));
  } catch (e) {
    loaded.model.dispose();
    throw e;
  }
  if (loaded.model.mode === 'streamed') log(`weights streamed: on the host, one layer at a time on the backend (over the backend memory budget; --device-memory sets it)`);
  if (padding > 0) {
    log(`note: the model's vocabulary (${loaded.model.config.vocabSize}) has ${padding} padding id(s) beyond the tokenizer's ${tokenizer.vocabSize}; the tokenizer never produces them`);
  }
  return { ...loaded, tokenizer, vocabPadding: padding };
}

/**
 * Print a result: one JSON object with --json, else a readable rendering. On WebGPU the
 * adapter it ran on is recorded beside `backend`.
 */
export function emit(args: CommonArgs, result: Record<string, unknown>, human?: () => string): void {
  const adapter = activeAdapter();
  if (adapter && 'backend' in result) result = { ...result, adapter };
  const products = result.backend === 'wasm' ? describeWasmMatmul() : null;
  if (products && !('matmul' in result)) result = { ...result, matmul: products.kernel };
  if (args.json) process.stdout.write(JSON.stringify(result) + '\n');
  else process.stdout.write((human ? human() : JSON.stringify(result, null, 2)) + '\n');
}

/**
 * Report a failure: one line on stderr (a stack trace only for a bug, not for bad input or a
 * file-system error), one JSON object on stdout with --json; exit code 2 for user-facing errors,
 * 1 for bugs.
 */
export function reportError(e: unknown, json: boolean): void {
  const raw = isErrnoException(e) ? FileSystemError.from(e) : e instanceof Error ? e : new Error(String(e));
  const err = wasmAbortAsResourceError(raw) ?? raw;
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
