/**
 * The read-only view of a model that pruning methods see: configuration, per-layer shapes, the
 * family table, which linears carry a bias and the parameter counts. Methods decide from this and
 * from the statistics the engine hands them; they never hold the mutable `CausalLM` (whose
 * weights live on a backend and may be streamed layer by layer).
 */
import type { LayerShape, ModelConfig } from './config.ts';
import { familySpec, type FamilySpec, type LinearRole } from './family.ts';
import { countParameters, type ParameterCount } from './count.ts';
import type { CausalLM } from './causal-lm.ts';

export interface ModelView {
  /** Deep-frozen at run time: writing to it throws. */
  readonly config: Readonly<ModelConfig>;
  readonly spec: FamilySpec;
  readonly numLayers: number;
  layerShape(layer: number): Readonly<LayerShape>;
  /** Whether linear `role` of `layer` has a bias vector. */
  hasBias(layer: number, role: LinearRole): boolean;
  /** Parameter counts of the model as it was when the view was taken. */
  readonly parameters: Readonly<ParameterCount>;
}

/** Structured-clone-able content of a view (what worker threads receive). */
export interface ModelViewData {
  config: ModelConfig;
  /** Per layer, the roles whose linear has a bias. */
  biases: LinearRole[][];
  parameters: ParameterCount;
}

/** Snapshot of what a view shows of `model`. */
export function modelViewData(model: CausalLM): ModelViewData {
  return {
    config: structuredClone(model.config),
    biases: model.config.layers.map((_, i) => model.spec.linears.filter((l) => model.weights.hasBias(i, l.role)).map((l) => l.role)),
    parameters: countParameters(model),
  };
}

/** A view over a snapshot: deep-frozen, so a method can neither change the model nor see it change. */
export function viewFromData(data: ModelViewData): ModelView {
  const d = structuredClone(data);
  deepFreeze(d);
  const biases = d.biases.map((roles) => new Set(roles));
  return Object.freeze({
    config: d.config,
    spec: familySpec(d.config.family),
    numLayers: d.config.numLayers,
    layerShape: (layer: number) => d.config.layers[layer],
    hasBias: (layer: number, role: LinearRole) => biases[layer]?.has(role) ?? false,
    parameters: d.parameters,
  });
}

export function modelView(model: CausalLM): ModelView {
  return viewFromData(modelViewData(model));
}

function deepFreeze(o: object): void {
  for (const v of Object.values(o)) if (v && typeof v === 'object') deepFreeze(v as object);
  Object.freeze(o);
}
