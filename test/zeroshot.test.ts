/**
 * Zero-shot scoring: the pure acc/acc_norm decision on hand-computed numbers, the request
 * construction (delimiters, WinoGrande partial scoring), the harness-style token split, the model
 * scorer against a direct log-softmax of `forward`, the loaders on every real file, and a
 * reproducible PIQA run on stories260K without tensor leaks.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { HAVE_SHARED, NO_SHARED_REASON, setupBackend, shared, STORIES_BIN, STORIES_TOK } from './support.ts';
import {
  TASKS, charLength, encodePair, evaluateRows, evaluateTask, loadTaskRows, metricFor, parseTaskRow,
  requestsForRow, scoreMultipleChoice, scoreTokenRequests, modelScorer,
  type LoglikelihoodRequest, type LoglikelihoodResult, type Scorer, type TaskName, type TaskRow,
} from '../src/eval/zeroshot.ts';
import { loadModel } from '../src/io/load-model.ts';
import { loadTokenizer } from '../src/tokenizer/load.ts';
import type { CausalLM } from '../src/model/causal-lm.ts';
import type { Tokenizer } from '../src/tokenizer/types.ts';
import { DataError } from '../src/util/errors.ts';

/** A deterministic fake scorer: ll looked up by continuation text (or by context for ties). */
function tableScorer(table: Record<string, number>, seen?: LoglikelihoodRequest[]): Scorer {
  return async (reqs) => reqs.map((r) => {
    seen?.push(r);
    const key = `${r.context}|${r.continuation}`;
    const ll = table[key] ?? table[r.continuation];
    if (ll === undefined) throw new Error(`no ll for ${JSON.stringify(key)}`);
    return { ll, isGreedy: ll > -1, tokens: 1 };
  });
}

describe('zero-shot scoring (pure)', () => {
  it('acc and acc_norm disagree when the choices differ in length (hand-computed)', () => {
    // Log-likelihoods are ≤ 0, so dividing by a larger length moves a value towards 0: the
    // disagreement is the short choice winning on the sum and the long one per character.
    // "cat": 3 chars, ll −6 → −2.0/char; "a small dog": 11 chars, ll −11 → −1.0/char.
    const choices = ['cat', 'a small dog'];
    const lls = [-6, -11];
    const s1 = scoreMultipleChoice(lls, choices, 1);
    assert.deepEqual(s1, { pred: 0, predNorm: 1, acc: 0, accNorm: 1 });
    const s0 = scoreMultipleChoice(lls, choices, 0);
    assert.deepEqual(s0, { pred: 0, predNorm: 1, acc: 1, accNorm: 0 });
    // Ties go to the first choice (numpy argmax).
    assert.equal(scoreMultipleChoice([-2, -2], ['ab', 'cd'], 1).acc, 0);
  });

  it('character length counts code points like Python len()', () => {
    assert.equal(charLength('é😀'), 2);
    // Code points: −5 / 2 = −2.5 vs −7 / 3 ≈ −2.33 → 'abc'. With UTF-16 units '😀😀' has
    // length 4: −1.25 would win instead.
    assert.equal(scoreMultipleChoice([-5, -7], ['😀😀', 'abc'], 1).accNorm, 1);
  });

  it('a hand-built 2-choice task scores the known answers', async () => {
    const cfg = { delimiter: '\nAnswer:', targetDelimiter: ' ' };
    const rows: TaskRow[] = [
      { shape: 'query_choices_gold', query: 'Q1', choices: ['yes', 'no'], gold: 0 },
      { shape: 'query_choices_gold', query: 'Q2', choices: ['yes', 'no'], gold: 1 },
      { shape: 'query_choices_gold', query: 'Q3', choices: ['yes', 'no'], gold: 1 },
      { shape: 'query_choices_gold', query: 'Q4', choices: ['yes', 'no'], gold: 0 },
    ];
    const table = {
      'Q1\nAnswer:| yes': -1, 'Q1\nAnswer:| no': -3, // right
      'Q2\nAnswer:| yes': -1, 'Q2\nAnswer:| no': -3, // wrong
      'Q3\nAnswer:| yes': -5, 'Q3\nAnswer:| no': -2, // right
      'Q4\nAnswer:| yes': -4, 'Q4\nAnswer:| no': -2, // wrong
    };
    const m = await evaluateRows(rows, cfg, tableScorer(table));
    assert.equal(m.n, 4);
    assert.equal(m.acc, 0.5);
    // Per char: Q1 −1/3 vs −3/2 → yes ✓; Q2 same → ✗; Q3 −5/3 vs −1 → no ✓; Q4 −4/3 vs −1 → no ✗.
    assert.equal(m.acc_norm, 0.5);
    assert.equal(m.ppl, null);
  });

  it('WinoGrande partial scoring: options are contexts, only the shared suffix is scored', async () => {
    const row = parseTaskRow('context_options', {
      context_options: ['Sarah was better than Maria so Sarah', 'Sarah was better than Maria so Maria'],
      continuation: 'got the easier cases.', gold: 1,
    }, 'inline');
    const reqs = requestsForRow(row, TASKS.winogrande);
    assert.deepEqual(reqs, [
      { context: 'Sarah was better than Maria so Sarah', continuation: ' got the easier cases.' },
      { context: 'Sarah was better than Maria so Maria', continuation: ' got the easier cases.' },
    ]);
    const seen: LoglikelihoodRequest[] = [];
    const table = {
      'Sarah was better than Maria so Sarah| got the easier cases.': -9,
      'Sarah was better than Maria so Maria| got the easier cases.': -4,
    };
    const m = await evaluateRows([row], TASKS.winogrande, tableScorer(table, seen));
    assert.equal(m.acc, 1);
    assert.equal(m.acc_norm, null);
    for (const r of seen) assert.ok(!r.continuation.includes('Maria') && !r.continuation.includes('Sarah'));
  });

  it('LAMBADA: acc from is_greedy, ppl = exp(−mean ll)', async () => {
    const rows: TaskRow[] = [
      { shape: 'context_continuation', context: 'a', continuation: 'x' },
      { shape: 'context_continuation', context: 'b', continuation: 'y' },
    ];
    const m = await evaluateRows(rows, TASKS.lambada_openai, tableScorer({ 'a| x': -0.5, 'b| y': -2.5 }));
    assert.equal(m.acc, 0.5); // only −0.5 counts as greedy in the fake scorer
    assert.ok(Math.abs((m.ppl as number) - Math.exp(1.5)) < 1e-12);
  });

  it('task table: delimiters and metric presets', () => {
    assert.equal(TASKS.piqa.delimiter, 'Answer:');
    assert.equal(TASKS.arc_challenge.delimiter, '\nAnswer:');
    assert.equal(TASKS.hellaswag.delimiter, '');
    const defaults = Object.fromEntries(Object.values(TASKS).map((t) => [t.name, metricFor(t)]));
    assert.deepEqual(defaults, {
      piqa: 'acc_norm', arc_easy: 'acc_norm', arc_challenge: 'acc_norm', boolq: 'acc', openbook_qa: 'acc_norm',
      hellaswag: 'acc_norm', winogrande: 'acc', lambada_openai: 'acc',
    });
    for (const t of Object.values(TASKS)) assert.equal(metricFor(t, 'acc'), 'acc');
  });

  it('rejects malformed rows', () => {
    assert.throws(() => parseTaskRow('query_choices_gold', { query: 'q', choices: ['a', 'b'], gold: 2 }, 'x:1'), DataError);
    assert.throws(() => parseTaskRow('context_options', { continuation: 'c', gold: 0 }, 'x:1'), DataError);
  });
});

