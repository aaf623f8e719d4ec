/**
 * The recovery step as the CLI and the experiment runner ask for it: a schedule name plus the
 * usual knobs, turned into trainer options. The CFSP schedule takes its per-layer block scores
 * from the pruning report that travels with a pruned checkpoint (`prune_report.json`).
 */
import fs from 'node:fs';
import path from 'node:path';
import type { CausalLM } from '../model/causal-lm.ts';
import type { LinearRole } from '../model/family.ts';
import { DEFAULT_QUANT_GROUP_SIZE } from './quant.ts';
import type { Tokenizer } from '../tokenizer/types.ts';
import { readText } from '../data/text.ts';
import { ConfigError } from '../util/errors.ts';
import { finetune, type FinetuneOptions, type FinetuneResult } from './trainer.ts';

export type RecoveryScheduleName = 'uniform' | 'cfsp' | 'saap';

export interface RecoveryRequest {
  schedule: RecoveryScheduleName;
  rank: number;
  steps: number;
  lr: number;
  /** Training text file. */
  data: string;
  seed: number;
  seqLen?: number;
  /** The pruning report (for `cfsp`: its per-layer block scores). */
  pruneReport?: unknown;
  checkpointDir?: string;
  resume?: boolean;
  onProgress?: FinetuneOptions['onProgress'];
}

/** CFSP's clamped block scores s_l from a pruning report (`methodReport.perLayer[l].score`). */
export function cfspScores(report: unknown): number[] {
  const r = report as { method?: string; methodReport?: { perLayer?: { score?: unknown }[] } } | undefined;
  const s = r?.methodReport?.perLayer?.map((l) => l.score);
  if (r?.method !== 'cfsp' || !Array.isArray(s) || !s.every((x) => typeof x === 'number')) {
    throw new ConfigError("schedule 'cfsp' needs a model pruned by CFSP (its prune_report.json carries the block scores)");
  }
  return s as number[];
}

/** The pruning report saved beside a pruned checkpoint, if any. */
export function readPruneReport(modelPath: string): unknown {
  const file = path.join(fs.statSync(modelPath).isDirectory() ? modelPath : path.dirname(modelPath), 'prune_report.json');
  return fs.existsSync(file) ? JSON.parse(fs.readFileSync(file, 'utf8')) : undefined;
}

/**
 * Linears SAAP's group fine-tuning can quantise: those whose input width is a multiple of the
 * group size in every layer. Structured pruning leaves FFN widths arbitrary, so `down` (input =
 * FFN width) often is not; it is then left out of recovery rather than failing the run.
 */
export function saapTargets(model: CausalLM, groupSize = DEFAULT_QUANT_GROUP_SIZE): { targets: LinearRole[]; skipped: LinearRole[] } {
  const targets: LinearRole[] = [];
  const skipped: LinearRole[] = [];
  for (const l of model.spec.linears) {
    const ok = model.config.layers.every((shape) => l.inDim(shape, model.config) % groupSize === 0);
    (ok ? targets : skipped).push(l.role);
  }
  if (targets.length === 0) throw new ConfigError(`SAAP group fine-tuning: no linear has an input width divisible by ${groupSize}`);
  return { targets, skipped };
}

export function recover(model: CausalLM, tokenizer: Tokenizer, req: RecoveryRequest): FinetuneResult & { skippedTargets: LinearRole[] } {
  const schedule: FinetuneOptions['schedule'] = req.schedule === 'cfsp'
    ? { kind: 'cfsp', scores: cfspScores(req.pruneReport) }
    : req.schedule;
  const saap = req.schedule === 'saap' ? saapTargets(model) : null;
  const result = finetune(model, {
    data: { text: readText(req.data), tokenizer },
    schedule, rank: req.rank, steps: req.steps, lr: req.lr, seed: req.seed,
    ...(saap ? { targets: saap.targets } : {}),
    ...(req.seqLen ? { seqLen: req.seqLen } : {}),
    ...(req.checkpointDir ? { checkpointDir: req.checkpointDir, checkpointEvery: Math.max(1, Math.floor(req.steps / 10)), resume: req.resume ?? false } : {}),
    onProgress: req.onProgress,
  });
  return { ...result, skippedTargets: saap?.skipped ?? [] };
}
