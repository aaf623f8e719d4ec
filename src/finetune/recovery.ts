/**
 * The recovery step as the CLI and the experiment runner ask for it: a schedule, a recipe
 * (recipes.ts: every training setting, resolved) and a data file, turned into trainer options.
 * A schedule is `uniform` or a method's own (`RecoverySchedule` in the plug-in contract); a method
 * schedule with a report schema reads the method's report from the pruning report that travels
 * with a pruned checkpoint (`prune_report.json`), validated before use.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { CausalLM } from '../model/causal-lm.ts';
import type { LinearRole } from '../model/family.ts';
import { modelView } from '../model/view.ts';
import type { MethodReport, PruningMethod, RecoveryPlan, RecoverySchedule } from '../prune/method.ts';
import type { Tokenizer } from '../tokenizer/types.ts';
import { readText } from '../data/text.ts';
import { ConfigError } from '../util/errors.ts';
import { readInstructionFile } from './instruction-data.ts';
import { resolvePromptTemplate } from './prompt-template.ts';
import type { Recipe, RecipeRecord } from './recipes.ts';
import { finetune, type FinetuneConfig, type FinetuneData, type FinetuneOptions, type FinetuneResult, type TrainingLayout } from './trainer.ts';

/** The built-in schedule's name; every other name is a method's. */
export const UNIFORM_SCHEDULE = 'uniform';

/** A schedule resolved by name: the built-in one, or the method that declares it. */
export type RecoveryScheduleRef =
  | { name: typeof UNIFORM_SCHEDULE }
  | { name: string; method: PruningMethod<unknown, MethodReport> };

export interface RecoveryRequest {
  /** The schedule `recipe.schedule` names (a method name or module path), resolved by the registry. */
  schedule: RecoveryScheduleRef;
  recipe: Recipe;
  /** Training data: a text file, or instruction JSON/JSONL for format `alpaca-json`. */
  data: string;
  seed: number;
  /** The pruning report of the model (prune_report.json), for schedules that read their method's report. */
  pruneReport?: unknown;
  checkpointDir?: string;
  resume?: boolean;
  onProgress?: FinetuneOptions['onProgress'];
}

export interface RecoveryResult extends FinetuneResult {
  /** Targets the schedule or recipe left out. */
  skippedTargets: LinearRole[];
  recipe: RecipeRecord;
  /**
   * What the returned model is: `fp32-merged` (LoRA folded into the weights), or under group
   * quantisation `int<bits>-dequantized` — the quantised model with the adapters merged into its
   * zeros, dequantised to fp32, i.e. exactly what its quantised export loads as.
   */
  evaluated: string;
}

/** The pruning report saved beside a pruned checkpoint, if any. */
export function readPruneReport(modelPath: string): unknown {
  const file = path.join(fs.statSync(modelPath).isDirectory() ? modelPath : path.dirname(modelPath), 'prune_report.json');
  return fs.existsSync(file) ? JSON.parse(fs.readFileSync(file, 'utf8')) : undefined;
}

/** The method's report inside a pruning report, checked to come from that method. */
function methodReportOf(name: string, pruneReport: unknown): unknown {
  const r = pruneReport as { method?: unknown; methodReport?: unknown } | undefined;
  if (!r || r.method !== name) {
    const by = r && typeof r.method === 'string' ? ` (its prune_report.json says it was pruned by '${r.method}')` : ' (no prune_report.json beside it)';
    throw new ConfigError(`schedule '${name}' needs a model pruned by ${name}, whose report carries what the schedule reads${by}`);
  }
  return r.methodReport;
}

/** The plan of a method's schedule for `model`. */
export function planRecovery(model: CausalLM, ref: RecoveryScheduleRef, opts: { rank: number; alpha: number; pruneReport?: unknown }): RecoveryPlan | null {
  if (!('method' in ref)) return null;
  const schedule = ref.method.recovery;
  if (!schedule) throw new ConfigError(`method '${ref.method.name}' declares no recovery schedule`);
  const view = modelView(model);
  if (!schedule.report) return (schedule as RecoverySchedule<undefined>).plan({ model: view, report: undefined, rank: opts.rank, alpha: opts.alpha });
  const withReport = schedule as RecoverySchedule<MethodReport> & { report: NonNullable<RecoverySchedule<MethodReport>['report']> };
  const parsed = withReport.report.safeParse(methodReportOf(ref.name, opts.pruneReport));
  if (!parsed.success) {
    const msg = parsed.error.issues.slice(0, 3).map((i) => `${i.path.join('.') || '(report)'}: ${i.message}`).join('; ');
    throw new ConfigError(`schedule '${ref.name}': the pruning report does not hold what it reads (${msg}); re-prune with this version of prunelab`);
  }
  return withReport.plan({ model: view, report: parsed.data, rank: opts.rank, alpha: opts.alpha });
}

