/**
 * The checkpoint writer (src/io/checkpoint-writer.ts) on its own: what it refuses before any
 * work, and that a failure at any point leaves the old `--out` byte for byte and nothing else.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { tmpDir } from './support.ts';
import { CheckpointWriter, withCheckpointWriter } from '../src/io/checkpoint-writer.ts';
import { ConfigError, FileSystemError } from '../src/util/errors.ts';

/** Every file under `dir` with its bytes, for before/after comparisons. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const e of fs.readdirSync(dir, { recursive: true, withFileTypes: true })) {
    const p = path.join(e.parentPath, e.name);
    if (e.isFile()) out[path.relative(dir, p)] = fs.readFileSync(p, 'base64');
  }
  return out;
}

function oldCheckpoint(root: string): string {
  const out = path.join(root, 'ckpt');
  fs.mkdirSync(out);
  fs.writeFileSync(path.join(out, 'config.json'), '{"old":true}');
  fs.writeFileSync(path.join(out, 'prune_report.json'), '{"method":"wanda"}');
  return out;
}

/** An ENOSPC as Node's fs raises it. */
function diskFull(file: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`ENOSPC: no space left on device, write '${file}'`), { code: 'ENOSPC', syscall: 'write', path: file });
}

describe('checkpoint writer', () => {
  it('refuses a non-empty --out without overwrite, before creating anything', () => {
    const root = tmpDir('cw');
    const out = oldCheckpoint(root);
    assert.throws(() => CheckpointWriter.prepare({ out, overwrite: false }), (e: Error) =>
      e instanceof ConfigError && /--out .*ckpt exists and is not empty.*--overwrite/.test(e.message));
    assert.deepEqual(fs.readdirSync(root), ['ckpt']);
  });

  it('refuses --out equal to an input, inside one, or holding one', () => {
    const root = tmpDir('cw');
    const model = oldCheckpoint(root);
    const cases: [string, string, RegExp][] = [
      [model, model, /is the same as --model/],
      [path.join(model, 'sub'), model, /is inside --model/],
      [root, model, /holds --model/],
    ];
    for (const [out, input, why] of cases) {
      assert.throws(() => CheckpointWriter.prepare({ out, overwrite: true, inputs: [{ flag: '--model', path: input }] }), (e: Error) =>
        e instanceof ConfigError && why.test(e.message));
    }
    // Through a symbolic link too.
    const link = path.join(root, 'link');
    fs.symlinkSync(model, link);
    assert.throws(() => CheckpointWriter.prepare({ out: link, overwrite: true, inputs: [{ flag: '--model', path: model }] }), /is the same as --model/);
    assert.deepEqual(fs.readdirSync(root).sort(), ['ckpt', 'link']);
  });

  it('a failure while writing (disk full) removes the temporary folder and leaves the old checkpoint as it was', async () => {
    const root = tmpDir('cw');
    const out = oldCheckpoint(root);
    const before = snapshot(out);
    await assert.rejects(withCheckpointWriter({ out, overwrite: true }, async (w) => {
      fs.writeFileSync(path.join(w.work, 'config.json'), '{"new":true}');
      fs.writeFileSync(path.join(w.work, 'model.safetensors'), Buffer.alloc(100));
      throw diskFull(path.join(w.work, 'model.safetensors'));
    }), /ENOSPC/);
    assert.deepEqual(snapshot(out), before);
    assert.deepEqual(fs.readdirSync(root), ['ckpt'], 'no partial folder left');
  });

  it('overwrite: the new folder replaces the old one whole (no stale file survives), nothing left beside it', async () => {
    const root = tmpDir('cw');
    const out = oldCheckpoint(root);
    const listing = await withCheckpointWriter({ out, overwrite: true }, async (w) => {
      fs.writeFileSync(path.join(w.work, 'config.json'), '{"new":true}');
      return w.commit();
    });
    assert.deepEqual(listing.files, ['config.json']);
    assert.deepEqual(snapshot(out), { 'config.json': Buffer.from('{"new":true}').toString('base64') });
    assert.deepEqual(fs.readdirSync(root), ['ckpt']);
  });

  it('a missing --out and its missing parents are created at commit; on failure the parents go too', async () => {
    const root = tmpDir('cw');
    const out = path.join(root, 'a', 'b', 'ckpt');
    await assert.rejects(withCheckpointWriter({ out, overwrite: false }, async () => { throw new Error('boom'); }), /boom/);
    assert.deepEqual(fs.readdirSync(root), []);
    await withCheckpointWriter({ out, overwrite: false }, async (w) => {
      fs.writeFileSync(path.join(w.work, 'config.json'), '{}');
      w.commit();
    });
    assert.deepEqual(fs.readdirSync(out), ['config.json']);
    assert.deepEqual(fs.readdirSync(path.join(root, 'a', 'b')), ['ckpt']);
  });

  it('--out under a file: one FileSystemError naming the flag, the folder and ENOTDIR', () => {
    const root = tmpDir('cw');
    fs.writeFileSync(path.join(root, 'file.txt'), 'x');
    assert.throws(() => CheckpointWriter.prepare({ out: path.join(root, 'file.txt', 'out'), overwrite: false }), (e: Error) =>
      e instanceof FileSystemError && e.code === 'ENOTDIR' && /^--out .*file\.txt\/out: cannot create folder .*: ENOTDIR \(/.test(e.message));
    assert.deepEqual(fs.readdirSync(root), ['file.txt']);
  });

  it('too little free space is refused before anything is written', () => {
    const root = tmpDir('cw');
    const w = CheckpointWriter.prepare({ out: path.join(root, 'ckpt'), overwrite: false });
    assert.throws(() => w.ensureSpace(Number.MAX_SAFE_INTEGER), (e: Error) => e instanceof FileSystemError && e.code === 'ENOSPC' && /not enough space/.test(e.message));
    w.discard();
    assert.deepEqual(fs.readdirSync(root), []);
  });

  it('resumable: kept with its training state on failure, refused without --resume, reused with it', async () => {
    const root = tmpDir('cw');
    const out = path.join(root, 'ft');
    const resumable = { resume: false, state: '.train' };
    // Failing before any state was saved leaves nothing.
    await assert.rejects(withCheckpointWriter({ out, overwrite: false, resumable }, async () => { throw new Error('early'); }), /early/);
    assert.deepEqual(fs.readdirSync(root), []);
    // Failing after a state was saved keeps it, and says so.
    await assert.rejects(withCheckpointWriter({ out, overwrite: false, resumable }, async (w) => {
      fs.mkdirSync(path.join(w.work, '.train'));
      throw new Error('late');
    }), /late \(the unfinished run in .*ft\.partial is kept: .*--resume/);
    assert.deepEqual(fs.readdirSync(root), ['ft.partial']);
    assert.throws(() => CheckpointWriter.prepare({ out, overwrite: false, resumable }), /ft\.partial holds an unfinished run.*pass --resume/);
    await withCheckpointWriter({ out, overwrite: false, resumable: { ...resumable, resume: true } }, async (w) => {
      assert.ok(w.resumed);
      fs.rmSync(path.join(w.work, '.train'), { recursive: true });
      fs.writeFileSync(path.join(w.work, 'config.json'), '{}');
      w.commit();
    });
    assert.deepEqual(fs.readdirSync(root), ['ft']);
  });
});
