/**
 * The quantised export of group fine-tuning (SAAP's recovery): an HF checkpoint directory in which
 * the group-quantised linears are stored as integer codes with per-group scales and zeros.
 *
 *   config.json            the model's config plus `prunelab_quantization`:
 *                          { format: "prunelab-group-asymmetric", version: 1, bits, group_size,
 *                            file: "quantized.safetensors", modules: [HF module names] }
 *   model.safetensors      every other tensor (embeddings, norms, head, biases, linears kept in
 *                          fp32), F32, as `prunelab convert` writes them
 *   quantized.safetensors  per module M of `modules`, with W = M's weight in HF's [out, in] layout:
 *     M.qweight  U8  [out, ⌈in/2⌉]  codes q[o, i] ∈ 0…2^bits−1, two per byte for bits ≤ 4: input
 *                                   2j in the low nibble, 2j+1 in the high one (0 past the end);
 *                                   [out, in], one per byte, for bits 5–8
 *     M.scales   F32 [out, G]       α per (output, group), G = ⌈in/group_size⌉
 *     M.zeros    F32 [out, G]       β per (output, group): an fp32 offset (not an integer zero
 *                                   point), W[o, i] = scales[o, g]·q[o, i] + zeros[o, g],
 *                                   g = ⌊i/group_size⌋ (the last group may be shorter)
 *
 * `loadModel` dequantises these to fp32 with the same float32 arithmetic as the merge
 * (quant.ts `dequantizeHost`), so the loaded model computes what the merged fp32 model computes.
 * Linears whose zeros a mask put back after the merge are not codes any more and stay fp32.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { CausalLM } from '../model/causal-lm.ts';
import type { ModelConfig } from '../model/config.ts';
import { expectedTensors } from '../model/params.ts';
import type { NamedTensors } from '../model/tensor-data.ts';
import { dequantizeHost, groupLayout, type GroupQuantized } from '../finetune/quant.ts';
import { CheckpointError, ConfigError } from '../util/errors.ts';
import { assertFinite, writeHfCheckpoint } from './hf-checkpoint.ts';
import { readSafetensorsHeader, writeSafetensors } from './safetensors.ts';
import { readF32, readStored, type StoredTensor, type TensorRefs } from './stored-tensor.ts';

export const QUANT_CONFIG_KEY = 'prunelab_quantization';
export const QUANT_FORMAT = 'prunelab-group-asymmetric';
const QUANT_FILE = 'quantized.safetensors';

interface QuantConfig {
  format: typeof QUANT_FORMAT;
  version: 1;
  bits: number;
  group_size: number;
  file: string;
  modules: string[];
}

/** Bytes per output row of packed codes. */
function packedWidth(inFeatures: number, bits: number): number {
  return bits <= 4 ? Math.ceil(inFeatures / 2) : inFeatures;
}

/** Codes of our `[in, out]` layout → HF `[out, ⌈in/2⌉]` bytes (see the module comment). */
export function packCodes(qw: GroupQuantized): Uint8Array {
  const { inFeatures: inF, outFeatures: outF, bits } = qw;
  const width = packedWidth(inF, bits);
  const out = new Uint8Array(outF * width);
  for (let o = 0; o < outF; o++) {
    for (let i = 0; i < inF; i++) {
      const q = qw.q[i * outF + o];
      if (bits <= 4) out[o * width + (i >> 1)] |= q << ((i & 1) * 4);
      else out[o * width + i] = q;
    }
  }
  return out;
}

/** The inverse of `packCodes`. */
export function unpackCodes(bytes: Uint8Array, inF: number, outF: number, bits: number): Uint8Array {
  const width = packedWidth(inF, bits);
  const q = new Uint8Array(inF * outF);
  for (let o = 0; o < outF; o++) {
    for (let i = 0; i < inF; i++) {
      const b = bytes[o * width + (bits <= 4 ? i >> 1 : i)];
      q[i * outF + o] = bits <= 4 ? (b >> ((i & 1) * 4)) & 0xf : b;
    }
  }
  return q;
}

