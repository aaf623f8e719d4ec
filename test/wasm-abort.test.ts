/**
 * A WebAssembly heap that runs out mid-computation aborts the module (`RuntimeError: Aborted()`):
 * the CLI reports it as a resource error with what helps (exit 2, no stack trace), and only that.
 */
import { describe, it, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { wasmAbortAsResourceError } from '../src/backend/memory.ts';
import { reportError } from '../src/cli/common.ts';
import { ResourceError } from '../src/util/errors.ts';

describe('a WebAssembly abort', () => {
  const exitCode = process.exitCode;
  afterEach(() => { process.exitCode = exitCode; });

  it('becomes a ResourceError naming the 4 GiB heap and the flags that help', () => {
    const e = wasmAbortAsResourceError(new WebAssembly.RuntimeError('Aborted(). Build with -sASSERTIONS for more info.'));
    assert.ok(e instanceof ResourceError);
    assert.match(e.message, /heap \(4\.00 GiB at most\) ran out/);
    assert.match(e.message, /--nsamples/);
    assert.match(e.message, /--backend node/);
  });

  it('other runtime errors and plain errors are left alone', () => {
    assert.equal(wasmAbortAsResourceError(new WebAssembly.RuntimeError('unreachable')), null);
    assert.equal(wasmAbortAsResourceError(new Error('Aborted()')), null);
  });

  it('the CLI prints one JSON object and one line without a stack, exit code 2', () => {
    const out: string[] = [];
    const err: string[] = [];
    const w1 = process.stdout.write.bind(process.stdout);
    const w2 = process.stderr.write.bind(process.stderr);
    process.stdout.write = ((s: string) => { out.push(s); return true; }) as typeof process.stdout.write;
    process.stderr.write = ((s: string) => { err.push(s); return true; }) as typeof process.stderr.write;
    try {
      reportError(new WebAssembly.RuntimeError('Aborted(). Build with -sASSERTIONS for more info.'), true);
    } finally {
      process.stdout.write = w1;
      process.stderr.write = w2;
    }
    assert.equal(process.exitCode, 2);
    assert.equal(out.length, 1);
    const j = JSON.parse(out[0]!) as { kind: string; error: string };
    assert.equal(j.kind, 'ResourceError');
    assert.equal(err.length, 1);
    assert.doesNotMatch(err[0]!, /\n\s+at /, 'no stack trace');
  });
});
