/**
 * Legacy llama2.c checkpoints: the real stories260K.bin, a synthetic untied file whose floats
 * encode their own offsets, header/size validation, and the RoPE row permutation.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { permuteHalfToInterleaved, permuteInterleavedToHalf, readLlama2cCheckpoint } from '../src/io/llama2c.ts';
import { CheckpointError } from '../src/util/errors.ts';
import { HAVE_SHARED, NO_SHARED_REASON, STORIES_BIN, tmpDir } from './support.ts';

const STORIES = STORIES_BIN;
const HAVE_STORIES = HAVE_SHARED;
const SKIP = NO_SHARED_REASON;
const tmp = (): string => tmpDir('l2c');

function header(h: number[]): Buffer {
  const b = Buffer.alloc(28);
  h.forEach((v, i) => b.writeInt32LE(v, 4 * i));
  return b;
}

/** Float k of the file (k = 0 is the first float after the header). */
function floatAt(file: Buffer, k: number): number {
  return file.readFloatLE(28 + 4 * k);
}

test('stories260K.bin: config and shapes match the README header', (t) => {
  if (!HAVE_STORIES) return t.skip(SKIP);
  const { config, tensors } = readLlama2cCheckpoint(STORIES);
  assert.equal(config.family, 'llama');
  assert.equal(config.hiddenSize, 64);
  assert.equal(config.numLayers, 5);
  assert.equal(config.vocabSize, 512);
  assert.equal(config.headDim, 8);
  assert.equal(config.maxPositionEmbeddings, 512);
  assert.equal(config.tieWordEmbeddings, true);
  assert.equal(config.ropeLayout, 'interleaved');
  assert.equal(config.normEps, 1e-5);
  assert.equal(config.ropeTheta, 10000);
  assert.equal(config.bosTokenId, 1);
  assert.equal(config.eosTokenId, 2);
  assert.deepEqual(config.layers, Array(5).fill({ numHeads: 8, numKvHeads: 4, intermediateSize: 172 }));
  assert.deepEqual(config.hfConfig, {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    hidden_size: 64,
    intermediate_size: 172,
    num_hidden_layers: 5,
    num_attention_heads: 8,
    num_key_value_heads: 4,
    vocab_size: 512,
    max_position_embeddings: 512,
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    tie_word_embeddings: true,
    bos_token_id: 1,
    eos_token_id: 2,
    hidden_act: 'silu',
    torch_dtype: 'float32',
  });

  // 2 global tensors + 9 per layer, no lm_head (tied).
  assert.equal(tensors.size, 2 + 9 * 5);
  assert.equal(tensors.has('lm_head.weight'), false);
  const shape = (n: string) => tensors.get(n)?.shape;
  assert.deepEqual(shape('model.embed_tokens.weight'), [512, 64]);
  assert.deepEqual(shape('model.norm.weight'), [64]);
  for (let i = 0; i < 5; i++) {
    const p = `model.layers.${i}.`;
    assert.deepEqual(shape(p + 'input_layernorm.weight'), [64]);
    assert.deepEqual(shape(p + 'self_attn.q_proj.weight'), [64, 64]);
    assert.deepEqual(shape(p + 'self_attn.k_proj.weight'), [32, 64]);
    assert.deepEqual(shape(p + 'self_attn.v_proj.weight'), [32, 64]);
    assert.deepEqual(shape(p + 'self_attn.o_proj.weight'), [64, 64]);
    assert.deepEqual(shape(p + 'post_attention_layernorm.weight'), [64]);
    assert.deepEqual(shape(p + 'mlp.gate_proj.weight'), [172, 64]);
    assert.deepEqual(shape(p + 'mlp.up_proj.weight'), [172, 64]);
    assert.deepEqual(shape(p + 'mlp.down_proj.weight'), [64, 172]);
  }
  for (const [name, t2] of tensors) assert.equal(t2.data.length, t2.shape.reduce((a, b) => a * b, 1), name);

  // Spot values against offsets worked out from the README layout (in floats after the header):
  // embed 32768, attn norms 320, wq 20480, wk 10240, wv 10240, wo 20480, ffn norms 320,
  // w1 55040, w2 55040, w3 55040, final norm 64.
  const raw = fs.readFileSync(STORIES);
  assert.equal(tensors.get('model.embed_tokens.weight')!.data[0], floatAt(raw, 0));
  assert.equal(tensors.get('model.layers.0.input_layernorm.weight')!.data[0], floatAt(raw, 32768));
  assert.equal(tensors.get('model.layers.1.self_attn.q_proj.weight')!.data[0], floatAt(raw, 33088 + 4096));
  // wk of layer 2 at row 3, column 5: 33088 + 20480 + 2 * 2048 + 3 * 64 + 5.
  assert.equal(tensors.get('model.layers.2.self_attn.k_proj.weight')!.data[3 * 64 + 5], floatAt(raw, 57861));
  const w2 = 33088 + 20480 + 10240 + 10240 + 20480 + 320 + 55040;
  assert.equal(tensors.get('model.layers.0.mlp.down_proj.weight')!.data[0], floatAt(raw, w2));
  assert.equal(tensors.get('model.layers.0.mlp.up_proj.weight')!.data[0], floatAt(raw, w2 + 55040));
  assert.equal(tensors.get('model.layers.4.mlp.up_proj.weight')!.data[172 * 64 - 1], floatAt(raw, w2 + 2 * 55040 - 1));
  assert.equal(tensors.get('model.norm.weight')!.data[63], floatAt(raw, w2 + 2 * 55040 + 63));
});

