/**
 * The layer-wise backward pass (src/model/layer-backward.ts) against tf.variableGrads over the
 * whole model's forward: the same weight gradients (fp32 tolerance) for every linear of every
 * layer, on a synthetic model, stories260K and the OPT golden model (biases, LayerNorm, learned
 * positions), with resident and with streamed weights; and a
 * backend working set that stays flat across layers and batches.
 */
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { setupBackend, HAVE_SHARED, NO_SHARED_REASON, STORIES_BIN, shared } from './support.ts';
import { syntheticLlamaConfig, syntheticLlamaTensors, type SyntheticLlamaOptions } from '../src/model/synthetic.ts';
import { CausalLM } from '../src/model/causal-lm.ts';
import { cloneConfig } from '../src/model/config.ts';
import { loadModel, streamedFromNamedTensors } from '../src/io/load-model.ts';
import { layerwiseBackward, type LossBatch } from '../src/model/layer-backward.ts';
import { trainingNllSum } from '../src/model/loss.ts';
import { withFastMatMulGradient } from '../src/model/matmul-grad.ts';
import { mulberry32 } from '../src/util/random.ts';

const SHAPE: SyntheticLlamaOptions = { hidden: 32, layers: 3, heads: 4, kvHeads: 2, ffn: 64, vocab: 64, seed: 11 };

function randomBatches(vocab: number, sizes: number[], T: number, seed: number): LossBatch[] {
  const r = mulberry32(seed);
  return sizes.map((B) => ({ ids: Array.from({ length: B }, () => Array.from({ length: T }, () => Math.floor(r() * vocab))) }));
}

type Grads = Float32Array[][];

/** Today's whole-model path: every linear weight a variable, one tf.variableGrads per batch over model.forward. */
function wholeModelGrads(model: CausalLM, batches: LossBatch[]): Grads {
  const roles = model.spec.linears.map((l) => l.role);
  const out: Grads = model.config.layers.map((_, l) => roles.map((role) => new Float32Array(model.linearParams(l, role).weight.size)));
  withFastMatMulGradient(() => {
    const slots = model.config.layers.flatMap((_, layer) => roles.map((role) => {
      const p = model.linearParams(layer, role);
      const variable = tf.variable(p.weight, true);
      const original = p.weight;
      p.weight = variable as unknown as tf.Tensor2D;
      return { layer, role, variable, original };
    }));
    try {
      for (const batch of batches) {
        const { value, grads } = tf.variableGrads(() => {
          const { sum, count } = trainingNllSum(model.forward(batch.ids), batch.ids);
          return tf.div(sum, count) as tf.Scalar;
        }, slots.map((s) => s.variable));
        value.dispose();
        slots.forEach((s) => {
          const g = grads[s.variable.name]!.dataSync();
          const acc = out[s.layer]![roles.indexOf(s.role)]!;
          for (let i = 0; i < g.length; i++) acc[i] += g[i]!;
        });
        tf.dispose(Object.values(grads));
      }
    } finally {
      for (const s of slots) {
        model.linearParams(s.layer, s.role).weight = s.original;
        s.variable.dispose();
      }
    }
  });
  return out;
}

/** The layer-wise path, the same loss (batch means, summed); records numTensors at every batch. */
function layerwiseGrads(model: CausalLM, batches: LossBatch[], tensors: number[]): { grads: Grads; loss: number } {
  const roles = model.spec.linears.map((l) => l.role);
  const out: Grads = model.config.layers.map(() => []);
  const { loss } = layerwiseBackward(model, batches, {
    lossDivisor: (_b, count) => count,
    wrt: (l) => roles.map((role) => model.linearParams(l, role).weight),
    onBatch: (l, grads) => {
      tensors.push(tf.memory().numTensors);
      grads.forEach((g, k) => {
        const d = g.dataSync();
        const acc = (out[l]![k] ??= new Float32Array(d.length));
        for (let i = 0; i < d.length; i++) acc[i] += d[i]!;
      });
    },
  });
  return { grads: out, loss };
}

