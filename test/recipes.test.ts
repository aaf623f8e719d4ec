/**
 * Recovery recipes: the learning-rate schedules and HF's step count on hand-computed cases, the
 * per-token loss mask, Alpaca prompts and LLM-Pruner's tokenisation on a character tokenizer,
 * instruction-file errors, preset resolution, and the `llm-pruner` preset run end to end on a tiny
 * model: effective batch 64 (4 × 16), cutoff 256, linear schedule with warm-up 100 — recorded and
 * checked against counts computed here from the recipe's definition.
 */
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import seedrandom from 'seedrandom';
import { setupBackend, tmpDir, REPO_ROOT } from './support.ts';
import { runCli } from './cli-support.ts';
import { buildSyntheticLlama } from '../src/model/synthetic.ts';
import { causalLmNllSum, trainingNllSum } from '../src/model/loss.ts';
import { lrAt } from '../src/train/lr-schedule.ts';
import { stepsForEpochs } from '../src/finetune/trainer.ts';
import { formatPrompt, PROMPT_TEMPLATES, resolvePromptTemplate } from '../src/finetune/prompt-template.ts';
import { readInstructionFile, tokenizeInstruction, type InstructionExample } from '../src/finetune/instruction-data.ts';
import { recipePresetNames, resolveRecipe } from '../src/finetune/recipes.ts';
import { listMethods } from '../src/prune/registry.ts';

// The presets come from the methods that declare their paper's recipe.
await listMethods();
import { recover } from '../src/finetune/recovery.ts';
import type { Tokenizer } from '../src/tokenizer/types.ts';
import { ConfigError, DataError } from '../src/util/errors.ts';

/** Characters as tokens: BOS 1, EOS 2, byte b → 3 + (b mod 125); vocabulary 128. */
const CHAR_TOKENIZER: Tokenizer = {
  id: 'chars', vocabSize: 128, bosId: 1, eosId: 2,
  encode: (text, o) => [...(o?.addBos ? [1] : []), ...Array.from(Buffer.from(text, 'utf8'), (b) => 3 + (b % 125))],
  decode: () => '',
};

describe('learning-rate schedules and step counts (hand-computed)', () => {
  it("HF linear with warm-up 1 over 4 steps: update k uses the factor of step k−1 → 0, 1, 2/3, 1/3", () => {
    const c = { lr: 1, steps: 4, warmupSteps: 1, minLrRatio: 0, kind: 'linear' as const };
    const got = [1, 2, 3, 4].map((k) => lrAt(k, c));
    [0, 1, 2 / 3, 1 / 3].forEach((v, i) => assert.ok(Math.abs(got[i] - v) < 1e-12, `step ${i + 1}: ${got[i]}`));
  });

  it('HF linear, warm-up 2 of 10: 0, 0.5, 1, 7/8, …; without warm-up 1, 3/4, 1/2, 1/4; constant: 0, 0.5, 1, 1', () => {
    const lin = { lr: 2, steps: 10, warmupSteps: 2, minLrRatio: 0, kind: 'linear' as const };
    assert.deepEqual([1, 2, 3].map((k) => lrAt(k, lin)), [0, 1, 2]);
    assert.ok(Math.abs(lrAt(4, lin) - 2 * 7 / 8) < 1e-12);
    assert.ok(Math.abs(lrAt(10, lin) - 2 / 8) < 1e-12);
    const flat = { lr: 1, steps: 4, warmupSteps: 0, minLrRatio: 0, kind: 'linear' as const };
    assert.deepEqual([1, 2, 3, 4].map((k) => lrAt(k, flat)), [1, 0.75, 0.5, 0.25]);
    const constant = { ...lin, lr: 1, kind: 'constant' as const };
    assert.deepEqual([1, 2, 3, 9].map((k) => lrAt(k, constant)), [0, 0.5, 1, 1]);
    // The default (cosine) is unchanged: step s ≤ W gets lr·s/W.
    assert.equal(lrAt(1, { lr: 1, steps: 10, warmupSteps: 2, minLrRatio: 0 }), 0.5);
  });

  it("HF Trainer's count: ceil(epochs × max(1, floor(ceil(items/micro)/accum)))", () => {
    assert.deepEqual(stepsForEpochs(2, 48_000, 4, 16), { steps: 1500, stepsPerEpoch: 750 });
    assert.deepEqual(stepsForEpochs(2, 1001, 4, 16), { steps: 30, stepsPerEpoch: 15 }); // ceil(1001/4) = 251 → 15
    assert.deepEqual(stepsForEpochs(1.5, 1001, 4, 16), { steps: 23, stepsPerEpoch: 15 });
    assert.deepEqual(stepsForEpochs(2, 52, 4, 16), { steps: 2, stepsPerEpoch: 1 });
  });
});

