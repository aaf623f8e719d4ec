/**
 * The training kit shared by pretraining and LoRA recovery (src/train/, util/atomic.ts,
 * util/fnv.ts): hand-computed cases for clipping and the FNV fingerprint, the seeded order's
 * invariants, checkpoint round trips and refusals, the atomic writer's clean-up, and gradient
 * accumulation against one pass over the same windows.
 */
import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { setupBackend, tmpDir } from './support.ts';
import { buildSyntheticLlama } from './synthetic-model.ts';
import { LoraSet } from '../src/finetune/lora.ts';
import type { NamedTensors } from '../src/model/tensor-data.ts';
import {
  assertSameFingerprint, checkpointDue, checkpointToResume, hasCheckpoint, readCheckpoint, restoreVariable, saveCheckpoint,
  STATE_FILE, type TrainingState,
} from '../src/train/checkpoint.ts';
import { AdamW, clipFactor, globalNorm } from '../src/train/optimizer.ts';
import { lossAndGradients } from '../src/train/step.ts';
import { SeededOrder, epochPermutation } from '../src/train/window-sampler.ts';
import { removeStaleTemps, writeAtomic, writeFileAtomic } from '../src/util/atomic.ts';
import { CheckpointError, ConfigError } from '../src/util/errors.ts';
import { fnv1a, tokensFingerprint } from '../src/util/fnv.ts';

describe('atomic writer', () => {
  it('replaces a file; a failed write keeps the old content and leaves no temporary file', () => {
    const dir = tmpDir('atomic');
    const file = path.join(dir, 'results.csv');
    writeFileAtomic(file, 'a\n');
    writeFileAtomic(file, 'a\nb\n');
    assert.equal(fs.readFileSync(file, 'utf8'), 'a\nb\n');
    assert.throws(() => writeAtomic(file, (tmp) => {
      fs.writeFileSync(tmp, 'half');
      throw new Error('disk full');
    }), /disk full/);
    assert.equal(fs.readFileSync(file, 'utf8'), 'a\nb\n');
    assert.deepEqual(fs.readdirSync(dir), ['results.csv']);
  });

  it('removes stale temporary files of one file, or of the whole folder', () => {
    const dir = tmpDir('atomic-stale');
    for (const f of ['a.json.tmp-123', 'b.bin.tmp-7', 'a.json', 'notes.tmp-x']) fs.writeFileSync(path.join(dir, f), '');
    removeStaleTemps(dir, path.join(dir, 'a.json'));
    assert.deepEqual(fs.readdirSync(dir).sort(), ['a.json', 'b.bin.tmp-7', 'notes.tmp-x']);
    removeStaleTemps(dir);
    assert.deepEqual(fs.readdirSync(dir).sort(), ['a.json', 'notes.tmp-x']);
    removeStaleTemps(path.join(dir, 'absent'));
  });
});

describe('FNV-1a fingerprint of tokens', () => {
  it('is the offset basis for no tokens and follows the 16-bit halves', () => {
    assert.equal(fnv1a([]), '811c9dc5');
    // By hand with BigInt: h = ((basis ^ lo)·p mod 2³², then (h ^ hi)·p mod 2³².
    const p = 0x01000193n;
    const m = 2n ** 32n;
    const step = (h: bigint, x: bigint) => ((h ^ x) * p) % m;
    const t = 0x12345;
    const want = step(step(0x811c9dc5n, BigInt(t & 0xffff)), BigInt(t >>> 16));
    assert.equal(fnv1a([t]), want.toString(16));
    assert.notEqual(fnv1a([1]), fnv1a([65537]), 'the high half counts');
    assert.equal(tokensFingerprint(Int32Array.from([t])), `1:${want.toString(16)}`);
  });
});