/** `[rows, cols]` row-major → `[cols, rows]`. */
function transpose(a: Float32Array, rows: number, cols: number): Float32Array {
  const t = new Float32Array(a.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) t[c * rows + r] = a[r * cols + c];
  return t;
}

/**
 * Write `model` as a quantised export to `dir`: the linears in `quantized` (by `<layer>.<role>`,
 * as `LoraSet.merge` returns them) as codes, scales and zeros, everything else fp32.
 */
export function writeQuantizedCheckpoint(dir: string, model: CausalLM, quantized: ReadonlyMap<string, GroupQuantized>): { modules: string[] } {
  if (model.config.ropeLayout !== 'half') throw new ConfigError('a quantised export needs the HF half-split RoPE layout (load the model with prunelab first)');
  const all = [...quantized.values()];
  if (all.length === 0) throw new ConfigError('nothing to export: no linear is group-quantised');
  const { bits, groupSize } = all[0];
  if (all.some((q) => q.bits !== bits || q.groupSize !== groupSize)) throw new ConfigError('a quantised export needs one bit width and one group size');
  const tensors = model.toNamedTensors();
  const codes = new Map<string, StoredTensor | { shape: number[]; data: Float32Array }>();
  const modules: string[] = [];
  for (const [key, qw] of quantized) {
    const [layer, role] = key.split('.');
    const linear = model.spec.linears.find((l) => l.role === role);
    if (!linear) throw new ConfigError(`quantised export: '${key}' is not a linear of the ${model.config.family} family`);
    const m = linear.hfName(Number(layer));
    const { groups } = groupLayout(qw.inFeatures, groupSize);
    tensors.delete(`${m}.weight`);
    codes.set(`${m}.qweight`, { dtype: 'U8', shape: [qw.outFeatures, packedWidth(qw.inFeatures, bits)], bytes: packCodes(qw) });
    codes.set(`${m}.scales`, { shape: [qw.outFeatures, groups], data: transpose(qw.alpha, groups, qw.outFeatures) });
    codes.set(`${m}.zeros`, { shape: [qw.outFeatures, groups], data: transpose(qw.beta, groups, qw.outFeatures) });
    modules.push(m);
  }
  modules.sort();
  writeHfCheckpoint(dir, model.config, tensors);
  writeSafetensors(path.join(dir, QUANT_FILE), codes, 'F32', { format: QUANT_FORMAT });
  const configFile = path.join(dir, 'config.json');
  const config = JSON.parse(fs.readFileSync(configFile, 'utf8')) as Record<string, unknown>;
  const q: QuantConfig = { format: QUANT_FORMAT, version: 1, bits, group_size: groupSize, file: QUANT_FILE, modules };
  fs.writeFileSync(configFile, JSON.stringify({ ...config, [QUANT_CONFIG_KEY]: q }, null, 2) + '\n');
  return { modules };
}

/** A quantised export's codes, opened (headers only, shapes checked). */
export interface QuantizedPart {
  bits: number;
  groupSize: number;
  /** `<module>.qweight|scales|zeros` in the codes file. */
  refs: TensorRefs;
  /** The `[out, in]` shape of each `<module>.weight` the codes stand for. */
  weights: Map<string, number[]>;
}

/**
 * The codes of a quantised export (null when config.json has no `prunelab_quantization`), every
 * shape checked against the config; `tensors` are the directory's other tensors, which must not
 * hold a quantised module's weight as well.
 */
