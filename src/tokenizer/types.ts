/** What every tokenizer offers the rest of PruneLab. */
export interface Tokenizer {
  /** Short identifier recorded in result rows, e.g. `llama2c:tok512.bin@<sha256 prefix>`. */
  readonly id: string;
  /** Number of ids the tokenizer can produce (its vocabulary size). */
  readonly vocabSize: number;
  readonly bosId: number | null;
  readonly eosId: number | null;
  /** Encode text. `addBos` prepends the BOS id once (if the tokenizer has one). */
  encode(text: string, options?: { addBos?: boolean }): number[];
  /** Decode ids to text; special tokens (BOS/EOS/pad) are skipped. */
  decode(ids: readonly number[]): string;
}