/** The trainer settings of a recipe (schedule, data and run settings aside). */
export function trainerSettings(recipe: Recipe): Partial<FinetuneConfig> {
  return {
    rank: recipe.rank, alpha: recipe.alpha, dropout: recipe.dropout, lr: recipe.lr, lrSchedule: recipe.lrSchedule,
    microBatchSize: recipe.microBatch, gradAccum: recipe.gradAccum, seqLen: recipe.seqlen,
    ...(recipe.steps !== null ? { steps: recipe.steps } : { epochs: recipe.epochs as number }),
    ...(recipe.warmup !== null ? { warmupSteps: recipe.warmup } : {}),
    ...(recipe.heldOut < 1 ? { heldOutFraction: recipe.heldOut } : { heldOutCount: recipe.heldOut }),
  };
}

/** The training data of a recipe: the text file, or the instruction records with their template. */
export function recoveryData(recipe: Recipe, file: string, tokenizer: Tokenizer): FinetuneData {
  if (recipe.format === 'text') return { text: readText(file), tokenizer };
  return {
    instructions: readInstructionFile(file), tokenizer,
    template: resolvePromptTemplate(recipe.template as string), trainOnInputs: recipe.trainOnInputs as boolean,
  };
}

/** Targets: the recipe's (default all) within the plan's (default all); the rest is recorded as skipped. */
function targetsOf(recipe: Recipe, plan: RecoveryPlan | null): { targets?: LinearRole[]; skipped: LinearRole[] } {
  const planned = plan?.targets;
  const skipped = [...(plan?.skippedTargets ?? [])];
  if (!recipe.targets) return { ...(planned ? { targets: planned } : {}), skipped };
  const targets = planned ? recipe.targets.filter((t) => planned.includes(t)) : recipe.targets;
  for (const t of recipe.targets) if (!targets.includes(t) && !skipped.includes(t)) skipped.push(t);
  if (targets.length === 0) throw new ConfigError(`recovery: schedule '${recipe.schedule}' adapts none of the recipe's targets ${recipe.targets.join(', ')}`);
  return { targets, skipped };
}

export function recordOf(recipe: Recipe, layout: TrainingLayout): RecipeRecord {
  return {
    ...recipe, steps: layout.steps, warmup: layout.warmupSteps, stepsPerEpoch: layout.stepsPerEpoch,
    epochsRun: layout.epochs, trainItems: layout.trainItems, heldOutItems: layout.heldOutItems,
  };
}

export async function recover(model: CausalLM, tokenizer: Tokenizer, req: RecoveryRequest): Promise<RecoveryResult> {
  const { recipe } = req;
  const plan = planRecovery(model, req.schedule, { rank: recipe.rank, alpha: recipe.alpha, pruneReport: req.pruneReport });
  const schedule: FinetuneOptions['schedule'] = plan
    ? { name: req.schedule.name, ranks: plan.ranks, alphas: plan.alphas, quant: plan.quant, allocation: plan.allocation }
    : UNIFORM_SCHEDULE;
  const { targets, skipped } = targetsOf(recipe, plan);
  const result = await finetune(model, {
    data: recoveryData(recipe, req.data, tokenizer),
    schedule, ...trainerSettings(recipe), seed: req.seed,
    ...(targets ? { targets } : {}),
    ...(req.checkpointDir ? { checkpointDir: req.checkpointDir, resume: req.resume ?? false } : {}),
    onProgress: req.onProgress,
  });
  const evaluated = plan?.quant ? `int${plan.quant.bits}-dequantized` : 'fp32-merged';
  return { ...result, skippedTargets: skipped, recipe: recordOf(recipe, result.layout), evaluated };
}