describe('optimiser helpers', () => {
  before(setupBackend);

  it('global norm and clip_grad_norm_ factor (hand-computed)', () => {
    const g = [tf.tensor1d([3]), tf.tensor2d([[4, 0]])];
    assert.ok(Math.abs(globalNorm(g) - 5) < 1e-6);
    tf.dispose(g);
    assert.equal(clipFactor(2, 1), 1 / (2 + 1e-6));
    assert.equal(clipFactor(0.5, 1), 1);
    assert.equal(clipFactor(100, 0), 1, '0 = no clipping');
  });

  it('AdamW moments of any rank round-trip through named tensors with a prefix', () => {
    const make = (): tf.Variable[] => [tf.variable(tf.tensor1d([1, -2])), tf.variable(tf.tensor2d([[0.5]]))];
    const opts = { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 };
    const grads = [tf.tensor1d([0.3, -0.1]), tf.tensor2d([[2]])];
    const pa = make();
    const a = new AdamW(pa, opts);
    a.step(grads, 0.01);
    const saved: NamedTensors = a.toNamedTensors(new Map(), 'decay.');
    assert.deepEqual([...saved.keys()], ['decay.adam.m.0', 'decay.adam.v.0', 'decay.adam.m.1', 'decay.adam.v.1']);
    const pb = make();
    pb.forEach((v, i) => v.assign(pa[i]));
    const b = new AdamW(pb, opts);
    b.loadNamedTensors(saved, a.t, 'ckpt', 'decay.');
    a.step(grads, 0.01);
    b.step(grads, 0.01);
    pa.forEach((v, i) => assert.deepEqual(Array.from(pb[i].dataSync()), Array.from(v.dataSync())));
    assert.throws(() => b.loadNamedTensors(saved, 1, 'ckpt'), (e: Error) => e instanceof CheckpointError && /missing optimiser moment 'adam.m.0'/.test(e.message));
    tf.dispose([...pa, ...pb, ...grads]);
    a.dispose();
    b.dispose();
  });
});

describe('seeded window order', () => {
  it('each epoch is a permutation; a cursor continues the same order', () => {
    const order = new SeededOrder(7, 5);
    const visits = order.next(12);
    for (const e of [0, 1]) {
      const items = visits.filter((v) => v.epoch === e).map((v) => v.item);
      assert.deepEqual([...items].sort(), [0, 1, 2, 3, 4]);
      assert.deepEqual(items, Array.from(epochPermutation(5, 7, e)));
    }
    assert.deepEqual(order.cursor, { epoch: 2, pos: 2 });
    const resumed = new SeededOrder(7, 5, { epoch: 1, pos: 3 });
    assert.deepEqual(resumed.next(4), visits.slice(8, 12));
    assert.notDeepEqual(Array.from(epochPermutation(5, 7, 0)), Array.from(epochPermutation(5, 7, 1)));
  });

  it('epoch sizes may vary, but an empty epoch is an error', () => {
    const order = new SeededOrder(1, (e) => e + 1);
    assert.deepEqual(order.next(3).map((v) => v.epoch), [0, 1, 1]);
    assert.throws(() => new SeededOrder(1, 0).next(1), /no training windows/);
  });
});

interface ToyState extends TrainingState {
  note: string;
}

