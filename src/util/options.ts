/** Parsing option objects against a zod schema, with errors that name every bad key. */
import type { z } from 'zod';
import { ConfigError } from './errors.ts';

/**
 * `schema.parse(raw)`, but a failure is a ConfigError listing each issue as `key.path: message`
 * (`(<root>)` for the object itself), prefixed with `invalid <what> options`.
 */
export function parseOptions<S extends z.ZodType>(schema: S, raw: unknown, what: string, root: string): z.output<S> {
  const r = schema.safeParse(raw);
  if (!r.success) {
    const msg = r.error.issues.map((i) => `${i.path.length ? i.path.join('.') : `(${root})`}: ${i.message}`).join('; ');
    throw new ConfigError(`invalid ${what} options: ${msg}`);
  }
  return r.data;
}
