/**
 * The one way a command writes a model folder (`--out`). Before any computing, `prepare` refuses
 * an `--out` that is an input (or holds one, or lies inside one) and a non-empty `--out` without
 * `overwrite`, and creates the temporary sibling folder the files go into, which proves that the
 * place is creatable and writable. `commit` syncs the files and renames the folder into place
 * (an overwritten folder is moved aside first and deleted last), so `--out` holds either what
 * was there or the complete new checkpoint, never a mix. `discard` removes the temporary folder
 * and any parent folders it had to create. This is src/util/atomic.ts's write-sync-rename for a
 * whole folder (its `writeAtomic` opens the temporary path as a file, so it cannot serve here).
 *
 * Resumable commands (training) use a stable `<out>.partial` folder that survives an interrupt,
 * so a later `--resume` finds its state there.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ConfigError, FileSystemError } from '../util/errors.ts';
import { registerTemporary, releaseTemporary } from '../util/supervision.ts';
import { fsStep, makeWritableDir, missingAncestors, removeTree } from '../util/writable-dir.ts';

export interface NamedPath {
  /** The flag that named it, for messages (`--model`). */
  flag: string;
  path: string;
}

export interface CheckpointOutOptions {
  out: string;
  /** Flag naming the output in messages; default `--out`. */
  flag?: string;
  /** Replace a non-empty `out` (only once the new checkpoint is complete). */
  overwrite: boolean;
  /** Paths the command reads: `out` may not be one of them, inside one, or hold one. */
  inputs?: NamedPath[];
  /**
   * Resumable work folder `<out>.partial`: `resume` reuses an existing one (else it is refused);
   * `state` names the subfolder holding the saved training state, which an interrupt or failure
   * keeps (a work folder without it is removed like any temporary folder).
   */
  resumable?: { resume: boolean; state: string };
}

/** Real path of `p`, resolving the deepest existing ancestor when `p` itself does not exist yet. */
function realish(p: string): string {
  const abs = path.resolve(p);
  let head = abs;
  const tail: string[] = [];
  for (;;) {
    try {
      return path.join(fs.realpathSync(head), ...tail);
    } catch {
      const parent = path.dirname(head);
      if (parent === head) return abs;
      tail.unshift(path.basename(head));
      head = parent;
    }
  }
}

function isInside(child: string, parent: string): boolean {
  const rel = path.relative(parent, child);
  return rel !== '' && !rel.startsWith('..') && !path.isAbsolute(rel);
}

/** Refuse an output that would overwrite, or be written into, something the command reads. */
export function checkOutputAgainstInputs(out: string, flag: string, inputs: readonly NamedPath[]): void {
  const o = realish(out);
  for (const input of inputs) {
    const i = realish(input.path);
    let why: string | null = null;
    if (o === i) why = `is the same as ${input.flag} ${input.path}`;
    else if (isInside(o, i)) why = `is inside ${input.flag} ${input.path}`;
    else if (isInside(i, o)) why = `holds ${input.flag} ${input.path}, which writing it would replace`;
    if (why) throw new ConfigError(`${flag} ${out} ${why}: write the output to a new folder`);
  }
}

function isEmptyDir(dir: string): boolean {
  return fs.readdirSync(dir).length === 0;
}

