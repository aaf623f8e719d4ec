/**
 * The WebGPU backend against the WebAssembly backend. The backend is per process, so the WebGPU
 * side runs in child processes (the CLI with `--backend webgpu --json`, or a small script) and
 * is compared here with the same command on wasm. In CI the adapter is Mesa's llvmpipe (a
 * software Vulkan driver, installed by scripts/install-vulkan.sh from .ci/run): slow, so the
 * windows are small. Without an adapter the suite skips, saying why; with
 * PRUNELAB_REQUIRE_WEBGPU=1 (set by .ci/run once the driver is in) it fails instead.
 */
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { HAVE_SHARED, NO_SHARED_REASON, REPO_ROOT, shared, STORIES_BIN, tmpDir } from './support.ts';
import { runCli, runCliOn, type CliRun } from './cli-support.ts';
import { readHfCheckpoint } from '../src/io/hf-checkpoint.ts';
import { readSafetensorsHeader } from '../src/io/safetensors.ts';

const REQUIRED = process.env.PRUNELAB_REQUIRE_WEBGPU === '1';
const TEXT = shared('text/tinystories-sample.txt');
const SLOW = 300_000;

interface Adapter { vendor: string; architecture: string; description: string; software: boolean; maxBufferSize: number; maxStorageBufferBindingSize: number }

/** Ask a child for the WebGPU backend once: the adapter, or why there is none. */
function probe(): { adapter: Adapter } | { reason: string } {
  if (!HAVE_SHARED) return { reason: NO_SHARED_REASON };
  const r = runCliOn('webgpu', ['inspect', '--model', shared('golden', 'llama-tiny')], { timeoutMs: 120_000 });
  if (r.status === 0 && r.json?.adapter) return { adapter: r.json.adapter as Adapter };
  const why = (r.json?.error as string | undefined) ?? `exit ${r.status}: ${r.stderr.trim().split('\n').slice(-3).join(' | ')}`;
  return { reason: `no WebGPU adapter here (${why}); scripts/install-vulkan.sh installs a software one (root, apt)` };
}

const found = probe();
const adapter = 'adapter' in found ? found.adapter : null;
const SKIP = adapter !== null ? false : (found as { reason: string }).reason;

function ok(r: CliRun, what: string): Record<string, unknown> {
  assert.equal(r.status, 0, `${what} failed (exit ${r.status}): ${r.stderr.slice(-2000)}`);
  assert.ok(r.json, `${what}: no JSON on stdout`);
  return r.json!;
}

/** The same CLI command on wasm and on webgpu. */
function both(args: string[]): { wasm: Record<string, unknown>; webgpu: Record<string, unknown> } {
  const webgpu = ok(runCliOn('webgpu', args, { timeoutMs: SLOW }), `webgpu: ${args.join(' ')}`);
  const wasm = ok(runCli(args, SLOW), `wasm: ${args.join(' ')}`);
  assert.equal(webgpu.backend, 'webgpu');
  assert.equal(wasm.backend, 'wasm');
  return { wasm, webgpu };
}

function relDiff(a: number, b: number): number {
  return Math.abs(a - b) / Math.max(Math.abs(a), Math.abs(b));
}

it('a WebGPU adapter is there where CI installed the driver', { skip: REQUIRED ? false : 'PRUNELAB_REQUIRE_WEBGPU is not set (.ci/run sets it)' }, () => {
  assert.ok(adapter !== null, `PRUNELAB_REQUIRE_WEBGPU=1 but ${SKIP}`);
});

