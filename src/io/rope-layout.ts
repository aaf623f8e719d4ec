/**
 * Convert a LLaMA checkpoint from the interleaved RoPE layout (Meta/llama2.c) to HF's
 * half-split layout by permuting the output rows (and biases) of q and k within each head.
 * Attention scores are unchanged because q and k are permuted alike.
 */
import type { ModelConfig } from '../model/config.ts';
import { linearSpec } from '../model/family.ts';
import type { NamedTensors } from '../model/tensor-data.ts';
import { permuteInterleavedToHalf } from './llama2c.ts';

export function toHalfSplitLayout(config: ModelConfig, tensors: NamedTensors): { config: ModelConfig; tensors: NamedTensors } {
  if (config.family !== 'llama' || config.ropeLayout === 'half') return { config, tensors };
  const out: NamedTensors = new Map(tensors);
  config.layers.forEach((shape, i) => {
    for (const [role, heads] of [['q', shape.numHeads], ['k', shape.numKvHeads]] as const) {
      const base = linearSpec('llama', role).hfName(i);
      for (const suffix of ['weight', 'bias']) {
        const t = out.get(`${base}.${suffix}`);
        if (!t) continue;
        const cols = t.shape.length === 2 ? t.shape[1] : 1;
        out.set(`${base}.${suffix}`, { shape: t.shape, data: permuteInterleavedToHalf(t.data, t.shape[0], cols, heads, config.headDim) });
      }
    }
  });
  return { config: { ...config, ropeLayout: 'half' }, tensors: out };
}
