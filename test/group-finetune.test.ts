/**
 * SAAP's group fine-tuning complete: the quantised export (packed INT4 + scales/zeros) written,
 * reloaded by `loadModel`, giving the logits of the fake-quantised merged model (a partial last
 * group and a masked linear included); its bad-input errors; and on stories260K pruned 20 % by
 * SAAP, recovery with SAAP's schedule adapts every linear — nothing skipped — and says which
 * model was evaluated, in process and through `prunelab finetune`.
 */
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { HAVE_SHARED, NO_SHARED_REASON, STORIES_BIN, STORIES_TOK, logitsOf, maxAbsDiff, setupBackend, shared, tmpDir } from './support.ts';
import { runCli } from './cli-support.ts';
import { buildSyntheticLlama } from '../src/model/synthetic.ts';
import { loadModel, openCheckpoint, saveModel } from '../src/io/load-model.ts';
import { readSafetensorsHeader } from '../src/io/safetensors.ts';
import { QUANT_CONFIG_KEY, writeQuantizedCheckpoint } from '../src/io/quantized-checkpoint.ts';
import { finetune } from '../src/finetune/trainer.ts';
import { recover } from '../src/finetune/recovery.ts';
import { resolveRecipe } from '../src/finetune/recipes.ts';
import { dequantizeHost } from '../src/finetune/quant.ts';
import { calibrationFromText } from '../src/prune/calibration.ts';
import { pruneModel } from '../src/prune/engine.ts';
import { parseMethodOptions, resolveMethod, resolveRecoverySchedule } from '../src/prune/registry.ts';
import { loadTokenizer } from '../src/tokenizer/load.ts';
import { perplexityOfText } from '../src/eval/perplexity.ts';
import { CheckpointError } from '../src/util/errors.ts';

const IDS = [[1, 5, 9, 14, 3, 22, 7, 30, 2, 11], [1, 40, 41, 8, 8, 19, 27, 4, 33, 6]];

describe('quantised export', () => {
  before(setupBackend);

  it('written, reloaded, equal to the merged model: packed codes, partial groups (FFN 44 = 32 + 12), a masked linear kept fp32', async () => {
    const model = buildSyntheticLlama({ hidden: 32, layers: 2, heads: 4, kvHeads: 2, ffn: 44, vocab: 48, seed: 4 });
    // Half of layer 1's up weights zero: its mask survives the merge, so it cannot be codes.
    const w = model.linearParams(1, 'up').weight;
    model.setLinear(1, 'up', tf.tidy(() => tf.mul(w, tf.cast(tf.greater(tf.randomUniform(w.shape, 0, 1, 'float32', 1), 0.5), 'float32')) as tf.Tensor2D));
    const tokens = Array.from({ length: 600 }, (_, i) => 1 + ((i * 7 + (i >> 3)) % 47));
    const r = await finetune(model, {
      data: { tokens }, schedule: { name: 'group', ranks: [4, 4], alphas: [8, 8], quant: { bits: 4, groupSize: 32 }, allocation: 'uniform' },
      steps: 3, lr: 1e-2, warmupSteps: 0, seqLen: 32, microBatchSize: 2,
    });
    assert.ok(r.quantized);
    assert.equal(r.quantized.size, 2 * 7 - 1, 'every linear but the masked one');
    assert.equal(r.quantized.has('1.up'), false);
    const down = r.quantized.get('0.down');
    assert.ok(down);
    assert.deepEqual([down.inFeatures, down.alpha.length], [44, 2 * 32]);
    assert.deepEqual(Array.from(dequantizeHost(down)), Array.from(model.linearParams(0, 'down').weight.dataSync()));

    const dir = path.join(tmpDir('qexport'), 'int4');
    writeQuantizedCheckpoint(dir, model, r.quantized);
    const config = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
    assert.deepEqual({ ...config[QUANT_CONFIG_KEY], modules: config[QUANT_CONFIG_KEY].modules.length },
      { format: 'prunelab-group-asymmetric', version: 1, bits: 4, group_size: 32, file: 'quantized.safetensors', modules: 13 });
    const codes = readSafetensorsHeader(path.join(dir, 'quantized.safetensors')).tensors;
    const m = 'model.layers.0.mlp.down_proj';
    assert.deepEqual([codes.get(`${m}.qweight`)?.dtype, codes.get(`${m}.qweight`)?.shape], ['U8', [32, 22]]);
    assert.deepEqual([codes.get(`${m}.scales`)?.shape, codes.get(`${m}.zeros`)?.shape], [[32, 2], [32, 2]]);
    const plain = readSafetensorsHeader(path.join(dir, 'model.safetensors')).tensors;
    assert.equal(plain.has(`${m}.weight`), false);
    assert.ok(plain.has('model.layers.1.mlp.up_proj.weight'), 'the masked linear stays fp32');

    const { model: again } = loadModel(dir);
    const diff = maxAbsDiff(logitsOf(again, IDS), logitsOf(model, IDS));
    assert.ok(diff <= 1e-5, `reloaded logits differ by ${diff}`);
    assert.equal(again.config.hfConfig[QUANT_CONFIG_KEY], undefined, 'the loaded model is plain fp32');
    assert.deepEqual(openCheckpoint(dir).config.layers, model.config.layers);
    again.dispose();
    model.dispose();
  });

  it('a damaged export is refused, naming the file and the tensor', async () => {
    const model = buildSyntheticLlama({ hidden: 32, layers: 1, heads: 4, kvHeads: 2, ffn: 40, vocab: 48, seed: 4 });
    const r = await finetune(model, {
      data: { tokens: Array.from({ length: 300 }, (_, i) => 1 + (i % 47)) }, schedule: { name: 'group', ranks: [2], alphas: [4], quant: { bits: 4, groupSize: 32 }, allocation: 'uniform' },
      steps: 1, seqLen: 32, microBatchSize: 2,
    });
    assert.ok(r.quantized);
    const dir = path.join(tmpDir('qexport-bad'), 'int4');
    writeQuantizedCheckpoint(dir, model, r.quantized);
    model.dispose();
    const cfgFile = path.join(dir, 'config.json');
    const config = JSON.parse(fs.readFileSync(cfgFile, 'utf8'));
    const write = (c: unknown) => fs.writeFileSync(cfgFile, JSON.stringify(c));
    write({ ...config, [QUANT_CONFIG_KEY]: { ...config[QUANT_CONFIG_KEY], modules: [...config[QUANT_CONFIG_KEY].modules, 'model.layers.0.mlp.gate'] } });
    assert.throws(() => loadModel(dir), (e: Error) => e instanceof CheckpointError && /lists 'model\.layers\.0\.mlp\.gate', which is not a linear of this config/.test(e.message));
    write({ ...config, [QUANT_CONFIG_KEY]: { ...config[QUANT_CONFIG_KEY], group_size: 16 } });
    assert.throws(() => loadModel(dir), (e: Error) => e instanceof CheckpointError && /quantized\.safetensors: '.*\.scales' must be F32 \[\d+,\d\] \(got F32 \[\d+,2\]\)/.test(e.message));
    write({ ...config, [QUANT_CONFIG_KEY]: { ...config[QUANT_CONFIG_KEY], bits: 9 } });
    assert.throws(() => loadModel(dir), (e: Error) => e instanceof CheckpointError && /config\.json: prunelab_quantization must be/.test(e.message));
  });
});