/** Every entry within 1e-5 of the linear's largest |gradient|; the largest entries within 1e-5 of themselves. */
function assertSameGrads(a: Grads, b: Grads, what: string): void {
  a.forEach((layer, l) => layer.forEach((x, k) => {
    const y = b[l]![k]!;
    assert.equal(y.length, x.length);
    let scale = 0;
    let top = 0;
    for (let i = 0; i < x.length; i++) {
      if (Math.abs(x[i]!) > scale) {
        scale = Math.abs(x[i]!);
        top = i;
      }
    }
    assert.ok(scale > 0, `${what} layer ${l} linear ${k}: zero gradient`);
    for (let i = 0; i < x.length; i++) assert.ok(Math.abs(y[i]! - x[i]!) <= 1e-5 * scale, `${what} layer ${l} linear ${k} [${i}]: ${y[i]} vs ${x[i]}`);
    // Hand-picked: the largest entry and two fixed ones, each relative to itself.
    for (const i of [top, 0, x.length >> 1]) {
      assert.ok(Math.abs(y[i]! - x[i]!) <= 1e-5 * Math.abs(x[i]!) + 1e-7 * scale, `${what} layer ${l} linear ${k} [${i}]: ${y[i]} vs ${x[i]}`);
    }
  }));
}

function check(resident: CausalLM, streamed: CausalLM, batches: LossBatch[], what: string): void {
  const reference = wholeModelGrads(resident, batches);
  for (const model of [resident, streamed]) {
    const before = tf.memory().numTensors;
    const tensors: number[] = [];
    const { grads } = layerwiseGrads(model, batches, tensors);
    assert.equal(tf.memory().numTensors, before, `${what} ${model.mode}: the backward leaked tensors`);
    assert.ok(tensors.every((n) => n === tensors[0]), `${what} ${model.mode}: tensors per batch and layer ${tensors}`);
    assertSameGrads(reference, grads, `${what} ${model.mode}`);
  }
}

describe('layer-wise backward', () => {
  before(setupBackend);

  it('equals whole-model variableGrads on a synthetic model, resident and streamed', () => {
    const config = syntheticLlamaConfig(SHAPE);
    const tensors = syntheticLlamaTensors(config, SHAPE.seed, 0.2);
    const resident = CausalLM.fromNamedTensors(cloneConfig(config), tensors, 'synthetic');
    const streamed = streamedFromNamedTensors(cloneConfig(config), tensors, 'synthetic');
    assert.equal(streamed.mode, 'streamed');
    check(resident, streamed, randomBatches(SHAPE.vocab, [3, 2, 1], 12, 4), 'synthetic');
    resident.dispose();
    streamed.dispose();
  });

  it('equals whole-model variableGrads on stories260K, resident and streamed', { skip: HAVE_SHARED ? false : NO_SHARED_REASON }, () => {
    const { model: resident } = loadModel(STORIES_BIN);
    const streamed = streamedFromNamedTensors(cloneConfig(resident.config), resident.toNamedTensors(), 'stories260K');
    check(resident, streamed, randomBatches(resident.config.vocabSize, [4, 4], 64, 7), 'stories260K');
    resident.dispose();
    streamed.dispose();
  });

  it('equals whole-model variableGrads on the OPT golden model, resident and streamed', { skip: HAVE_SHARED ? false : NO_SHARED_REASON }, () => {
    const { model: resident } = loadModel(shared('golden', 'opt-tiny'));
    assert.equal(resident.config.family, 'opt');
    const streamed = streamedFromNamedTensors(cloneConfig(resident.config), resident.toNamedTensors(), 'opt-tiny');
    check(resident, streamed, randomBatches(resident.config.vocabSize, [2, 3], 16, 8), 'opt-tiny');
    resident.dispose();
    streamed.dispose();
  });
});
