import type { CommandModule } from 'yargs';
import { generate } from '../../model/generate.ts';
import { ConfigError } from '../../util/errors.ts';
import { emit, handler, openModel, startBackend, withCommon, withModel, type CommonArgs } from '../common.ts';

type Args = CommonArgs & {
  model: string; tokenizer: string | undefined; prompt: string | undefined; 'max-new-tokens': number;
  greedy: boolean; temperature: number | undefined; 'top-k': number | undefined; seed: number; 'stop-at-eos': boolean;
};

export const generateCommand: CommandModule<object, Args> = {
  command: 'generate',
  describe: 'generate text with a key/value cache (greedy, or sampled with temperature/top-k and a seed)',
  builder: (y) => withModel(withCommon(y))
    .option('prompt', { type: 'string', describe: 'prompt text (default: start from BOS alone)' })
    .option('max-new-tokens', { type: 'number', demandOption: true })
    .option('greedy', { type: 'boolean', default: false })
    .option('temperature', { type: 'number' })
    .option('top-k', { type: 'number' })
    .option('seed', { type: 'number', default: 0 })
    .option('stop-at-eos', { type: 'boolean', default: true, describe: 'stop after the EOS token' }),
  handler: handler<Args>(async (args) => {
    if (args.greedy && args.temperature !== undefined) throw new ConfigError('--greedy and --temperature exclude each other');
    if (args.temperature !== undefined && !(args.temperature > 0)) throw new ConfigError(`--temperature must be > 0 (got ${args.temperature})`);
    if (!(Number.isInteger(args['max-new-tokens']) && args['max-new-tokens'] >= 1)) {
      throw new ConfigError(`--max-new-tokens must be a positive integer (got ${args['max-new-tokens']})`);
    }
    const backend = await startBackend(args);
    const { model, tokenizer } = await openModel(args);
    const prompt = args.prompt !== undefined && args.prompt !== ''
      ? tokenizer.encode(args.prompt, { addBos: true })
      : tokenizer.bosId !== null ? [tokenizer.bosId] : [];
    if (prompt.length === 0) throw new ConfigError('the tokenizer has no BOS token: give a --prompt');
    const greedy = args.temperature === undefined;
    const r = await generate(model, prompt, {
      maxNewTokens: args['max-new-tokens'], greedy, temperature: args.temperature, topK: args['top-k'], seed: args.seed,
      stopId: args['stop-at-eos'] ? tokenizer.eosId : null,
    });
    model.dispose();
    const text = tokenizer.decode(r.ids);
    emit(args, { text, ids: r.ids, backend, execution: model.mode, greedy, seed: greedy ? null : args.seed }, () => text);
  }),
};
