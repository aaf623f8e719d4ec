/**
 * Damaged checkpoints through the CLI: a shard named in the index but missing, a header whose
 * offsets overlap or run past the file, a dtype PruneLab does not read, an index that points a
 * tensor at a shard without it. Each gives one line naming the file, the tensor (or shard) and
 * what to do, exit 2, no stack trace, and `convert` writes nothing (no output, no temporary folder).
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { HAVE_SHARED, NO_SHARED_REASON, shared, tmpDir } from './support.ts';
import { runCli } from './cli-support.ts';

const FIXTURE = 'llama-tiny-sharded-f16';
const [SHARD1, SHARD2] = ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors'];
const INDEX = 'model.safetensors.index.json';

type Header = Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;

/** A writable copy of the sharded fixture. */
function copy(into: string): string {
  fs.mkdirSync(into);
  for (const f of fs.readdirSync(shared('golden', FIXTURE))) {
    fs.copyFileSync(shared('golden', FIXTURE, f), path.join(into, f));
    fs.chmodSync(path.join(into, f), 0o644);
  }
  return into;
}

/** Rewrite a safetensors file's header (same length, padded with spaces, so the data stays in place). */
function editHeader(file: string, edit: (h: Header) => void): void {
  const buf = fs.readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const h = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Header;
  edit(h);
  const text = JSON.stringify(h);
  assert.ok(text.length <= n, 'edited header must not grow');
  Buffer.from(text.padEnd(n, ' ')).copy(buf, 8);
  fs.writeFileSync(file, buf);
}

/** Two tensors of the same dtype and size in a header, by name. */
function sameSizePair(h: Header): [string, string] {
  const names = Object.keys(h).filter((k) => k !== '__metadata__').sort();
  for (const a of names) {
    for (const b of names) {
      if (a !== b && h[a].dtype === h[b].dtype && h[a].data_offsets[1] - h[a].data_offsets[0] === h[b].data_offsets[1] - h[b].data_offsets[0]) return [a, b];
    }
  }
  throw new Error('no pair');
}

const CASES: { name: string; damage: (dir: string) => void; says: (string | RegExp)[] }[] = [
  {
    name: 'a shard named in the index but missing',
    damage: (dir) => fs.rmSync(path.join(dir, SHARD2)),
    says: [`missing shard '${SHARD2}'`, INDEX, /download the shard again/],
  },
  {
    name: 'a header whose offsets overlap',
    damage: (dir) => editHeader(path.join(dir, SHARD1), (h) => {
      const [a, b] = sameSizePair(h);
      h[b].data_offsets = [...h[a].data_offsets];
    }),
    says: [SHARD1, 'overlap', /header is corrupt/, /download or write the file again/],
  },
  {
    name: 'a header whose offsets run past the file',
    damage: (dir) => {
      const f = path.join(dir, SHARD2);
      fs.truncateSync(f, fs.statSync(f).size - 2);
    },
    says: [SHARD2, 'truncated', /tensor '[^']+' ends at byte \d+ but the file has \d+ bytes/, /download or write the file again/],
  },
  {
    name: 'a dtype PruneLab does not read',
    damage: (dir) => editHeader(path.join(dir, SHARD1), (h) => { h['model.norm.weight' in h ? 'model.norm.weight' : sameSizePair(h)[0]].dtype = 'I16'; }),
    says: [SHARD1, 'unsupported dtype I16', /F32, F16 or BF16/],
  },
  {
    name: 'an index whose weight_map points a tensor at a shard without it',
    damage: (dir) => {
      const index = JSON.parse(fs.readFileSync(path.join(dir, INDEX), 'utf8')) as { weight_map: Record<string, string> };
      index.weight_map['lm_head.weight'] = index.weight_map['lm_head.weight'] === SHARD1 ? SHARD2 : SHARD1;
      fs.writeFileSync(path.join(dir, INDEX), JSON.stringify(index));
    },
    says: ["tensor 'lm_head.weight'", INDEX, /not in shard/, /fix the index's weight_map/],
  },
];

describe('damaged checkpoints: clear errors, exit 2, nothing written', { skip: HAVE_SHARED ? false : NO_SHARED_REASON }, () => {
  let root: string;
  before(() => { root = tmpDir('bad-ckpt'); });
  after(() => fs.rmSync(root, { recursive: true, force: true }));

  for (const [k, c] of CASES.entries()) {
    it(c.name, () => {
      const model = copy(path.join(root, `model-${k}`));
      c.damage(model);
      const outParent = path.join(root, `outs-${k}`);
      fs.mkdirSync(outParent);
      for (const args of [['inspect', '--model', model], ['convert', '--model', model, '--out', path.join(outParent, 'out')]]) {
        const r = runCli(args);
        assert.equal(r.status, 2, `${args[0]}: ${r.stderr}`);
        assert.equal(r.json?.kind, 'CheckpointError', args[0]);
        const line = r.stderr.trim().split('\n').at(-1) as string;
        assert.ok(line.includes(model), `${args[0]}: ${line} names no file of ${model}`);
        for (const s of c.says) {
          if (typeof s === 'string') assert.ok(line.includes(s), `${args[0]}: ${JSON.stringify(line)} lacks ${JSON.stringify(s)}`);
          else assert.match(line, s, args[0]);
        }
        assert.doesNotMatch(r.stderr, /^\s+at /m, 'no stack trace');
      }
      assert.deepEqual(fs.readdirSync(outParent), [], 'convert wrote nothing');
    });
  }
});
