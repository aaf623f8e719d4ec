/**
 * The PyTorch side of `npm run bench -- --only torch`: the section skips with one line when no
 * Python imports torch, and where torch is installed (not in CI) the reference computes what the
 * golden fixtures and PruneLab compute — the timings compare nothing otherwise.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { pythonCandidates, TorchBridge, torchImportProblem, TORCH_INSTALL_HINT } from '../bench/torch/bridge.ts';
import { runTorchSection } from '../bench/torch/section.ts';
import { prunelabLogits, relDiff, sparsegptParity, torchLogits } from '../bench/torch/parity.ts';
import { operatorData } from '../bench/torch/operator.ts';
import { loadModel, saveModel } from '../src/io/load-model.ts';
import { HAVE_SHARED, NO_SHARED_REASON, setupBackend, shared, STORIES_BIN, tmpDir } from './support.ts';

const withTorch = pythonCandidates().find((p) => torchImportProblem(p) === null);

describe('PyTorch bench section', () => {
  it('tries PRUNELAB_TORCH_PYTHON first, then python3, then the system interpreter, each once', () => {
    assert.deepEqual(pythonCandidates({ PRUNELAB_TORCH_PYTHON: '/opt/py/bin/python' }), ['/opt/py/bin/python', 'python3', '/usr/bin/python3']);
    assert.deepEqual(pythonCandidates({ PRUNELAB_TORCH_PYTHON: 'python3' }), ['python3', '/usr/bin/python3']);
    assert.deepEqual(pythonCandidates({}), ['python3', '/usr/bin/python3']);
  });

  it('without a Python that imports torch the section prints one skip line naming what was tried and how to install', async () => {
    const lines: string[] = [];
    await runTorchSection({
      quick: true, print: (s) => lines.push(s), synth: { hidden: 16, layers: 1, heads: 2, kvHeads: 1, ffn: 16, vocab: 16, seed: 0 },
      stories: null, golden: null, pythons: ['/nonexistent/python3'],
    });
    const body = lines.filter((l) => l.trim() && !l.startsWith('#'));
    assert.equal(body.length, 1);
    assert.match(body[0], /^Skipped: no Python that imports torch \(\/nonexistent\/python3: not found\)/);
    assert.ok(body[0].includes(TORCH_INSTALL_HINT));
  });
});

const skip = !withTorch ? `no Python that imports torch (${TORCH_INSTALL_HINT})` : !HAVE_SHARED ? NO_SHARED_REASON : false;

describe('PyTorch reference = golden fixtures = PruneLab', { skip }, () => {
  let torch: TorchBridge;
  let tmp: string;
  before(async () => {
    await setupBackend();
    const s = TorchBridge.start([withTorch!]);
    if ('skip' in s) throw new Error(s.skip);
    torch = s.bridge;
    tmp = tmpDir('torch-bench');
  });
  after(async () => {
    await torch?.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  // The fixtures' own tolerances (golden/README.md): 1e-4 for F32, 1e-3 for F16/BF16 storage.
  for (const [name, tol] of [['llama-tiny', 1e-4], ['llama-tiny-sharded-f16', 1e-3], ['llama-tiny-bias-tied', 1e-3]] as const) {
    it(`${name}: the reference's logits match reference.json, and PruneLab's match the reference's`, async () => {
      const dir = shared('golden', name);
      const ref = JSON.parse(fs.readFileSync(path.join(dir, 'reference.json'), 'utf8')) as { sequences: { input_ids: number[]; logits: number[][] }[] };
      await torch.request({ cmd: 'load', key: name, model: dir });
      for (const seq of ref.sequences) {
        const pt = await torchLogits(torch, name, seq.input_ids, tmp);
        const want = seq.logits.flat();
        let maxAbs = 0;
        for (let i = 0; i < want.length; i++) maxAbs = Math.max(maxAbs, Math.abs(pt[i] - want[i]));
        assert.equal(pt.length, want.length);
        assert.ok(maxAbs <= tol, `T=${seq.input_ids.length}: max |Δ| ${maxAbs}`);
        assert.ok(relDiff(prunelabLogits(dir, seq.input_ids), pt) < 1e-5);
      }
      await torch.request({ cmd: 'unload', key: name });
    });
  }

  it('stories260K converted to an HF folder: the reference\'s logits match PruneLab running the llama2.c file', async () => {
    const dir = path.join(tmp, 'stories-hf');
    const { model } = loadModel(STORIES_BIN);
    saveModel(model, dir);
    model.dispose();
    const ids = [1, 403, 407, 261, 378, 64, 437, 27, 65, 304, 289, 30, 46, 308];
    await torch.request({ cmd: 'load', key: 'stories', model: dir });
    const pt = await torchLogits(torch, 'stories', ids, tmp);
    await torch.request({ cmd: 'unload', key: 'stories' });
    // The .bin itself (interleaved RoPE permuted at load) against the reference on the HF folder.
    assert.ok(relDiff(prunelabLogits(STORIES_BIN, ids), pt) < 1e-5);
  });

  it('SparseGPT on one operator: same keep/prune decisions and weights as the plug-in', async () => {
    const c = { rows: 64, cols: 256, tokens: 512 };
    const [f64, f32] = await sparsegptParity(torch, c, operatorData(c, 5), 0.5, ['float64', 'float32'], tmp);
    // Exactly ⌊0.5 · 64 · 128⌋ per 128-column block on both sides (not the reference code's ⌊s·n⌋ + 1).
    assert.equal(f64.prunedTorch, 2 * 4096);
    assert.equal(f64.prunedPrunelab, 2 * 4096);
    // float64 on both sides: only the Gram matrix (fp32 on the backend vs float64) differs.
    assert.ok(f64.sameMask >= 0.999 * f64.total, `${f64.sameMask} of ${f64.total}`);
    assert.ok(f64.relWeight < 1e-4 && f64.relLoss < 1e-4, JSON.stringify(f64));
    assert.ok(f32.sameMask >= 0.999 * f32.total && f32.relLoss < 1e-3, JSON.stringify(f32));
  });
});
