/**
 * Whether a method, with these options, needs calibration data: any per-layer statistic, a block
 * distance or gradients. The engine refuses to run such a method without windows; the CLI and
 * the experiment loader ask first, so the user hears about it (and about `--calib`) before any
 * work.
 */
import type { LayerStatsRequest, PruningMethod } from './method.ts';

export function statsNeedData(req: LayerStatsRequest): boolean {
  return Object.values(req).some((v) => (v as unknown[] | undefined)?.length);
}

export function needsCalibration<O>(m: PruningMethod<O>, options: O): boolean {
  if (m.kind === 'layerwise') return statsNeedData(m.stats(options));
  const s = m.stats(options);
  return statsNeedData(s.perLayer) || s.blockDistance !== undefined || s.gradients !== undefined;
}
