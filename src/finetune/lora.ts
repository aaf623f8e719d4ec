/**
 * LoRA adapters on the linears of a CausalLM, applied through `model.linearHook`.
 *
 * Layout: weights are stored `[in, out]` and applied as x·W, so an adapter is A: `[in, r]`,
 * B: `[r, out]` and the update is ΔW = s·A·B with s = α/r (y = x·W + s·(x·A)·B). A starts
 * Kaiming-uniform-like (U(±1/√fan_in), what PEFT's kaiming_uniform_(a=√5) gives), B starts at zero,
 * so training starts exactly at the base model.
 *
 * QA-LoRA form (group fine-tuning on a quantised base): the base is replaced by its group-wise
 * fake-quantised copy Ŵ and A: `[G, r]` (G = ⌈in/groupSize⌉, the last group possibly shorter)
 * acts on the input average-pooled within each group; merging is the exact update
 * β += s·(A·B)/n_g of the quantised form (quant.ts).
 *
 * Masks (unstructured / N:M sparsity): LoRA's dense update would fill pruned zeros. When
 * `preserveMasks` is on, the mask of a linear is "base weight ≠ 0" taken when the adapters are
 * attached. During training the update is masked too (y = x·W + x·(ΔW ⊙ M)) so the trained
 * function is the one the merged model computes; after merging the mask is re-applied, i.e. every
 * weight that was zero in the base is zero again. A linear without any zero weight gets no mask.
 *
 * Products are plain tf.matMul: the trainer runs under `withFastMatMulGradient`
 * (model/matmul-grad.ts), whose gradient avoids the slow transposed kernels, and a frozen base
 * weight gets no gradient because only the adapter variables are differentiated.
 */
import * as tf from '@tensorflow/tfjs';
import seedrandom from 'seedrandom';
import type { CausalLM, LinearHook } from '../model/causal-lm.ts';
import type { LinearRole } from '../model/family.ts';
import type { LinearParams } from '../model/params.ts';
import type { NamedTensors } from '../model/tensor-data.ts';
import { hostCopy, restoreVariable } from '../train/checkpoint.ts';
import { ConfigError } from '../util/errors.ts';
import {
  dequantizeHost, expandGroupRows, groupLayout, mergeIntoBeta, poolGroups, qaLoraGroupDelta, quantizeGroupwise,
  resolveQuantOptions, type GroupQuantized,
} from './quant.ts';

export interface LoraSpec {
  /** Rank per layer (length = number of layers); 0 = no adapters in that layer. */
  ranks: readonly number[];
  /** α per layer; the update scale is α_l / r_l. */
  alphas: readonly number[];
  /** Dropout on the adapter input during training (PEFT: lora_B(lora_A(dropout(x)))). */
  dropout: number;
  /** Linear roles that get adapters (must exist in the model's family). */
  targets: readonly LinearRole[];
  /** QA-LoRA with a fake-quantised base; null = plain LoRA on the weights as they are. */
  quant: { bits: number; groupSize: number } | null;
  /** Keep zeros of the base weights zero through training and merge. */
  preserveMasks: boolean;
  /** Seed for A's initialisation (each adapter draws from its own stream of this seed). */
  seed: number;
}

export class LoraAdapter {
  constructor(
    readonly layer: number,
    readonly role: LinearRole,
    readonly rank: number,
    readonly scale: number,
    readonly inFeatures: number,
    readonly outFeatures: number,
    /** `[in, r]`, or `[G, r]` (one row per input group) in the QA-LoRA form. */
    readonly A: tf.Variable<tf.Rank.R2>,
    /** `[r, out]`. */
    readonly B: tf.Variable<tf.Rank.R2>,
    /**
     * 1 where the base weight is non-zero, `[in, out]`; null when nothing is masked. Kept on the
     * host (bytes) for a streamed model, whose base weights are not on the backend either.
     */
    private readonly keptMask: tf.Tensor2D | Uint8Array | null,
    /** Quantised base (QA-LoRA form), null for plain LoRA. */
    readonly quantized: GroupQuantized | null,
  ) {}

