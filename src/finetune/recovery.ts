/**
 * The recovery step as the CLI and the experiment runner ask for it: a schedule name plus the
 * usual knobs, turned into trainer options. The CFSP schedule takes its per-layer block scores
 * from the pruning report that travels with a pruned checkpoint (`prune_report.json`).
 */
import fs from 'node:fs';
import path from 'node:path';
import type { CausalLM } from '../model/causal-lm.ts';
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

export function recover(model: CausalLM, tokenizer: Tokenizer, req: RecoveryRequest): FinetuneResult {
  const schedule: FinetuneOptions['schedule'] = req.schedule === 'cfsp'
    ? { kind: 'cfsp', scores: cfspScores(req.pruneReport) }
    : req.schedule;
  return finetune(model, {
    data: { text: readText(req.data), tokenizer },
    schedule, rank: req.rank, steps: req.steps, lr: req.lr, seed: req.seed,
    ...(req.seqLen ? { seqLen: req.seqLen } : {}),
    ...(req.checkpointDir ? { checkpointDir: req.checkpointDir, checkpointEvery: Math.max(1, Math.floor(req.steps / 10)), resume: req.resume ?? false } : {}),
    onProgress: req.onProgress,
  });
}
