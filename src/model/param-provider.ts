/**
 * Where a model's weights live, behind one interface the forward pass and the engine ask for
 * them by part: decoder layer i, the embeddings, the head.
 *
 * - resident: every tensor on the backend for the model's life; acquiring is free.
 * - streamed: every tensor on the host (HostStore); acquiring a part uploads it (fp32, `[in, out]`
 *   linears), releasing the last hold writes a changed layer back to the host and disposes it.
 *   So the backend holds only the parts in use: one layer, plus embeddings or head while used.
 *
 * Holds are counted: a driver that holds layer i over all its batches pays one upload, and
 * `runBlock`, which holds it too, adds nothing.
 */
import * as tf from '@tensorflow/tfjs';
import type { ModelConfig } from './config.ts';
import { familySpec, type LinearRole } from './family.ts';
import {
  disposeParams, embeddingFromNamed, headFromNamed, layerFromNamed, layerTensors, layerToNamed, paramsToNamedTensors, paramTensors,
  type EmbeddingParams, type HeadParams, type LayerParams, type ModelParams,
} from './params.ts';
import type { HostStore } from './host-store.ts';
import type { HostTensor, NamedTensors } from './tensor-data.ts';
import { ResourceError } from '../util/errors.ts';

export type ExecutionMode = 'resident' | 'streamed';

/** A part of the model that goes onto the backend as a whole. */
export type ModelPart = number | 'embed' | 'head';

export interface ParamProvider {
  readonly mode: ExecutionMode;
  /** Put a part on the backend (counted; streamed: uploads on the first hold). */
  acquire(part: ModelPart): void;
  /** Drop one hold; streamed: the last one writes a changed layer back to the host and frees it. */
  release(part: ModelPart): void;
  /** Layer i's tensors (streamed: only while held). */
  layer(i: number): LayerParams;
  embedding(): EmbeddingParams;
  head(): HeadParams;
  /** Whether layer i's linear `role` has a bias, without touching the backend. */
  hasBias(i: number, role: LinearRole): boolean;
  hasPositions(): boolean;
  /**
   * Layer i's linear `role` as HF `[out, in]` fp32 values straight from the host, when that is
   * where its current values are (streamed and not on the backend); else null.
   */
  hostWeight(i: number, role: LinearRole): HostTensor | null;
  /** Bytes of the weights as fp32 (what the backend holds of them when resident). */
  weightBytes(): number;
  /** Every weight in HF names and layouts, fp32 (streamed: widened when each `data` is read, on every read). */
  toNamedTensors(): NamedTensors;
  dispose(): void;
}

/**
 * Refuse work that needs every weight on the backend at once (worker threads with their own copy
 * of the model) when the weights are streamed; `what` names the work. Gradients do not: they go
 * through the layer-wise backward (layer-backward.ts).
 */
export function assertResident(mode: ExecutionMode, what: string): void {
  if (mode === 'resident') return;
  throw new ResourceError(`${what} needs every weight on the backend at once, but this model's weights are streamed (they are over the ` +
    `backend memory budget, so only one layer at a time is on the backend). Options: a larger --device-memory when the backend can hold ` +
    `the whole model (wasm: the WebAssembly heap's 4 GiB at most), or --backend node / node-gpu with --device-memory set to their memory.`);
}

export class ResidentParams implements ParamProvider {
  readonly mode = 'resident' as const;
  constructor(private readonly config: ModelConfig, readonly params: ModelParams) {}
  acquire(): void {}
  release(): void {}
  layer(i: number): LayerParams {
    return this.params.layers[i]!;
  }
  embedding(): EmbeddingParams {
    return this.params;
  }
  head(): HeadParams {
    return this.params;
  }
  hasBias(i: number, role: LinearRole): boolean {
    return !!this.params.layers[i]!.linears[role]?.bias;
  }
  hasPositions(): boolean {
    return this.params.positions !== null;
  }
  hostWeight(): HostTensor | null {
    return null;
  }
  weightBytes(): number {
    let bytes = 0;
    for (const t of paramTensors(this.params)) bytes += t.size * (t.dtype === 'float32' || t.dtype === 'int32' ? 4 : 1);
    return bytes;
  }
  toNamedTensors(): NamedTensors {
    return paramsToNamedTensors(this.config, this.params);
  }
  dispose(): void {
    disposeParams(this.params);
  }
}

interface Held<P> {
  count: number;
  params: P;
  /** The tensors as uploaded: a different set at release means the part was changed. */
  uploaded: tf.Tensor[];
}

const partName = (part: ModelPart): string => (typeof part === 'number' ? `layer ${part}` : part === 'embed' ? 'the embeddings' : 'the head');

export class StreamedParams implements ParamProvider {
  readonly mode = 'streamed' as const;
  private readonly layers = new Map<number, Held<LayerParams>>();
  private embed: Held<EmbeddingParams> | null = null;
  private headHeld: Held<HeadParams> | null = null;

  /** `config` is the model's own (live) config: surgery changes its layer shapes. */
  constructor(private readonly config: ModelConfig, readonly store: HostStore) {}

