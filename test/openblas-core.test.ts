/**
 * The OpenBLAS core PruneLab names before loading OpenBLAS (src/backend/openblas.ts,
 * openblasCoreForCpu): the rule on /proc/cpuinfo texts written for the case (the Intel one carries
 * the flags of the H200 machine's Xeon, whose unknown model made OpenBLAS fall back to Prescott),
 * and, in a child process, that a core set in process.env before the load is the one OpenBLAS runs
 * and that a user's own OPENBLAS_CORETYPE is kept.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { openblasAddon, openblasCoreForCpu, openblasUnavailable } from '../src/backend/openblas.ts';

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
function childCore(body: string, coretype?: string): string {
  const env: NodeJS.ProcessEnv = { ...process.env };
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