  get key(): string {
    return adapterKey(this.layer, this.role);
  }

  get masked(): boolean {
    return this.keptMask !== null;
  }

  /** The mask as a tensor: a host-kept one is uploaded, so call inside a tidy. */
  mask(): tf.Tensor2D | null {
    const m = this.keptMask;
    if (m === null || m instanceof tf.Tensor) return m;
    return tf.tensor2d(Float32Array.from(m), [this.inFeatures, this.outFeatures]);
  }

  /** A expanded to act on the raw input: QA-LoRA's pooling is A repeated per group / group size. */
  private expandedA(): tf.Tensor2D {
    return this.quantized ? expandGroupRows(this.A, this.quantized.groupSize, this.inFeatures) : this.A;
  }

  /** ΔW = s·A·B (masked when a mask is kept), `[in, out]`. Differentiable in A and B. */
  delta(): tf.Tensor2D {
    return tf.tidy(() => {
      const d = tf.mul(tf.matMul(this.expandedA(), this.B), this.scale) as tf.Tensor2D;
      const m = this.mask();
      return m ? tf.mul(d, m) as tf.Tensor2D : d;
    });
  }

  /** The adapter's contribution for input rows `x: [N, in]` (x already dropped out). */
  apply(x: tf.Tensor2D): tf.Tensor2D {
    return tf.tidy(() => {
      // With a mask the update must be masked elementwise, so it is materialised (r·in·out flops,
      // cheap next to N·in·out whenever r < N).
      if (this.masked) return tf.matMul(x, this.delta());
      const xa = this.quantized ? poolGroups(x, this.quantized.groupSize) : x;
      return tf.mul(tf.matMul(tf.matMul(xa, this.A), this.B), this.scale) as tf.Tensor2D;
    });
  }

  dispose(): void {
    this.A.dispose();
    this.B.dispose();
    if (this.keptMask instanceof tf.Tensor) this.keptMask.dispose();
  }
}

export function adapterKey(layer: number, role: LinearRole): string {
  return `${layer}.${role}`;
}

/** Options of the hook a LoraSet installs. */
export interface HookMode {
  /** Dropout on (training) or off (evaluation). */
  training: boolean;
}

/** All adapters of a model, their hook, and merge. */
export class LoraSet {
  private readonly byKey = new Map<string, LoraAdapter>();
  private attachedTo: CausalLM | null = null;
  private previousHook: LinearHook | null = null;
  private mode: HookMode = { training: false };
  /** Seed of the current forward's dropout masks; the trainer sets it per micro-batch. */
  dropoutSeed = 0;

  private constructor(readonly spec: LoraSpec) {}

  /**
   * Create adapters for `model` per `spec`. In the QA-LoRA form this replaces every targeted
   * base weight by its fake-quantised copy (the frozen base group fine-tuning trains against).
   */
  static create(model: CausalLM, spec: LoraSpec): LoraSet {
    validateSpec(model, spec);
    const set = new LoraSet(spec);
    try {
      for (let layer = 0; layer < model.numLayers; layer++) {
        const r = spec.ranks[layer];
        if (r === 0) continue;
        // Streamed weights: the layer is on the backend while its adapters are made (a quantised base is written back).
        model.withParts([layer], () => {
          for (const role of spec.targets) {
            set.byKey.set(adapterKey(layer, role), makeAdapter(model, spec, layer, role, r, spec.alphas[layer] / r));
          }
        });
      }
    } catch (e) {
      set.dispose();
      throw e;
    }
    return set;
  }

  get adapters(): LoraAdapter[] {
    return [...this.byKey.values()];
  }

  get(layer: number, role: LinearRole): LoraAdapter | undefined {
    return this.byKey.get(adapterKey(layer, role));
  }

  /** Trainable variables, in a fixed order (layer, then target order; A before B). */
  variables(): tf.Variable[] {
    return this.adapters.flatMap((a) => [a.A, a.B]);
  }

  get numTrainableParams(): number {
    return this.adapters.reduce((n, a) => n + a.A.size + a.B.size, 0);
  }

