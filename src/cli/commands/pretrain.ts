import type { CommandModule } from 'yargs';
import fs from 'node:fs';
import path from 'node:path';
import { checkpointBytes, emit, handler, log, namedInputs, startBackend, withCommon, withOverwrite, type CommonArgs } from '../common.ts';
import { type CheckpointWriter, withCheckpointWriter } from '../../io/checkpoint-writer.ts';
import { brownSplit, brownText } from '../../data/brown.ts';
import { readText } from '../../data/text.ts';
import { saveModel } from '../../io/load-model.ts';
import { trainBpe, writeBpeTokenizer } from '../../tokenizer/bpe-train.ts';
import { HfTokenizer } from '../../tokenizer/hf.ts';
import { defaultFfn, hasPretrainCheckpoint, pretrain } from '../../train/pretrain.ts';
import { ConfigError, DataError } from '../../util/errors.ts';

type Args = CommonArgs & {
  corpus: string; out: string; vocab: number; hidden: number; layers: number; heads: number; 'kv-heads': number;
  ffn: number | undefined; seqlen: number; steps: number; batch: number; lr: number; 'min-lr-ratio': number;
  warmup: number | undefined; 'weight-decay': number; seed: number; 'eval-every': number; 'eval-windows': number;
  'checkpoint-every': number; 'held-out-fraction': number; 'stop-after': number | undefined; resume: boolean; overwrite: boolean;
};

const CHECKPOINT = '.pretrain';

/**
 * A text file's held-out part: the last `fraction` of it, cut at a blank line (else a line
 * break) at or after that point, so no paragraph is split.
 */
export function splitTextFile(text: string, fraction: number, file: string): { train: string; heldOut: string } {
  const target = Math.floor(text.length * (1 - fraction));
  let cut = text.indexOf('\n\n', target);
  if (cut < 0) cut = text.indexOf('\n', target);
  if (cut < 0) cut = target;
  const train = text.slice(0, cut).trimEnd();
  const heldOut = text.slice(cut).replace(/^\s+/, '');
  if (train.length === 0 || heldOut.length === 0) throw new DataError('text too short to split into training and held-out parts', file);
  return { train, heldOut };
}

export const pretrainCommand: CommandModule<object, Args> = {
  command: 'pretrain',
  describe: 'train a small LLaMA-architecture model from scratch (BPE tokenizer trained on the same corpus)',
  builder: (y) => withOverwrite(withCommon(y))
    .option('corpus', { type: 'string', demandOption: true, describe: "'brown' (fixed train/held-out/calibration files) or a text file (its last --held-out-fraction is held out)" })
    .option('out', { type: 'string', demandOption: true, describe: 'output HF model directory' })
    .option('vocab', { type: 'number', default: 4096, describe: 'BPE vocabulary size (incl. 4 special tokens and 256 bytes)' })
    .option('hidden', { type: 'number', default: 128 })
    .option('layers', { type: 'number', default: 4 })
    .option('heads', { type: 'number', default: 4 })
    .option('kv-heads', { type: 'number', default: 2 })
    .option('ffn', { type: 'number', describe: 'SwiGLU width (default ≈ 2.7 × hidden)' })
    .option('seqlen', { type: 'number', default: 128 })
    .option('steps', { type: 'number', default: 2000 })
    .option('batch', { type: 'number', default: 16, describe: 'windows per step' })
    .option('lr', { type: 'number', default: 2e-3 })
    .option('min-lr-ratio', { type: 'number', default: 0.1 })
    .option('warmup', { type: 'number', describe: 'warm-up steps (default min(200, 5 % of steps))' })
    .option('weight-decay', { type: 'number', default: 0.1 })
    .option('seed', { type: 'number', default: 0 })
    .option('eval-every', { type: 'number', default: 100, describe: 'held-out loss every N steps (0: only at the end)' })
    .option('eval-windows', { type: 'number', default: 64, describe: 'held-out windows for the periodic evaluations' })
    .option('checkpoint-every', { type: 'number', default: 100 })
    .option('held-out-fraction', { type: 'number', default: 0.05, describe: 'for a text-file corpus' })
    .option('stop-after', { type: 'number', describe: 'stop after this step, keeping the checkpoint (continue with --resume)' })
    .option('resume', { type: 'boolean', default: false, describe: `continue the unfinished run kept in <out>.partial` }),
  handler: handler<Args>(async (args) => {
    const inputs = args.corpus === 'brown' ? [] : namedInputs(args, ['corpus']);
    await withCheckpointWriter({ out: args.out, overwrite: args.overwrite, inputs, resumable: { resume: args.resume, state: CHECKPOINT } },
      (w) => pretrainInto(w, args));
  }),
};

