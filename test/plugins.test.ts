/**
 * Method plug-ins: discovery by folder, loading from a module path, option validation, and the
 * reference scores of magnitude and Wanda computed by hand.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { methodNames, parseMethodOptions, resolveMethod } from '../src/prune/registry.ts';
import { REPO_ROOT, tmpDir } from './support.ts';
import { wandaScores } from '../src/prune/scores.ts';
import { ConfigError } from '../src/util/errors.ts';
import type { OperatorContext } from '../src/prune/method.ts';

describe('plug-ins', () => {
  it('every folder under methods/ is a method, with a README', () => {
    const names = methodNames();
    for (const n of ['magnitude', 'wanda', 'sparsegpt', 'magnitude-sp', 'wanda-sp', 'flap', 'llm-pruner', 'cfsp', 'saap', 'fistapruner']) {
      assert.ok(names.includes(n), `${n} missing`);
    }
    for (const n of names) assert.ok(fs.existsSync(path.join(REPO_ROOT, 'methods', n, 'README.md')), `${n} has no README.md`);
  });

  it('a plug-in outside methods/ loads from its module path', async () => {
    const dir = tmpDir('plugin');
    const file = path.join(dir, 'keep-first.ts');
    fs.writeFileSync(file, [
      `import { z } from '${path.join(REPO_ROOT, 'node_modules/zod/index.js')}';`,
      'export default {',
      "  name: 'keep-first', description: 'prunes the last inputs of each row', reference: 'test', granularity: ['unstructured'],",
      "  options: z.object({}).strict(), kind: 'layerwise', stats: () => ({}), operatorOrder: () => 'together', defaultMode: () => 'sequential',",
      '  pruneOperators: () => [],',
      '};',
      '',
    ].join('\n'));
    const m = await resolveMethod(file);
    assert.equal(m.name, 'keep-first');
    await assert.rejects(resolveMethod(path.join(dir, 'missing.ts')), ConfigError);
  });

  it('options: defaults filled, unknown keys and bad values rejected with the valid keys listed', async () => {
    const m = await resolveMethod('magnitude');
    assert.deepEqual(parseMethodOptions(m, {}), { scope: 'matrix' });
    assert.throws(() => parseMethodOptions(m, { scop: 'row' }), /unknown option\(s\) 'scop'.*valid options: scope/);
    assert.throws(() => parseMethodOptions(m, { scope: 'column' }), /option 'scope'/);
  });

  it('Wanda scores |W_ij|·‖X_j‖ and per-row masks, by hand', async () => {
    // W = [[1, -2, 3], [-4, 5, -6]], Σx² per column = [4, 1, 0.25] → ‖X_j‖ = [2, 1, 0.5].
    const W = Float32Array.from([1, -2, 3, -4, 5, -6]);
    assert.deepEqual([...wandaScores(W, 2, 3, Float64Array.from([4, 1, 0.25]))], [2, 2, 1.5, 8, 5, 3]);
    const wanda = await resolveMethod('wanda');
    if (wanda.kind !== 'layerwise') throw new Error('wanda is layer-wise');
    const ctx = {
      options: {}, target: { sparsity: 1 / 3, pattern: { kind: 'unstructured' } }, log: () => {}, layer: 0,
      operators: [{ role: 'q', weight: W, rows: 2, cols: 3, input: 'attnIn' }],
      stats: { attnIn: { tokens: 4, inDim: 3, colSqSum: Float64Array.from([4, 1, 0.25]) } },
    } as unknown as OperatorContext<unknown>;
    const [d] = await wanda.pruneOperators(ctx);
    // Row 0 scores [2, 2, 1.5]: prune column 2. Row 1 [8, 5, 3]: prune column 2.
    assert.deepEqual([...d.mask], [1, 1, 0, 1, 1, 0]);
    const magnitude = await resolveMethod('magnitude');
    if (magnitude.kind !== 'layerwise') throw new Error('magnitude is layer-wise');
    const [dm] = await magnitude.pruneOperators({ ...ctx, options: { scope: 'matrix' } } as OperatorContext<unknown>);
    // Per matrix, ⌊6/3⌋ = 2 smallest |W| (1 and 2) go: columns 0 and 1 of row 0.
    assert.deepEqual([...dm.mask], [0, 0, 1, 1, 1, 1]);
  });
});
