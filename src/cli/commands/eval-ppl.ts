import type { CommandModule } from 'yargs';
import * as tf from '@tensorflow/tfjs';
import { checkPerplexityOptions, perplexityOfTextParallel } from '../../eval/perplexity.ts';
import { resolveThreads, threadsForModel } from '../../parallel/threads.ts';
import { emit, handler, log, openModel, startBackend, withCommon, withLongContext, withModel, type CommonArgs } from '../common.ts';

type Args = CommonArgs & {
  model: string; tokenizer: string | undefined; text: string; seqlen: number; 'max-windows': number | undefined; 'allow-long-context': boolean;
  threads: number | undefined;
};

export const evalPplCommand: CommandModule<object, Args> = {
  command: 'ppl',
  describe: 'perplexity on a text file (non-overlapping windows, one BOS at the start of the text)',
  builder: (y) => withLongContext(withModel(withCommon(y)))
    .option('text', { type: 'string', demandOption: true, describe: 'text file' })
    .option('seqlen', { type: 'number', demandOption: true, describe: 'window length in tokens' })
    .option('max-windows', { type: 'number', describe: 'score only the first K windows' })
    .option('threads', { type: 'number', describe: 'worker threads, each with its own backend, windows split between them (default: all cores when the pass is long enough to pay for starting them; native TensorFlow: 1)' }),
  handler: handler<Args>(async (args) => {
    checkPerplexityOptions({ seqlen: args.seqlen, maxWindows: args['max-windows'] ?? null });
    const backend = await startBackend(args);
    const { model, tokenizer } = await openModel(args);
    const threads = threadsForModel(model.mode, resolveThreads(args.threads, backend), args.threads);
    const t0 = performance.now();
    const r = await perplexityOfTextParallel(model, tokenizer, args.text, {
      seqlen: args.seqlen, maxWindows: args['max-windows'] ?? null, allowBeyondContext: args['allow-long-context'], threads,
      // The default (all cores) only where the pass pays for the pool's start-up; an explicit --threads is used as given.
      autoThreads: args.threads === undefined,
      onProgress: (d, n) => { if (!args.json || process.stderr.isTTY) log(`ppl: window ${d}/${n}`); },
    });
    const seconds = (performance.now() - t0) / 1000;
    const execution = model.mode;
    model.dispose();
    emit(args, { ...r, backend, execution, threads, seconds, tensorsAfter: tf.memory().numTensors },
      () => `perplexity ${r.ppl.toFixed(4)} (mean NLL ${r.nll.toFixed(5)}) over ${r.windows} windows of ${r.seqlen} tokens [${backend}, ${execution}, ${r.threadsUsed} of ${threads} threads, ${seconds.toFixed(2)} s]`);
  }),
};
