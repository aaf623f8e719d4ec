/**
 * Speed and size: analytic FLOPs and parameter counts against hand-computed numbers, finite
 * positive measurements without tensor leaks, and a synthetic LLaMA with half the FFN width
 * decoding faster than the dense one in the same run.
 */
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { setupBackend } from './support.ts';
import { installWasmMatmul } from '../src/backend/openblas.ts';
import { buildSyntheticLlama } from './synthetic-model.ts';
import { compareSpeed, flopsPerToken, measureSpeed, median } from '../src/eval/speed.ts';
import { quantile, roundSpread } from '../src/eval/spread.ts';
import { countParameters } from '../src/model/count.ts';
import type { ModelConfig } from '../src/model/config.ts';

describe('speed', () => {
  before(setupBackend);

  it('FLOPs per token of a tiny hand-specified config', () => {
    const config: ModelConfig = {
      family: 'llama', vocabSize: 10, hiddenSize: 8, headDim: 2, numLayers: 2,
      layers: [
        { numHeads: 4, numKvHeads: 2, intermediateSize: 16 },
        { numHeads: 2, numKvHeads: 1, intermediateSize: 6 },
      ],
      maxPositionEmbeddings: 64, tieWordEmbeddings: false, bosTokenId: 1, eosTokenId: 2,
      normEps: 1e-5, ropeTheta: 10000, ropeLayout: 'half', hfConfig: {},
    };
    // Layer 0 MACs: q 8·8 + k 8·4 + v 8·4 + o 8·8 + gate 8·16 + up 8·16 + down 16·8 = 576.
    // Layer 1 MACs: q 8·4 + k 8·2 + v 8·2 + o 4·8 + gate 8·6 + up 8·6 + down 6·8 = 240.
    // Head: 10·8 = 80. Linear FLOPs 2·(576 + 240 + 80) = 1792.
    // Attention at L = 5: 4·H·hd·L = 4·4·2·5 = 160 and 4·2·2·5 = 80 → 240. Total 2032.
    assert.equal(flopsPerToken(config, 5), 2032);
    assert.equal(flopsPerToken(config, 0), 1792);
  });

  it('the spread of per-round ratios: min–max below 5 rounds, the interquartile range from 5 on', () => {
    assert.deepEqual(roundSpread([3, 1, 2]), { lo: 1, hi: 3, rounds: 3 });
    // Sorted 1 2 3 4 5: quantiles at positions 1 and 3.
    assert.deepEqual(roundSpread([5, 1, 4, 2, 3]), { lo: 2, hi: 4, rounds: 5 });
    // Six values: positions 1.25 and 3.75, interpolated.
    assert.deepEqual(roundSpread([1, 2, 3, 4, 5, 10]), { lo: 2.25, hi: 4.75, rounds: 6 });
    assert.equal(quantile([0, 10], 0.3), 3);
  });

  it('median', () => {
    assert.equal(median([3, 1, 2]), 2);
    assert.equal(median([4, 1, 3, 2]), 2.5);
  });

  it('measureSpeed: parameter count by hand, finite positive fields, no tensor leak', async () => {
    const model = buildSyntheticLlama({ hidden: 32, layers: 2, heads: 4, kvHeads: 2, ffn: 48, vocab: 64, seed: 1 });
    try {
      const p = countParameters(model);
      // Per layer: q 32·32 + k 32·16 + v 32·16 + o 32·32 = 3072; gate/up/down 3·32·48 = 4608.
      assert.deepEqual(p.byType, { q: 2048, k: 1024, v: 1024, o: 2048, gate: 3072, up: 3072, down: 3072,
        embed: 64 * 32, lm_head: 64 * 32, norms: 2 * 2 * 32 + 32 });
      assert.equal(p.decoderLinears, 2 * (3072 + 4608));
      assert.equal(p.total, 15360 + 2048 + 2048 + 160);
      const before = tf.memory().numTensors;
      const r = await measureSpeed(model, { promptTokens: 8, newTokens: 4, repeats: 3, warmup: 1 });
      assert.equal(tf.memory().numTensors, before, 'tensors leaked');
      for (const k of ['prefill_tps', 'decode_tps', 'latency_ms', 'prefill_ms', 'flops_per_token', 'tensor_bytes', 'weight_bytes', 'kv_cache_bytes'] as const) {
        assert.ok(Number.isFinite(r[k]) && r[k] > 0, `${k} = ${r[k]}`);
      }
      assert.equal(r.flops_per_token, flopsPerToken(model.config, 8));
      // Weights in fp32, the untied head included: 4 bytes × all parameters.
      assert.equal(r.weight_bytes, 4 * p.total);
      // K and V of 2 layers, 12 positions, 2 kv heads × 8 dims, fp32.
      assert.equal(r.kv_cache_bytes, 2 * 2 * 12 * 16 * 4);
      assert.equal(r.protocol.statistic, 'median');
      assert.equal(r.protocol.repeats, 3);
    } finally {
      model.dispose();
    }
  });

  it('halving the FFN width decodes faster than dense in the same run', async () => {
    // Few KV heads keep the attention's per-op overhead small, so the FFN dominates a decode step.
    // On XNNPACK's products: with OpenBLAS a decode step of this small model is per-call overhead
    // (the FFN's 1×512×4096 products take tens of µs), and a 1.2× difference drowns in a loaded
    // machine's noise. What is tested is that the measurement sees a smaller model's speed.
    installWasmMatmul('xnnpack');
    const base = { hidden: 512, layers: 2, heads: 4, kvHeads: 1, vocab: 256, seed: 7 };
    const dense = buildSyntheticLlama({ ...base, ffn: 4096 });
    const pruned = buildSyntheticLlama({ ...base, ffn: 2048 });
    try {
      const before = tf.memory().numTensors;
      const c = await compareSpeed(dense, pruned, { promptTokens: 16, newTokens: 12, repeats: 5, warmup: 1 });
      assert.equal(tf.memory().numTensors, before, 'tensors leaked');
      console.log(
        `FFN 4096 → 2048: decode ${c.dense.decode_tps.toFixed(1)} → ${c.pruned.decode_tps.toFixed(1)} tok/s ` +
        `(speedup ${c.speedup.decode.toFixed(2)}×), prefill speedup ${c.speedup.prefill.toFixed(2)}×, ` +
        `params ratio ${c.params_ratio.toFixed(3)}, FLOPs ratio ${c.flops_ratio.toFixed(3)}`,
      );
      assert.ok(c.params_ratio < 1 && c.flops_ratio < 1);
      assert.ok(c.speedup.decode > 1, `decode speedup ${c.speedup.decode} should be > 1`);
      // The per-repeat ratios: 5 repeats give an interquartile range, which holds positive values.
      for (const k of ['prefill', 'decode'] as const) {
        const sp = c.spread[k];
        assert.equal(sp.rounds, 5);
        assert.ok(sp.lo > 0 && sp.lo <= sp.hi, `${k}: ${sp.lo}–${sp.hi}`);
      }
      console.log(`decode ratio spread ${c.spread.decode.lo.toFixed(2)}–${c.spread.decode.hi.toFixed(2)} (${c.spread.statistic})`);
    } finally {
      dense.dispose();
      pruned.dispose();
      installWasmMatmul();
    }
  });
});
