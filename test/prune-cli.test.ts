/**
 * `prunelab prune` end to end on stories260K: exact masks recounted from the saved checkpoint,
 * the report agreeing with the recount, and bad input failing before anything is written.
 */
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { HAVE_SHARED, NO_SHARED_REASON, setupBackend, shared, STORIES_BIN, tmpDir } from './support.ts';
import { runCli } from './cli-support.ts';
import { readHfCheckpoint } from '../src/io/hf-checkpoint.ts';

const CALIB = shared('text', 'tinystories-sample.txt');
const linearNames = (names: string[]) => names.filter((n) => /layers\.\d+\.(self_attn|mlp)\.\w+_proj\.weight$/.test(n));

describe('prune CLI', { skip: HAVE_SHARED ? false : NO_SHARED_REASON }, () => {
  before(setupBackend);

  it('wanda 50%: exactly half of each row; the report equals a recount from the checkpoint', () => {
    const out = path.join(tmpDir('wanda'), 'out');
    const r = runCli(['prune', '--model', STORIES_BIN, '--method', 'wanda', '--sparsity', '0.5', '--calib', CALIB,
      '--nsamples', '8', '--seqlen', '64', '--out', out]);
    assert.equal(r.status, 0, r.stderr);
    const { tensors } = readHfCheckpoint(out);
    let zeros = 0;
    let total = 0;
    for (const name of linearNames([...tensors.keys()])) {
      const t = tensors.get(name)!;
      const [rows, cols] = t.shape;
      for (let i = 0; i < rows; i++) {
        let z = 0;
        for (let j = 0; j < cols; j++) if (t.data[i * cols + j] === 0) z++;
        assert.equal(z, Math.floor(cols / 2), `${name} row ${i}`);
        zeros += z;
      }
      total += rows * cols;
    }
    const report = r.json as { zeros: { overall: { zeros: number; total: number } }; calibration: { offsets: number[] } };
    assert.equal(report.zeros.overall.zeros, zeros);
    assert.equal(report.zeros.overall.total, total);
    assert.equal(report.calibration.offsets.length, 8);
    // The saved report travels with the checkpoint.
    assert.ok(fs.existsSync(path.join(out, 'prune_report.json')));
  });

  it('2:4: exactly 2 non-zeros in every 4 consecutive inputs; offsets replay reproduces the masks', () => {
    const dir = tmpDir('nm');
    const a = runCli(['prune', '--model', STORIES_BIN, '--method', 'wanda', '--pattern', '2:4', '--calib', CALIB,
      '--nsamples', '4', '--seqlen', '64', '--seed', '3', '--out', path.join(dir, 'a')]);
    assert.equal(a.status, 0, a.stderr);
    const offsets = (a.json as { calibration: { offsets: number[] } }).calibration.offsets;
    const b = runCli(['prune', '--model', STORIES_BIN, '--method', 'wanda', '--pattern', '2:4', '--calib', CALIB,
      '--calib-offsets', offsets.join(','), '--seqlen', '64', '--out', path.join(dir, 'b')]);
    assert.equal(b.status, 0, b.stderr);
    const ta = readHfCheckpoint(path.join(dir, 'a')).tensors;
    const tb = readHfCheckpoint(path.join(dir, 'b')).tensors;
    for (const name of linearNames([...ta.keys()])) {
      const t = ta.get(name)!;
      for (let i = 0; i < t.data.length; i += 4) {
        const nz = [0, 1, 2, 3].filter((k) => t.data[i + k] !== 0).length;
        assert.ok(nz <= 2, `${name} block at ${i} has ${nz} non-zeros`);
      }
      assert.deepEqual(t.data, tb.get(name)!.data, `${name} differs under replayed offsets`);
    }
  });

  const bad: [string, string[], RegExp][] = [
    ['unknown method lists the valid ones', ['--method', 'nosuch'], /unknown method 'nosuch'.*magnitude.*wanda/],
    ['unknown option lists the valid ones', ['--method', 'magnitude', '--option', 'scop=row'], /unknown option.*'scop'.*valid options: scope/],
    ['sparsity 1.0', ['--method', 'magnitude', '--sparsity', '1'], /--sparsity must be/],
    ['negative sparsity', ['--method', 'magnitude', '--sparsity', '-0.1'], /--sparsity must be/],
    ['N:M that does not divide the inputs', ['--method', 'magnitude', '--pattern', '3:5'], /does not fit.*not a multiple of 5/],
    ['calibration text shorter than one window', ['--method', 'wanda', '--calib', '__SHORT__', '--seqlen', '64'], /shorter than one window/],
    ['a data-driven method without --calib says so', ['--method', 'wanda'], /method 'wanda' needs calibration data: pass --calib FILE/],
    ['a missing --calib-offsets file is named as a file', ['--method', 'wanda', '--calib', CALIB, '--calib-offsets', 'offsets.txt'],
      /--calib-offsets: file offsets\.txt not found/],
    ['--sparsity that is not a number', ['--method', 'magnitude', '--sparsity', 'abc'], /--sparsity expects a number, got "abc"/],
    ['--seqlen beyond the model context', ['--method', 'wanda', '--calib', CALIB, '--seqlen', '1024'], /--seqlen 1024 exceeds the model's trained context of 512/],
  ];
  for (const [what, args, pattern] of bad) {
    it(`bad input: ${what} — clear error, nothing written`, () => {
      const dir = tmpDir('bad');
      const short = path.join(dir, 'short.txt');
      fs.writeFileSync(short, 'Once upon a time.');
      const out = path.join(dir, 'out');
      const r = runCli(['prune', '--model', STORIES_BIN, ...args.map((a) => (a === '__SHORT__' ? short : a)), '--out', out]);
      assert.notEqual(r.status, 0);
      assert.match(String(r.json?.error), pattern);
      assert.ok(!fs.existsSync(out), '--out must not be created');
      assert.deepEqual(fs.readdirSync(dir), ['short.txt'], 'no partial output');
    });
  }
});
