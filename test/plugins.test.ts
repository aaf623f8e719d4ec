/**
 * Method plug-ins: discovery by folder, loading from a module path or a folder outside the
 * repository (through `prunelab/plugin`, also on worker threads), option validation, and a
 * dropped-in method with its own recovery schedule.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { methodNames, parseMethodOptions, resolveMethod } from '../src/prune/registry.ts';
import { HAVE_SHARED, NO_SHARED_REASON, REPO_ROOT, STORIES_BIN, shared, tmpDir } from './support.ts';
import { runCli } from './cli-support.ts';
import { ConfigError } from '../src/util/errors.ts';

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

  it('a method folder outside the repository imports prunelab/plugin, with or without "type": "module", also on worker threads', { skip: HAVE_SHARED ? false : NO_SHARED_REASON }, () => {
    // A copy of methods/wanda with its imports pointed at the public entry, as a plug-in author writes it.
    // Every name it imports (from zod or the engine) now comes from the public entry point.
    const wanda = fs.readFileSync(path.join(REPO_ROOT, 'methods/wanda/index.ts'), 'utf8');
    const names = [...wanda.matchAll(/^import \{ ([^}]+) \} from '[^']+';$/gm)].flatMap((m) => m[1].split(',').map((n) => n.trim()));
    assert.ok(names.includes('defineMethod') && names.includes('z'), names.join(', '));
    const src = wanda.replace(/^import .*$/gm, '').replace("name: 'wanda'", "name: 'outside-wanda'");
    const plugin = `import { ${names.join(', ')} } from 'prunelab/plugin';\n${src}`;
    const root = tmpDir('outside');
    const out = (name: string) => path.join(root, name);
    const calib = ['--calib', shared('text/tinystories-sample.txt'), '--nsamples', '4', '--seqlen', '64', '--mode', 'dense-parallel'];
    const builtIn = runCli(['prune', '--model', STORIES_BIN, '--method', 'wanda', '--sparsity', '0.5', ...calib, '--out', out('builtin')]);
    assert.equal(builtIn.status, 0, builtIn.stderr);
    for (const [folder, pkg] of [['plain', null], ['esm', '{"type": "module"}']] as const) {
      const dir = out(folder);
      fs.mkdirSync(dir);
      fs.writeFileSync(path.join(dir, 'index.ts'), plugin);
      if (pkg) fs.writeFileSync(path.join(dir, 'package.json'), pkg);
      const r = runCli(['prune', '--model', STORIES_BIN, '--method', dir, '--sparsity', '0.5', ...calib, '--workers', '2', '--out', out(`${folder}-out`)]);
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.json?.method, 'outside-wanda');
      // Same scores, same masks: the checkpoints are byte-identical.
      assert.ok(fs.readFileSync(path.join(out(`${folder}-out`), 'model.safetensors')).equals(fs.readFileSync(path.join(out('builtin'), 'model.safetensors'))), folder);
    }
  });

  it('a new method with its own recovery schedule is one dropped folder: prune, then finetune with its schedule', { skip: HAVE_SHARED ? false : NO_SHARED_REASON }, () => {
    const dir = path.join(tmpDir('own-recovery'), 'keep-first-channels');
    fs.mkdirSync(dir);
    // Keeps the first half of every FFN; its report says which rank each layer's adapters get.
    fs.writeFileSync(path.join(dir, 'index.ts'), `
import { defineMethod, z, type ModelView } from 'prunelab/plugin';

const report = z.object({ ranks: z.array(z.number().int().nonnegative()) });
type Report = z.infer<typeof report>;

export default defineMethod<Record<string, never>, Report>({
  name: 'keep-first-channels', displayName: 'Keep-First', description: 'keeps the first FFN channels', reference: 'test',
  granularity: ['ffn-channels'], options: z.object({}).strict() as z.ZodType<Record<string, never>>,
  kind: 'structured',
  stats: () => ({ perLayer: {} }),
  plan: ({ model }: { model: ModelView }) => ({
    layers: model.config.layers.map((s) => ({ keepChannels: Array.from({ length: Math.ceil(s.intermediateSize / 2) }, (_, k) => k) })),
    report: { ranks: model.config.layers.map((_, l) => l + 1) },
  }),
  recovery: {
    description: 'rank l+1 in layer l, from the report',
    report,
    plan: ({ report: r, alpha }) => ({ ranks: r.ranks, alphas: r.ranks.map(() => alpha), quant: null, allocation: 'by-layer' }),
  },
});
`);
    const root = path.dirname(dir);
    const pruned = path.join(root, 'pruned');
    const p = runCli(['prune', '--model', STORIES_BIN, '--method', dir, '--sparsity', '0.5', '--out', pruned]);
    assert.equal(p.status, 0, p.stderr);
    const f = runCli(['finetune', '--model', pruned, '--data', shared('text/tinystories-sample.txt'), '--schedule', dir,
      '--steps', '2', '--seqlen', '32', '--out', path.join(root, 'recovered')], 300_000);
    assert.equal(f.status, 0, f.stderr);
    const schedule = f.json?.schedule as { kind: string; ranks: number[]; allocation: string };
    assert.deepEqual([schedule.kind, schedule.ranks, schedule.allocation], ['keep-first-channels', [1, 2, 3, 4, 5], 'by-layer']);
    // Its schedule reads its own report: a model another method pruned is refused, naming why.
    const w = runCli(['finetune', '--model', STORIES_BIN, '--data', shared('text/tinystories-sample.txt'), '--schedule', dir,
      '--steps', '2', '--out', path.join(root, 'refused')]);
    assert.equal(w.status, 2);
    assert.match(String(w.json?.error), /needs a model pruned by keep-first-channels/);
  });
});
