/**
 * Prompt templates for instruction data: how an (instruction, input) pair becomes the prompt the
 * response follows. A template is named (the registry below) or a JSON file in alpaca-lora's
 * template format (`prompt_input`, `prompt_no_input`, optional `description`).
 */
import fs from 'node:fs';
import { ConfigError } from '../util/errors.ts';

export interface PromptTemplate {
  /** The registry name, or the file it was read from. */
  name: string;
  description: string;
  /** Used when the example has a non-empty input; holds `{instruction}` and `{input}`. */
  promptInput: string;
  /** Used otherwise; holds `{instruction}`. */
  promptNoInput: string;
}

/**
 * Alpaca's template, character for character as LLM-Pruner's `LLMPruner/utils/prompter.py` (and
 * alpaca-lora's `templates/alpaca.json`) define it.
 */
const ALPACA: PromptTemplate = {
  name: 'alpaca',
  description: 'Alpaca (Stanford Alpaca / alpaca-lora; what LLM-Pruner post-training uses)',
  promptInput: 'Below is an instruction that describes a task, paired with an input that provides further context. ' +
    'Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n',
  promptNoInput: 'Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n' +
    '### Instruction:\n{instruction}\n\n### Response:\n',
};

export const PROMPT_TEMPLATES: Readonly<Record<string, PromptTemplate>> = Object.freeze({ alpaca: ALPACA });

const isTemplateFile = (s: string): boolean => s.endsWith('.json');

/** Check a template name without reading files: a registered name or a `.json` path. */
export function templateNameProblem(nameOrFile: string): string | null {
  if (nameOrFile in PROMPT_TEMPLATES || isTemplateFile(nameOrFile)) return null;
  return `unknown prompt template '${nameOrFile}'; valid: ${Object.keys(PROMPT_TEMPLATES).join(', ')} ` +
    '(or a template JSON file with prompt_input and prompt_no_input, as alpaca-lora writes them)';
}

/** A registered template by name, or one read from a JSON file. */
export function resolvePromptTemplate(nameOrFile: string): PromptTemplate {
  const problem = templateNameProblem(nameOrFile);
  if (problem) throw new ConfigError(problem);
  const named = PROMPT_TEMPLATES[nameOrFile];
  if (named) return named;
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(nameOrFile, 'utf8'));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new ConfigError(code === 'ENOENT' ? 'prompt template file not found' : `not a readable JSON template (${(e as Error).message})`, nameOrFile);
  }
  const t = raw as { prompt_input?: unknown; prompt_no_input?: unknown; description?: unknown } | null;
  const str = (v: unknown): v is string => typeof v === 'string';
  if (!t || !str(t.prompt_input) || !str(t.prompt_no_input)) {
    throw new ConfigError('a prompt template needs string fields prompt_input and prompt_no_input', nameOrFile);
  }
  if (!t.prompt_input.includes('{instruction}') || !t.prompt_input.includes('{input}') || !t.prompt_no_input.includes('{instruction}')) {
    throw new ConfigError('prompt_input must hold {instruction} and {input}, prompt_no_input {instruction}', nameOrFile);
  }
  return { name: nameOrFile, description: str(t.description) ? t.description : nameOrFile, promptInput: t.prompt_input, promptNoInput: t.prompt_no_input };
}

/**
 * The prompt of an example (Python's `str.format` on the two fields, in one pass, so braces inside
 * the instruction are left alone): the input form when `input` is non-empty.
 */
export function formatPrompt(t: PromptTemplate, instruction: string, input: string): string {
  const values: Record<string, string> = { instruction, input };
  return (input ? t.promptInput : t.promptNoInput).replace(/\{(instruction|input)\}/g, (_, k: string) => values[k]);
}
