/**
 * The `--json` contract of every exit: argument errors yargs finds, bad numbers, and a large
 * report read slowly through a pipe. None of these needs a model.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { tmpDir } from './support.ts';
import { runCli, runCliAsync } from './cli-support.ts';

describe('--json contract (CLI)', () => {
  const usage: [string, string[], RegExp][] = [
    ['unknown flag', ['methods', '--bogus', '1'], /Unknown argument: bogus/],
    ['missing required flag', ['eval', 'ppl', '--text', 'x.txt', '--seqlen', '8'], /Missing required argument: model/],
    ['bad choice', ['table', 'results.csv', '--format', 'html'], /Invalid values:.*format.*Given: "html"/],
    ['no command', [], /name a command/],
    ['no evaluation named', ['eval'], /name an evaluation/],
    ['a number that is not one', ['prune', '--model', 'm', '--method', 'magnitude', '--out', 'o', '--sparsity', 'abc'], /--sparsity expects a number, got "abc"/],
  ];
  for (const [what, args, pattern] of usage) {
    it(`${what}: one JSON object on stdout, exit 2, a one-line message without the help text`, () => {
      const r = runCli(args, 60_000);
      assert.equal(r.status, 2, r.stderr);
      assert.ok(r.json, `stdout is one JSON object: ${JSON.stringify(r.stdout)}`);
      assert.equal(r.json.kind, 'UsageError');
      assert.match(String(r.json.error), pattern);
      assert.doesNotMatch(r.stderr, /Options:|--help +Show help/, 'no help dump');
      assert.match(r.stderr, /see prunelab .*--help/);
    });
  }

  it('a report of several hundred KiB arrives whole through a pipe read only after a pause', async () => {
    // A results file big enough for a ~300 KB table: more than four times a pipe's 64 KiB buffer.
    const dir = tmpDir('bigjson');
    const csv = path.join(dir, 'results.csv');
    const cols = ['run_id', 'experiment', 'model', 'method', 'options', 'pattern', 'target_sparsity', 'measured_sparsity', 'ppl:x'];
    const rows = Array.from({ length: 4000 }, (_, i) => [`r${i}`, 'e', `model${i}`, `method${i % 50}`, '{}', 'unstructured', (i % 10) / 10, (i % 10) / 10, 10 + i].join(','));
    fs.writeFileSync(csv, [cols.join(','), ...rows].join('\n') + '\n');
    const r = await runCliAsync(['table', csv, '--layout', 'wide'], { readDelayMs: 2000 });
    assert.equal(r.status, 0, r.stderr);
    assert.ok(r.stdout.length > 4 * 65536, `${r.stdout.length} bytes`);
    assert.ok(r.json, 'the whole object parses');
    const table = String(r.json.table);
    for (const i of [0, 1999, 3999]) assert.ok(table.includes(`model${i}`), `row of model${i} present`);
  });
});
