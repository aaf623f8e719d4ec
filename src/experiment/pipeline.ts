/**
 * The work of one experiment run, plugged into the runner: load → calibrate → prune → recover →
 * evaluate, every stage through the same modules the CLI commands use.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import type { ExecuteRun, RunResult, RunSpec, SpeedEval, SpeedMeasure } from './types.ts';
import { loadModel } from '../io/load-model.ts';
import { findTokenizerForModel, checkTokenizerMatchesModel } from '../tokenizer/load.ts';
import { calibrationFromText } from '../prune/calibration.ts';
import { listMethods, parseMethodOptions, resolveMethod, resolveRecoverySchedule } from '../prune/registry.ts';
import { displayNameOf, type PruningMethod } from '../prune/method.ts';
import { isModulePath, loadExperiment, type MethodValidator, type RecoveryScheduleInfo } from './schema.ts';
import { parsePattern } from '../prune/masks.ts';
import { pruneModel } from '../prune/engine.ts';
import type { PruneReport } from '../prune/report.ts';
import { recover } from '../finetune/recovery.ts';
import { perplexityOfText } from '../eval/perplexity.ts';
import { evaluateTask } from '../eval/zeroshot.ts';
import { compareSpeed, measureSpeed, type SpeedResult } from '../eval/speed.ts';
import type { CausalLM } from '../model/causal-lm.ts';
import { countParameters } from '../model/count.ts';
import { activeAdapter, activeBackend, deviceDescription } from '../backend/index.ts';
import { wasmMatmulKernel } from '../backend/openblas.ts';

const hashCache = new Map<string, string>();

/** sha256 over a checkpoint's files (config + weights), cached per path. */
export function checkpointHash(modelPath: string): string {
  const cached = hashCache.get(modelPath);
  if (cached) return cached;
  const h = crypto.createHash('sha256');
  const files = fs.statSync(modelPath).isDirectory()
    ? fs.readdirSync(modelPath).filter((f) => f === 'config.json' || f.endsWith('.safetensors')).sort().map((f) => path.join(modelPath, f))
    : [modelPath];
  for (const f of files) h.update(fs.readFileSync(f));
  const digest = h.digest('hex').slice(0, 16);
  hashCache.set(modelPath, digest);
  return digest;
}

/** What the experiment runner needs to know of the registered methods, read once from the registry. */
export interface MethodRegistryInfo {
  /** Checks a method entry's name and options. */
  validateMethod: MethodValidator;
  /** Whether a method takes unstructured / N:M patterns. */
  usesPatterns: (method: string) => boolean;
  /** Method schedules by name, for validating `recovery:` entries. */
  recoverySchedules: RecoveryScheduleInfo;
  /** The name tables and plots print for a method id. */
  displayName: (method: string) => string;
}

/**
 * Read once from the registry: every discovered method, plus plug-ins given by module path
 * (`modules`: the name as written in an experiment → its absolute path), known by the written name.
 */
/** Plug-ins an experiment names by module path: the name as written → its absolute path. */
export function pluginModulesOf(file: string): Map<string, string> {
  const exp = loadExperiment(file);
  const out = new Map<string, string>();
  exp.config.methods.forEach((m, k) => { if (isModulePath(m.name)) out.set(m.name, exp.resolved.methods[k].name); });
  return out;
}

export async function methodRegistryInfo(modules: ReadonlyMap<string, string> = new Map()): Promise<MethodRegistryInfo> {
  const all = new Map<string, PruningMethod>((await listMethods()).map((m) => [m.name, m]));
  for (const [written, abs] of modules) all.set(written, await resolveMethod(abs));
  const patterns = new Set([...all].filter(([, m]) => m.granularity.includes('unstructured') || m.granularity.includes('n:m')).map(([name]) => name));
  const schedules = new Map([...all.values()].filter((m) => m.recovery).map((m) => [m.name, { readsReport: m.recovery?.report !== undefined }]));
  return {
    validateMethod: (name, options) => {
      const m = all.get(name);
      if (!m) throw new Error(`unknown method '${name}'; valid: ${[...all.keys()].join(', ')} (or a plug-in module path)`);
      return parseMethodOptions(m, options) as Record<string, unknown>;
    },
    usesPatterns: (name) => patterns.has(name),
    recoverySchedules: schedules,
    displayName: (name) => {
      const m = all.get(name);
      return m ? displayNameOf(m) : name;
    },
  };
}

function measuredSpeed(s: SpeedResult): SpeedMeasure {
  return { prefillTokensPerS: s.prefill_tps, decodeTokensPerS: s.decode_tps, protocol: s.protocol };
}

/**
 * A structured model's speed, measured in alternation with the dense model loaded beside it (each
 * repeat runs both), so the ratio to dense and its spread come from one machine state; zeros do
 * not change speed, so only structured runs need it.
 */
async function speedVsDense(run: RunSpec, pruned: CausalLM, opts: SpeedEval): Promise<SpeedMeasure> {
  const { model: dense } = loadModel(run.model.path);
  try {
    const c = await compareSpeed(dense, pruned, opts);
    const of = (k: 'prefill' | 'decode') => ({ ratio: c.speedup[k], lo: c.spread[k].lo, hi: c.spread[k].hi });
    return {
      ...measuredSpeed(c.pruned),
      vsDense: { prefill: of('prefill'), decode: of('decode'), rounds: c.spread.decode.rounds, statistic: c.spread.statistic },
    };
  } finally {
    dense.dispose();
  }
}