describe('WebGPU backend (against wasm)', { skip: SKIP }, () => {
  it('records the adapter beside the backend', () => {
    assert.ok(adapter!.vendor !== undefined && typeof adapter!.software === 'boolean');
    assert.ok(adapter!.maxStorageBufferBindingSize > 0 && adapter!.maxBufferSize > 0);
  });

  it('golden HF fixtures: logits and mean NLL within 1e-4 of the references, greedy tokens equal, no tensor leak', () => {
    // The wasm golden test, run as it is with the webgpu backend (test/support.ts setupBackend).
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--test', '--test-reporter=dot', path.join(REPO_ROOT, 'test/golden.test.ts')], {
      cwd: REPO_ROOT, encoding: 'utf8', timeout: SLOW, env: { ...process.env, PRUNELAB_TEST_BACKEND: 'webgpu' },
    });
    assert.equal(r.status, 0, `golden fixtures on webgpu failed:\n${r.stdout.slice(-4000)}\n${r.stderr.slice(-2000)}`);
  });

  it('stories260K perplexity equals wasm within 1e-4 relative, no tensor left behind', () => {
    const { wasm, webgpu } = both(['eval', 'ppl', '--model', STORIES_BIN, '--text', TEXT, '--seqlen', '128', '--max-windows', '8']);
    assert.equal(webgpu.tokens, wasm.tokens);
    const d = relDiff(webgpu.ppl as number, wasm.ppl as number);
    assert.ok(d <= 1e-4, `ppl webgpu ${webgpu.ppl} vs wasm ${wasm.ppl}: relative ${d}`);
    assert.equal(webgpu.tensorsAfter, wasm.tensorsAfter, 'tensors left after the evaluation');
    assert.deepEqual(webgpu.adapter, adapter);
  });

  describe('pruning end to end: the same checkpoint as wasm', () => {
    let dir: string;
    before(() => { dir = tmpDir('webgpu'); });
    const calib = ['--calib', TEXT, '--nsamples', '4', '--seqlen', '64'];

    function pruneBoth(method: string, sparsity: string): { wasm: string; webgpu: string } {
      const out = { wasm: path.join(dir, `${method}-wasm`), webgpu: path.join(dir, `${method}-webgpu`) };
      ok(runCliOn('webgpu', ['prune', '--model', STORIES_BIN, '--method', method, '--sparsity', sparsity, ...calib, '--out', out.webgpu], { timeoutMs: SLOW }), `${method} on webgpu`);
      ok(runCli(['prune', '--model', STORIES_BIN, '--method', method, '--sparsity', sparsity, ...calib, '--out', out.wasm], SLOW), `${method} on wasm`);
      return out;
    }

    it('wanda (unstructured 50%): identical masks', () => {
      const out = pruneBoth('wanda', '0.5');
      const a = readHfCheckpoint(out.wasm).tensors;
      const b = readHfCheckpoint(out.webgpu).tensors;
      assert.deepEqual([...b.keys()].sort(), [...a.keys()].sort());
      let linears = 0;
      for (const [name, t] of a) {
        const u = b.get(name)!;
        assert.deepEqual(u.shape, t.shape, name);
        let differ = 0;
        for (let i = 0; i < t.data.length; i++) if ((t.data[i] === 0) !== (u.data[i] === 0)) differ++;
        assert.equal(differ, 0, `${name}: ${differ} mask entries differ`);
        if (/_proj\.weight$/.test(name)) linears++;
      }
      assert.equal(linears, 5 * 7);
    });

    it('wanda-sp (structured 20%): the same channels kept, the same weights', () => {
      const out = pruneBoth('wanda-sp', '0.2');
      const a = readHfCheckpoint(out.wasm);
      const b = readHfCheckpoint(out.webgpu);
      assert.deepEqual(b.config, a.config);
      for (const [name, t] of a.tensors) {
        const u = b.tensors.get(name)!;
        assert.deepEqual(u.shape, t.shape, name);
        // Kept channels are copied, never recomputed: the weights are the same bits.
        assert.ok(u.data.every((v, i) => v === t.data[i]), `${name}: weights differ`);
      }
    });

    it('LoRA recovery, a few steps: the same losses and held-out NLL (within 1e-4 relative)', () => {
      const args = ['finetune', '--model', STORIES_BIN, '--data', TEXT, '--steps', '3', '--seqlen', '64', '--micro-batch', '2', '--lr', '3e-3'];
      const webgpu = ok(runCliOn('webgpu', [...args, '--out', path.join(dir, 'ft-webgpu')], { timeoutMs: SLOW }), 'finetune on webgpu');
      const wasm = ok(runCli([...args, '--out', path.join(dir, 'ft-wasm')], SLOW), 'finetune on wasm');
      const steps = (j: Record<string, unknown>) => j.log as { loss: number }[];
      assert.equal(steps(webgpu).length, 3);
      steps(wasm).forEach((s, i) => assert.ok(relDiff(steps(webgpu)[i].loss, s.loss) <= 1e-4, `step ${i + 1}: loss ${steps(webgpu)[i].loss} vs ${s.loss}`));
      const held = (j: Record<string, unknown>) => (j.heldOut as { after: number }).after;
      assert.ok(relDiff(held(webgpu), held(wasm)) <= 1e-4, `held-out NLL ${held(webgpu)} vs ${held(wasm)}`);
    });
  });

  describe('clear errors: exit 2, one line, nothing written, no hang', () => {
    let dir: string;
    before(() => { dir = tmpDir('webgpu-errors'); });

    it('--backend webgpu without any adapter says what to install', () => {
      const out = path.join(dir, 'no-adapter');
      // An empty Vulkan driver list: Dawn then finds no adapter at all.
      const r = runCliOn('webgpu', ['prune', '--model', STORIES_BIN, '--method', 'magnitude', '--sparsity', '0.5', '--out', out],
        { env: { VK_ICD_FILENAMES: path.join(dir, 'none.json'), VK_DRIVER_FILES: path.join(dir, 'none.json') } });
      assert.equal(r.status, 2, r.stderr);
      assert.match(r.json!.error as string, /no WebGPU adapter found.*mesa-vulkan-drivers/);
      // Dawn logs its own Vulkan warnings (C++ locations); no JavaScript stack may follow.
      assert.doesNotMatch(r.stderr, /\n\s+at .*\.[cm]?[tj]s:\d+:\d+/, 'no stack trace');
      assert.equal(fs.existsSync(out), false);
      assert.deepEqual(fs.readdirSync(dir).filter((f) => f.startsWith('no-adapter')), []);
    });

    it('a tensor larger than the adapter allows in one buffer is refused before loading, named with the limit', () => {
      const model = writeOversizedEmbedding(path.join(dir, 'big'), adapter!);
      const out = path.join(dir, 'big-out');
      const r = runCliOn('webgpu', ['prune', '--model', model, '--method', 'magnitude', '--sparsity', '0.5', '--out', out], { timeoutMs: SLOW });
      assert.equal(r.status, 2, r.stderr);
      assert.match(r.json!.error as string, /model\.embed_tokens\.weight .* allows at most [\d.]+ MiB per buffer \(its max(StorageBufferBinding|Buffer)Size\)/);
      assert.equal(fs.existsSync(out), false);
    });

    it('a device lost mid-run stops the next read with a clear error', () => {
      const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'test/webgpu-lost-device.ts')], {
        cwd: REPO_ROOT, encoding: 'utf8', timeout: 120_000,
      });
      assert.equal(r.status, 0, r.stderr.slice(-2000));
      const outcome = JSON.parse(r.stdout.trim()) as { error?: string; message?: string };
      assert.equal(outcome.error, 'ResourceError', r.stdout);
      assert.match(outcome.message!, /WebGPU device was lost/);
    });
  });
});

