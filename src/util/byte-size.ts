/** Sizes given on the command line (`--shard-size`, `--device-memory`): bytes, or a number with a unit. */
import { ConfigError } from './errors.ts';

// KB MB GB TB are powers of 1000, as HF writes shard sizes; KiB MiB GiB TiB powers of 1024.
const UNITS: Record<string, number> = {
  '': 1, b: 1, k: 1e3, kb: 1e3, m: 1e6, mb: 1e6, g: 1e9, gb: 1e9, t: 1e12, tb: 1e12,
  kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30, tib: 2 ** 40,
};

/** A positive whole number of bytes; `flag` names the option in the error. */
export function parseByteSize(value: string, flag: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(value);
  const unit = m ? UNITS[m[2]!.toLowerCase()] : undefined;
  const bytes = m && unit !== undefined ? Math.floor(Number(m[1]) * unit) : NaN;
  if (!(bytes >= 1)) {
    throw new ConfigError(`${flag} must be a positive size in bytes: expected a size such as 2GB, 500MB, 1.5GB or 2.5GiB (got '${value}')`);
  }
  return bytes;
}