/** Read-only descriptor: fsync works through it, and copied files may be read-only (tokenizers). */
function syncFile(file: string): void {
  const fd = fs.openSync(file, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

function syncDir(dir: string): void {
  try {
    const fd = fs.openSync(dir, 'r');
    try {
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    // Some file systems refuse fsync on folders; the rename is still atomic.
  }
}

function folderBytes(dir: string): { files: string[]; bytes: number } {
  const files = fs.readdirSync(dir).sort();
  return { files, bytes: files.reduce((a, f) => a + fs.statSync(path.join(dir, f)).size, 0) };
}

export class CheckpointWriter {
  /** Absolute `--out`. */
  readonly out: string;
  /** The folder to fill: the temporary sibling that `commit` renames into place. */
  readonly work: string;
  /** A resumable work folder from an earlier, unfinished run was found and reused. */
  readonly resumed: boolean;
  private readonly flag: string;
  private readonly shown: string;
  private readonly createdParents: string[];
  private readonly stateDir?: string;
  private state: 'open' | 'committed' | 'discarded' = 'open';

  private constructor(opts: CheckpointOutOptions, work: string, resumed: boolean, createdParents: string[]) {
    this.flag = opts.flag ?? '--out';
    this.shown = opts.out;
    this.out = path.resolve(opts.out);
    this.work = work;
    this.resumed = resumed;
    this.createdParents = createdParents;
    this.stateDir = opts.resumable?.state;
  }

  /** Validate `--out` and create the temporary folder; throws ConfigError / FileSystemError before any work. */
  static prepare(opts: CheckpointOutOptions): CheckpointWriter {
    const flag = opts.flag ?? '--out';
    const out = path.resolve(opts.out);
    checkOutputAgainstInputs(opts.out, flag, opts.inputs ?? []);
    fsStep(`${flag} ${opts.out}`, 'read', out, () => {
      if (!fs.existsSync(out)) return;
      if (!fs.statSync(out).isDirectory()) throw new ConfigError(`${flag} ${opts.out} is a file, not a folder: choose a folder name`);
      if (!opts.overwrite && !isEmptyDir(out)) {
        throw new ConfigError(`${flag} ${opts.out} exists and is not empty: choose a new folder, or pass --overwrite to replace it once the new checkpoint is complete`);
      }
    });
    const work = opts.resumable ? `${out}.partial` : `${out}.partial-${process.pid}`;
    let resumed = false;
    if (fs.existsSync(work)) {
      if (!opts.resumable) fs.rmSync(work, { recursive: true, force: true }); // left by a dead process with our pid
      else if (opts.resumable.resume) resumed = true;
      else throw new ConfigError(`${work} holds an unfinished run for ${flag} ${opts.out}: pass --resume to continue it, or delete it`);
    }
    const label = `${flag} ${opts.out}`;
    let createdParents: string[] = [];
    if (!resumed) {
      // Registered first: a signal may arrive while the folder is being made.
      const parents = missingAncestors(work);
      registerTemporary(work, { keepIf: opts.resumable ? path.join(work, opts.resumable.state) : undefined, removeIfEmpty: parents });
      try {
        createdParents = makeWritableDir(work, label).slice(0, -1);
      } catch (e) {
        releaseTemporary(work);
        throw e;
      }
    } else {
      registerTemporary(work, { keepIf: work });
    }
    return new CheckpointWriter(opts, work, resumed, createdParents);
  }

  /** Refuse early when the file system has less free space than `bytes` (plus 1 %). */
  ensureSpace(bytes: number): void {
    let free: number;
    try {
      const s = fs.statfsSync(this.work);
      free = s.bavail * s.bsize;
    } catch {
      return; // no statfs here: the writes themselves will report ENOSPC
    }
    if (free < bytes * 1.01) {
      const mb = (n: number) => `${(n / 1e6).toFixed(1)} MB`;
      throw new FileSystemError(`${this.flag} ${this.shown}: not enough space for the checkpoint: it needs about ${mb(bytes)}, ${mb(free)} free: ENOSPC (no space left on the device)`, 'ENOSPC');
    }
  }

  /** Sync the filled folder and rename it into place; returns the files written and their bytes. */
  commit(): { files: string[]; bytes: number } {
    if (this.state !== 'open') throw new Error(`checkpoint writer already ${this.state}`);
    const { flag, shown, out, work } = this;
    const listing = fsStep(`${flag} ${shown}`, 'flush', work, () => {
      const l = folderBytes(work);
      for (const f of l.files) if (fs.statSync(path.join(work, f)).isFile()) syncFile(path.join(work, f));
      return l;
    });
    fsStep(`${flag} ${shown}`, 'move the new checkpoint to', out, () => {
      if (!fs.existsSync(out)) {
        fs.renameSync(work, out);
      } else if (isEmptyDir(out)) {
        fs.rmdirSync(out);
        fs.renameSync(work, out);
      } else {
        // Replace: the old folder goes aside first and comes back if the swap fails.
        const aside = `${out}.old-${process.pid}`;
        fs.renameSync(out, aside);
        try {
          fs.renameSync(work, out);
        } catch (e) {
          fs.renameSync(aside, out);
          throw e;
        }
        fs.rmSync(aside, { recursive: true, force: true });
      }
    });
    syncDir(path.dirname(out));
    this.state = 'committed';
    releaseTemporary(work);
    return listing;
  }

  /**
   * Remove the temporary folder unless committed. A resumable folder from an earlier run, or one
   * holding a saved training state, is kept; returns whether it was kept.
   */
  discard(): boolean {
    if (this.state !== 'open') return false;
    this.state = 'discarded';
    const keep = this.stateDir !== undefined && (this.resumed || fs.existsSync(path.join(this.work, this.stateDir)));
    if (!keep) removeTree(this.work, this.createdParents);
    releaseTemporary(this.work);
    return keep;
  }
}

/**
 * Write a checkpoint: `prepare`, run `body` (which fills `writer.work` and calls `commit`), and
 * on any failure discard the temporary folder, leaving `--out` untouched. A resumable run whose
 * body returns without committing (stopped on purpose) keeps its work folder.
 */
export async function withCheckpointWriter<T>(opts: CheckpointOutOptions, body: (w: CheckpointWriter) => Promise<T>): Promise<T> {
  const w = CheckpointWriter.prepare(opts);
  try {
    const r = await body(w);
    if (!opts.resumable) w.discard();
    return r;
  } catch (e) {
    const kept = w.discard();
    if (kept && e instanceof Error) e.message += ` (the unfinished run in ${w.work} is kept: fix the problem and continue with --resume, or delete it)`;
    throw e;
  }
}