export function openQuantizedPart(dir: string, config: ModelConfig, tensors: TensorRefs): QuantizedPart | null {
  const raw = config.hfConfig[QUANT_CONFIG_KEY];
  if (raw === undefined) return null;
  const where = path.join(dir, 'config.json');
  const q = raw as Partial<QuantConfig> | null;
  const isInt = (v: unknown, lo: number, hi: number): v is number => Number.isInteger(v) && (v as number) >= lo && (v as number) <= hi;
  if (!q || q.format !== QUANT_FORMAT || q.version !== 1 || !isInt(q.bits, 2, 8) || !isInt(q.group_size, 1, Number.MAX_SAFE_INTEGER)
    || typeof q.file !== 'string' || path.basename(q.file) !== q.file || !Array.isArray(q.modules) || !q.modules.every((m) => typeof m === 'string')) {
    throw new CheckpointError(`${QUANT_CONFIG_KEY} must be { format: "${QUANT_FORMAT}", version: 1, bits (2–8), group_size, file, modules } (got ${JSON.stringify(raw)})`, where);
  }
  const file = path.join(dir, q.file);
  if (!fs.existsSync(file)) throw new CheckpointError(`${QUANT_CONFIG_KEY} names '${q.file}', which is missing`, dir);
  const refs = readSafetensorsHeader(file).tensors;
  const expected = new Map(expectedTensors(config).map((e) => [e.name, e.shape]));
  const weights = new Map<string, number[]>();
  for (const m of q.modules) {
    const shape = expected.get(`${m}.weight`);
    if (!shape) throw new CheckpointError(`${QUANT_CONFIG_KEY} lists '${m}', which is not a linear of this config`, where);
    if (tensors.has(`${m}.weight`)) throw new CheckpointError(`'${m}' is stored both quantised and as '${m}.weight'`, dir);
    const [outF, inF] = shape;
    const G = groupLayout(inF, q.group_size).groups;
    const want: [string, string, number[]][] = [['qweight', 'U8', [outF, packedWidth(inF, q.bits)]], ['scales', 'F32', [outF, G]], ['zeros', 'F32', [outF, G]]];
    for (const [part, dtype, dims] of want) {
      const ref = refs.get(`${m}.${part}`);
      if (!ref || ref.dtype !== dtype || ref.shape.length !== 2 || ref.shape[0] !== dims[0] || ref.shape[1] !== dims[1]) {
        throw new CheckpointError(`'${m}.${part}' must be ${dtype} [${dims}] (got ${ref ? `${ref.dtype} [${ref.shape}]` : 'nothing'})`, file);
      }
    }
    weights.set(`${m}.weight`, shape);
  }
  return { bits: q.bits, groupSize: q.group_size, refs, weights };
}

/** Read the codes and put each quantised module's fp32 weight (dequantised) into `tensors`. */
export function dequantizePart(part: QuantizedPart, config: ModelConfig, tensors: NamedTensors, source: string): { config: ModelConfig; tensors: NamedTensors } {
  const out: NamedTensors = new Map(tensors);
  const levels = 2 ** part.bits - 1;
  for (const [name, [outF, inF]] of part.weights) {
    const m = name.slice(0, -'.weight'.length);
    const ref = (p: string) => part.refs.get(`${m}.${p}`) as NonNullable<ReturnType<TensorRefs['get']>>;
    const q = unpackCodes(readStored(ref('qweight')).bytes, inF, outF, part.bits);
    const bad = q.findIndex((v) => v > levels);
    if (bad >= 0) throw new CheckpointError(`'${m}.qweight' holds code ${q[bad]} > ${levels} (${part.bits} bits)`, source);
    const G = groupLayout(inF, part.groupSize).groups;
    const sz: NamedTensors = new Map([['scales', { shape: [outF, G], data: readF32(ref('scales')) }], ['zeros', { shape: [outF, G], data: readF32(ref('zeros')) }]]);
    assertFinite(new Map([...sz].map(([k, v]) => [`${m}.${k}`, v])), source);
    const qw: GroupQuantized = {
      bits: part.bits, groupSize: part.groupSize, inFeatures: inF, outFeatures: outF, q,
      alpha: transpose(sz.get('scales')!.data, outF, G), beta: transpose(sz.get('zeros')!.data, outF, G),
    };
    out.set(name, { shape: [outF, inF], data: transpose(dequantizeHost(qw), inF, outF) });
  }
  // The loaded model is plain fp32: a re-export must not claim quantised modules.
  const hfConfig = { ...config.hfConfig };
  delete hfConfig[QUANT_CONFIG_KEY];
  return { config: { ...config, hfConfig }, tensors: out };
}
