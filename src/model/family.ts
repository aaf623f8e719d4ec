/**
 * Declarative description of each family's decoder block: its linears (role, HF name, which tap
 * feeds it, shapes), its norms, and its coupled structures. Pruning, surgery, LoRA and checkpoint
 * I/O are driven by this table instead of knowing family details.
 */
import type { Family, LayerShape, ModelConfig } from './config.ts';

export const LINEAR_ROLES = ['q', 'k', 'v', 'o', 'gate', 'up', 'down', 'fc1', 'fc2'] as const;
export type LinearRole = (typeof LINEAR_ROLES)[number];

/**
 * Named activations inside a block. `attnIn` feeds q/k/v, `attnCtx` (heads concatenated) feeds
 * o, `mlpIn` feeds gate/up (fc1), `downIn` feeds down (fc2).
 */
export type TapName = 'attnIn' | 'attnCtx' | 'mlpIn' | 'downIn';
export const TAP_NAMES: readonly TapName[] = ['attnIn', 'attnCtx', 'mlpIn', 'downIn'];

export interface LinearSpec {
  role: LinearRole;
  /** HF module path without `.weight`/`.bias`, for layer i. */
  hfName(i: number): string;
  input: TapName;
  inDim(shape: LayerShape, config: ModelConfig): number;
  outDim(shape: LayerShape, config: ModelConfig): number;
  /** Which structural group this linear belongs to, for reports by matrix type. */
  module: 'attn' | 'mlp';
}

export interface NormSpec {
  hfName(i: number): string;
  hasBias: boolean;
}

export interface FamilySpec {
  family: Family;
  /** Linears in forward order (the order intra-layer error correction follows). */
  linears: readonly LinearSpec[];
  attnNorm: NormSpec;
  mlpNorm: NormSpec;
  embedName: string;
  positionsName: string | null;
  finalNormName: string;
  finalNormHasBias: boolean;
  /** An FFN channel j = output j of each `ffnOut` linear and input j of `ffnIn`. */
  ffnChannel: { outputsOf: readonly LinearRole[]; inputsOf: LinearRole };
  /**
   * A key/value head group k = the query heads that share it (outputs of `q`), output rows of
   * k and v for head k, and the input columns of `o` for those query heads.
   */
  kvGroup: { query: LinearRole; keyValue: readonly LinearRole[]; inputsOf: LinearRole };
}

const attnQ = (s: LayerShape, c: ModelConfig) => s.numHeads * c.headDim;
const attnKv = (s: LayerShape, c: ModelConfig) => s.numKvHeads * c.headDim;
const hidden = (_s: LayerShape, c: ModelConfig) => c.hiddenSize;
const ffn = (s: LayerShape) => s.intermediateSize;

function llamaLinear(role: LinearRole, module: 'self_attn' | 'mlp', proj: string, input: TapName,
  inDim: LinearSpec['inDim'], outDim: LinearSpec['outDim']): LinearSpec {
  return {
    role, input, inDim, outDim,
    module: module === 'mlp' ? 'mlp' : 'attn',
    hfName: (i) => `model.layers.${i}.${module}.${proj}`,
  };
}

export const LLAMA: FamilySpec = {
  family: 'llama',
  linears: [
    llamaLinear('q', 'self_attn', 'q_proj', 'attnIn', hidden, attnQ),
    llamaLinear('k', 'self_attn', 'k_proj', 'attnIn', hidden, attnKv),
    llamaLinear('v', 'self_attn', 'v_proj', 'attnIn', hidden, attnKv),
    llamaLinear('o', 'self_attn', 'o_proj', 'attnCtx', attnQ, hidden),
    llamaLinear('gate', 'mlp', 'gate_proj', 'mlpIn', hidden, ffn),
    llamaLinear('up', 'mlp', 'up_proj', 'mlpIn', hidden, ffn),
    llamaLinear('down', 'mlp', 'down_proj', 'downIn', ffn, hidden),
  ],
  attnNorm: { hfName: (i) => `model.layers.${i}.input_layernorm`, hasBias: false },
  mlpNorm: { hfName: (i) => `model.layers.${i}.post_attention_layernorm`, hasBias: false },
  embedName: 'model.embed_tokens.weight',
  positionsName: null,
  finalNormName: 'model.norm',
  finalNormHasBias: false,
  ffnChannel: { outputsOf: ['gate', 'up'], inputsOf: 'down' },
  kvGroup: { query: 'q', keyValue: ['k', 'v'], inputsOf: 'o' },
};

function optLinear(role: LinearRole, sub: string, input: TapName,
  inDim: LinearSpec['inDim'], outDim: LinearSpec['outDim'], module: 'attn' | 'mlp'): LinearSpec {
  return { role, input, inDim, outDim, module, hfName: (i) => `model.decoder.layers.${i}.${sub}` };
}

export const OPT: FamilySpec = {
  family: 'opt',
  linears: [
    optLinear('q', 'self_attn.q_proj', 'attnIn', hidden, attnQ, 'attn'),
    optLinear('k', 'self_attn.k_proj', 'attnIn', hidden, attnKv, 'attn'),
    optLinear('v', 'self_attn.v_proj', 'attnIn', hidden, attnKv, 'attn'),
    optLinear('o', 'self_attn.out_proj', 'attnCtx', attnQ, hidden, 'attn'),
    optLinear('fc1', 'fc1', 'mlpIn', hidden, ffn, 'mlp'),
    optLinear('fc2', 'fc2', 'downIn', ffn, hidden, 'mlp'),
  ],
  attnNorm: { hfName: (i) => `model.decoder.layers.${i}.self_attn_layer_norm`, hasBias: true },
  mlpNorm: { hfName: (i) => `model.decoder.layers.${i}.final_layer_norm`, hasBias: true },
  embedName: 'model.decoder.embed_tokens.weight',
  positionsName: 'model.decoder.embed_positions.weight',
  finalNormName: 'model.decoder.final_layer_norm',
  finalNormHasBias: true,
  ffnChannel: { outputsOf: ['fc1'], inputsOf: 'fc2' },
  kvGroup: { query: 'q', keyValue: ['k', 'v'], inputsOf: 'o' },
};

/** OPT adds 2 to position ids before looking up learned positions (a fairseq legacy). */
export const OPT_POSITION_OFFSET = 2;

export function familySpec(family: Family): FamilySpec {
  return family === 'llama' ? LLAMA : OPT;
}

export function linearSpec(family: Family, role: LinearRole): LinearSpec {
  const spec = familySpec(family).linears.find((l) => l.role === role);
  if (!spec) throw new Error(`family ${family} has no linear '${role}'`);
  return spec;
}
