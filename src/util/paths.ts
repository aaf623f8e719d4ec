/** Where things live: the repository root, and the shared data folder beside it. */
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** `PRUNELAB_SHARED_DATA`, else `../shared/data` beside the repository. */
export function sharedDataDir(): string {
  return process.env.PRUNELAB_SHARED_DATA ?? path.resolve(REPO_ROOT, '../shared/data');
}
