import type { CommandModule } from 'yargs';
import { compareSpeed, measureSpeed } from '../../eval/speed.ts';
import { loadModel } from '../../io/load-model.ts';
import { emit, handler, startBackend, withCommon, withModel, type CommonArgs } from '../common.ts';

type Args = CommonArgs & {
  model: string; tokenizer: string | undefined; 'prompt-tokens': number; 'new-tokens': number;
  repeats: number; warmup: number; compare: string | undefined;
};

export const evalSpeedCommand: CommandModule<object, Args> = {
  command: 'speed',
  describe: 'prefill/decode tokens per second with a KV cache, latency, parameters, FLOPs per token',
  builder: (y) => withModel(withCommon(y))
    .option('prompt-tokens', { type: 'number', default: 64 })
    .option('new-tokens', { type: 'number', default: 64 })
    .option('repeats', { type: 'number', default: 5 })
    .option('warmup', { type: 'number', default: 1 })
    .option('compare', { type: 'string', describe: 'a second (e.g. dense) model measured in the same run; ratios = --model / --compare' }),
  handler: handler<Args>(async (args) => {
    const backend = await startBackend(args);
    const opts = { promptTokens: args['prompt-tokens'], newTokens: args['new-tokens'], repeats: args.repeats, warmup: args.warmup };
    const { model } = loadModel(args.model);
    if (args.compare) {
      const { model: base } = loadModel(args.compare);
      const c = await compareSpeed(base, model, opts);
      base.dispose();
      model.dispose();
      emit(args, { ...c, backend, execution: model.mode } as unknown as Record<string, unknown>, () =>
        `decode speed-up ${c.speedup.decode.toFixed(3)}×, prefill ${c.speedup.prefill.toFixed(3)}× (${args.model} vs ${args.compare}) [${backend}]`);
      return;
    }
    const r = await measureSpeed(model, opts);
    model.dispose();
    emit(args, { ...r, backend, execution: model.mode } as unknown as Record<string, unknown>, () =>
      `prefill ${r.prefill_tps.toFixed(0)} tok/s, decode ${r.decode_tps.toFixed(0)} tok/s, latency ${r.latency_ms.toFixed(2)} ms/token, `
      + `${r.params.total} parameters, ${r.flops_per_token} FLOPs/token [${backend}]`);
  }),
};