test('stories260K.bin truncated: CheckpointError with both byte counts', (t) => {
  if (!HAVE_STORIES) return t.skip(SKIP);
  const file = path.join(tmp(), 'cut.bin');
  fs.writeFileSync(file, fs.readFileSync(STORIES).subarray(0, 1_056_540 - 100));
  assert.throws(
    () => readLlama2cCheckpoint(file),
    (e: unknown) =>
      e instanceof CheckpointError &&
      e.message.includes(file) &&
      e.message.includes('1056540') &&
      e.message.includes('1056440'),
  );
});

test('synthetic untied checkpoint: every tensor in place, lm_head after the RoPE tables', () => {
  // dim 4, hidden 6, 2 layers, 2 heads (head 2), 1 kv head (kv_dim 2), vocab 5 untied, seq 3.
  const [dim, hidden, L, vocab, kvDim, seq, hd] = [4, 6, 2, 5, 2, 3, 2];
  const counts = [vocab * dim, L * dim, L * dim * dim, L * kvDim * dim, L * kvDim * dim, L * dim * dim, L * dim];
  counts.push(L * hidden * dim, L * dim * hidden, L * hidden * dim, dim, seq * hd, vocab * dim);
  const total = counts.reduce((a, b) => a + b, 0); // 20+8+32+16+16+32+8+48+48+48+4+6+20 = 306
  assert.equal(total, 306);
  const body = Buffer.alloc(4 * total);
  for (let k = 0; k < total; k++) body.writeFloatLE(k, 4 * k); // each float is its own index
  const file = path.join(tmp(), 'untied.bin');
  fs.writeFileSync(file, Buffer.concat([header([dim, hidden, L, 2, 1, -vocab, seq]), body]));

  const { config, tensors } = readLlama2cCheckpoint(file);
  assert.equal(config.tieWordEmbeddings, false);
  assert.equal(config.hfConfig.tie_word_embeddings, false);
  assert.equal(config.vocabSize, 5);
  assert.equal(config.headDim, 2);
  const first = (n: string) => tensors.get(n)!.data[0];
  assert.equal(first('model.embed_tokens.weight'), 0);
  assert.equal(first('model.layers.0.input_layernorm.weight'), 20);
  assert.equal(first('model.layers.1.input_layernorm.weight'), 24);
  assert.equal(first('model.layers.0.self_attn.q_proj.weight'), 28);
  assert.equal(first('model.layers.1.self_attn.q_proj.weight'), 44);
  assert.equal(first('model.layers.0.self_attn.k_proj.weight'), 60);
  assert.equal(first('model.layers.1.self_attn.k_proj.weight'), 68);
  assert.equal(first('model.layers.0.self_attn.v_proj.weight'), 76);
  assert.equal(first('model.layers.0.self_attn.o_proj.weight'), 92);
  assert.equal(first('model.layers.0.post_attention_layernorm.weight'), 124);
  assert.equal(first('model.layers.0.mlp.gate_proj.weight'), 132); // w1
  assert.equal(first('model.layers.1.mlp.gate_proj.weight'), 156);
  assert.equal(first('model.layers.0.mlp.down_proj.weight'), 180); // w2
  assert.equal(first('model.layers.0.mlp.up_proj.weight'), 228); // w3
  assert.equal(first('model.norm.weight'), 276);
  // 280..285 are the RoPE tables; the classifier follows.
  assert.deepEqual(tensors.get('lm_head.weight')!.shape, [5, 4]);
  assert.deepEqual([...tensors.get('lm_head.weight')!.data], Array.from({ length: 20 }, (_, i) => 286 + i));
  // [out, in] row-major: down_proj [4, 6], element (1, 2) = 180 + 6 + 2.
  assert.equal(tensors.get('model.layers.0.mlp.down_proj.weight')!.data[1 * 6 + 2], 188);

  // The same file read as tied (positive vocab) is 80 bytes too long.
  const asTied = path.join(tmp(), 'tied.bin');
  fs.writeFileSync(asTied, Buffer.concat([header([dim, hidden, L, 2, 1, vocab, seq]), body]));
  assert.throws(() => readLlama2cCheckpoint(asTied), /promises 1172 bytes but the file has 1252/);
});