/** The training run, in the writer's work folder `<out>.partial` (kept for --resume until committed). */
async function pretrainInto(w: CheckpointWriter, args: Args): Promise<void> {
  const wall0 = performance.now();
  const backend = await startBackend(args);
  const out = w.work;
  const ckptDir = path.join(out, CHECKPOINT);
  const resuming = args.resume && hasPretrainCheckpoint(ckptDir);

  // Corpus → training and held-out text (and calibration text for brown).
  let trainText: string;
  let heldOutText: string;
  let calibrationText: string | null = null;
  let corpus: Record<string, unknown>;
  if (args.corpus === 'brown') {
    const split = brownSplit();
    trainText = brownText(split.train);
    heldOutText = brownText(split.heldOut);
    calibrationText = brownText(split.calibration);
    corpus = { name: 'brown', trainFiles: split.train.length, heldOutFiles: split.heldOut, calibrationFiles: split.calibration };
  } else {
    if (!(args['held-out-fraction'] > 0 && args['held-out-fraction'] < 1)) throw new ConfigError('--held-out-fraction must be in (0, 1)');
    ({ train: trainText, heldOut: heldOutText } = splitTextFile(readText(args.corpus), args['held-out-fraction'], args.corpus));
    corpus = { name: 'file', file: path.resolve(args.corpus), heldOutFraction: args['held-out-fraction'] };
  }
  fs.mkdirSync(out, { recursive: true });
  fs.writeFileSync(path.join(out, 'heldout.txt'), heldOutText);
  if (calibrationText !== null) fs.writeFileSync(path.join(out, 'calibration.txt'), calibrationText);

  // Tokenizer: trained on the training text (kept from the first run when resuming).
  if (!(resuming && fs.existsSync(path.join(out, 'tokenizer.json')))) {
    log(`pretrain: training a byte-level BPE tokenizer (vocabulary ${args.vocab}) on ${trainText.length} characters`);
    writeBpeTokenizer(out, trainBpe([trainText], { vocabSize: args.vocab }), { model_max_length: args.seqlen });
  }
  const tokenizer = await HfTokenizer.fromDirectory(out);
  log(`pretrain: tokenizing (${tokenizer.vocabSize} tokens in the vocabulary)`);
  const train = tokenizer.encode(trainText, { addBos: true });
  const heldOut = tokenizer.encode(heldOutText, { addBos: true });
  log(`pretrain: ${train.length} training tokens, ${heldOut.length} held-out tokens`);

  const r = await pretrain({
    data: { train, heldOut, bosId: tokenizer.bosId, eosId: tokenizer.eosId }, vocab: tokenizer.vocabSize,
    hidden: args.hidden, layers: args.layers, heads: args.heads, kvHeads: args['kv-heads'], ffn: args.ffn ?? defaultFfn(args.hidden),
    seqLen: args.seqlen, steps: args.steps, batchSize: args.batch, lr: args.lr, minLrRatio: args['min-lr-ratio'],
    warmupSteps: args.warmup, weightDecay: args['weight-decay'], seed: args.seed,
    evalEvery: args['eval-every'], evalWindows: args['eval-windows'],
    checkpointDir: ckptDir, checkpointEvery: args['checkpoint-every'], resume: args.resume, stopAfterStep: args['stop-after'],
    onProgress: (p) => {
      if (p.step % 10 === 0 || p.step === p.steps) {
        log(`pretrain: step ${p.step}/${p.steps} loss ${p.loss.toFixed(4)} lr ${p.lr.toExponential(2)} |g| ${p.gradNorm.toFixed(3)} ${p.tokensPerSecond.toFixed(0)} tok/s`);
      }
    },
    onEval: (e) => log(`pretrain: step ${e.step} held-out loss ${e.loss.toFixed(4)} (ppl ${Math.exp(e.loss).toFixed(2)}, ${e.windows} windows)`),
  });
  const wallSeconds = (performance.now() - wall0) / 1000;
  if (!r.completed) {
    r.model.dispose();
    emit(args, { out: args.out, backend, completed: false, step: r.step, checkpoint: ckptDir },
      () => `stopped after step ${r.step} of ${args.steps}; continue with --resume (checkpoint in ${ckptDir})`);
    return;
  }
  w.ensureSpace(checkpointBytes(r.parameters, 'f32'));
  saveModel(r.model, out);
  r.model.dispose();
  const held = r.heldOut as NonNullable<typeof r.heldOut>;
  const report = {
    command: ['prunelab', ...process.argv.slice(2)].join(' '),
    backend,
    corpus,
    model: {
      hidden: r.config.hidden, layers: r.config.layers, heads: r.config.heads, kvHeads: r.config.kvHeads, ffn: r.config.ffn,
      vocab: r.config.vocab, seqLen: r.config.seqLen, parameters: r.parameters,
    },
    training: {
      steps: r.step, batch: r.config.batchSize, lr: r.config.lr, warmupSteps: r.config.warmupSteps, minLrRatio: r.config.minLrRatio,
      weightDecay: r.config.weightDecay, betas: [r.config.beta1, r.config.beta2], maxGradNorm: r.config.maxGradNorm, seed: r.config.seed,
      resumedFromStep: r.resumedFromStep,
    },
    data: { trainTokens: train.length, heldOutTokens: heldOut.length },
    heldOut: { ppl: held.ppl, nll: held.loss, tokens: held.tokens, windows: held.windows, seqLen: r.config.seqLen },
    unigramBaseline: { ppl: r.unigram.ppl, nll: r.unigram.loss, tokens: r.unigram.tokens, smoothing: 'add-one, fitted on the training tokens' },
    tokensSeen: r.tokensSeen,
    trainSeconds: r.trainSeconds,
    tokensPerSecond: r.tokensSeen / r.trainSeconds,
    wallSeconds,
    finalTrainLoss: r.log[r.log.length - 1]?.loss ?? null,
    evals: r.evals,
  };
  fs.writeFileSync(path.join(out, 'train_report.json'), JSON.stringify(report, null, 2) + '\n');
  fs.rmSync(ckptDir, { recursive: true, force: true });
  w.commit();
  emit(args, { out: args.out, backend, completed: true, heldOutPpl: held.ppl, unigramPpl: r.unigram.ppl, steps: r.step, tokensSeen: r.tokensSeen, wallSeconds },
    () => `held-out perplexity ${held.ppl.toFixed(2)} (unigram baseline ${r.unigram.ppl.toFixed(2)}) after ${r.step} steps, ${r.tokensSeen} tokens, ${wallSeconds.toFixed(0)} s → ${args.out}`);
}
