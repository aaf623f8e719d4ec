/**
 * FNV-1a (32-bit) of a token sequence, each token fed as two 16-bit halves: a cheap fingerprint
 * that tells a checkpoint's training data from other data (not a cryptographic hash).
 */
export function fnv1a(tokens: ArrayLike<number>): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i];
    h ^= t & 0xffff;
    h = Math.imul(h, 0x01000193) >>> 0;
    h ^= t >>> 16;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16);
}

/** `<length>:<fnv1a>`, how training fingerprints record a token stream. */
export function tokensFingerprint(tokens: ArrayLike<number>): string {
  return `${tokens.length}:${fnv1a(tokens)}`;
}
