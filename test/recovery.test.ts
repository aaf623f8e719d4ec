/**
 * The recovery step as the CLI and runner use it: SAAP's group fine-tuning targets only linears
 * whose input width the quantisation group divides (pruned FFN widths are arbitrary).
 */
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import { setupBackend } from './support.ts';
import { buildSyntheticLlama } from '../src/model/synthetic.ts';
import { saapTargets } from '../src/finetune/recovery.ts';
import { ConfigError } from '../src/util/errors.ts';

describe('recovery step', () => {
  before(setupBackend);
  it('SAAP targets: FFN width 344 is not a multiple of 32, so down is left out; 352 keeps it', () => {
    const a = buildSyntheticLlama({ hidden: 64, layers: 2, heads: 4, kvHeads: 2, ffn: 344, vocab: 32, seed: 1 });
    assert.deepEqual(saapTargets(a), { targets: ['q', 'k', 'v', 'o', 'gate', 'up'], skipped: ['down'] });
    const b = buildSyntheticLlama({ hidden: 64, layers: 2, heads: 4, kvHeads: 2, ffn: 352, vocab: 32, seed: 1 });
    assert.deepEqual(saapTargets(b).skipped, []);
    assert.throws(() => saapTargets(b, 7), ConfigError);
    a.dispose();
    b.dispose();
  });
});
