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
