/**
 * Recovery recipes as data: every training setting of a recovery run (schedule, LoRA shape, data
 * format, batch, length, learning-rate schedule, held-out part), settable from an experiment's
 * `recovery:` entries and from `prunelab finetune`, and named presets that fill them the way a
 * paper's code ran them. A preset is a named set of settings — nothing in the code branches on
 * it — and every setting written beside it overrides the preset's.
 *
 * Settings as written (YAML keys; CLI flags in kebab case): `schedule`, `rank`, `alpha`, `dropout`,
 * `targets`, `lr`, `lrSchedule`, `warmup`, `microBatch`, `gradAccum`, `seqlen`, `steps` | `epochs`,
 * `format`, `template`, `trainOnInputs`, `heldOut`. This module is free of TensorFlow.js (the
 * experiment loader validates recipes with it).
 */
import { z } from 'zod';
import { LINEAR_ROLES, type LinearRole } from '../model/family.ts';
import { LR_SCHEDULES, type LrScheduleKind } from '../train/lr-schedule.ts';
import { ConfigError } from '../util/errors.ts';
import { templateNameProblem } from './prompt-template.ts';

/** `text`: a text file cut into windows; `alpaca-json`: instruction records (instruction-data.ts). */
export const DATA_FORMATS = ['text', 'alpaca-json'] as const;
export type DataFormat = (typeof DATA_FORMATS)[number];

const posInt = z.number().int().min(1);

/** Every recipe setting; each is optional where written. */
export const RECIPE_FIELDS = {
  /** `uniform`, or the name of a method that declares a recovery schedule. */
  schedule: z.string().min(1),
  /** r̄: LoRA rank (the mean rank of a per-layer allocation). */
  rank: posInt,
  alpha: z.number().gt(0),
  dropout: z.number().min(0).lt(1),
  /** Linear roles to adapt; default every linear of the model's family. */
  targets: z.array(z.enum(LINEAR_ROLES)).min(1),
  lr: z.number().gt(0),
  lrSchedule: z.enum(LR_SCHEDULES),
  /** Warm-up steps; default min(100, 10 % of the steps). */
  warmup: z.number().int().min(0),
  /** Items (windows or examples) per forward/backward pass. */
  microBatch: posInt,
  /** Micro-batches per optimiser step (effective batch microBatch × gradAccum). */
  gradAccum: posInt,
  /** Window length (text) or cutoff (instruction data), in tokens. */
  seqlen: z.number().int().min(2),
  steps: posInt,
  epochs: z.number().gt(0),
  format: z.enum(DATA_FORMATS),
  /** Prompt template of instruction data: a registered name or a template JSON file. */
  template: z.string().min(1),
  /** Instruction data: predict the prompt tokens too (default off: loss on the response only). */
  trainOnInputs: z.boolean(),
  /** Held-out part of the data: a fraction in (0, 1), or a whole number of items. */
  heldOut: z.number().gt(0).refine((v) => v < 1 || Number.isInteger(v), { error: 'expected a fraction in (0, 1) or a whole number of items' }),
};

export const RecipeSettingsSchema = z.strictObject(RECIPE_FIELDS).partial();
export type RecipeSettings = z.output<typeof RecipeSettingsSchema>;
export type RecipeKey = keyof RecipeSettings;

/** Settings plus the preset they start from. */
export type RecipeInput = RecipeSettings & { preset?: string };

export interface RecipePreset {
  description: string;
  /** Where each value comes from. */
  source: string;
  /** Another preset this one starts from (its settings first, then these). */
  basedOn?: string;
  settings: RecipeSettings;
}

/**
 * Presets by name. They are declared by the method plug-ins (`recoveryRecipe` in the contract:
 * a method's paper's recovery recipe under the method's name) and registered here by the method
 * registry as methods load; this module names none itself.
 */
const presets = new Map<string, RecipePreset>();

export function registerRecipePreset(name: string, preset: RecipePreset): void {
  presets.set(name, preset);
}

/** Registered preset names, sorted. */
export function recipePresetNames(): string[] {
  return [...presets.keys()].sort();
}

/** A preset's settings with what it is based on applied first; undefined for an unknown name. */
function presetSettings(name: string, seen: readonly string[] = []): RecipeSettings | undefined {
  const p = presets.get(name);
  if (!p) return undefined;
  if (!p.basedOn) return p.settings;
  if (seen.includes(p.basedOn)) throw new ConfigError(`recovery preset '${name}': presets based on each other in a cycle (${[...seen, name].join(' → ')})`);
  const base = presetSettings(p.basedOn, [...seen, name]);
  if (!base) throw new ConfigError(`recovery preset '${name}' is based on '${p.basedOn}', which no loaded method declares`);
  return { ...base, ...p.settings };
}

/** Every setting resolved: what a recovery run trains with and what rows record. */
export interface Recipe {
  preset: string | null;
  schedule: string;
  rank: number;
  alpha: number;
  dropout: number;
  /** null: every linear of the model's family. */
  targets: LinearRole[] | null;
  lr: number;
  lrSchedule: LrScheduleKind;
  /** null: min(100, 10 % of the steps). */
  warmup: number | null;
  microBatch: number;
  gradAccum: number;
  effectiveBatch: number;
  seqlen: number;
  /** Exactly one of steps and epochs is set. */
  steps: number | null;
  epochs: number | null;
  format: DataFormat;
  /** Instruction data only (null for text). */
  template: string | null;
  trainOnInputs: boolean | null;
  heldOut: number;
}

