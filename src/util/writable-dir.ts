/**
 * Create a folder and prove it writable before any work goes into it, reporting a failure as
 * one line with the errno name. Missing parents are created one level at a time: Node's
 * recursive mkdir reports a read-only file system (EROFS) as ENOENT.
 */
import fs from 'node:fs';
import path from 'node:path';
import { FileSystemError, isErrnoException } from './errors.ts';

/** Run a file-system step; an errno failure becomes `<label>: cannot <what> <where>: ECODE (words)`. */
export function fsStep<T>(label: string, what: string, where: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (!isErrnoException(e)) throw e;
    const err = FileSystemError.from(e, what, where);
    err.message = `${label}: ${err.message}`;
    throw err;
  }
}

/** Missing ancestors of `dir`, outermost first (what `mkdir -p` would create). */
export function missingAncestors(dir: string): string[] {
  const out: string[] = [];
  for (let d = path.dirname(path.resolve(dir)); !fs.existsSync(d); d = path.dirname(d)) {
    out.unshift(d);
    if (path.dirname(d) === d) break;
  }
  return out;
}

/** Remove `dir`, then the parents created for it (innermost first) while they are empty. */
export function removeTree(dir: string, createdParents: readonly string[]): void {
  fs.rmSync(dir, { recursive: true, force: true });
  for (const p of [...createdParents].reverse()) {
    try {
      fs.rmdirSync(p);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') break; // not empty: someone else uses it
    }
  }
}

/**
 * Make `dir` (and its missing parents) exist and be writable; returns the folders it created,
 * outermost first. On failure nothing it created is left and the FileSystemError names `label`.
 */
export function makeWritableDir(dir: string, label: string): string[] {
  const abs = path.resolve(dir);
  const created: string[] = [];
  try {
    for (const d of [...missingAncestors(abs), abs]) {
      if (d === abs && fs.existsSync(abs)) break;
      fsStep(label, 'create folder', d, () => fs.mkdirSync(d));
      created.push(d);
    }
    const probe = path.join(abs, `.write-probe-${process.pid}`);
    fsStep(label, 'write to', abs, () => {
      fs.writeFileSync(probe, 'prunelab');
      fs.rmSync(probe);
    });
  } catch (e) {
    if (created.length > 0) removeTree(created[created.length - 1], created.slice(0, -1));
    throw e;
  }
  return created;
}
