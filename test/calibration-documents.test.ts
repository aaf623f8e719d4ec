/**
 * Document-aware calibration for JSON/JSONL corpora (prune/calibration.ts): one window from one
 * document, as the C4 loaders of Wanda and SparseGPT take them, beside the text-stream windows;
 * bad input names the file and the row. Small corpora written in a temp dir, tokenized with the
 * embedded model's tokenizer (no shared data needed).
 */
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { REPO_ROOT, tmpDir } from './support.ts';
import { loadTokenizer } from '../src/tokenizer/load.ts';
import type { Tokenizer } from '../src/tokenizer/types.ts';
import { calibrationFromText, defaultSampling } from '../src/prune/calibration.ts';
import { ConfigError, DataError } from '../src/util/errors.ts';
import { loadExperiment } from '../src/experiment/schema.ts';
import { gridOf, workspace, writeYaml } from './experiment-fixtures.ts';
import { runCli } from './cli-support.ts';

const MODEL = path.join(REPO_ROOT, 'data/brown-llama');
const SHORT = 'The cat sat.';
const LONG = 'The committee met on Monday to discuss the budget, and after a long debate the members agreed to postpone the vote until the next session of the legislature in the spring.';

let tok: Tokenizer;
const dir = tmpDir('calib-docs');
function write(name: string, lines: unknown[]): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, lines.map((l) => (typeof l === 'string' ? l : JSON.stringify(l))).join('\n') + '\n');
  return file;
}

