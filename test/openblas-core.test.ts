/**
 * What is settled when the OpenBLAS addon loads (src/backend/openblas.ts): the core PruneLab names
 * for OpenBLAS (openblasCoreForCpu) on /proc/cpuinfo texts written for the case (the Intel one
 * carries the flags of the H200 machine's Xeon, whose unknown model made OpenBLAS fall back to
 * Prescott); in a child process, that a core set in process.env before the load is the one
 * OpenBLAS runs and that a user's own OPENBLAS_CORETYPE is kept; and the products' cut for a
 * machine of more cores (PRUNELAB_TILE_CORES): one tile per core, values still the same for every
 * thread count, and a bad value refused with exit 2.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { openblasAddon, openblasCoreForCpu, openblasUnavailable } from '../src/backend/openblas.ts';
import { runCliOn } from './cli-support.ts';
import { HAVE_SHARED, NO_SHARED_REASON, STORIES_BIN, shared } from './support.ts';

const cpuinfo = (vendor: string, flags: string) => `processor\t: 0\nvendor_id\t: ${vendor}\nmodel name\t: some cpu\nflags\t\t: ${flags}\n\nprocessor\t: 1\n`;
const BASE = 'fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov sse sse2 ssse3 sse4_1 sse4_2 popcnt';
const AVX2 = `${BASE} avx f16c fma avx2 bmi1 bmi2`;
const AVX512 = `${AVX2} avx512f avx512dq avx512cd avx512bw avx512vl avx512_bf16 amx_tile`;

describe('openblasCoreForCpu', () => {
  it('names SkylakeX for an Intel CPU with AVX-512 F/DQ/CD/BW/VL, Haswell for AVX2 + FMA only', () => {
    assert.equal(openblasCoreForCpu(cpuinfo('GenuineIntel', AVX512)), 'SkylakeX');
    assert.equal(openblasCoreForCpu(cpuinfo('GenuineIntel', AVX2)), 'Haswell');
  });
  it('leaves older Intel CPUs, partial AVX-512 (Xeon Phi has no BW/VL) and AMD to OpenBLAS', () => {
    assert.equal(openblasCoreForCpu(cpuinfo('GenuineIntel', `${BASE} avx`)), null);
    assert.equal(openblasCoreForCpu(cpuinfo('GenuineIntel', `${BASE} avx fma avx2 avx512f avx512cd avx512er avx512pf`)), 'Haswell');
    assert.equal(openblasCoreForCpu(cpuinfo('AuthenticAMD', AVX2)), null);
    assert.equal(openblasCoreForCpu(cpuinfo('AuthenticAMD', AVX512)), null);
    assert.equal(openblasCoreForCpu(''), null);
  });
});

const skip = openblasAddon() === null ? openblasUnavailable() : process.arch !== 'x64' ? 'OpenBLAS core names are x86-64 ones' : false;

/** The core the child's OpenBLAS reports after `body` ran in a fresh process (env without OPENBLAS_CORETYPE unless given). */
function childCore(body: string, coretype?: string, extra: Record<string, string> = {}): string {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extra };
  delete env.OPENBLAS_CORETYPE;
  if (coretype !== undefined) env.OPENBLAS_CORETYPE = coretype;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', body], { encoding: 'utf8', env, cwd: process.cwd() });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.trim();
}

describe('OPENBLAS_CORETYPE before the load', { skip }, () => {
  // Prescott: the kernels every x86-64 CPU runs, and the name no detection on a CI machine would give.
  it('a value written to process.env before the load is the core OpenBLAS runs', () => {
    const out = childCore(`
      import { createRequire } from 'node:module';
      process.env.OPENBLAS_CORETYPE = 'Prescott';
      const lib = createRequire(import.meta.url)('./native/build/openblas-kernels.node');
      console.log(lib.describe().config);`);
    assert.match(out, / Prescott /);
  });
  it("a user's own OPENBLAS_CORETYPE is kept, and no choice is reported as PruneLab's", () => {
    const out = childCore(`
      import * as tf from '@tensorflow/tfjs';
      import { initBackend } from './src/backend/index.ts';
      import { describeWasmMatmul } from './src/backend/openblas.ts';
      await initBackend('wasm', true);
      console.log(describeWasmMatmul().openblas);`, 'Prescott');
    assert.match(out, / Prescott /);
    assert.doesNotMatch(out, /from the CPU's flags/);
  });
});

/** A 256×1024·1024×2048 product (pool-sized) at 1, 2 and 3 threads, printed as JSON: minTiles, and the three results' bits compared. */
const PRODUCT_BY_THREADS = `
  import * as tf from '@tensorflow/tfjs';
  import { initBackend } from './src/backend/index.ts';
  import { openblasAddon } from './src/backend/openblas.ts';
  await initBackend('wasm', true);
  const lib = openblasAddon();
  const val = (n, seed) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.7 + seed) * Math.cos(i * 0.013));
  const a = tf.tensor2d(val(256 * 1024, 1), [256, 1024]), b = tf.tensor2d(val(1024 * 2048, 2), [1024, 2048]);
  const runs = [1, 2, 3].map((t) => { lib.setThreads(t); return tf.matMul(a, b).dataSync(); });
  const same = runs.every((r) => r.every((v, i) => Object.is(v, runs[0][i])));
  let sum = 0; for (const v of runs[0]) sum += Math.abs(v);
  console.log(JSON.stringify({ minTiles: lib.describe().minTiles, same, first: Array.from(runs[0].slice(0, 64)), sum }));`;

describe('PRUNELAB_TILE_CORES: the cut of another machine', { skip }, () => {
  it('16 cores: products in at least 16 tiles, the same bits for 1, 2 and 3 threads, within fp32 rounding of the default cut', () => {
    const many = JSON.parse(childCore(PRODUCT_BY_THREADS, undefined, { PRUNELAB_TILE_CORES: '16' })) as { minTiles: number; same: boolean; first: number[]; sum: number };
    const few = JSON.parse(childCore(PRODUCT_BY_THREADS, undefined, { PRUNELAB_TILE_CORES: '2' })) as typeof many;
    assert.equal(many.minTiles, 16);
    assert.equal(few.minTiles, 4, 'fewer cores than 4 keep the 4-tile floor');
    assert.ok(many.same, 'the 16-core cut gives the same values on 1, 2 and 3 threads');
    assert.ok(few.same, 'the 4-tile cut gives the same values on 1, 2 and 3 threads');
    assert.ok(Math.abs(many.sum - few.sum) <= 1e-5 * few.sum, `sums ${many.sum} vs ${few.sum}`);
    many.first.forEach((v, i) => assert.ok(Math.abs(v - few.first[i]!) <= 1e-4 * (1 + Math.abs(v)), `entry ${i}: ${v} vs ${few.first[i]}`));
  });
  it('a value that is no core count is refused before anything runs: exit 2, the variable named', { skip: HAVE_SHARED ? false : NO_SHARED_REASON }, () => {
    const r = runCliOn('wasm', ['eval', 'ppl', '--model', STORIES_BIN, '--text', shared('text', 'tinystories-sample.txt'), '--seqlen', '64', '--max-windows', '1'],
      { env: { PRUNELAB_TILE_CORES: 'lots' } });
    assert.equal(r.status, 2, r.stderr);
    assert.match(String(r.json?.error), /PRUNELAB_TILE_CORES=lots is not a core count/);
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  });
});
