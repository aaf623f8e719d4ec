/**
 * Atomic file replacement for checkpoints: `write` fills `<final>.tmp-<pid>`, which is fsynced
 * and renamed over `final`, so a crash leaves either the old file or the new one, never half.
 */
import fs from 'node:fs';

export function writeAtomic(final: string, write: (tmp: string) => void): void {
  const tmp = `${final}.tmp-${process.pid}`;
  write(tmp);
  const fd = fs.openSync(tmp, 'r+');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, final);
}