describe('document-aware calibration', () => {
  before(async () => { tok = await loadTokenizer(path.join(MODEL, 'tokenizer.json')); });

  it('the default follows the corpus: documents for .json/.jsonl, a stream for text', () => {
    assert.equal(defaultSampling('c4.jsonl'), 'documents');
    assert.equal(defaultSampling('c4.JSON'), 'documents');
    assert.equal(defaultSampling('wiki.txt'), 'stream');
  });

  it('every window is a slice of one document long enough; short documents are drawn again; seeded', () => {
    const long = tok.encode(LONG, { addBos: true });
    const short = tok.encode(SHORT, { addBos: true });
    const seqlen = 16;
    assert.ok(short.length <= seqlen && long.length > seqlen + 4, `${short.length} / ${long.length} tokens`);
    const file = write('mixed.jsonl', [{ text: SHORT, url: 'a' }, { text: LONG }, { text: SHORT }]);
    const set = calibrationFromText(tok, { text: file, nsamples: 12, seqlen, seed: 3 });
    assert.equal(set.protocol.sampling, 'documents');
    assert.equal(set.protocol.documents, 3);
    assert.deepEqual(set.protocol.rows, new Array(12).fill(2), 'only row 2 is longer than seqlen');
    set.windows.forEach((w, k) => {
      const o = set.offsets[k];
      // randint(0, len − seqlen − 1): the last possible start is never drawn.
      assert.ok(o >= 0 && o <= long.length - seqlen - 1, `offset ${o}`);
      assert.deepEqual(w, long.slice(o, o + seqlen));
    });
    assert.ok(new Set(set.offsets).size > 1, 'starts are drawn');
    assert.deepEqual(calibrationFromText(tok, { text: file, nsamples: 12, seqlen, seed: 3 }).windows, set.windows);
    assert.notDeepEqual(calibrationFromText(tok, { text: file, nsamples: 12, seqlen, seed: 4 }).offsets, set.offsets);
  });

  it('a document of exactly seqlen + 1 tokens gives the one window that starts at 0; seqlen tokens is too short', () => {
    const ids = tok.encode(LONG, { addBos: true });
    const file = write('one.json', []);
    fs.writeFileSync(file, JSON.stringify([{ text: LONG }]));
    const set = calibrationFromText(tok, { text: file, nsamples: 3, seqlen: ids.length - 1, seed: 0 });
    assert.deepEqual(set.offsets, [0, 0, 0]);
    assert.deepEqual(set.windows[0], ids.slice(0, ids.length - 1));
    assert.throws(() => calibrationFromText(tok, { text: file, nsamples: 1, seqlen: ids.length, seed: 0 }),
      (e: unknown) => e instanceof DataError && e.message.includes(file) && /no document has more than \d+ tokens \(the longest, row 1, has \d+\)/.test(e.message));
  });

  it('stream sampling of a JSON corpus: windows of its documents joined by blank lines', () => {
    const file = write('stream.jsonl', [{ text: LONG }, { text: SHORT }, { text: LONG }]);
    const stream = tok.encode([LONG, SHORT, LONG].join('\n\n'), { addBos: true });
    const set = calibrationFromText(tok, { text: file, nsamples: 5, seqlen: 8, seed: 1, sampling: 'stream' });
    assert.equal(set.protocol.textTokens, stream.length);
    assert.equal(set.protocol.sampling, 'stream');
    set.windows.forEach((w, k) => assert.deepEqual(w, stream.slice(set.offsets[k], set.offsets[k] + 8)));
  });

  it('another field name; text-file reports are unchanged (no sampling key)', () => {
    const file = write('content.jsonl', [{ content: LONG }]);
    assert.equal(calibrationFromText(tok, { text: file, nsamples: 1, seqlen: 8, field: 'content' }).protocol.field, 'content');
    const txt = path.join(dir, 'plain.txt');
    fs.writeFileSync(txt, LONG);
    assert.deepEqual(Object.keys(calibrationFromText(tok, { text: txt, nsamples: 1, seqlen: 8 }).protocol),
      ['text', 'tokenizer', 'nsamples', 'seqlen', 'seed', 'offsets', 'textTokens']);
  });

  it('bad input: a missing field, a record that is not an object, invalid JSON — each names the file and row; documents of a text file', () => {
    const missing = write('missing.jsonl', [{ text: LONG }, { body: LONG }]);
    assert.throws(() => calibrationFromText(tok, { text: missing, nsamples: 1, seqlen: 8 }),
      (e: unknown) => e instanceof DataError && e.message.includes(missing) && /line 2 \(row 2\): missing field 'text'/.test(e.message));
    const notObject = path.join(dir, 'array.json');
    fs.writeFileSync(notObject, JSON.stringify([{ text: LONG }, 'plain string']));
    assert.throws(() => calibrationFromText(tok, { text: notObject, nsamples: 1, seqlen: 8 }),
      (e: unknown) => e instanceof DataError && /row 2: expected an object with a 'text' field/.test(e.message));
    const broken = write('broken.jsonl', [{ text: LONG }, '{"text": ']);
    assert.throws(() => calibrationFromText(tok, { text: broken, nsamples: 1, seqlen: 8 }),
      (e: unknown) => e instanceof DataError && /line 2 \(row 2\): not valid JSON/.test(e.message));
    const txt = path.join(dir, 'plain.txt');
    fs.writeFileSync(txt, LONG);
    assert.throws(() => calibrationFromText(tok, { text: txt, nsamples: 1, seqlen: 8, sampling: 'documents' }),
      (e: unknown) => e instanceof ConfigError && /needs a JSON or JSON Lines corpus/.test(e.message));
    assert.throws(() => calibrationFromText(tok, { text: write('ok.jsonl', [{ text: LONG }]), nsamples: 1, seqlen: 8, offsets: [0] }),
      (e: unknown) => e instanceof ConfigError && /reproduced by its seed/.test(e.message));
  });

  it('YAML: sampling and field are run settings when written (ids of other configs unchanged); bad corpora fail at load', () => {
    const root = workspace('calib-docs');
    const corpus = path.join(root, 'data', 'c4.jsonl');
    fs.writeFileSync(corpus, `${JSON.stringify({ text: LONG })}\n`);
    const yaml = (cal: string) => `name: demo
models:
  - id: tiny
    path: ../models/tiny
calibration: {${cal}}
methods:
  - name: wanda
sparsities: [0.5]
`;
    const ids = (cal: string) => gridOf(loadExperiment(writeYaml(root, 'x.yaml', yaml(cal)))).filter((r) => r.kind === 'pruned');
    const plain = ids('text: ../data/calib.txt, seqlen: 64')[0];
    const stream = ids('text: ../data/calib.txt, seqlen: 64, sampling: stream')[0];
    assert.notEqual(plain.id, stream.id);
    assert.equal(plain.calibration?.sampling, undefined);
    assert.equal(stream.calibration?.sampling, 'stream');
    assert.equal(ids('text: ../data/c4.jsonl, seqlen: 8, field: text')[0].calibration?.field, 'text');
    const err = (cal: string) => {
      try {
        loadExperiment(writeYaml(root, 'x.yaml', yaml(cal)));
      } catch (e) {
        assert.ok(e instanceof ConfigError);
        return e.message;
      }
      assert.fail('expected an error');
    };
    assert.match(err('text: ../data/calib.txt, seqlen: 64, sampling: documents'), /calibration\.sampling: documents sampling needs a JSON/);
    assert.match(err('text: ../data/c4.jsonl, seqlen: 8, field: body'), new RegExp(`calibration\\.text: .*row 1\\): missing field 'body'`));
    assert.match(err('text: ../data/c4.jsonl, seqlen: 8, offsets: [0], nsamples: 1'), /calibration\.offsets: offsets replay stream windows/);
  });

  it('CLI: prune --calib DOCS.jsonl records the sampling, rows and offsets in the report', () => {
    const corpus = write('cli.jsonl', [{ text: SHORT }, { text: `${LONG} ${LONG}` }]);
    const out = path.join(dir, 'pruned');
    const r = runCli(['prune', '--model', MODEL, '--method', 'wanda', '--sparsity', '0.5', '--calib', corpus, '--nsamples', '2', '--seqlen', '16',
      '--threads', '1', '--out', out, '--json']);
    assert.equal(r.status, 0, r.stderr.slice(-1000));
    const cal = (r.json as { calibration: { sampling: string; rows: number[]; offsets: number[] } }).calibration;
    assert.equal(cal.sampling, 'documents');
    assert.deepEqual(cal.rows, [2, 2]);
    assert.equal(cal.offsets.length, 2);
  });
});
