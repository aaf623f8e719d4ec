/**
 * The recovery step as the CLI and the experiment runner ask for it: a schedule plus the usual
 * knobs, turned into trainer options. A schedule is `uniform` or a method's own
 * (`RecoverySchedule` in the plug-in contract); a method schedule with a report schema reads the
 * method's report from the pruning report that travels with a pruned checkpoint
 * (`prune_report.json`), validated before use.
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
import { finetune, type FinetuneOptions, type FinetuneResult } from './trainer.ts';

/** The built-in schedule's name; every other name is a method's. */
export const UNIFORM_SCHEDULE = 'uniform';

/** A schedule resolved by name: the built-in one, or the method that declares it. */
export type RecoveryScheduleRef =
  | { name: typeof UNIFORM_SCHEDULE }
  | { name: string; method: PruningMethod<unknown, MethodReport> };

export interface RecoveryRequest {
  schedule: RecoveryScheduleRef;
  rank: number;
  /** α at r̄ (default 16, as the trainer's). */
  alpha?: number;
  steps: number;
  lr: number;
  /** Training text file. */
  data: string;
  seed: number;
  seqLen?: number;
  /** The pruning report of the model (prune_report.json), for schedules that read their method's report. */
  pruneReport?: unknown;
  checkpointDir?: string;
  resume?: boolean;
  onProgress?: FinetuneOptions['onProgress'];
}

const DEFAULT_ALPHA = 16;

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

export function recover(model: CausalLM, tokenizer: Tokenizer, req: RecoveryRequest): FinetuneResult & { skippedTargets: LinearRole[] } {
  const alpha = req.alpha ?? DEFAULT_ALPHA;
  const plan = planRecovery(model, req.schedule, { rank: req.rank, alpha, pruneReport: req.pruneReport });
  const schedule: FinetuneOptions['schedule'] = plan
    ? { name: req.schedule.name, ranks: plan.ranks, alphas: plan.alphas, quant: plan.quant, allocation: plan.allocation }
    : UNIFORM_SCHEDULE;
  const result = finetune(model, {
    data: { text: readText(req.data), tokenizer },
    schedule, rank: req.rank, alpha, steps: req.steps, lr: req.lr, seed: req.seed,
    ...(plan?.targets ? { targets: plan.targets } : {}),
    ...(req.seqLen ? { seqLen: req.seqLen } : {}),
    ...(req.checkpointDir ? { checkpointDir: req.checkpointDir, checkpointEvery: Math.max(1, Math.floor(req.steps / 10)), resume: req.resume ?? false } : {}),
    onProgress: req.onProgress,
  });
  return { ...result, skippedTargets: plan?.skippedTargets ?? [] };
}