describe('training checkpoints', () => {
  before(setupBackend);
  const kind = { format: 'toy-trainer', label: 'toy' };
  const tensors = (x: number): NamedTensors => new Map([['w', { shape: [2], data: Float32Array.from([x, -x]) }]]);

  it('round-trips; keeps one tensors file; clears temporary leftovers', () => {
    const dir = path.join(tmpDir('ckpt'), 'c');
    assert.equal(hasCheckpoint(dir), false);
    assert.equal(readCheckpoint(dir, kind), null);
    saveCheckpoint<ToyState>(dir, kind, { step: 1, fingerprint: { a: 1 }, note: 'one' }, tensors(1));
    fs.writeFileSync(path.join(dir, 'state-2.safetensors.tmp-99'), 'torn');
    saveCheckpoint<ToyState>(dir, kind, { step: 2, fingerprint: { a: 1 }, note: 'two' }, tensors(2));
    assert.deepEqual(fs.readdirSync(dir).sort(), ['state-2.safetensors', STATE_FILE]);
    const c = readCheckpoint<ToyState>(dir, kind);
    assert.ok(c);
    assert.equal(c.state.step, 2);
    assert.equal(c.state.note, 'two');
    assert.deepEqual(Array.from(c.tensors.get('w')?.data ?? []), [2, -2]);
    assert.equal(c.file, path.join(dir, STATE_FILE));
    assert.equal(checkpointToResume(dir, false, kind, { a: 1 }), null, 'no resume requested');
    assert.ok(checkpointToResume(dir, true, kind, { a: 1 }));
    assert.throws(() => checkpointToResume(dir, true, kind, { a: 2 }), (e: Error) => e instanceof ConfigError && /a \(checkpoint 1, now 2\)/.test(e.message));
  });

  it("refuses another trainer's checkpoint; accepts one written before the format was recorded", () => {
    const dir = path.join(tmpDir('ckpt-kind'), 'c');
    saveCheckpoint<ToyState>(dir, kind, { step: 3, fingerprint: {}, note: '' }, tensors(3));
    assert.throws(() => readCheckpoint(dir, { format: 'other', label: 'other' }), (e: Error) => e instanceof CheckpointError && /not a PruneLab other state/.test(e.message));
    const file = path.join(dir, STATE_FILE);
    const legacy = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
    delete legacy.format;
    fs.writeFileSync(file, JSON.stringify(legacy));
    assert.equal(readCheckpoint<ToyState>(dir, kind)?.state.step, 3);
    fs.writeFileSync(file, '{');
    assert.throws(() => readCheckpoint(dir, kind), (e: Error) => e instanceof CheckpointError && /unreadable toy state/.test(e.message));
  });

  it('fingerprints: every key must match; checksum keys within 1e-5 relative', () => {
    const why = { weights: 'base weights differ' };
    assertSameFingerprint({ lr: 1, weights: [100, 2] }, { lr: 1, weights: [100.0005, 2] }, 'f', why);
    assert.throws(() => assertSameFingerprint({ lr: 1, weights: [100] }, { lr: 1, weights: [100.01] }, 'f', why), /base weights differ/);
    assert.throws(() => assertSameFingerprint({ lr: 1 }, { lr: 1, weights: [1] }, 'f', why), /base weights differ/);
    assert.throws(() => assertSameFingerprint({ lr: 1 }, { lr: 1, seed: 2 }, 'f'), /seed \(checkpoint undefined, now 2\)/);
  });

  it('restores variables by name with shape checks; saves every N steps and at the last', () => {
    const v = tf.variable(tf.zeros([2]));
    restoreVariable(v, tensors(5), 'w', 'weight', 'src');
    assert.deepEqual(Array.from(v.dataSync()), [5, -5]);
    assert.throws(() => restoreVariable(v, tensors(5), 'x', 'weight', 'src'), /missing weight 'x'/);
    const bad: NamedTensors = new Map([['w', { shape: [1, 2], data: Float32Array.from([1, 2]) }]]);
    assert.throws(() => restoreVariable(v, bad, 'w', 'weight', 'src'), /weight 'w' has shape \[1,2\], expected \[2\]/);
    v.dispose();
    assert.deepEqual([1, 2, 3, 4, 5].filter((s) => checkpointDue(s, 2, 5)), [2, 4, 5]);
    assert.deepEqual([1, 2, 3].filter((s) => checkpointDue(s, undefined, 3)), [3]);
  });
});

describe('loss and gradients of one step', () => {
  before(setupBackend);

  it('two accumulated micro-batches equal one pass over both (same sizes)', () => {
    const model = buildSyntheticLlama({ hidden: 16, layers: 2, heads: 2, kvHeads: 1, ffn: 24, vocab: 40, seed: 3 });
    const set = LoraSet.create(model, {
      ranks: [2, 2], alphas: [4, 4], dropout: 0, targets: ['q', 'down'], quant: null, preserveMasks: false, seed: 1,
    });
    // B starts at zero; give it values so that A gets a gradient too.
    set.adapters.forEach((a, i) => a.B.assign(tf.randomNormal(a.B.shape, 0, 0.5, 'float32', i)));
    set.attach(model);
    const vars = set.variables();
    const windows = [[1, 5, 9, 2, 7, 3], [4, 4, 8, 1, 0, 6], [9, 3, 3, 2, 1, 5], [7, 7, 2, 8, 6, 4]];
    const micro = [windows.slice(0, 2), windows.slice(2)];
    let k = 0;
    const acc = lossAndGradients(model, vars, 2, () => micro[k++]);
    const one = lossAndGradients(model, vars, 1, () => windows);
    assert.equal(k, 2);
    assert.ok(Math.abs(acc.loss - one.loss) < 1e-5, `${acc.loss} vs ${one.loss}`);
    acc.grads.forEach((g, i) => {
      const a = g.dataSync();
      const b = one.grads[i].dataSync();
      assert.ok(b.some((x) => x !== 0), `gradient ${i} should not vanish`);
      a.forEach((x, j) => assert.ok(Math.abs(x - b[j]) < 1e-5, `grad ${i}[${j}]: ${x} vs ${b[j]}`));
    });
    tf.dispose([...acc.grads, ...one.grads]);
    set.dispose();
    model.dispose();
  });
});
