import type { CommandModule } from 'yargs';
import { countParameters, describeLayers } from '../../model/count.ts';
import { emit, handler, startBackend, withCommon, withModel, type CommonArgs } from '../common.ts';
import { loadModel } from '../../io/load-model.ts';

type Args = CommonArgs & { model: string; tokenizer: string | undefined };

export const inspectCommand: CommandModule<object, Args> = {
  command: 'inspect',
  describe: 'family, per-layer shapes and parameter counts of a checkpoint',
  builder: (y) => withModel(withCommon(y)),
  handler: handler<Args>(async (args) => {
    const backend = await startBackend(args);
    const { model, kind } = loadModel(args.model);
    const c = model.config;
    const counts = countParameters(model);
    const result = {
      model: args.model, format: kind, family: c.family, vocabSize: c.vocabSize, hiddenSize: c.hiddenSize,
      headDim: c.headDim, numLayers: c.numLayers, tieWordEmbeddings: c.tieWordEmbeddings,
      layers: describeLayers(c), parameters: counts, backend,
    };
    model.dispose();
    emit(args, result, () => [
      `${args.model} (${kind}, ${c.family}): ${c.numLayers} layers, hidden ${c.hiddenSize}, head_dim ${c.headDim}, vocab ${c.vocabSize}`,
      ...describeLayers(c).map((l) => `  layer ${l.layer}: heads ${l.heads}, kv heads ${l.kvHeads}, ffn ${l.ffn}`),
      `parameters: ${counts.total} total, ${counts.decoderLinears} in decoder linears`,
      ...Object.entries(counts.byType).map(([k, v]) => `  ${k}: ${v}`),
    ].join('\n'));
  }),
};
