/**
 * Experiment YAML validation: defaults, path resolution, and errors that name the key path and
 * its line:column (line numbers below are counted by hand in the YAML strings).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { loadExperiment } from '../src/experiment/schema.ts';
import { ConfigError } from '../src/util/errors.ts';
import { fakeResult, gridOf, registry, workspace, writeYaml, YAML_HEAD } from './experiment-fixtures.ts';
import { buildRow } from '../src/experiment/results.ts';

const VALID = `${YAML_HEAD}  - name: magnitude
  - name: wanda
    options: {alpha: 1}
sparsities: [0.5]
evaluations:
  perplexity:
    - {id: wt2, text: ../data/wt2.txt, seqlen: 128}
  speed: {}
`;

/** The ConfigError thrown by loading `yaml`, asserted to be one. */
function errorOf(root: string, yaml: string, opts = {}): ConfigError {
  const file = writeYaml(root, 'x.yaml', yaml);
  try {
    loadExperiment(file, opts);
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
    return err;
  }
  assert.fail('expected a ConfigError');
}

describe('experiment schema', () => {
  const root = workspace('schema');
  const file = path.join(root, 'exp', 'x.yaml');

  it('fills defaults and resolves paths against the YAML folder', () => {
    const exp = loadExperiment(writeYaml(root, 'x.yaml', VALID));
    const c = exp.config;
    assert.equal(c.calibration?.nsamples, 128);
    // No default input mode: each layer-wise method uses its own unless the YAML names one.
    assert.equal(c.calibration?.mode, undefined);
    assert.deepEqual(c.patterns, ['unstructured']);
    assert.deepEqual(c.seeds, [0]);
    assert.deepEqual(c.recovery, [{ schedule: 'none' }]);
    assert.deepEqual(c.methods[0].options, {});
    assert.deepEqual(c.evaluations.zeroshot, []);
    assert.deepEqual(c.evaluations.speed, { promptTokens: 128, newTokens: 128, batch: 1, warmup: 1, repeats: 5 });
    // As written in config, absolute in resolved; output defaults to results/<name> beside the YAML.
    assert.equal(c.models[0].path, '../models/tiny');
    assert.equal(exp.resolved.models[0].path, path.join(root, 'models', 'tiny'));
    assert.equal(exp.resolved.calibration?.text, path.join(root, 'data', 'calib.txt'));
    assert.equal(exp.resolved.evaluations.perplexity[0].text, path.join(root, 'data', 'wt2.txt'));
    assert.equal(exp.resolved.output, path.join(root, 'exp', 'results', 'demo'));
  });

  it('unknown key: names the key path, the valid keys and its line:column', () => {
    // Line 11 is "    optins: {alpha: 1}"; the key starts at column 5.
    const yaml = VALID.replace('    options: {alpha: 1}', '    optins: {alpha: 1}');
    const err = errorOf(root, yaml);
    assert.equal(err.message, `${file}:11:5: methods[1].optins: unknown key (valid: name, options, workers, budget, sparsities, recovery)`);
  });

  it('unknown top-level key and unknown key in a recovery entry', () => {
    const yaml = VALID + `recovery:
  - {schedule: uniform, steps: 10, data: ../data/calib.txt, alpah: 16}
colour: blue
`;
    // Lines 17-19 appended after the 16 lines of VALID.
    const err = errorOf(root, yaml);
    assert.match(err.message, new RegExp(`${file}:18:61: recovery\\[0\\]\\.alpah: unknown key \\(valid: schedule, preset, rank, alpha, dropout, targets, lr, lrSchedule, warmup, microBatch, gradAccum, seqlen, steps, epochs, format, template, trainOnInputs, heldOut, data\\)`));
    assert.match(err.message, new RegExp(`${file}:19:1: colour: unknown key`));
  });

  it('wrong type: names path, line, expected and actual', () => {
    const err = errorOf(root, VALID.replace('  seqlen: 64', '  seqlen: sixty-four'));
    assert.equal(err.message, `${file}:7:11: calibration.seqlen: expected an integer, got string "sixty-four"`);
    const err2 = errorOf(root, VALID.replace('sparsities: [0.5]', 'sparsities: [0.5, "high"]'));
    assert.equal(err2.message, `${file}:12:19: sparsities[1]: expected a number, got string "high"`);
  });

  it('out-of-range values and bad enums', () => {
    const err = errorOf(root, VALID.replace('sparsities: [0.5]', 'sparsities: [1.0]'));
    assert.equal(err.message, `${file}:12:14: sparsities[0]: must be < 1; got number 1`);
    const err2 = errorOf(root, VALID.replace('  seqlen: 64', '  seqlen: 64\n  mode: parallel'));
    assert.match(err2.message, /:8:9: calibration\.mode: must be one of "sequential", "dense-parallel"; got string "parallel"/);
    const err3 = errorOf(root, VALID + 'patterns: [unstructured, "4:2"]\n');
    assert.match(err3.message, /:17:26: patterns\[1\]: expected "unstructured" or "N:M"/);
    const err4 = errorOf(root, VALID + 'recovery: [{schedule: lora, steps: 5, data: ../data/calib.txt}]\n', { recoverySchedules: registry.recoverySchedules });
    assert.match(err4.message, /:17:23: recovery\[0\]\.schedule: unknown recovery schedule 'lora'; valid: none, uniform, cfsp, saap/);
    const err5 = errorOf(root, VALID + 'recovery: [{schedule: uniform}]\n');
    assert.match(err5.message, /recovery\[0\]\.steps: schedule 'uniform' needs steps/);
    // CFSP's schedule reads CFSP's report: it cannot recover the other methods' runs.
    const err6 = errorOf(root, VALID + 'recovery: [{schedule: cfsp, steps: 5, data: ../data/calib.txt}]\n', { recoverySchedules: registry.recoverySchedules });
    assert.match(err6.message, /recovery\[0\]\.schedule: schedule 'cfsp' reads the pruning report of 'cfsp' and cannot recover runs of/);
  });

  it('a missing required key points at the mapping that lacks it', () => {
    const err = errorOf(root, VALID.replace('{id: wt2, text: ../data/wt2.txt, seqlen: 128}', '{id: wt2, text: ../data/wt2.txt}'));
    assert.equal(err.message, `${file}:15:7: evaluations.perplexity[0].seqlen: missing (expected an integer)`);
  });

  it('reports every problem, in file order', () => {
    const yaml = VALID.replace('  seqlen: 64', '  seqlen: -1').replace('    options: {alpha: 1}', '    optins: 1');
    const lines = errorOf(root, yaml).message.split('\n');
    assert.equal(lines.length, 2);
    assert.match(lines[0], /:7:11: calibration\.seqlen: must be ≥ 1/);
    assert.match(lines[1], /:11:5: methods\[1\]\.optins: unknown key/);
  });

  it('malformed YAML: error with its line', () => {
    const yaml = 'name: demo\nmodels:\n  - id: tiny\n    path: [../models/tiny\nsparsities: [0.5]\n';
    const err = errorOf(root, yaml);
    assert.match(err.message, new RegExp(`^${file}:5:1: malformed YAML: `));
    const dup = errorOf(root, 'name: a\nname: b\n');
    assert.match(dup.message, new RegExp(`^${file}:2:1: duplicate key "name" \\(first at line 1\\)`));
    const afterEmpty = errorOf(root, 'name: a\nmodels:\n  - id: s\n    path:\n    path: x\n');
    assert.match(afterEmpty.message, new RegExp(`^${file}:5:5: duplicate key "path" \\(first at line 4\\)`));
  });

  it('missing experiment file', () => {
    assert.throws(() => loadExperiment(path.join(root, 'exp', 'nope.yaml')), (err: unknown) =>
      err instanceof ConfigError && /nope\.yaml: experiment file not found/.test(err.message));
  });

  it('a path that does not exist: names the key, its line and the resolved path', () => {
    const err = errorOf(root, VALID.replace('../models/tiny', '../models/huge'));
    assert.equal(err.message, `${file}:4:11: models[0].path: path not found: ${path.join(root, 'models', 'huge')}`);
    const err2 = errorOf(root, VALID.replace('text: ../data/wt2.txt', 'text: wt2.txt'));
    assert.match(err2.message, /:15:23: evaluations\.perplexity\[0\]\.text: path not found/);
  });

  it('duplicate ids and cross-field rules', () => {
    const dupModel = VALID.replace('    path: ../models/tiny\n', '    path: ../models/tiny\n  - id: tiny\n    path: ../models/small\n');
    assert.match(errorOf(root, dupModel).message, /:5:9: models\[1\]\.id: duplicate model id "tiny"/);
    const both = VALID.replace('  seqlen: 64', '  seqlen: 64\n  seed: 1\n  offsets: [0, 1]');
    assert.match(errorOf(root, both).message, /:9:12: calibration\.offsets: give either seed or offsets, not both/);
    const count = VALID.replace('  seqlen: 64', '  seqlen: 64\n  nsamples: 3\n  offsets: [0, 1]');
    assert.match(errorOf(root, count).message, /calibration\.offsets: has 2 offsets but calibration\.nsamples is 3/);
  });

  it('offsets from a JSON file are loaded', () => {
    fs.writeFileSync(path.join(root, 'data', 'offsets.json'), '[5, 9]');
    const exp = loadExperiment(writeYaml(root, 'x.yaml', VALID.replace('  seqlen: 64', '  seqlen: 64\n  nsamples: 2\n  offsets: ../data/offsets.json')));
    assert.deepEqual(exp.calibrationOffsets, [5, 9]);
  });

  it('method names and options go through the injected validator, located', () => {
    const validateMethod = (name: string, options: Record<string, unknown>) => {
      if (name !== 'magnitude' && name !== 'wanda') throw new Error(`unknown method '${name}'`);
      if (name === 'wanda') z.strictObject({ alpha: z.number().max(0.5) }).parse(options);
    };
    const err = errorOf(root, VALID, { validateMethod });
    assert.equal(err.message, `${file}:11:22: methods[1].options.alpha: must be ≤ 0.5; got number 1`);
    const err2 = errorOf(root, VALID.replace('- name: magnitude', '- name: magnitud').replace('{alpha: 1}', '{alpha: 0.25}'), { validateMethod });
    assert.equal(err2.message, `${file}:9:11: methods[0].name: unknown method 'magnitud'`);
    assert.doesNotThrow(() => loadExperiment(writeYaml(root, 'x.yaml', VALID.replace('{alpha: 1}', '{alpha: 0.25}')), { validateMethod }));
  });

  it('zero-shot task names are resolved at load (a typo used to surface only at run time)', () => {
    const yaml = VALID.replace('  speed: {}', '  zeroshot:\n    - {task: piqaa, limit: 10}\n  speed: {}');
    assert.match(errorOf(root, yaml).message,
      new RegExp(`^${file}:17:14: evaluations\\.zeroshot\\[0\\]\\.task: unknown zero-shot task "piqaa"; valid: piqa, arc_easy, .*, or a \\.jsonl file$`));
  });

  it("a known task whose data is missing is named with the file it looked for", () => {
    const saved = process.env.PRUNELAB_SHARED_DATA;
    process.env.PRUNELAB_SHARED_DATA = path.join(root, 'no-shared');
    try {
      const yaml = VALID.replace('  speed: {}', '  zeroshot:\n    - {task: piqa}\n  speed: {}');
      assert.match(errorOf(root, yaml).message, new RegExp(`:17:14: evaluations\\.zeroshot\\[0\\]\\.task: task data not found: ${path.join(root, 'no-shared', 'zeroshot')}`));
    } finally {
      if (saved === undefined) delete process.env.PRUNELAB_SHARED_DATA;
      else process.env.PRUNELAB_SHARED_DATA = saved;
    }
  });

  it('$NAME/ expands in output too; unset or misplaced variables are errors at their key', () => {
    const yaml = VALID.replace('name: demo\n', 'name: demo\noutput: $PRUNELAB_TEST_OUT/run\n');
    delete process.env.PRUNELAB_TEST_OUT;
    assert.equal(errorOf(root, yaml).message, `${file}:2:9: output: environment variable PRUNELAB_TEST_OUT is not set: set it, or write the path without it`);
    process.env.PRUNELAB_TEST_OUT = path.join(root, 'outs');
    try {
      assert.equal(loadExperiment(writeYaml(root, 'x.yaml', yaml)).resolved.output, path.join(root, 'outs', 'run'));
    } finally {
      delete process.env.PRUNELAB_TEST_OUT;
    }
    const inner = VALID.replace('name: demo\n', 'name: demo\noutput: results/$RUN\n');
    assert.match(errorOf(root, inner).message, /:2:9: output: only a leading \$NAME\/ is expanded/);
    const unsetInput = VALID.replace('../data/calib.txt', '$PRUNELAB_TEST_DATA/calib.txt');
    assert.match(errorOf(root, unsetInput).message, /:6:9: calibration\.text: environment variable PRUNELAB_TEST_DATA is not set/);
  });

  it('method option errors point at the option, not at the method name (real plug-in registry)', async () => {
    const { validateMethod } = registry;
    const unknown = VALID.replace('- name: wanda\n    options: {alpha: 1}', '- name: magnitude\n    options:\n      scope: row\n      scop: row');
    // line 13 col 7 is `scop`, the unknown key.
    assert.match(errorOf(root, unknown, { validateMethod }).message, new RegExp(`^${file}:13:7: methods\\[1\\]\\.options\\.scop: method 'magnitude': unknown option\\(s\\) 'scop'`));
    const badValue = VALID.replace('- name: wanda\n    options: {alpha: 1}', '- name: magnitude\n    options:\n      scope: 7');
    // line 12 col 14 is the value 7.
    assert.match(errorOf(root, badValue, { validateMethod }).message, new RegExp(`^${file}:12:14: methods\\[1\\]\\.options\\.scope: method 'magnitude': option 'scope'`));
  });

  it('a method module path that does not exist is an error at load', () => {
    const yaml = VALID.replace('- name: magnitude', '- name: ./no/such-method.ts');
    assert.match(errorOf(root, yaml).message, /:9:11: methods\[0\]\.name: method module not found: .*no\/such-method\.ts/);
  });

  it('options a validator resolves (defaults filled) replace the written ones', () => {
    const validateMethod = (_name: string, options: Record<string, unknown>) => ({ alpha: 0.5, blocksize: 128, ...options });
    const exp = loadExperiment(writeYaml(root, 'x.yaml', VALID), { validateMethod });
    assert.deepEqual(exp.config.methods[0].options, { alpha: 0.5, blocksize: 128 });
    assert.deepEqual(exp.resolved.methods[1].options, { alpha: 1, blocksize: 128 });
    // Two entries that resolve to the same options are the same runs.
    const dup = VALID.replace('    options: {alpha: 1}', '    options: {alpha: 0.5}').replace('- name: magnitude', '- name: wanda');
    assert.match(errorOf(root, dup, { validateMethod }).message, /:10:5: methods\[1\]: duplicate method entry/);
  });

  it('recovery recipes: a preset with overrides resolves per run and is recorded in the row; original entries keep their exact form', () => {
    fs.writeFileSync(path.join(root, 'data', 'alpaca.json'), JSON.stringify([{ instruction: 'a', input: '', output: 'b' }]));
    const yaml = VALID + `recovery:
  - {schedule: uniform, steps: 10, data: ../data/calib.txt}
  - {preset: llm-pruner, epochs: 1, heldOut: 0.25, data: ../data/alpaca.json}
`;
    const exp = loadExperiment(writeYaml(root, 'x.yaml', yaml), { recoverySchedules: registry.recoverySchedules });
    // Written with the original keys only: the same object as before recipes existed (same run ids).
    assert.deepEqual(exp.config.recovery[0], { schedule: 'uniform', steps: 10, lr: 1e-4, rank: 8, data: '../data/calib.txt' });
    assert.deepEqual(exp.config.recovery[1], { preset: 'llm-pruner', schedule: 'uniform', epochs: 1, heldOut: 0.25, data: '../data/alpaca.json' });
    const run = gridOf(exp).find((r) => r.method?.name === 'wanda' && 'recipe' in r.recovery && r.recovery.recipe.preset === 'llm-pruner');
    assert.ok(run && 'recipe' in run.recovery);
    const { recipe } = run.recovery;
    assert.deepEqual([recipe.effectiveBatch, recipe.seqlen, recipe.lrSchedule, recipe.warmup, recipe.epochs, recipe.steps, recipe.heldOut, recipe.format],
      [64, 256, 'linear', 100, 1, null, 0.25, 'alpaca-json']);
    assert.equal(run.recovery.data, path.join(root, 'data', 'alpaca.json'));
    const result = fakeResult(run);
    result.recovery = { merged: true, evaluated: 'fp32-merged', recipe: { ...recipe, steps: 7, warmup: 100, stepsPerEpoch: 7, epochsRun: 1, trainItems: 450, heldOutItems: 150 } };
    const row = buildRow(run, result, exp.config, { totalS: 1, finished: new Date(0) });
    assert.equal(row.recovery_steps, '7');
    assert.equal(row.recovery_lr, '0.0001');
    assert.deepEqual(JSON.parse(row.recovery_recipe), { ...result.recovery.recipe });
    assert.equal(row.recovery_evaluated, 'fp32-merged');
  });

  it('recovery recipes, bad input: unknown preset located, instruction data missing a field named with file and row at load', () => {
    const bad = errorOf(root, VALID + 'recovery: [{preset: lora, data: ../data/calib.txt}]\n');
    assert.match(bad.message, new RegExp(`${file}:17:21: recovery\\[0\\]\\.preset: unknown recovery preset 'lora'; valid: cfsp, llm-pruner, saap`));
    const conflict = errorOf(root, VALID + 'recovery: [{schedule: uniform, steps: 3, template: alpaca, data: ../data/calib.txt}]\n');
    assert.match(conflict.message, /:17:52: recovery\[0\]\.template: applies to instruction data only/);
    const data = path.join(root, 'data', 'broken.jsonl');
    fs.writeFileSync(data, '{"instruction": "a", "output": "b"}\n{"instruction": "c"}\n');
    const err = errorOf(root, VALID + 'recovery: [{preset: llm-pruner, data: ../data/broken.jsonl}]\n');
    assert.equal(err.message, `${file}:17:39: recovery[0].data: ${data}: line 2 (row 2): missing field 'output' (every record needs instruction and output; input is optional)`);
  });
});
