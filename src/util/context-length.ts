/**
 * Sequence lengths against a model's trained context (`max_position_embeddings`). OPT's learned
 * positions end there, so longer windows are impossible. LLaMA's rotary positions run on, but the
 * model never saw them in training: measuring beyond is allowed only when asked for explicitly,
 * and the caller records it.
 */
import type { ModelConfig } from '../model/config.ts';
import { ConfigError } from './errors.ts';

/**
 * Throws unless `seqlen` fits, or may exceed (`allow`, LLaMA family only); returns whether it
 * goes beyond the context. `what` names the setting (`--seqlen`), `allowFlag` the way to allow it.
 */
export function checkContextLength(config: Pick<ModelConfig, 'family' | 'maxPositionEmbeddings'>, seqlen: number,
  what: string, opts: { allow: boolean; allowFlag: string }): boolean {
  const max = config.maxPositionEmbeddings;
  if (seqlen <= max) return false;
  if (config.family === 'opt') {
    throw new ConfigError(`${what} ${seqlen} exceeds the model's ${max} positions (max_position_embeddings; OPT's learned positions end there): use ${what} ≤ ${max}`);
  }
  if (!opts.allow) {
    throw new ConfigError(`${what} ${seqlen} exceeds the model's trained context of ${max} positions (max_position_embeddings): `
      + `use ${what} ≤ ${max}, or pass ${opts.allowFlag} to run beyond it anyway (recorded in the result)`);
  }
  return true;
}
