/**
 * LLM-Pruner's per-layer unit count. The groups themselves (KV head groups, FFN channels) are
 * the engine's coupled structures (`src/prune/coupling.ts`), built from the family's declared
 * coupling instead of a traced dependency graph (saap.md §2).
 */

/**
 * Units removed by `prune_local` at ratio r: the root has C = units · width channels
 * (width = g·head_dim for a head group, 1 for an FFN channel); n = C − int(C·(1 − r)) channels
 * go, i.e. ⌊n / width⌋ whole units.
 */
export function unitsToRemove(units: number, width: number, ratio: number): number {
  const c = units * width;
  return Math.floor((c - Math.floor(c * (1 - ratio))) / width);
}