  /** The hook: base linear plus adapter; linears without an adapter fall back to the model. */
  hook(): LinearHook {
    return (layer: number, role: LinearRole, x: tf.Tensor2D, base: LinearParams) => {
      const a = this.byKey.get(adapterKey(layer, role));
      if (!a) return null;
      return tf.tidy(() => {
        const xw = tf.matMul(x, base.weight);
        const y = base.bias ? tf.add(xw, base.bias) as tf.Tensor2D : xw;
        const p = this.spec.dropout;
        const xd = this.mode.training && p > 0
          ? tf.dropout(x, p, undefined, `${this.dropoutSeed}:${a.key}`) as tf.Tensor2D
          : x;
        return tf.add(y, a.apply(xd)) as tf.Tensor2D;
      });
    };
  }

  /** Install the hook on `model` (remembering any hook that was there). */
  attach(model: CausalLM, mode: HookMode = { training: false }): void {
    if (this.attachedTo && this.attachedTo !== model) throw new Error('LoraSet is attached to another model');
    if (!this.attachedTo) this.previousHook = model.linearHook;
    this.attachedTo = model;
    this.mode = { ...mode };
    model.linearHook = this.hook();
  }

  setMode(mode: HookMode): void {
    this.mode = { ...mode };
  }

  detach(): void {
    if (!this.attachedTo) return;
    this.attachedTo.linearHook = this.previousHook;
    this.attachedTo = null;
    this.previousHook = null;
  }

  /**
   * Fold every adapter into the base weights of `model`, detach and dispose the adapters.
   * Plain: W ← W + s·A·B. QA-LoRA: β ← β + s·(A·B)/n_g, W ← α·q + β. Masks are re-applied
   * (zero where the base weight was zero). Returns the updated quantised weights (QA-LoRA form)
   * by adapter key, for a quantised export — of the linears without a mask: a masked linear's
   * merged weight (zeros put back) is no longer what its codes dequantise to.
   */
  merge(model: CausalLM): Map<string, GroupQuantized> {
    const quantized = new Map<string, GroupQuantized>();
    // Layer by layer: a streamed model's layer is uploaded once for all its adapters, and written back.
    for (const layer of new Set(this.adapters.map((a) => a.layer))) model.withParts([layer], () => { for (const a of this.adapters.filter((x) => x.layer === layer)) {
      let merged: tf.Tensor2D;
      if (a.quantized) {
        const d = qaLoraGroupDelta(a.A, a.B, a.scale, a.quantized.groupSize, a.inFeatures);
        const qw = mergeIntoBeta(a.quantized, d.dataSync() as Float32Array);
        d.dispose();
        if (!a.masked) quantized.set(a.key, qw);
        const w = tf.tensor2d(dequantizeHost(qw), [a.inFeatures, a.outFeatures]);
        merged = a.masked ? tf.tidy(() => tf.mul(w, a.mask()!) as tf.Tensor2D) : w;
        if (merged !== w) w.dispose();
      } else {
        const base = model.linearParams(a.layer, a.role).weight;
        merged = tf.tidy(() => {
          const w = tf.add(base, a.delta()) as tf.Tensor2D;
          const m = a.mask();
          return m ? tf.mul(w, m) as tf.Tensor2D : w;
        });
      }
      model.setLinear(a.layer, a.role, merged);
    } });
    this.detach();
    this.dispose();
    return quantized;
  }

  /** Adapter weights by name (`lora.<layer>.<role>.A|B`, our `[in,r]`/`[r,out]` layout). */
  toNamedTensors(): NamedTensors {
    const out: NamedTensors = new Map();
    for (const a of this.adapters) {
      out.set(`lora.${a.key}.A`, hostCopy(a.A));
      out.set(`lora.${a.key}.B`, hostCopy(a.B));
    }
    return out;
  }

  /** Restore adapter weights written by `toNamedTensors` (shapes must match). */
  loadNamedTensors(tensors: NamedTensors, source: string): void {
    for (const a of this.adapters) {
      restoreVariable(a.A, tensors, `lora.${a.key}.A`, 'adapter tensor', source);
      restoreVariable(a.B, tensors, `lora.${a.key}.B`, 'adapter tensor', source);
    }
  }