/**
 * A LLaMA checkpoint (golden llama-tiny's shapes, tied head) whose embedding is one row over the
 * adapter's per-buffer limit, as a sparse file: the refusal must come from the header alone.
 */
function writeOversizedEmbedding(dir: string, a: Adapter): string {
  const src = shared('golden', 'llama-tiny');
  const config = JSON.parse(fs.readFileSync(path.join(src, 'config.json'), 'utf8')) as Record<string, unknown>;
  const hidden = config.hidden_size as number;
  const limit = Math.min(a.maxStorageBufferBindingSize, a.maxBufferSize);
  const vocab = Math.floor(limit / (4 * hidden)) + 1;
  Object.assign(config, { vocab_size: vocab, tie_word_embeddings: true });
  const header: Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }> = {};
  let offset = 0;
  for (const [name, ref] of readSafetensorsHeader(path.join(src, 'model.safetensors')).tensors) {
    if (name === 'lm_head.weight') continue;
    const shape = name === 'model.embed_tokens.weight' ? [vocab, hidden] : [...ref.shape];
    const bytes = 4 * shape.reduce((x, y) => x * y, 1);
    header[name] = { dtype: 'F32', shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
  const json = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  const file = path.join(dir, 'model.safetensors');
  fs.writeFileSync(file, Buffer.concat([len, json]));
  fs.truncateSync(file, 8 + json.length + offset);
  return dir;
}
