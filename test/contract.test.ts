/**
 * The plug-in contract, for every discovered method on a small synthetic model: defaults parse,
 * the statistics it requests are valid, it reaches its target exactly (layer-wise: the sparsity or
 * a valid N:M pattern; structured: a valid plan with GQA shapes intact), leaks no tensor, returns
 * a JSON-serialisable report, and unsupported patterns are refused by the engine. A new method
 * folder is covered here with no edit.
 */
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { setupBackend } from './support.ts';
import { buildSyntheticLlama } from '../src/model/synthetic.ts';
import { modelView } from '../src/model/view.ts';
import { TAP_NAMES } from '../src/model/family.ts';
import { listMethods, parseMethodOptions } from '../src/prune/registry.ts';
import { pruneModel } from '../src/prune/engine.ts';
import { checkTarget } from '../src/prune/contract.ts';
import type { PruneTarget, PruningMethod } from '../src/prune/method.ts';
import { readLinear } from '../src/prune/linear-io.ts';
import { mulberry32 } from '../src/util/random.ts';
import { ConfigError } from '../src/util/errors.ts';

const SHAPE = { hidden: 32, layers: 4, heads: 4, kvHeads: 2, ffn: 64, vocab: 64, seed: 3 };
const methods = await listMethods();

function windows(n: number, T: number): number[][] {
  const r = mulberry32(11);
  return Array.from({ length: n }, () => Array.from({ length: T }, () => Math.floor(r() * SHAPE.vocab)));
}

/** Plain JSON all the way down: no typed arrays, NaN/Infinity or class instances that a JSON round trip would change. */
function assertJsonSafe(value: unknown, where: string): void {
  const seen = (v: unknown, at: string): void => {
    if (v === null || typeof v === 'string' || typeof v === 'boolean') return;
    if (typeof v === 'number') { assert.ok(Number.isFinite(v), `${where}${at}: ${v} does not survive JSON`); return; }
    assert.ok(typeof v === 'object' && (Array.isArray(v) || Object.getPrototypeOf(v) === Object.prototype), `${where}${at}: not plain JSON (${Object.prototype.toString.call(v)})`);
    for (const [k, x] of Object.entries(v as object)) if (x !== undefined) seen(x, `${at}.${k}`);
  };
  seen(value, '');
}

const isNM = (m: PruningMethod) => m.granularity.includes('n:m');
const isStructured = (m: PruningMethod) => m.kind === 'structured';

describe('every method honours the contract', () => {
  before(setupBackend);

  it('at least the eleven shipped methods are discovered, each with a display name', () => {
    assert.ok(methods.length >= 11, `${methods.length} methods`);
    for (const m of methods) assert.ok(typeof m.displayName === 'string' && m.displayName.length > 0, `${m.name} has no displayName`);
  });

  for (const m of methods) {
    it(`${m.name}: defaults, statistics, exact target, no leak, JSON report, refused patterns`, async () => {
      const options = parseMethodOptions(m, {});
      // Requested statistics name real taps only.
      const req = m.kind === 'layerwise' ? m.stats(options) : m.stats(options).perLayer;
      for (const [key, taps] of Object.entries(req)) {
        for (const t of taps as string[]) assert.ok((TAP_NAMES as readonly string[]).includes(t), `${m.name} ${key}: unknown tap ${t}`);
      }
      const targets: PruneTarget[] = isStructured(m)
        ? [{ sparsity: 0.2, pattern: { kind: 'unstructured' } }]
        : [
          ...(m.granularity.includes('unstructured') ? [{ sparsity: 0.5, pattern: { kind: 'unstructured' } } as const] : []),
          ...(isNM(m) ? [{ sparsity: 0.5, pattern: { kind: 'nm', n: 2, m: 4 } } as const] : []),
        ];
      for (const target of targets) {
        const before = tf.memory().numTensors;
        const model = buildSyntheticLlama(SHAPE);
        const report = await pruneModel(model, { method: m, options, target, windows: windows(4, 16) });
        assertJsonSafe(report, `${m.name} report`);
        assert.deepEqual(JSON.parse(JSON.stringify(report.methodReport ?? null)), report.methodReport ?? null);
        if (isStructured(m)) {
          assert.ok(report.removed.allParameters > 0, `${m.name} removed nothing`);
          model.config.layers.forEach((s, i) => {
            assert.ok(s.numKvHeads >= 1 && s.intermediateSize >= 1, `${m.name} layer ${i} emptied`);
            assert.equal(s.numHeads % s.numKvHeads, 0);
            assert.equal(s.numHeads / s.numKvHeads, SHAPE.heads / SHAPE.kvHeads, `${m.name} layer ${i}: GQA ratio changed`);
          });
        } else if (target.pattern.kind === 'nm') {
          const { n, m: M } = target.pattern;
          for (let i = 0; i < model.numLayers; i++) {
            for (const l of model.spec.linears) {
              const w = readLinear(model, i, l.role).data;
              for (let b = 0; b < w.length; b += M) {
                let z = 0;
                for (let k = 0; k < M; k++) if (w[b + k] === 0) z++;
                assert.ok(z >= n, `${m.name} layer ${i} ${l.role}: block at ${b} has ${z} zeros < ${n}`);
              }
            }
          }
        } else {
          // Exact: every method prunes ⌊0.5·n⌋ per row or per matrix; both are 0.5 here (even widths).
          assert.ok(Math.abs(report.zeros.overall.sparsity - 0.5) < 1e-9, `${m.name}: sparsity ${report.zeros.overall.sparsity}`);
        }
        model.dispose();
        // Whatever the method created (FLAP's compensation biases included) went with the model.
        assert.equal(tf.memory().numTensors, before, `${m.name}: tensors leaked`);
      }
      // Patterns it does not declare are refused before any work.
      const probe = buildSyntheticLlama(SHAPE);
      const view = modelView(probe);
      probe.dispose();
      if (!isNM(m)) assert.throws(() => checkTarget(m, { sparsity: 0.5, pattern: { kind: 'nm', n: 2, m: 4 } }, view), ConfigError);
    });
  }
});

describe('the engine enforces targets', () => {
  before(setupBackend);
  const byName = (n: string) => methods.find((m) => m.name === n)!;

  it('N:M: sparsity must be N/M, every input width a multiple of M', () => {
    const model = buildSyntheticLlama(SHAPE);
    const view = modelView(model);
    const wanda = byName('wanda');
    assert.throws(() => checkTarget(wanda, { sparsity: 0.3, pattern: { kind: 'nm', n: 2, m: 4 } }, view), /contradicts it/);
    assert.doesNotThrow(() => checkTarget(wanda, { sparsity: 0.5, pattern: { kind: 'nm', n: 2, m: 4 } }, view));
    // Input widths 32 and 64 are not multiples of 3.
    assert.throws(() => checkTarget(wanda, { sparsity: 1 / 3, pattern: { kind: 'nm', n: 1, m: 3 } }, view), /not a multiple of 3/);
    assert.throws(() => checkTarget(byName('cfsp'), { sparsity: 0.5, pattern: { kind: 'nm', n: 2, m: 4 } }, view), /does not take N:M/);
    assert.throws(() => checkTarget(wanda, { sparsity: 1, pattern: { kind: 'unstructured' } }, view), ConfigError);
    model.dispose();
  });
});
