/**
 * The public entry point for method plug-ins: `import { defineMethod, z, … } from 'prunelab/plugin'`.
 *
 * A plug-in folder anywhere on disk (given to `--method PATH` or to `name:` in an experiment YAML)
 * imports only from here: the contract types, the option-schema library (`z`, so the plug-in needs
 * no dependency of its own), and the engine's shared, TensorFlow.js-free primitives (exact masks,
 * structured selection, Wanda scores, SparseGPT's OBS solver, Taylor group scores, the coupled
 * structures of a layer, dense linear algebra, rank allocation for recovery schedules) and the type
 * of the backend linear algebra a method gets in its context (`LinAlg`). PruneLab
 * resolves `prunelab` and `prunelab/plugin` for plug-ins outside the repository itself.
 */
export { z } from 'zod';
export * from './prune/method.ts';
export type { ModelView } from './model/view.ts';
export type { LayerShape, ModelConfig } from './model/config.ts';
export { TAP_NAMES, type FamilySpec, type LinearRole, type TapName } from './model/family.ts';
export {
  applyMask, bottomKIndices, countZeros, cutOf, maskForCut, maskNM, maskPerMatrix, maskPerRow, pruneCount, topKIndices, validateSparsity, withScope,
  type Cut, type SparsityPattern,
} from './prune/masks.ts';
export { wandaMask, wandaScores } from './prune/scores.ts';
export * as obs from './prune/obs.ts';
export * as taylor from './prune/taylor.ts';
export * as coupling from './prune/coupling.ts';
export {
  globalKeepCount, keepFromScores, removedFraction, roundedKeepCount, selectGlobal, standardize, standardizedGlobalKeep,
  type GlobalSelection,
} from './prune/structured.ts';
export * as dense from './linalg/dense.ts';
export type { LinAlg, Matrix, MatMulOptions, Numerics } from './linalg/linalg.ts';
export { allocateRanks, RANK_ALLOCATIONS, type RankAllocation } from './finetune/ranks.ts';
export { ConfigError, PruneLabError } from './util/errors.ts';