describe('SAAP recovery on stories260K pruned 20 % by SAAP', { skip: HAVE_SHARED ? false : NO_SHARED_REASON }, () => {
  before(setupBackend);

  it('no skipped target, every down adapted over partial groups; rows say the INT4 model was evaluated; the CLI writes the export and it reloads to the same perplexity', async () => {
    const tok = await loadTokenizer(STORIES_TOK);
    const text = shared('text/tinystories-sample.txt');
    const calib = calibrationFromText(tok, { text, nsamples: 10, seqlen: 64, seed: 42 });
    const saap = await resolveMethod('saap');
    const { model } = loadModel(STORIES_BIN);
    const report = await pruneModel(model, { method: saap, options: parseMethodOptions(saap, {}), target: { sparsity: 0.2, pattern: { kind: 'unstructured' } }, windows: calib.windows });
    const widths = model.config.layers.map((s) => s.intermediateSize);
    assert.ok(widths.some((w) => w % 32 !== 0), `some pruned FFN width must not be a multiple of 32: ${widths}`);
    const dir = tmpDir('saap-recover');
    const pruned = path.join(dir, 'pruned');
    saveModel(model, pruned);
    fs.writeFileSync(path.join(pruned, 'prune_report.json'), JSON.stringify(report));

    const recipe = resolveRecipe({ schedule: 'saap', steps: 2, seqlen: 64, lr: 3e-3 });
    const r = await recover(model, tok, { schedule: await resolveRecoverySchedule('saap'), recipe, data: text, seed: 0, pruneReport: report });
    assert.deepEqual(r.skippedTargets, []);
    assert.equal(r.evaluated, 'int4-dequantized');
    assert.ok(r.quantized);
    for (let l = 0; l < model.numLayers; l++) {
      for (const role of ['q', 'k', 'v', 'o', 'gate', 'up', 'down']) assert.ok(r.quantized.has(`${l}.${role}`), `${l}.${role} adapted`);
    }
    model.dispose();

    const out = path.join(dir, 'recovered');
    const f = runCli(['finetune', '--model', pruned, '--tokenizer', STORIES_TOK, '--data', text, '--schedule', 'saap', '--steps', '2', '--seqlen', '64', '--lr', '3e-3', '--out', out], 300_000);
    assert.equal(f.status, 0, f.stderr);
    assert.deepEqual([f.json?.skippedTargets, f.json?.evaluated, f.json?.quantizedOut], [[], 'int4-dequantized', path.join(out, 'quantized')]);
    const ppl = async (p: string) => {
      const { model: m } = loadModel(p);
      const v = (await perplexityOfText(m, tok, text, { seqlen: 128, maxWindows: 8 })).ppl;
      m.dispose();
      return v;
    };
    const merged = await ppl(out);
    const int4 = await ppl(path.join(out, 'quantized'));
    assert.ok(Math.abs(merged - int4) <= 1e-4 * merged, `fp32 merge ${merged} vs reloaded INT4 export ${int4}`);
    const sizes = (p: string) => fs.readdirSync(p).filter((n) => n.endsWith('.safetensors')).reduce((a, n) => a + fs.statSync(path.join(p, n)).size, 0);
    assert.ok(sizes(path.join(out, 'quantized')) < sizes(out), 'the INT4 export is smaller');
  });
});