test('header validation', () => {
  const dir = tmp();
  const check = (name: string, data: Buffer, pattern: RegExp): void => {
    const f = path.join(dir, name);
    fs.writeFileSync(f, data);
    assert.throws(
      () => readLlama2cCheckpoint(f),
      (e: unknown) => e instanceof CheckpointError && e.message.includes(f) && pattern.test(e.message),
      name,
    );
  };
  check('short.bin', Buffer.alloc(10), /10 bytes.*28/);
  check('zero-dim.bin', header([0, 172, 5, 8, 4, 512, 512]), /positive/);
  check('neg-layers.bin', header([64, 172, -1, 8, 4, 512, 512]), /positive/);
  check('heads.bin', header([64, 172, 5, 6, 3, 512, 512]), /not divisible by n_heads 6/);
  check('kv-heads.bin', header([64, 172, 5, 8, 3, 512, 512]), /n_heads 8 is not divisible by n_kv_heads 3/);
  check('header-only.bin', header([64, 172, 5, 8, 4, 512, 512]), /promises 1056540 bytes but the file has 28/);
  assert.throws(() => readLlama2cCheckpoint(path.join(dir, 'absent.bin')), CheckpointError);
});

test('permuteInterleavedToHalf: hand-checked rows and inverse', () => {
  // 2 heads of size 4, 2 columns; row r holds [10r, 10r + 1].
  const rows = 8;
  const data = Float32Array.from({ length: 16 }, (_, k) => 10 * Math.floor(k / 2) + (k % 2));
  const half = permuteInterleavedToHalf(data, rows, 2, 2, 4);
  // Within each head new order = old rows [0, 2, 1, 3].
  const order = [0, 2, 1, 3, 4, 6, 5, 7];
  assert.deepEqual([...half], order.flatMap((r) => [10 * r, 10 * r + 1]));
  assert.deepEqual([...permuteHalfToInterleaved(half, rows, 2, 2, 4)], [...data]);

  // Head size 8 (one head, one column): new row j < 4 = old 2j, new row 4 + j = old 2j + 1.
  const eight = Float32Array.from([0, 1, 2, 3, 4, 5, 6, 7]);
  assert.deepEqual([...permuteInterleavedToHalf(eight, 8, 1, 1, 8)], [0, 2, 4, 6, 1, 3, 5, 7]);
  assert.deepEqual([...permuteHalfToInterleaved(eight, 8, 1, 1, 8)], [0, 4, 1, 5, 2, 6, 3, 7]);

  // Round trips both ways on arbitrary data.
  const rnd = Float32Array.from({ length: 3 * 8 * 5 }, (_, k) => Math.sin(k * 1.7));
  assert.deepEqual([...permuteHalfToInterleaved(permuteInterleavedToHalf(rnd, 24, 5, 3, 8), 24, 5, 3, 8)], [...rnd]);
  assert.deepEqual([...permuteInterleavedToHalf(permuteHalfToInterleaved(rnd, 24, 5, 3, 8), 24, 5, 3, 8)], [...rnd]);
  assert.throws(() => permuteInterleavedToHalf(rnd, 24, 5, 3, 7));
});

test('permuted q/k under half-split RoPE give the interleaved attention scores', () => {
  const hd = 8;
  const cols = 3;
  const theta = 10000;
  const matvec = (w: Float32Array, x: number[]) =>
    Array.from({ length: hd }, (_, r) => x.reduce((s, xi, c) => s + w[r * cols + c] * xi, 0));
  // Interleaved: rotate (2i, 2i+1) by pos * theta^(-2i/hd). Half: rotate (i, i + hd/2) likewise.
  const rope = (v: number[], pos: number, interleaved: boolean) => {
    const out = [...v];
    for (let i = 0; i < hd / 2; i++) {
      const a = pos * theta ** ((-2 * i) / hd);
      const [p, q] = interleaved ? [2 * i, 2 * i + 1] : [i, i + hd / 2];
      out[p] = v[p] * Math.cos(a) - v[q] * Math.sin(a);
      out[q] = v[p] * Math.sin(a) + v[q] * Math.cos(a);
    }
    return out;
  };
  const dot = (a: number[], b: number[]) => a.reduce((s, ai, i) => s + ai * b[i], 0);
  const wq = Float32Array.from({ length: hd * cols }, (_, k) => Math.cos(k * 0.37 + 0.1));
  const wk = Float32Array.from({ length: hd * cols }, (_, k) => Math.sin(k * 0.91 - 0.4));
  const x = [0.3, -1.2, 0.8];
  const y = [1.1, 0.5, -0.7];
  const wqH = permuteInterleavedToHalf(wq, hd, cols, 1, hd);
  const wkH = permuteInterleavedToHalf(wk, hd, cols, 1, hd);
  for (const [m, n] of [[0, 0], [3, 1], [7, 2], [100, 42]]) {
    const ref = dot(rope(matvec(wq, x), m, true), rope(matvec(wk, y), n, true));
    const got = dot(rope(matvec(wqH, x), m, false), rope(matvec(wkH, y), n, false));
    assert.ok(Math.abs(ref - got) < 1e-9, `positions ${m},${n}: ${ref} vs ${got}`);
  }
  // Without the permutation the scores differ (the test can tell).
  const wrong = dot(rope(matvec(wq, x), 7, false), rope(matvec(wk, y), 2, false));
  assert.ok(Math.abs(wrong - dot(rope(matvec(wq, x), 7, true), rope(matvec(wk, y), 2, true))) > 1e-3);
});
