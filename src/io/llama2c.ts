/**
 * Reader for legacy llama2.c checkpoints (`stories260K.bin` and the like).
 *
 * Layout (little-endian): 7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size,
 * seq_len), then fp32: token embedding [vocab, dim], attention RMSNorm [L, dim],
 * wq [L, dim, dim], wk [L, kv_dim, dim], wv [L, kv_dim, dim], wo [L, dim, dim],
 * FFN RMSNorm [L, dim], w1 [L, hidden, dim], w2 [L, dim, hidden], w3 [L, hidden, dim],
 * final RMSNorm [dim], the RoPE tables freq_cis_real/imag [seq_len, head_dim/2] each (ignored),
 * and, only when vocab_size < 0 (untied), the classifier [vocab, dim].
 * Matrices are [out, in] row-major, as HF stores them.
 */
import fs from 'node:fs';
import { CheckpointError, PruneLabError } from '../util/errors.ts';
import { uniformLayers, type ModelConfig } from '../model/config.ts';
import { readRange } from './byte-range.ts';
import { readAllF32, type TensorRefs } from './stored-tensor.ts';
import { numel, type NamedTensors } from '../model/tensor-data.ts';

const HEADER_INTS = 7;
const HEADER_BYTES = HEADER_INTS * 4;
/** "ak42": the magic of llama2.c's newer (version 1/2) export format, which is not this one. */
const NEW_FORMAT_MAGIC = 0x616b3432;

/**
 * Open a legacy llama2.c checkpoint without reading any weight: the 28-byte header gives every
 * tensor's byte range (one tensor per layer, as HF names them), checked against the file size.
 */
export function openLlama2cCheckpoint(file: string): { config: ModelConfig; tensors: TensorRefs } {
  let size: number;
  try {
    size = fs.statSync(file).size;
  } catch (e) {
    throw new CheckpointError(`cannot read llama2.c checkpoint: ${(e as Error).message}`, file);
  }
  if (size < HEADER_BYTES) {
    throw new CheckpointError(
      `file is ${size} bytes, shorter than the ${HEADER_BYTES}-byte llama2.c header`,
      file,
    );
  }
  const head = Buffer.from(readRange(file, 0, HEADER_BYTES));
  const h = Array.from({ length: HEADER_INTS }, (_, i) => head.readInt32LE(4 * i));
  if (h[0] === NEW_FORMAT_MAGIC) {
    throw new CheckpointError(
      'this is a llama2.c version-1/2 export (magic "ak42"); only the legacy format is supported',
      file,
    );
  }
  const [dim, hidden, nLayers, nHeads, nKvHeads, signedVocab, seqLen] = h;
  const vocab = Math.abs(signedVocab);
  const tied = signedVocab > 0;
  const bad = (msg: string): never => {
    throw new CheckpointError(`invalid llama2.c header (${h.join(', ')}): ${msg}`, file);
  };
  if ([dim, hidden, nLayers, nHeads, nKvHeads, vocab, seqLen].some((v) => v <= 0)) bad('dimensions must be positive');
  if (dim % nHeads !== 0) bad(`dim ${dim} is not divisible by n_heads ${nHeads}`);
  if (nHeads % nKvHeads !== 0) bad(`n_heads ${nHeads} is not divisible by n_kv_heads ${nKvHeads}`);
  const headDim = dim / nHeads;
  if (headDim % 2 !== 0) bad(`head size ${headDim} is odd; RoPE rotates pairs`);
  const kvDim = headDim * nKvHeads;

  // Float counts in file order; exact-size check before reading anything.
  const L = nLayers;
  const sizes = {
    embed: vocab * dim,
    attnNorm: L * dim,
    wq: L * dim * dim,
    wk: L * kvDim * dim,
    wv: L * kvDim * dim,
    wo: L * dim * dim,
    ffnNorm: L * dim,
    w1: L * hidden * dim,
    w2: L * dim * hidden,
    w3: L * hidden * dim,
    norm: dim,
    freqs: seqLen * headDim, // real and imag tables, seq_len * head_dim / 2 each
    cls: tied ? 0 : vocab * dim,
  };
  const expected = HEADER_BYTES + 4 * Object.values(sizes).reduce((a, b) => a + b, 0);
  if (size !== expected) {
    throw new CheckpointError(
      `the header (${h.join(', ')}) promises ${expected} bytes but the file has ${size} ` +
        `(${size < expected ? 'truncated' : 'trailing data or not a legacy llama2.c checkpoint'})`,
      file,
    );
  }

  let off = HEADER_BYTES;
  const tensors: TensorRefs = new Map();
  /** The next tensor of `shape` in file order. */
  const put = (name: string, shape: number[]): void => {
    const byteLength = 4 * numel(shape);
    tensors.set(name, { name, dtype: 'F32', shape, file, offset: off, byteLength });
    off += byteLength;
  };
  /** A stacked [L, ...shape] block, as one tensor per layer. */
  const perLayer = (suffix: string, shape: number[]): void => {
    for (let i = 0; i < L; i++) put(`model.layers.${i}.${suffix}`, shape);
  };

  put('model.embed_tokens.weight', [vocab, dim]);
  perLayer('input_layernorm.weight', [dim]);
  perLayer('self_attn.q_proj.weight', [dim, dim]);
  perLayer('self_attn.k_proj.weight', [kvDim, dim]);
  perLayer('self_attn.v_proj.weight', [kvDim, dim]);
  perLayer('self_attn.o_proj.weight', [dim, dim]);
  perLayer('post_attention_layernorm.weight', [dim]);
  perLayer('mlp.gate_proj.weight', [hidden, dim]); // w1
  perLayer('mlp.down_proj.weight', [dim, hidden]); // w2
  perLayer('mlp.up_proj.weight', [hidden, dim]); // w3
  put('model.norm.weight', [dim]);
  off += 4 * sizes.freqs;
  if (!tied) put('lm_head.weight', [vocab, dim]);

  const config: ModelConfig = {
    family: 'llama',
    vocabSize: vocab,
    hiddenSize: dim,
    headDim,
    numLayers: L,
    layers: uniformLayers(L, { numHeads: nHeads, numKvHeads: nKvHeads, intermediateSize: hidden }),
    maxPositionEmbeddings: seqLen,
    tieWordEmbeddings: tied,
    bosTokenId: 1,
    eosTokenId: 2,
    normEps: 1e-5,
    ropeTheta: 10000,
    // llama2.c rotates interleaved pairs; q/k are returned as stored (not permuted).
    ropeLayout: 'interleaved',
    hfConfig: {
      architectures: ['LlamaForCausalLM'],
      model_type: 'llama',
      hidden_size: dim,
      intermediate_size: hidden,
      num_hidden_layers: L,
      num_attention_heads: nHeads,
      num_key_value_heads: nKvHeads,
      vocab_size: vocab,
      max_position_embeddings: seqLen,
      rms_norm_eps: 1e-5,
      rope_theta: 10000,
      tie_word_embeddings: tied,
      bos_token_id: 1,
      eos_token_id: 2,
      hidden_act: 'silu',
      torch_dtype: 'float32',
    },
  };
  return { config, tensors };
}

