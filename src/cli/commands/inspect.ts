import type { CommandModule } from 'yargs';
import { describeLayers } from '../../model/count.ts';
import { emit, handler, startBackend, withCommon, withModel, type CommonArgs } from '../common.ts';
import { openCheckpoint } from '../../io/load-model.ts';
import { checkpointParameters, checkpointStorage } from '../../io/checkpoint-summary.ts';
import { gib } from '../../backend/memory.ts';

type Args = CommonArgs & { model: string; tokenizer: string | undefined };

export const inspectCommand: CommandModule<object, Args> = {
  command: 'inspect',
  describe: 'family, per-layer shapes and parameter counts of a checkpoint (reads headers only: '
    + 'any size, in seconds; weights are not scanned, so NaN/Inf are reported by the commands that load them)',
  builder: (y) => withModel(withCommon(y)),
  handler: handler<Args>(async (args) => {
    const backend = await startBackend(args);
    const ckpt = openCheckpoint(args.model);
    const { config: c, kind } = ckpt;
    const counts = checkpointParameters(ckpt);
    const storage = checkpointStorage(ckpt);
    const result = {
      model: args.model, format: kind, family: c.family, vocabSize: c.vocabSize, hiddenSize: c.hiddenSize,
      headDim: c.headDim, numLayers: c.numLayers, tieWordEmbeddings: c.tieWordEmbeddings,
      layers: describeLayers(c), parameters: counts, storage, backend,
    };
    emit(args, result, () => [
      `${args.model} (${kind}, ${c.family}): ${c.numLayers} layers, hidden ${c.hiddenSize}, head_dim ${c.headDim}, vocab ${c.vocabSize}`,
      ...describeLayers(c).map((l) => `  layer ${l.layer}: heads ${l.heads}, kv heads ${l.kvHeads}, ffn ${l.ffn}`),
      `parameters: ${counts.total} total, ${counts.decoderLinears} in decoder linears`,
      ...Object.entries(counts.byType).map(([k, v]) => `  ${k}: ${v}`),
      `storage: ${storage.files} file${storage.files === 1 ? '' : 's'}, ${gib(storage.bytes)}, ${Object.keys(storage.dtypes).join('/')}`,
    ].join('\n'));
  }),
};