describe('per-token loss mask', () => {
  before(setupBackend);

  it('masked loss = NLL of the kept targets only, computed here by log-sum-exp; masked rows get no gradient', () => {
    const V = 5;
    const ids = [[1, 2, 3, 4], [4, 3, 2, 1]];
    const mask = [[0, 0, 1, 1], [0, 1, 0, 1]];
    const rng = seedrandom.alea('mask');
    const raw = Float32Array.from({ length: 8 * V }, () => rng() * 4 - 2);
    const logits = tf.tensor2d(raw, [8, V]);
    let expected = 0;
    const kept: number[] = [];
    ids.forEach((row, b) => {
      for (let t = 0; t + 1 < 4; t++) {
        if (!mask[b][t + 1]) continue;
        const r = b * 4 + t;
        const z = Array.from(raw.subarray(r * V, (r + 1) * V));
        const m = Math.max(...z);
        expected += m + Math.log(z.reduce((a, v) => a + Math.exp(v - m), 0)) - z[row[t + 1]];
        kept.push(r);
      }
    });
    assert.deepEqual(kept, [1, 2, 4, 6]);
    for (const f of [causalLmNllSum, trainingNllSum]) {
      const { sum, count } = f(logits, ids, mask);
      assert.equal(count, 4);
      assert.ok(Math.abs(sum.dataSync()[0] - expected) < 1e-4, `${f.name}: ${sum.dataSync()[0]} vs ${expected}`);
      sum.dispose();
    }
    const g = tf.grad((l: tf.Tensor) => trainingNllSum(l as tf.Tensor2D, ids, mask).sum)(logits);
    const grad = g.arraySync() as number[][];
    for (let r = 0; r < 8; r++) {
      const nonZero = grad[r].some((v) => Math.abs(v) > 1e-9);
      assert.equal(nonZero, kept.includes(r), `row ${r}`);
    }
    tf.dispose([logits, g]);
  });

  it('right padding changes nothing: a sequence alone and padded beside a longer one give the same masked loss', () => {
    const model = buildSyntheticLlama({ hidden: 16, layers: 2, heads: 2, kvHeads: 1, ffn: 24, vocab: 32, seed: 3 });
    const a = [1, 5, 9, 4, 7];
    const b = [1, 8, 3, 3, 6, 2, 11, 30];
    const alone = tf.tidy(() => causalLmNllSum(model.forward([a]), [a]).sum.dataSync()[0]);
    const ids = [[...a, 0, 0, 0], b];
    const mask = [[1, 1, 1, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 0]];
    const padded = tf.tidy(() => causalLmNllSum(model.forward(ids), ids, mask).sum.dataSync()[0]);
    assert.ok(Math.abs(alone - padded) < 1e-5, `${alone} vs ${padded}`);
    model.dispose();
  });
});