/** Read a whole llama2.c checkpoint as fp32 (as stored: interleaved RoPE layout, not checked finite). */
export function readLlama2cCheckpoint(file: string): { config: ModelConfig; tensors: NamedTensors } {
  const { config, tensors } = openLlama2cCheckpoint(file);
  return { config, tensors: readAllF32(tensors) };
}

/**
 * Reorder the rows of a q/k projection `[numHeads * headDim, cols]` so that a model using
 * half-split RoPE (HF rotate_half: pairs (j, j + hd/2)) computes what the interleaved model
 * (pairs (2j, 2j+1)) computes: within each head, new row j < hd/2 is old row 2j and new row
 * hd/2 + j is old row 2j + 1. This is the permutation HF's convert_llama_weights applies.
 */
export function permuteInterleavedToHalf(
  data: Float32Array,
  rows: number,
  cols: number,
  numHeads: number,
  headDim: number,
): Float32Array {
  return permuteRows(data, rows, cols, numHeads, headDim, false);
}

/** Inverse of {@link permuteInterleavedToHalf}. */
export function permuteHalfToInterleaved(
  data: Float32Array,
  rows: number,
  cols: number,
  numHeads: number,
  headDim: number,
): Float32Array {
  return permuteRows(data, rows, cols, numHeads, headDim, true);
}

function permuteRows(
  data: Float32Array,
  rows: number,
  cols: number,
  numHeads: number,
  headDim: number,
  inverse: boolean,
): Float32Array {
  if (rows !== numHeads * headDim || headDim % 2 !== 0 || data.length !== rows * cols) {
    throw new PruneLabError(
      `RoPE permutation needs rows = numHeads * headDim with even headDim and data of rows * cols; ` +
        `got rows ${rows}, cols ${cols}, numHeads ${numHeads}, headDim ${headDim}, length ${data.length}`,
    );
  }
  const out = new Float32Array(data.length);
  const half = headDim / 2;
  for (let h = 0; h < numHeads; h++) {
    for (let j = 0; j < half; j++) {
      for (const s of [0, 1]) {
        const halfRow = h * headDim + s * half + j;
        const interRow = h * headDim + 2 * j + s;
        const [dst, src] = inverse ? [interRow, halfRow] : [halfRow, interRow];
        out.set(data.subarray(src * cols, (src + 1) * cols), dst * cols);
      }
    }
  }
  return out;
}
