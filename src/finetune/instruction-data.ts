/**
 * Instruction data (Alpaca's format): a JSON array, or JSON Lines, of records with `instruction`,
 * optional `input` and `output` strings (other fields are ignored). Each record becomes one
 * training sequence, tokenised as LLM-Pruner's `post_training.py` does:
 *
 * - full = BOS + prompt + output, truncated to `cutoff` tokens; EOS appended when it fits and the
 *   last token is not EOS already;
 * - with `trainOnInputs` off, the first len(BOS + prompt, truncated) tokens are not predicted
 *   (their labels are −100 there): the loss covers the response (and EOS) only.
 */
import type { Tokenizer } from '../tokenizer/types.ts';
import { DataError } from '../util/errors.ts';
import { formatPrompt, type PromptTemplate } from './prompt-template.ts';
import { readJsonRecords } from '../data/json-records.ts';

export interface InstructionExample {
  instruction: string;
  /** '' when the record has none. */
  input: string;
  output: string;
}

/** One tokenised example: ids and, aligned with them, which tokens are predicted (1) or not (0). */
export interface TokenizedExample {
  ids: number[];
  lossMask: number[];
}

function checkRecord(raw: unknown, where: string, file: string): InstructionExample {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new DataError(`${where}: expected an object with instruction, input and output, got ${JSON.stringify(raw)?.slice(0, 60)}`, file);
  }
  const r = raw as Record<string, unknown>;
  for (const key of ['instruction', 'output'] as const) {
    if (!(key in r)) throw new DataError(`${where}: missing field '${key}' (every record needs instruction and output; input is optional)`, file);
  }
  for (const key of ['instruction', 'input', 'output'] as const) {
    if (key in r && typeof r[key] !== 'string') throw new DataError(`${where}: field '${key}' must be a string, got ${JSON.stringify(r[key])?.slice(0, 60)}`, file);
  }
  return { instruction: r.instruction as string, input: (r.input as string | undefined) ?? '', output: r.output as string };
}

/** Every record of an instruction file, checked; errors name the file and the row (and line). */
export function readInstructionFile(file: string): InstructionExample[] {
  const out = readJsonRecords(file, 'instruction data').map((r) => checkRecord(r.value, r.where, file));
  if (out.length === 0) throw new DataError('no instruction records', file);
  return out;
}

export interface TokenizeOptions {
  /** Maximum tokens per sequence (LLM-Pruner's `cutoff_len`). */
  cutoff: number;
  /** Predict the prompt tokens too (LLM-Pruner's `train_on_inputs`). */
  trainOnInputs: boolean;
}

export function tokenizeInstruction(ex: InstructionExample, tokenizer: Tokenizer, template: PromptTemplate, opts: TokenizeOptions): TokenizedExample {
  const prompt = formatPrompt(template, ex.instruction, ex.input);
  const ids = tokenizer.encode(prompt + ex.output, { addBos: true }).slice(0, opts.cutoff);
  const eos = tokenizer.eosId;
  if (eos !== null && ids[ids.length - 1] !== eos && ids.length < opts.cutoff) ids.push(eos);
  const promptLen = opts.trainOnInputs ? 0 : tokenizer.encode(prompt, { addBos: true }).slice(0, opts.cutoff).length;
  return { ids, lossMask: ids.map((_, t) => (t >= promptLen ? 1 : 0)) };
}
