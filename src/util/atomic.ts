/**
 * Atomic file replacement, the one writer for checkpoints and results: `write` fills
 * `<final>.tmp-<pid>`, which is fsynced and renamed over `final`; then the folder is fsynced so
 * the rename itself is durable. A crash leaves either the old file or the new one, never half of
 * one; a write or rename that fails removes its temporary file.
 */
import fs from 'node:fs';
import path from 'node:path';

const TEMP_SUFFIX = /\.tmp-\d+$/;

export function writeAtomic(final: string, write: (tmp: string) => void): void {
  const tmp = `${final}.tmp-${process.pid}`;
  try {
    write(tmp);
    fsyncPath(tmp, 'r+');
    fs.renameSync(tmp, final);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
  // Best effort: not every platform lets a folder be opened and fsynced.
  try {
    fsyncPath(path.dirname(final), 'r');
  } catch { /* the file itself is complete either way */ }
}

/** `writeAtomic` for a string or byte content. */
export function writeFileAtomic(file: string, data: string | Uint8Array): void {
  writeAtomic(file, (tmp) => fs.writeFileSync(tmp, data));
}

/**
 * Remove the temporary files that writers killed half-way left in `dir` (of `file` only, when
 * given). Only safe while no other process writes there (checkpoint folders, locked results).
 */
export function removeStaleTemps(dir: string, file?: string): void {
  if (!fs.existsSync(dir)) return;
  const base = file === undefined ? null : path.basename(file);
  for (const name of fs.readdirSync(dir)) {
    if (!TEMP_SUFFIX.test(name)) continue;
    if (base !== null && name.replace(TEMP_SUFFIX, '') !== base) continue;
    fs.rmSync(path.join(dir, name), { force: true });
  }
}

function fsyncPath(p: string, flags: string): void {
  const fd = fs.openSync(p, flags);
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}
