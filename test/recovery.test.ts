/**
 * Recovery schedules a method declares (CFSP's IG-LoRA, SAAP's group fine-tuning) as the CLI and
 * runner resolve them: by name through the registry, reading the method's own report.
 */
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import { setupBackend } from './support.ts';
import { buildSyntheticLlama } from '../src/model/synthetic.ts';
import { modelView } from '../src/model/view.ts';
import { planRecovery } from '../src/finetune/recovery.ts';
import { resolveRecoverySchedule, recoveryScheduleNames } from '../src/prune/registry.ts';
import { quantisableTargets } from '../methods/saap/recovery.ts';
import { ConfigError } from '../src/util/errors.ts';

/** A CFSP report as prune_report.json holds it, with block scores `scores`. */
function cfspPruneReport(scores: number[], allocation: string) {
  return {
    method: 'cfsp',
    methodReport: {
      globalMetric: 'angular', localMetric: 'activation', clampActive: false, keptFraction: 0.8,
      perLayer: scores.map((score, layer) => ({
        layer, blockDistance: 0.1, centred: 0, sigmoid: 0.5, score, keepRatio: 0.8, keepRatioBeforeFloor: 0.8, width: 10, kept: 8,
      })),
      lora: { meanRank: 8, allocation, ranks: [], total: null },
    },
  };
}

describe('method recovery schedules', () => {
  before(setupBackend);

  it('names: uniform plus every method that declares one', async () => {
    assert.deepEqual(await recoveryScheduleNames(), ['uniform', 'cfsp', 'saap']);
    await assert.rejects(resolveRecoverySchedule('wanda'), (e: Error) => e instanceof ConfigError && /declares no recovery schedule/.test(e.message));
    await assert.rejects(resolveRecoverySchedule('nope'), (e: Error) => e instanceof ConfigError && /unknown recovery schedule 'nope'/.test(e.message));
  });

  it('cfsp: scores [1,2,3], r̄ 8 → μ 2 → ranks [4, 8, 12], α_l = 16·r_l/8; the reported allocation is the one trained', async () => {
    const model = buildSyntheticLlama({ hidden: 16, layers: 3, heads: 2, kvHeads: 1, ffn: 24, vocab: 32, seed: 1 });
    const cfsp = await resolveRecoverySchedule('cfsp');
    const plan = planRecovery(model, cfsp, { rank: 8, alpha: 16, pruneReport: cfspPruneReport([1, 2, 3], 'importance') });
    assert.deepEqual([plan?.ranks, plan?.alphas, plan?.quant, plan?.allocation], [[4, 8, 12], [8, 16, 24], null, 'importance']);
    // inverse: 1/s = [1, 1/2, 1/3], mean 11/18 → w = [18/11, 9/11, 6/11] → round(8w) = [13, 7, 4].
    const inv = planRecovery(model, cfsp, { rank: 8, alpha: 16, pruneReport: cfspPruneReport([1, 2, 3], 'inverse') });
    assert.deepEqual(inv?.ranks, [13, 7, 4]);
    // A model another method pruned, or a report that lacks the scores: a clear error.
    assert.throws(() => planRecovery(model, cfsp, { rank: 8, alpha: 16, pruneReport: { method: 'wanda' } }), /pruned by 'wanda'/);
    assert.throws(() => planRecovery(model, cfsp, { rank: 8, alpha: 16 }), /no prune_report.json/);
    const broken = cfspPruneReport([1, 2, 3], 'importance');
    (broken.methodReport as { perLayer: unknown }).perLayer = 'x';
    assert.throws(() => planRecovery(model, cfsp, { rank: 8, alpha: 16, pruneReport: broken }), /perLayer/);
    model.dispose();
  });

  it('saap: INT4 groups of 32 on any model, every linear adapted (FFN width 344 = 10 groups of 32 + one of 24), nothing skipped', async () => {
    const a = buildSyntheticLlama({ hidden: 64, layers: 2, heads: 4, kvHeads: 2, ffn: 344, vocab: 32, seed: 1 });
    const saap = await resolveRecoverySchedule('saap');
    const plan = planRecovery(a, saap, { rank: 8, alpha: 16 });
    assert.deepEqual([plan?.ranks, plan?.alphas, plan?.quant], [[8, 8], [16, 16], { bits: 4, groupSize: 32 }]);
    assert.deepEqual([plan?.targets, plan?.skippedTargets], [['q', 'k', 'v', 'o', 'gate', 'up', 'down'], []]);
    assert.deepEqual(quantisableTargets(modelView(a), 7).skipped, []);
    assert.throws(() => quantisableTargets(modelView(a), 0), ConfigError);
    a.dispose();
  });
});