  dispose(): void {
    this.detach();
    for (const a of this.byKey.values()) a.dispose();
    this.byKey.clear();
  }
}

function validateSpec(model: CausalLM, spec: LoraSpec): void {
  const L = model.numLayers;
  if (spec.ranks.length !== L) throw new ConfigError(`lora: ${spec.ranks.length} ranks given for ${L} layers`);
  if (spec.alphas.length !== L) throw new ConfigError(`lora: ${spec.alphas.length} alphas given for ${L} layers`);
  spec.ranks.forEach((r, i) => {
    if (!Number.isInteger(r) || r < 0) throw new ConfigError(`lora: rank of layer ${i} must be a non-negative integer, got ${r}`);
  });
  spec.alphas.forEach((a, i) => {
    if (!Number.isFinite(a) || a <= 0) throw new ConfigError(`lora: alpha of layer ${i} must be positive, got ${a}`);
  });
  if (!(spec.dropout >= 0 && spec.dropout < 1)) throw new ConfigError(`lora: dropout must be in [0, 1), got ${spec.dropout}`);
  if (spec.targets.length === 0) throw new ConfigError('lora: no target linears');
  const roles = model.spec.linears.map((l) => l.role);
  for (const t of spec.targets) {
    if (!roles.includes(t)) {
      throw new ConfigError(`lora: target '${t}' is not a linear of the ${model.config.family} family (valid: ${roles.join(', ')})`);
    }
  }
  // Checked up front: a failure half-way would leave the model partly quantised.
  if (spec.quant) resolveQuantOptions(spec.quant);
}

function makeAdapter(model: CausalLM, spec: LoraSpec, layer: number, role: LinearRole, r: number, scale: number): LoraAdapter {
  const p = model.linearParams(layer, role);
  const [inF, outF] = p.weight.shape;
  const fanIn = spec.quant ? groupLayout(inF, spec.quant.groupSize).groups : inF;
  // Per-adapter stream: the init does not depend on creation order or on other adapters.
  const rng = seedrandom.alea(`${spec.seed}:lora-init:${layer}:${role}`);
  const bound = 1 / Math.sqrt(fanIn);
  const aInit = Float32Array.from({ length: fanIn * r }, () => (2 * rng() - 1) * bound);
  let mask: tf.Tensor2D | null = null;
  if (spec.preserveMasks) {
    const zeros = tf.tidy(() => tf.sum(tf.cast(tf.equal(p.weight, 0), 'int32')).dataSync()[0]);
    if (zeros > 0) mask = tf.tidy(() => tf.cast(tf.notEqual(p.weight, 0), 'float32') as tf.Tensor2D);
  }
  let quantized: GroupQuantized | null = null;
  if (spec.quant) {
    quantized = quantizeGroupwise(p.weight, spec.quant);
    const wq = tf.tensor2d(dequantizeHost(quantized), [inF, outF]);
    model.setLinear(layer, role, mask ? tf.tidy(() => tf.mul(wq, mask as tf.Tensor2D) as tf.Tensor2D) : wq);
    if (mask) wq.dispose();
  }
  const A = trainable(tf.tensor2d(aInit, [fanIn, r]));
  const B = trainable(tf.zeros([r, outF]));
  // A streamed model's masks stay on the host, as its weights do: the backend keeps only the adapters.
  let kept: tf.Tensor2D | Uint8Array | null = mask;
  if (mask && model.mode === 'streamed') {
    kept = Uint8Array.from(mask.dataSync());
    mask.dispose();
  }
  return new LoraAdapter(layer, role, r, scale, inF, outF, A, B, kept, quantized);
}

/** A trainable variable from `init`; the initial tensor is released (the variable holds the data). */
export function trainable(init: tf.Tensor2D, isTrainable = true): tf.Variable<tf.Rank.R2> {
  const v = tf.variable(init, isTrainable) as tf.Variable<tf.Rank.R2>;
  init.dispose();
  return v;
}