/** The recipe as run: its settings with what the data decided (steps from epochs, warm-up, sizes). */
export type RecipeRecord = Recipe & {
  steps: number;
  warmup: number;
  stepsPerEpoch: number;
  /** Passes over the training items the steps made. */
  epochsRun: number;
  trainItems: number;
  heldOutItems: number;
};

/** Without a preset, today's defaults (the trainer's). */
const DEFAULTS = {
  rank: 8, alpha: 16, dropout: 0.05, lr: 1e-4, lrSchedule: 'cosine', microBatch: 4, gradAccum: 1,
  seqlen: 128, format: 'text', heldOut: 0.1,
} as const;
const INSTRUCTION_DEFAULTS = { template: 'alpaca', trainOnInputs: false } as const;

export interface RecipeFallbacks {
  /** Schedule when neither the settings nor the preset name one. */
  schedule?: string;
  /** Steps when neither the settings nor the preset give steps or epochs. */
  steps?: number;
}

export interface RecipeProblem {
  key: RecipeKey | 'preset';
  message: string;
}

/** What is wrong with written settings (unknown preset, conflicting or missing settings). */
export function recipeProblems(input: RecipeInput, fallbacks: RecipeFallbacks = {}): RecipeProblem[] {
  const out: RecipeProblem[] = [];
  const base = input.preset === undefined ? {} : presetSettings(input.preset);
  // What else is missing depends on the preset: say only what is wrong with it.
  if (!base) {
    return [{ key: 'preset', message: `unknown recovery preset '${input.preset}'; valid: ${recipePresetNames().join(', ') || 'none loaded'}` }];
  }
  const schedule = scheduleOf(input, fallbacks);
  if (schedule === null) out.push({ key: 'schedule', message: "give a schedule ('uniform' or a method that declares one) or a preset" });
  if (input.steps !== undefined && input.epochs !== undefined) out.push({ key: 'epochs', message: 'give steps or epochs, not both' });
  const hasLength = input.steps ?? input.epochs ?? base.steps ?? base.epochs ?? fallbacks.steps;
  if (hasLength === undefined) out.push({ key: 'steps', message: `schedule '${schedule ?? '?'}' needs steps (a positive integer) or epochs` });
  const format = input.format ?? base.format ?? DEFAULTS.format;
  if (format === 'text') {
    for (const key of ['template', 'trainOnInputs'] as const) {
      if (input[key] !== undefined) out.push({ key, message: `applies to instruction data only (format: alpaca-json); this recipe's format is text` });
    }
  }
  const template = input.template ?? base.template;
  if (template !== undefined) {
    const problem = templateNameProblem(template);
    if (problem) out.push({ key: 'template', message: problem });
  }
  return out;
}

/** The schedule settings name (written, else the preset's, else the fallback), or null when none does. */
export function scheduleOf(input: RecipeInput, fallbacks: RecipeFallbacks = {}): string | null {
  const preset = input.preset === undefined ? undefined : presetSettings(input.preset);
  return input.schedule ?? preset?.schedule ?? fallbacks.schedule ?? null;
}

/** Preset, then written settings, then defaults (see `recipeProblems` for what is refused). */
export function resolveRecipe(input: RecipeInput, fallbacks: RecipeFallbacks = {}): Recipe {
  const problems = recipeProblems(input, fallbacks);
  if (problems.length > 0) throw new ConfigError(`recovery recipe: ${problems.map((p) => `${p.key}: ${p.message}`).join('; ')}`);
  const parsed = RecipeSettingsSchema.safeParse(Object.fromEntries(Object.entries(input).filter(([k]) => k !== 'preset')));
  if (!parsed.success) {
    throw new ConfigError(`recovery recipe: ${parsed.error.issues.map((i) => `${i.path.join('.') || '(recipe)'}: ${i.message}`).join('; ')}`);
  }
  const written = parsed.data;
  const base: RecipeSettings = (input.preset ? presetSettings(input.preset) : undefined) ?? {};
  // Written steps replace a preset's epochs and the other way round.
  const length = written.steps !== undefined || written.epochs !== undefined
    ? { steps: written.steps ?? null, epochs: written.epochs ?? null }
    : base.steps !== undefined || base.epochs !== undefined
      ? { steps: base.steps ?? null, epochs: base.epochs ?? null }
      : { steps: fallbacks.steps as number, epochs: null };
  const s = { ...DEFAULTS, ...base, ...written };
  const instruction = s.format === 'alpaca-json';
  return {
    preset: input.preset ?? null,
    schedule: scheduleOf(input, fallbacks) as string,
    rank: s.rank, alpha: s.alpha, dropout: s.dropout, targets: s.targets ?? null,
    lr: s.lr, lrSchedule: s.lrSchedule, warmup: s.warmup ?? null,
    microBatch: s.microBatch, gradAccum: s.gradAccum, effectiveBatch: s.microBatch * s.gradAccum,
    seqlen: s.seqlen, ...length, format: s.format,
    template: instruction ? s.template ?? INSTRUCTION_DEFAULTS.template : null,
    trainOnInputs: instruction ? s.trainOnInputs ?? INSTRUCTION_DEFAULTS.trainOnInputs : null,
    heldOut: s.heldOut,
  };
}
