/**
 * Seeded orders of training windows. Epoch e visits its items in a permutation drawn from
 * (seed, e) alone, so the data cursor (epoch, position) is the whole random state of the data
 * order: a run resumed from a saved cursor continues exactly where the original was.
 */
import seedrandom from 'seedrandom';
import { DataError } from '../util/errors.ts';

export interface Cursor {
  epoch: number;
  pos: number;
}

/** A Fisher–Yates permutation of 0..n−1 from the alea stream `<seed>:order:<epoch>`. */
export function epochPermutation(n: number, seed: number, epoch: number): Uint32Array {
  return seededPermutation(n, `${seed}:order:${epoch}`);
}

/** A Fisher–Yates permutation of 0..n−1 from the alea stream named `stream`. */
export function seededPermutation(n: number, stream: string): Uint32Array {
  const rng = seedrandom.alea(stream);
  const p = new Uint32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    const t = p[i];
    p[i] = p[j];
    p[j] = t;
  }
  return p;
}

/** One visit: item `item` (an index into that epoch's items) of epoch `epoch`. */
export interface Visit {
  epoch: number;
  item: number;
}

/**
 * Items of each epoch in that epoch's seeded permutation, epoch after epoch. `items` is the
 * number of items of every epoch, or of epoch e (at least 1).
 */
export class SeededOrder {
  private permEpoch = -1;
  private perm: Uint32Array = new Uint32Array(0);
  private readonly itemsIn: (epoch: number) => number;

  constructor(private readonly seed: number, items: number | ((epoch: number) => number), public cursor: Cursor = { epoch: 0, pos: 0 }) {
    this.itemsIn = typeof items === 'number' ? () => items : items;
  }

  private permutation(epoch: number): Uint32Array {
    if (this.permEpoch !== epoch) {
      const n = this.itemsIn(epoch);
      if (n < 1) throw new DataError(`epoch ${epoch} has no training windows`);
      this.perm = epochPermutation(n, this.seed, epoch);
      this.permEpoch = epoch;
    }
    return this.perm;
  }

  /** The next `count` visits; the cursor moves past them. */
  next(count: number): Visit[] {
    const out: Visit[] = [];
    while (out.length < count) {
      const perm = this.permutation(this.cursor.epoch);
      if (this.cursor.pos >= perm.length) {
        this.cursor = { epoch: this.cursor.epoch + 1, pos: 0 };
        continue;
      }
      out.push({ epoch: this.cursor.epoch, item: perm[this.cursor.pos] });
      this.cursor = { ...this.cursor, pos: this.cursor.pos + 1 };
    }
    return out;
  }
}

/**
 * Windows of `seqLen` tokens cut from one token stream. Epoch e > 0 starts its window grid at a
 * seeded offset in [0, seqLen) (alea stream `<seed>:offset:<e>`), so later epochs see other
 * window boundaries; its windows are visited in the epoch's seeded permutation.
 */
export class WindowSampler {
  private readonly order: SeededOrder;
  private offsetEpoch = -1;
  private offset = 0;

  constructor(private readonly numTokens: number, private readonly seqLen: number, private readonly seed: number, cursor: Cursor = { epoch: 0, pos: 0 }) {
    if (Math.floor(numTokens / seqLen) < 1) throw new DataError(`training stream has ${numTokens} tokens, shorter than one window of ${seqLen}`);
    this.order = new SeededOrder(seed, (epoch) => Math.floor((numTokens - this.offsetOf(epoch)) / seqLen), cursor);
  }

  get cursor(): Cursor {
    return this.order.cursor;
  }

  set cursor(c: Cursor) {
    this.order.cursor = c;
  }

  /** Windows per epoch (epoch 0). */
  get windowsPerEpoch(): number {
    return Math.floor(this.numTokens / this.seqLen);
  }

  /** Where epoch `epoch`'s window grid starts (0 when the shifted grid would hold no window). */
  private offsetOf(epoch: number): number {
    if (this.offsetEpoch !== epoch) {
      const shifted = epoch === 0 ? 0 : Math.floor(seedrandom.alea(`${this.seed}:offset:${epoch}`)() * this.seqLen);
      this.offset = Math.floor((this.numTokens - shifted) / this.seqLen) < 1 ? 0 : shifted;
      this.offsetEpoch = epoch;
    }
    return this.offset;
  }

  /** Start offsets of the next `count` windows. */
  next(count: number): number[] {
    return this.order.next(count).map((v) => this.offsetOf(v.epoch) + v.item * this.seqLen);
  }
}
