/**
 * No command destroys a checkpoint: `--out` is refused when it holds one (unless --overwrite, and
 * then replaced only whole) or is an input; file-system failures (a path under a file, a
 * read-only or full disk) are one line with the errno name, exit 2, nothing left behind; an
 * interrupt reports what was done, removes the unfinished output, and keeps resumable training.
 */
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { HAVE_SHARED, NO_SHARED_REASON, shared, STORIES_BIN, tmpDir } from './support.ts';
import { runCli, runCliAsync, type RunningCli } from './cli-support.ts';

const TEXT = shared('text', 'tinystories-sample.txt');

function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const f of fs.readdirSync(dir).sort()) out[f] = fs.readFileSync(path.join(dir, f), 'base64');
  return out;
}

function assertOneLineError(r: { status: number | null; stderr: string; json: Record<string, unknown> | null }, pattern: RegExp): void {
  assert.equal(r.status, 2, r.stderr);
  assert.match(String(r.json?.error), pattern);
  const lines = r.stderr.split('\n').filter((l) => l.startsWith('prunelab: ') && !l.startsWith('prunelab: backend'));
  assert.equal(lines.length, 1, r.stderr);
  assert.doesNotMatch(r.stderr, /^\s+at /m, 'no stack trace');
}

/** Until `test` holds (polled), or the process ended. */
async function waitFor(p: RunningCli, test: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 2400; i++) {
    if (test()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  p.kill('SIGKILL');
  assert.fail(`timed out waiting for ${what}; stderr:\n${p.stderr()}`);
}

/** Whether this machine lets us mount a small tmpfs in a private user+mount namespace. */
const CAN_MOUNT = spawnSync('unshare', ['-rm', 'sh', '-c', 'mount -t tmpfs -o size=64k tmpfs /mnt'], { encoding: 'utf8' }).status === 0;

describe('output safety (CLI)', { skip: HAVE_SHARED ? false : NO_SHARED_REASON }, () => {
  let pruned: string;
  let root: string;
  before(() => {
    root = tmpDir('safety');
    pruned = path.join(root, 'pruned');
    const r = runCli(['prune', '--model', STORIES_BIN, '--method', 'magnitude', '--sparsity', '0.5', '--out', pruned]);
    assert.equal(r.status, 0, r.stderr);
  });

  it('convert into an existing pruned checkpoint is refused; with --overwrite the whole folder is replaced', () => {
    const before = snapshot(pruned);
    const refused = runCli(['convert', '--model', STORIES_BIN, '--out', pruned]);
    assertOneLineError(refused, /--out .*pruned exists and is not empty: .*--overwrite/);
    assert.deepEqual(snapshot(pruned), before, 'checkpoint untouched');

    const dir = tmpDir('overwrite');
    const target = path.join(dir, 'ckpt');
    fs.cpSync(pruned, target, { recursive: true });
    const r = runCli(['convert', '--model', STORIES_BIN, '--out', target, '--overwrite']);
    assert.equal(r.status, 0, r.stderr);
    // The dense conversion does not sit under the old report claiming 50% magnitude pruning.
    assert.deepEqual(fs.readdirSync(target).sort(), ['config.json', 'model.safetensors', 'tokenizer.bin']);
    assert.deepEqual(fs.readdirSync(dir), ['ckpt'], 'no temporary or set-aside folder left');
  });

  it('--out equal to, or inside, the --model checkpoint is refused and the input stays as it was', () => {
    const before = snapshot(pruned);
    for (const out of [pruned, path.join(pruned, 'ft')]) {
      const r = runCli(['finetune', '--model', pruned, '--data', TEXT, '--steps', '1', '--out', out, '--overwrite']);
      assertOneLineError(r, /--out .* is (the same as|inside) --model .*pruned: write the output to a new folder/);
    }
    assert.deepEqual(snapshot(pruned), before);
  });

  it('--out under a file: ENOTDIR in one line, exit 2, before loading anything', () => {
    const dir = tmpDir('enotdir');
    fs.writeFileSync(path.join(dir, 'file.txt'), 'x');
    const r = runCli(['convert', '--model', STORIES_BIN, '--out', path.join(dir, 'file.txt', 'out')]);
    assertOneLineError(r, /^--out .*file\.txt\/out: cannot create folder .*: ENOTDIR \(a part of the path is a file, not a folder\)$/);
    assert.equal(r.json?.code, 'ENOTDIR');
    assert.doesNotMatch(r.stderr, /backend wasm/, 'refused before the backend started');
    assert.deepEqual(fs.readdirSync(dir), ['file.txt']);
  });

  it('a read-only disk is reported as EROFS, before any computing', { skip: CAN_MOUNT ? false : 'cannot mount a tmpfs here (unshare -rm)' }, () => {
    const mnt = tmpDir('rofs');
    const wrap = ['unshare', '-rm', 'sh', '-c', `mount -t tmpfs tmpfs '${mnt}' && mount -o remount,ro '${mnt}' && exec "$0" "$@"`];
    const r = runCli(['prune', '--model', STORIES_BIN, '--method', 'magnitude', '--out', path.join(mnt, 'a', 'out')], 120_000, wrap);
    assertOneLineError(r, /^--out .*\/a\/out: cannot create folder .*\/a: EROFS \(read-only file system\)$/);
    assert.equal(r.json?.code, 'EROFS');
    assert.doesNotMatch(r.stderr, /prune: magnitude/, 'nothing was pruned first');
  });

  it('a full disk leaves the old checkpoint intact and nothing partial (ENOSPC)', { skip: CAN_MOUNT ? false : 'cannot mount a tmpfs here (unshare -rm)' }, () => {
    // A 1.2 MB disk holding an F16 checkpoint (0.53 MB) has no room for its F32 conversion (1.05 MB).
    const mnt = tmpDir('full');
    const seen = tmpDir('full-after');
    const f16 = path.join(tmpDir('f16'), 'ckpt');
    assert.equal(runCli(['convert', '--model', STORIES_BIN, '--out', f16, '--dtype', 'f16']).status, 0);
    const wrap = ['unshare', '-rm', 'sh', '-c',
      `mount -t tmpfs -o size=1200k tmpfs '${mnt}' && cp -r '${f16}' '${mnt}/ckpt' && "$0" "$@"; rc=$?; cp -r '${mnt}/.' '${seen}/'; exit $rc`];
    const r = runCli(['convert', '--model', STORIES_BIN, '--out', path.join(mnt, 'ckpt'), '--overwrite'], 120_000, wrap);
    assertOneLineError(r, /ENOSPC \(no space left on the device\)/);
    assert.equal(r.json?.code, 'ENOSPC');
    assert.deepEqual(fs.readdirSync(seen), ['ckpt'], 'no partial folder');
    assert.deepEqual(snapshot(path.join(seen, 'ckpt')), snapshot(f16), 'the old checkpoint, byte for byte');
  });

  it('SIGINT during prune: one line and one JSON object saying what was done, exit 130, no partial output', async () => {
    const dir = tmpDir('sigint');
    const out = path.join(dir, 'out');
    const r = await runCliAsync(['prune', '--model', STORIES_BIN, '--method', 'sparsegpt', '--calib', TEXT, '--nsamples', '64',
      '--seqlen', '256', '--out', out], {
      whileRunning: async (p) => {
        await waitFor(p, () => /prune: sparsegpt at/.test(p.stderr()), 'pruning to start');
        p.kill('SIGINT');
      },
    });
    assert.equal(r.status, 130, r.stderr);
    assert.ok(r.json, `one JSON object: ${r.stdout}`);
    assert.equal(r.json.kind, 'Interrupted');
    assert.equal(r.json.signal, 'SIGINT');
    assert.match(String(r.json.lastProgress), /^prune: /);
    assert.match(r.stderr, /^prunelab: interrupted by SIGINT; last progress: prune: .*; no output written/m);
    assert.deepEqual(fs.readdirSync(dir), [], 'neither --out nor its temporary folder');
  });

  it('SIGTERM during finetune keeps the saved training state; --resume finishes it', async () => {
    const dir = tmpDir('sigterm');
    const out = path.join(dir, 'ft');
    const args = ['finetune', '--model', STORIES_BIN, '--data', TEXT, '--steps', '20', '--seqlen', '64', '--out', out];
    const r = await runCliAsync(args, {
      whileRunning: async (p) => {
        await waitFor(p, () => fs.existsSync(path.join(`${out}.partial`, '.train')), 'a saved training state');
        p.kill('SIGTERM');
      },
    });
    assert.equal(r.status, 143, r.stderr);
    assert.equal(r.json?.kind, 'Interrupted');
    assert.deepEqual(r.json?.kept, [`${out}.partial`]);
    assert.match(r.stderr, /is kept: continue it with --resume/);
    assert.deepEqual(fs.readdirSync(dir), ['ft.partial']);
    assertOneLineError(runCli(args), /ft\.partial holds an unfinished run .*pass --resume/);
    const done = runCli([...args, '--resume']);
    assert.equal(done.status, 0, done.stderr);
    assert.equal(done.json?.steps, 20);
    assert.deepEqual(fs.readdirSync(dir), ['ft']);
    assert.deepEqual(fs.readdirSync(out).sort(), ['config.json', 'model.safetensors', 'tokenizer.bin']);
  });
});