describe('instruction data', () => {
  it("Alpaca's prompt, with and without input; braces in the instruction are left alone", () => {
    const t = PROMPT_TEMPLATES.alpaca;
    assert.equal(formatPrompt(t, 'Add {input}.', '2 and 3'),
      'Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n' +
      '### Instruction:\nAdd {input}.\n\n### Input:\n2 and 3\n\n### Response:\n');
    assert.equal(formatPrompt(t, 'Say hi.', ''),
      'Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\nSay hi.\n\n### Response:\n');
  });

  it("LLM-Pruner's tokenisation: BOS + prompt + output + EOS, prompt tokens masked; cutoff truncates and drops EOS", () => {
    const tpl = { name: 't', description: 't', promptInput: 'Q{instruction}{input}:', promptNoInput: 'Q{instruction}:' };
    const ex: InstructionExample = { instruction: 'ab', input: '', output: 'xyz' };
    // Prompt "Qab:" → BOS + 4 tokens; full = BOS + "Qab:xyz" + EOS = 9 tokens; the last 4 are predicted.
    const full = tokenizeInstruction(ex, CHAR_TOKENIZER, tpl, { cutoff: 256, trainOnInputs: false });
    assert.deepEqual(full.ids, [1, ...Array.from(Buffer.from('Qab:xyz'), (b) => 3 + b), 2]);
    assert.deepEqual(full.lossMask, [0, 0, 0, 0, 0, 1, 1, 1, 1]);
    const onInputs = tokenizeInstruction(ex, CHAR_TOKENIZER, tpl, { cutoff: 256, trainOnInputs: true });
    assert.deepEqual(onInputs.lossMask, new Array(9).fill(1));
    // Cutoff 7: BOS + "Qab:xy", no room for EOS.
    const cut = tokenizeInstruction(ex, CHAR_TOKENIZER, tpl, { cutoff: 7, trainOnInputs: false });
    assert.deepEqual(cut.ids, [1, ...Array.from(Buffer.from('Qab:xy'), (b) => 3 + b)]);
    assert.deepEqual(cut.lossMask, [0, 0, 0, 0, 0, 1, 1]);
  });

  it('bad files: a missing field, a non-string field, invalid JSON, no records — each names the file and the row', () => {
    const dir = tmpDir('instr');
    const write = (name: string, text: string) => {
      const f = path.join(dir, name);
      fs.writeFileSync(f, text);
      return f;
    };
    const arr = write('a.json', JSON.stringify([{ instruction: 'a', output: 'b' }, { instruction: 'c', input: 'd' }]));
    assert.throws(() => readInstructionFile(arr), (e: Error) => e instanceof DataError && e.message === `${arr}: row 2: missing field 'output' (every record needs instruction and output; input is optional)`);
    const jsonl = write('b.jsonl', '{"instruction": "a", "output": "b"}\n\n{"instruction": "a", "input": 3, "output": "b"}\n');
    assert.throws(() => readInstructionFile(jsonl), (e: Error) => e instanceof DataError && /b\.jsonl: line 3 \(row 2\): field 'input' must be a string, got 3/.test(e.message));
    const broken = write('c.jsonl', '{"instruction": "a", "output": "b"}\n{"instruction": \n');
    assert.throws(() => readInstructionFile(broken), (e: Error) => e instanceof DataError && /c\.jsonl: line 2 \(row 2\): not valid JSON/.test(e.message));
    assert.throws(() => readInstructionFile(write('d.json', '[]')), /no instruction records/);
    assert.deepEqual(readInstructionFile(write('e.jsonl', '{"instruction": "a", "output": "b", "extra": 1}\n')), [{ instruction: 'a', input: '', output: 'b' }]);
    assert.throws(() => resolvePromptTemplate('vicuna'), (e: Error) => e instanceof ConfigError && /unknown prompt template 'vicuna'; valid: alpaca/.test(e.message));
    const tplFile = write('t.json', JSON.stringify({ prompt_input: '{instruction} {input}', prompt_no_input: '{instruction}' }));
    assert.equal(resolvePromptTemplate(tplFile).promptNoInput, '{instruction}');
    assert.throws(() => resolvePromptTemplate(write('u.json', '{"prompt_input": "x"}')), /needs string fields prompt_input and prompt_no_input/);
  });
});

