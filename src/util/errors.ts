/**
 * Errors that reach the user. Every one says what is wrong and, where a file is involved,
 * which file, so a CLI can print `message` alone and the user knows what to fix.
 */
export class PruneLabError extends Error {
  constructor(message: string, readonly file?: string) {
    super(file ? `${file}: ${message}` : message);
    this.name = 'PruneLabError';
  }
}

/** A checkpoint (weights or config) that cannot be read as declared. */
export class CheckpointError extends PruneLabError {
  override name = 'CheckpointError';
}

/** Bad configuration or option values: names the key and what was expected. */
export class ConfigError extends PruneLabError {
  override name = 'ConfigError';
}

/** Tokenizer missing, unreadable or inconsistent with the model. */
export class TokenizerError extends PruneLabError {
  override name = 'TokenizerError';
}

/** Input data (text, tasks, calibration) that cannot serve the request. */
export class DataError extends PruneLabError {
  override name = 'DataError';
}

/** Not enough memory (host or backend) for the request: says what was needed, what is available, what helps. */
export class ResourceError extends PruneLabError {
  override name = 'ResourceError';
}

/** A command line that cannot be parsed: unknown flag, missing required flag, bad choice. */
export class UsageError extends PruneLabError {
  override name = 'UsageError';
}

/** What a failing file-system call was doing, in words, by syscall name. */
const SYSCALL_WORDS: Record<string, string> = {
  mkdir: 'create folder', open: 'open', write: 'write', read: 'read', rename: 'rename', unlink: 'delete', rmdir: 'delete folder',
  rm: 'delete', copyfile: 'copy to', scandir: 'list folder', stat: 'read', lstat: 'read', access: 'access', fsync: 'flush', close: 'close',
  statfs: 'check free space of',
};

/** Plain words for the errno names a user meets (the name itself is always printed too). */
const ERRNO_WORDS: Record<string, string> = {
  EROFS: 'read-only file system', ENOSPC: 'no space left on the device', EDQUOT: 'disk quota exceeded',
  ENOTDIR: 'a part of the path is a file, not a folder', EISDIR: 'is a folder', ENOENT: 'no such file or folder',
  EACCES: 'permission denied', EPERM: 'operation not permitted', EEXIST: 'already exists', ENOTEMPTY: 'folder not empty',
  EMFILE: 'too many open files', ENAMETOOLONG: 'name too long', EXDEV: 'not on the same file system', EIO: 'input/output error',
};

/** A raw Node file-system (errno) error, not yet explained. */
export function isErrnoException(e: unknown): e is NodeJS.ErrnoException & { code: string } {
  return e instanceof Error && !(e instanceof PruneLabError) && typeof (e as NodeJS.ErrnoException).code === 'string' && /^E[A-Z0-9]+$/.test((e as NodeJS.ErrnoException).code!);
}

/**
 * A file-system call that failed: one line saying what was being done, where, and the errno
 * name (`EROFS`, `ENOTDIR`, `ENOSPC` …) in words, instead of Node's raw text and stack.
 */
export class FileSystemError extends PruneLabError {
  override name = 'FileSystemError';
  constructor(message: string, readonly code: string, file?: string) {
    super(message, file);
  }

  /** Wrap a Node errno exception; `what` overrides the syscall's words (e.g. 'write the checkpoint to'). */
  static from(err: NodeJS.ErrnoException & { code: string }, what?: string, where?: string): FileSystemError {
    const target = where ?? err.path ?? '(unknown path)';
    const doing = what ?? (err.syscall ? SYSCALL_WORDS[err.syscall] ?? err.syscall : 'access');
    const words = ERRNO_WORDS[err.code];
    const fs = new FileSystemError(`cannot ${doing} ${target}: ${err.code}${words ? ` (${words})` : ''}`, err.code);
    fs.cause = err;
    return fs;
  }
}
