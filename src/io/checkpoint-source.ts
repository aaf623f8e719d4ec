/**
 * An opened checkpoint as a source for the HF writer, read one tensor at a time: what `convert`
 * writes without putting the model on a backend, so a checkpoint of any size is converted
 * (dtype, shards) with one tensor in memory. The tensors are those a loaded model would save —
 * the model's tensors in its order, all-zero LLaMA padding biases dropped (the writer re-pads),
 * llama2.c's q/k rows in HF's half-split layout — so the files equal `saveModel(loadModel(p))`.
 */
import type { ModelConfig } from '../model/config.ts';
import { expectedTensors, isPaddingBias } from '../model/params.ts';
import { assertFinite, type TensorEntry } from './hf-checkpoint.ts';
import type { Checkpoint } from './load-model.ts';
import { toHalfSplitLayout } from './rope-layout.ts';
import type { WritableTensor } from './safetensors-writer.ts';
import { readF32, readStored, widenToF32 } from './stored-tensor.ts';

export interface CheckpointSource {
  /** The config as written (half-split RoPE layout). */
  config: ModelConfig;
  entries: TensorEntry[];
  tensors: AsyncIterable<readonly [string, WritableTensor]>;
}

export function checkpointSource(ckpt: Checkpoint): CheckpointSource {
  if (ckpt.quantized) throw new Error('checkpointSource: a quantised export is dequantised by loading it');
  const present = expectedTensors(ckpt.config).flatMap((e) => {
    const ref = ckpt.tensors.get(e.name);
    return ref ? [{ name: e.name, ref }] : [];
  });
  // Padding biases are known only from their values: read the (small) bias vectors up front.
  const kept = present.filter(({ name, ref }) => !(name.endsWith('.bias') && isPaddingBias(ckpt.config, readF32(ref))));
  const half = toHalfSplitLayout(ckpt.config, new Map()).config;
  async function* tensors(): AsyncGenerator<readonly [string, WritableTensor]> {
    for (const { name, ref } of kept) {
      const stored = readStored(ref);
      const host = { shape: stored.shape, data: widenToF32(stored) };
      assertFinite(new Map([[name, host]]), ckpt.path);
      // q/k rows of an interleaved-layout model are permuted; everything else goes as stored.
      const moved = toHalfSplitLayout(ckpt.config, new Map([[name, host]])).tensors.get(name);
      yield [name, moved === host ? stored : (moved as WritableTensor)];
    }
  }
  return { config: half, entries: kept.map(({ name, ref }) => ({ name, shape: ref.shape })), tensors: tensors() };
}