describe('recipes and presets', () => {
  it('llm-pruner: the README recipe; written settings override it, steps replacing epochs', () => {
    const r = resolveRecipe({ preset: 'llm-pruner' });
    assert.deepEqual(r, {
      preset: 'llm-pruner', schedule: 'uniform', rank: 8, alpha: 16, dropout: 0.05, targets: null, lr: 1e-4, lrSchedule: 'linear',
      warmup: 100, microBatch: 4, gradAccum: 16, effectiveBatch: 64, seqlen: 256, steps: null, epochs: 2, format: 'alpaca-json',
      template: 'alpaca', trainOnInputs: false, heldOut: 2000,
    });
    const o = resolveRecipe({ preset: 'saap', steps: 20, format: 'text', seqlen: 128 });
    assert.deepEqual([o.schedule, o.steps, o.epochs, o.format, o.template, o.trainOnInputs, o.effectiveBatch], ['saap', 20, null, 'text', null, null, 64]);
    assert.equal(resolveRecipe({ preset: 'cfsp' }).schedule, 'cfsp');
    assert.deepEqual(recipePresetNames().sort(), ['cfsp', 'llm-pruner', 'saap']);
  });

  it("without a preset: today's defaults (uniform cosine, 4 × 1, 128 tokens, text, 10 % held out)", () => {
    const r = resolveRecipe({ schedule: 'uniform', steps: 20, lr: 2e-3 });
    assert.deepEqual([r.lrSchedule, r.warmup, r.microBatch, r.gradAccum, r.seqlen, r.format, r.heldOut, r.rank, r.alpha, r.dropout],
      ['cosine', null, 4, 1, 128, 'text', 0.1, 8, 16, 0.05]);
  });

  it('bad input: unknown preset or template, steps with epochs, template on text, nothing to train for', () => {
    assert.throws(() => resolveRecipe({ preset: 'lora' }), (e: Error) => e instanceof ConfigError && /preset: unknown recovery preset 'lora'; valid: cfsp, llm-pruner, saap/.test(e.message));
    assert.throws(() => resolveRecipe({ preset: 'llm-pruner', template: 'chatml' }), /template: unknown prompt template 'chatml'/);
    assert.throws(() => resolveRecipe({ preset: 'llm-pruner', steps: 3, epochs: 1 }), /epochs: give steps or epochs, not both/);
    assert.throws(() => resolveRecipe({ schedule: 'uniform', steps: 3, template: 'alpaca' }), /template: applies to instruction data only/);
    assert.throws(() => resolveRecipe({ schedule: 'uniform' }), /steps: schedule 'uniform' needs steps/);
    assert.throws(() => resolveRecipe({ steps: 3 }), /schedule: give a schedule/);
    assert.throws(() => resolveRecipe({ schedule: 'uniform', steps: 3, heldOut: 2.5 }), /heldOut: expected a fraction in \(0, 1\) or a whole number/);
  });
});

/** Instruction examples whose outputs differ in length; two run past the cutoff of 256. */
function examples(n: number): InstructionExample[] {
  const rng = seedrandom.alea('examples');
  return Array.from({ length: n }, (_, i) => ({
    instruction: `Task ${i}.`,
    input: i % 3 === 0 ? `context ${i}` : '',
    output: 'abcdefghij'.repeat(i % 40 === 7 ? 40 : 1 + Math.floor(rng() * 4)),
  }));
}

describe("the llm-pruner preset on a tiny model reproduces the recipe's batch, cutoff and schedule", () => {
  before(setupBackend);

  it('4 steps = 2 epochs of 128 examples in 64s of 4 × 16; predicted tokens per epoch as the recipe defines them; lr 1e-4·(k−1)/100', async () => {
    const dir = tmpDir('llm-pruner-recipe');
    const all = examples(136);
    const file = path.join(dir, 'alpaca.json');
    fs.writeFileSync(file, JSON.stringify(all));
    const recipe = resolveRecipe({ preset: 'llm-pruner', heldOut: 8 });
    const model = buildSyntheticLlama({ hidden: 16, layers: 2, heads: 2, kvHeads: 1, ffn: 24, vocab: 128, seed: 5, maxPositions: 512 });
    const r = await recover(model, CHAR_TOKENIZER, { schedule: { name: 'uniform' }, recipe, data: file, seed: 0 });
    model.dispose();

    assert.equal(r.recipe.effectiveBatch, 64);
    assert.deepEqual([r.recipe.microBatch, r.recipe.gradAccum, r.recipe.seqlen, r.recipe.lrSchedule, r.recipe.warmup], [4, 16, 256, 'linear', 100]);
    assert.deepEqual([r.recipe.trainItems, r.recipe.heldOutItems, r.recipe.stepsPerEpoch, r.recipe.steps, r.recipe.epochsRun], [128, 8, 2, 4, 2]);
    assert.deepEqual(r.log.map((e) => e.step), [1, 2, 3, 4]);
    r.log.forEach((e) => assert.ok(Math.abs(e.lr - 1e-4 * (e.step - 1) / 100) < 1e-15, `step ${e.step}: lr ${e.lr}`));

    // Which examples were trained on: all but the 8 held out, whose NLL is scored on the response.
    const tpl = PROMPT_TEMPLATES.alpaca;
    const predicted = (ex: InstructionExample) => {
      // The recipe's definition: labels of BOS + prompt (cut at 256) are −100, the rest of
      // BOS + prompt + output (cut at 256, + EOS when room is left) are predicted.
      const prompt = formatPrompt(tpl, ex.instruction, ex.input);
      const full = Math.min(256, 1 + Buffer.byteLength(prompt + ex.output));
      const withEos = full < 256 ? full + 1 : full;
      return withEos - Math.min(256, 1 + Buffer.byteLength(prompt));
    };
    const perExample = all.map(predicted);
    assert.ok(perExample.some((p, i) => 1 + Buffer.byteLength(formatPrompt(tpl, all[i].instruction, all[i].input) + all[i].output) > 256), 'some example must hit the cutoff');
    const total = perExample.reduce((a, b) => a + b, 0);
    const heldTokens = r.heldOut.tokens;
    // Steps 1–2 are epoch 0 (128 = 2 × 64, each training example once), steps 3–4 epoch 1.
    assert.equal(r.log[0].tokens + r.log[1].tokens, total - heldTokens);
    assert.equal(r.log[2].tokens + r.log[3].tokens, total - heldTokens);
    assert.equal(r.heldOut.windows, 8);
  });
});