export const executeRun: ExecuteRun = async (run: RunSpec, ctx): Promise<RunResult> => {
  const timings: RunResult['timings'] = {};
  const { model } = loadModel(run.model.path);
  try {
    const tokenizer = await findTokenizerForModel(run.model.path, run.model.tokenizer ?? undefined);
    checkTokenizerMatchesModel(tokenizer, model.config.vocabSize, run.model.path);
    const paramsBefore = countParameters(model).total;
    let report: PruneReport | null = null;
    let structured = false;
    let offsets: number[] | undefined;
    if (run.kind === 'pruned' && run.method) {
      const method = await resolveMethod(run.method.name);
      structured = method.kind === 'structured';
      const options = parseMethodOptions(method, run.method.options);
      let t0 = performance.now();
      const calib = run.calibration
        ? calibrationFromText(tokenizer, {
          text: run.calibration.text, nsamples: run.calibration.nsamples, seqlen: run.calibration.seqlen,
          seed: run.calibration.seed ?? run.seed, offsets: run.calibration.offsets ?? undefined,
          sampling: run.calibration.sampling, field: run.calibration.field,
        })
        : null;
      offsets = calib?.offsets;
      timings.calibrateS = (performance.now() - t0) / 1000;
      t0 = performance.now();
      ctx.log(`${run.id}: pruning with ${method.name}`);
      report = await pruneModel(model, {
        method, options, windows: calib?.windows ?? [], calibration: calib?.protocol ?? null,
        target: { sparsity: run.sparsity, pattern: parsePattern(run.pattern ?? 'unstructured') },
        budget: run.method.budget ? { scope: run.method.budget, fraction: run.sparsity } : undefined,
        mode: method.kind === 'layerwise' ? run.calibration?.mode ?? undefined : undefined,
        workers: method.kind === 'layerwise' ? run.method.workers ?? undefined : undefined,
      });
      timings.pruneS = (performance.now() - t0) / 1000;
    }
    let recovery: RunResult['recovery'];
    if ('recipe' in run.recovery) {
      if (ctx.signal.aborted) throw ctx.signal.reason;
      const t0 = performance.now();
      const r = await recover(model, tokenizer, {
        schedule: await resolveRecoverySchedule(run.recovery.schedule), recipe: run.recovery.recipe,
        data: run.recovery.data, seed: run.seed, pruneReport: report ?? undefined,
      });
      recovery = {
        merged: true, evaluated: r.evaluated, recipe: r.recipe,
        log: { heldOut: r.heldOut, schedule: r.schedule, losses: r.log.map((e) => e.loss), skippedTargets: r.skippedTargets },
      };
      timings.recoverS = (performance.now() - t0) / 1000;
    }
    if (ctx.signal.aborted) throw ctx.signal.reason;
    const t0 = performance.now();
    const perplexity: RunResult['perplexity'] = {};
    for (const p of run.evaluations.perplexity) {
      const r = await perplexityOfText(model, tokenizer, p.text, { seqlen: p.seqlen, maxWindows: p.maxWindows });
      perplexity[p.id] = { ppl: r.ppl, windows: r.windows, protocol: r.protocol };
    }
    const zeroshot: RunResult['zeroshot'] = {};
    for (const z of run.evaluations.zeroshot) {
      const r = await evaluateTask(model, tokenizer, z.task, { limit: z.limit });
      zeroshot[z.id] = { acc: r.acc, acc_norm: r.acc_norm, n: r.n, protocol: r.protocol };
    }
    let speed: RunResult['speed'];
    if (run.evaluations.speed) speed = structured ? await speedVsDense(run, model, run.evaluations.speed) : measuredSpeed(await measureSpeed(model, run.evaluations.speed));
    timings.evalS = (performance.now() - t0) / 1000;
    return {
      backend: activeBackend(),
      execution: model.mode,
      ...(activeAdapter() ? { device: deviceDescription(), adapter: activeAdapter()! } : {}),
      ...(activeBackend() === 'wasm' ? { matmul: wasmMatmulKernel() ?? 'xnnpack' } : {}),
      model: { hash: checkpointHash(run.model.path), family: model.config.family, dtype: 'float32', tokenizerHash: tokenizer.id },
      sparsity: {
        decoderLayers: report?.measured.decoderLayers ?? 0, allParameters: report?.measured.allParameters ?? 0,
        scope: report?.measured.scope ?? null, paramsBefore, paramsAfter: countParameters(model).total,
      },
      calibration: offsets ? { offsets } : undefined,
      pruningReport: report ?? undefined,
      recovery, perplexity, zeroshot, speed, timings,
    };
  } finally {
    model.dispose();
    // Nothing of a run may outlive it.
    if (tf.memory().numTensors > 0) ctx.log(`${run.id}: note: ${tf.memory().numTensors} tensors alive after the run`);
  }
};