describe('zero-shot on real data', { skip: HAVE_SHARED ? false : NO_SHARED_REASON }, () => {
  let model: CausalLM;
  let tok: Tokenizer;
  before(async () => {
    await setupBackend();
    model = loadModel(STORIES_BIN).model;
    tok = await loadTokenizer(STORIES_TOK);
  });
  after(() => model?.dispose());

  it('loaders parse the first row of every task file', () => {
    for (const name of Object.keys(TASKS) as TaskName[]) {
      const cfg = TASKS[name];
      const [row] = loadTaskRows(shared('zeroshot', cfg.file), cfg.shape, 1);
      assert.equal(row.shape, cfg.shape, name);
      const reqs = requestsForRow(row, cfg);
      if (row.shape === 'query_choices_gold') {
        assert.ok(row.choices.length >= 2 && row.gold < row.choices.length, name);
        assert.equal(reqs.length, row.choices.length);
        assert.ok(reqs.every((r) => r.context === row.query + cfg.delimiter && r.continuation.startsWith(' ')), name);
      } else if (row.shape === 'context_options') {
        assert.equal(reqs.length, 2);
        assert.match(row.continuation, /^always got the easier cases/);
      } else {
        assert.equal(reqs.length, 1);
        assert.equal(row.continuation, 'signs');
      }
    }
    const [piqa] = loadTaskRows(shared('zeroshot/piqa.jsonl'), 'query_choices_gold', 1);
    assert.equal(requestsForRow(piqa, TASKS.piqa)[0].context, "Question: How do I ready a guinea pig cage for it's new occupants?\nAnswer:");
  });

  it('encodePair splits encode(context + continuation) at the context length', () => {
    const p = encodePair(tok, 'Once upon a time', ' there was');
    assert.deepEqual([...p.context, ...p.continuation], tok.encode('Once upon a time there was', { addBos: true }));
    assert.deepEqual(p.context, tok.encode('Once upon a time', { addBos: true }));
    assert.ok(p.continuation.length > 0);
    // Trailing context whitespace moves to the continuation.
    assert.deepEqual(encodePair(tok, 'Once upon a ', 'time'), encodePair(tok, 'Once upon a', ' time'));
  });

  it('batched scorer equals a direct log-softmax of forward, and knows the likely name', async () => {
    const reqs = [
      encodePair(tok, 'Once upon a time, there was a little girl named', ' Lily.'),
      encodePair(tok, 'Once upon a time, there was a little girl named', ' Qzxv.'),
      encodePair(tok, 'One day, a little boy', ' went to the park.'), // different length: own batch
    ];
    const before = tf.memory().numTensors;
    const got = await scoreTokenRequests(model, reqs, { batchSize: 4 });
    const alone: LoglikelihoodResult[] = [];
    for (const r of reqs) alone.push((await scoreTokenRequests(model, [r]))[0]);
    assert.equal(tf.memory().numTensors, before, 'tensors leaked');
    reqs.forEach((r, i) => {
      const full = [...r.context, ...r.continuation];
      const lp = tf.tidy(() => tf.logSoftmax(model.forward([full.slice(0, -1)])).arraySync() as number[][]);
      let ll = 0;
      for (let j = 0; j < r.continuation.length; j++) {
        const pos = r.context.length - 1 + j;
        ll += lp[pos][full[pos + 1]];
      }
      assert.ok(Math.abs(got[i].ll - ll) < 1e-3, `request ${i}: ${got[i].ll} vs ${ll}`);
      assert.ok(Math.abs(alone[i].ll - got[i].ll) < 1e-4, `batched vs alone ${i}`);
      assert.equal(got[i].tokens, r.continuation.length);
    });
    assert.ok(got[0].ll > got[1].ll + 5, `Lily ${got[0].ll} should beat Qzxv ${got[1].ll}`);
    // The same crafted case as a 2-choice task: the model gets it right, whichever gold we ask.
    const rows: TaskRow[] = [{ shape: 'query_choices_gold', query: 'Once upon a time, there was a little girl named', choices: ['Lily.', 'Qzxv.'], gold: 0 }];
    assert.equal((await evaluateRows(rows, { delimiter: '', targetDelimiter: ' ' }, modelScorer(model, tok))).acc, 1);
    assert.equal((await evaluateRows([{ ...rows[0], gold: 1 } as TaskRow], { delimiter: '', targetDelimiter: ' ' }, modelScorer(model, tok))).acc, 0);
  });

  it('left-truncates to maxLength and still scores the whole continuation', async () => {
    const r = encodePair(tok, 'Once upon a time, there was a little girl named Lily. She loved to play', ' outside.');
    const [x] = await scoreTokenRequests(model, [r], { maxLength: 8 });
    assert.equal(x.tokens, r.continuation.length);
    assert.ok(Number.isFinite(x.ll) && x.ll < 0);
  });

  it('PIQA limit 200 on stories260K: in [0, 1], reproducible, no tensor leak', async () => {
    const before = tf.memory().numTensors;
    const a = await evaluateTask(model, tok, 'piqa', { limit: 200, dataDir: shared('zeroshot') });
    assert.equal(tf.memory().numTensors, before, 'tensors leaked');
    const b = await evaluateTask(model, tok, 'piqa', { limit: 200, dataDir: shared('zeroshot') });
    assert.deepEqual(b, a);
    assert.equal(a.n, 200);
    for (const v of [a.acc, a.acc_norm as number]) assert.ok(v >= 0 && v <= 1 && Number.isFinite(v));
    assert.equal(a.metric, 'acc_norm');
    assert.equal(a.value, a.acc_norm);
    assert.equal(a.protocol.harness, 'lm-eval 0.4-style');
    assert.equal(a.protocol.num_fewshot, 0);
    assert.equal(a.protocol.limit, 200);
    assert.equal(a.protocol.delimiter, 'Answer:');
    console.log(`stories260K piqa limit 200: acc ${a.acc.toFixed(4)} acc_norm ${(a.acc_norm as number).toFixed(4)}`);
  });

  it('WinoGrande and LAMBADA run end to end (limit 20)', async () => {
    const before = tf.memory().numTensors;
    const w = await evaluateTask(model, tok, shared('zeroshot/winogrande.jsonl'), { limit: 20 });
    const l = await evaluateTask(model, tok, 'lambada_openai', { limit: 20, dataDir: shared('zeroshot'), preset: 'acc' });
    assert.equal(tf.memory().numTensors, before, 'tensors leaked');
    assert.equal(w.task, 'winogrande');
    assert.equal(w.acc_norm, null);
    assert.ok(w.acc >= 0 && w.acc <= 1);
    assert.ok(l.acc >= 0 && l.acc <= 1);
    assert.ok(Number.isFinite(l.ppl as number) && (l.ppl as number) > 1);
    console.log(`stories260K winogrande@20 acc ${w.acc}; lambada@20 acc ${l.acc} ppl ${(l.ppl as number).toFixed(1)}`);
  });
});