describe('prunelab finetune: recipe flags and bad input', () => {
  const MODEL = path.join(REPO_ROOT, 'data/brown-llama');

  it('an unknown preset or template, or a record without output: exit 2, the file and row named, nothing written', () => {
    const dir = tmpDir('finetune-bad');
    const data = path.join(dir, 'data.jsonl');
    fs.writeFileSync(data, '{"instruction": "a", "output": "b"}\n{"instruction": "c", "input": "d"}\n');
    const out = path.join(dir, 'out');
    const cases: [string[], RegExp][] = [
      [['--preset', 'alpaca'], /unknown recovery preset 'alpaca'; valid: cfsp, llm-pruner, saap/],
      [['--preset', 'llm-pruner', '--template', 'vicuna'], /unknown prompt template 'vicuna'/],
      [['--preset', 'llm-pruner', '--held-out', '1', '--seqlen', '64'], new RegExp(`${data.replace(/[.]/g, '\\.')}: line 2 \\(row 2\\): missing field 'output'`)],
    ];
    for (const [flags, re] of cases) {
      const r = runCli(['finetune', '--model', MODEL, '--data', data, ...flags, '--out', out]);
      assert.equal(r.status, 2, r.stderr);
      assert.match(String(r.json?.error), re);
      assert.equal(fs.existsSync(out), false, 'nothing may be written');
    }
  });

  it('every recipe flag reaches the run and is recorded: 2 × 2 micro-batches, linear warm-up 1, 1 epoch of instruction data, inputs trained on', () => {
    const dir = tmpDir('finetune-flags');
    const data = path.join(dir, 'data.jsonl');
    fs.writeFileSync(data, examples(20).map((e) => JSON.stringify(e)).join('\n') + '\n');
    const out = path.join(dir, 'out');
    const r = runCli(['finetune', '--model', MODEL, '--data', data, '--format', 'alpaca-json', '--train-on-inputs', '--epochs', '1',
      '--micro-batch', '2', '--grad-accum', '2', '--lr-schedule', 'linear', '--warmup', '1', '--lr', '1e-3', '--seqlen', '64',
      '--held-out', '4', '--rank', '2', '--alpha', '4', '--dropout', '0', '--targets', 'q,v', '--out', out], 300_000);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.json?.execution, 'resident', 'finetune records how the model ran, as every other command does');
    const recipe = r.json?.recipe as Record<string, unknown>;
    assert.deepEqual(recipe, {
      preset: null, schedule: 'uniform', rank: 2, alpha: 4, dropout: 0, targets: ['q', 'v'], lr: 1e-3, lrSchedule: 'linear', warmup: 1,
      microBatch: 2, gradAccum: 2, effectiveBatch: 4, seqlen: 64, steps: 4, epochs: 1, format: 'alpaca-json', template: 'alpaca',
      trainOnInputs: true, heldOut: 4, stepsPerEpoch: 4, epochsRun: 1, trainItems: 16, heldOutItems: 4,
    });
    const log = r.json?.log as { lr: number }[];
    assert.deepEqual(log.map((e) => e.lr), [0, 1e-3, 1e-3 * 2 / 3, 1e-3 / 3]);
    assert.ok(fs.existsSync(path.join(out, 'model.safetensors')));
  });
});