  private get getter() {
    return (name: string) => this.store.get(name);
  }

  acquire(part: ModelPart): void {
    const held = this.heldOf(part);
    if (held) {
      held.count++;
      return;
    }
    // Kept: an upload may happen inside a caller's tf.tidy, and must outlive it.
    if (typeof part === 'number') {
      const params = layerFromNamed(this.config, this.getter, part);
      const uploaded = layerTensors(params);
      for (const t of uploaded) tf.keep(t);
      this.layers.set(part, { count: 1, params, uploaded });
    } else if (part === 'embed') {
      const params = embeddingFromNamed(this.config, this.getter);
      const uploaded = [params.embed, ...(params.positions ? [params.positions] : [])];
      for (const t of uploaded) tf.keep(t);
      this.embed = { count: 1, params, uploaded };
    } else {
      const params = headFromNamed(this.config, this.getter);
      const uploaded = [params.lmHead, params.finalNorm.weight, ...(params.finalNorm.bias ? [params.finalNorm.bias] : [])];
      for (const t of uploaded) tf.keep(t);
      this.headHeld = { count: 1, params, uploaded };
    }
  }

  release(part: ModelPart): void {
    const held = this.heldOf(part);
    if (!held) throw new Error(`release of ${partName(part)}, which is not held`);
    if (--held.count > 0) return;
    if (typeof part === 'number') {
      const current = layerTensors(held.params as LayerParams);
      const changed = current.length !== held.uploaded.length || current.some((t, k) => t !== held.uploaded[k]);
      if (changed) this.writeBack(part, held.params as LayerParams);
      this.layers.delete(part);
      tf.dispose(current);
    } else {
      tf.dispose(held.uploaded);
      if (part === 'embed') this.embed = null;
      else this.headHeld = null;
    }
  }

  /** Replace layer i's tensors on the host by what the backend holds (the layer's shapes may have changed). */
  private writeBack(i: number, layer: LayerParams): void {
    const prefix = layerPrefixes(this.config, i);
    const old = new Map<string, ReturnType<HostStore['dtypeOf']>>();
    for (const name of this.store.names()) {
      if (prefix.some((p) => name.startsWith(p))) {
        old.set(name, this.store.dtypeOf(name));
        this.store.delete(name);
      }
    }
    layerToNamed(this.config, layer, i, (name, t) => this.store.putF32(name, { shape: t.shape, data: Float32Array.from(t.data) }, old.get(name)));
  }

  private heldOf(part: ModelPart): Held<unknown> | null | undefined {
    if (typeof part === 'number') return this.layers.get(part);
    return part === 'embed' ? this.embed : this.headHeld;
  }

  private notHeld(part: ModelPart): Error {
    return new Error(`${partName(part)} is not on the backend (streamed weights): hold it with model.withParts first`);
  }

  layer(i: number): LayerParams {
    const h = this.layers.get(i);
    if (!h) throw this.notHeld(i);
    return h.params;
  }
  embedding(): EmbeddingParams {
    if (!this.embed) throw this.notHeld('embed');
    return this.embed.params;
  }
  head(): HeadParams {
    if (!this.headHeld) throw this.notHeld('head');
    return this.headHeld.params;
  }
  hasBias(i: number, role: LinearRole): boolean {
    const held = this.layers.get(i);
    if (held) return !!held.params.linears[role]?.bias;
    const l = familySpec(this.config.family).linears.find((s) => s.role === role);
    return !!l && this.store.has(`${l.hfName(i)}.bias`);
  }
  hasPositions(): boolean {
    const name = familySpec(this.config.family).positionsName;
    return name !== null && this.store.has(name);
  }
  hostWeight(i: number, role: LinearRole): HostTensor | null {
    if (this.layers.has(i)) return null;
    const l = familySpec(this.config.family).linears.find((s) => s.role === role);
    const t = l ? this.store.get(`${l.hfName(i)}.weight`) : undefined;
    // A copy: the store's fp32 arrays are its own, and callers may change what they get.
    return t ? { shape: t.shape, data: this.store.dtypeOf(`${l!.hfName(i)}.weight`) === 'F32' ? t.data.slice() : t.data } : null;
  }
  weightBytes(): number {
    return 4 * this.store.numel();
  }
  toNamedTensors(): NamedTensors {
    if (this.layers.size > 0) throw new Error('export of streamed weights while a layer is on the backend');
    return this.store.lazyNamedTensors();
  }
  dispose(): void {
    for (const h of this.layers.values()) tf.dispose(layerTensors(h.params));
    this.layers.clear();
    if (this.embed) tf.dispose(this.embed.uploaded);
    if (this.headHeld) tf.dispose(this.headHeld.uploaded);
    this.embed = null;
    this.headHeld = null;
  }
}

/** Name prefixes of everything layer i stores (its linears and norms, with their trailing dot). */
function layerPrefixes(config: ModelConfig, i: number): string[] {
  const spec = familySpec(config.family);
  return [...spec.linears.map((l) => `${l.hfName(i)}.`), `${spec.attnNorm.hfName(i)}.`, `${spec.mlpNorm.hfName(i)}.`];
}
