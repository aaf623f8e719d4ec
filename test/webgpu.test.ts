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
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { HAVE_SHARED, maxAbsDiff, NO_SHARED_REASON, REPO_ROOT, shared, STORIES_BIN, tmpDir } from './support.ts';
import { runCliOn } from './cli-support.ts';
import { readHfCheckpoint } from '../src/io/hf-checkpoint.ts';
import { readSafetensorsHeader } from '../src/io/safetensors.ts';
import { openCheckpoint, streamedNeed } from '../src/io/load-model.ts';
import { readResults } from '../src/experiment/results.ts';

const REQUIRED = process.env.PRUNELAB_REQUIRE_WEBGPU === '1';
const TEXT = shared('text/tinystories-sample.txt');
const SLOW = 300_000;

/** One pruning run per method family, at small options (4 × 64 calibration tokens). */
const UNSTRUCTURED = [
  { method: 'magnitude', sparsity: '0.5', options: [], updatesWeights: false },
  { method: 'wanda', sparsity: '0.5', options: [], updatesWeights: false },
  { method: 'sparsegpt', sparsity: '0.5', options: [], updatesWeights: true },
  { method: 'fistapruner', sparsity: '0.5', options: ['itersPerRound=5', 'maxRounds=1'], updatesWeights: true },
  { method: 'dsnot', sparsity: '0.5', options: [], updatesWeights: false },
];
/** Structured: SAAP's target is a fraction of all parameters (embeddings included), so smaller. */
const STRUCTURED = [
  { method: 'wanda-sp', sparsity: '0.2', options: [] },
  { method: 'flap', sparsity: '0.2', options: [] },
  { method: 'cfsp', sparsity: '0.2', options: [] },
  { method: 'llm-pruner', sparsity: '0.2', options: [] },
  { method: 'saap', sparsity: '0.1', options: [] },
  { method: 'magnitude-sp', sparsity: '0.2', options: [] },
];

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

  describe('everything runs on it: the same commands on webgpu and on wasm, one process per backend', () => {
    // Both batches run at once (two processes); each holds every command below (test/webgpu-cli-batch.ts).
    let dir: string;
    let webgpu: BatchResults;
    let wasm: BatchResults;
    before(async () => {
      dir = tmpDir('webgpu-all');
      [webgpu, wasm] = await Promise.all([runBatch('webgpu', dir), runBatch('wasm', dir)]);
    });
    const out = (backend: string, name: string) => path.join(dir, backend, name);

    it('every command succeeds on both, records its backend (and on webgpu the adapter); no tensor left behind', () => {
      for (const [backend, results] of [['webgpu', webgpu], ['wasm', wasm]] as const) {
        for (const [name, r] of Object.entries(results.commands)) {
          assert.equal(r.error, undefined, `${backend} ${name}: ${String(r.error)}`);
          assert.equal(r.backend, backend, `${backend} ${name}`);
          if (backend === 'webgpu') assert.deepEqual(r.adapter, adapter, name);
        }
      }
      assert.equal(webgpu.numTensors, wasm.numTensors, 'tensors alive after every command');
    });

    it('stories260K perplexity equals wasm within 1e-4 relative', () => {
      const [a, b] = [wasm.commands.ppl, webgpu.commands.ppl];
      assert.equal(b.tokens, a.tokens);
      const d = relDiff(b.ppl as number, a.ppl as number);
      assert.ok(d <= 1e-4, `ppl webgpu ${b.ppl} vs wasm ${a.ppl}: relative ${d}`);
      assert.equal(b.tensorsAfter, a.tensorsAfter, 'tensors left after the evaluation');
    });

    it('zero-shot (PIQA, 20 rows): the same accuracies', () => {
      const [a, b] = [wasm.commands.zeroshot, webgpu.commands.zeroshot];
      assert.equal(b.n, 20);
      assert.deepEqual([b.acc, b.acc_norm], [a.acc, a.acc_norm]);
    });

    it('eval speed runs and names the adapter in its protocol', () => {
      const r = webgpu.commands.speed;
      for (const k of ['prefill_tps', 'decode_tps', 'latency_ms']) assert.ok((r[k] as number) > 0, `${k} = ${String(r[k])}`);
      assert.match((r.protocol as { device: string }).device, /llvmpipe|software|mesa|nvidia|amd|intel|apple/i);
      assert.equal(r.weight_bytes, wasm.commands.speed.weight_bytes);
    });

    it('greedy generation: the same 48 tokens as wasm', () => {
      assert.equal((webgpu.commands.generate.ids as number[]).length, 49);
      assert.deepEqual(webgpu.commands.generate.ids, wasm.commands.generate.ids);
    });

    it('streamed weights (a --device-memory of one layer) give the resident numbers: perplexity, tokens, wanda masks', () => {
      const s = webgpu.commands;
      for (const name of ['ppl-streamed', 'generate-streamed', 'prune-wanda-streamed']) assert.equal(s[name].execution, 'streamed', name);
      assert.equal(s.ppl.execution, 'resident');
      const d = relDiff(s['ppl-streamed'].ppl as number, s.ppl.ppl as number);
      assert.ok(d <= 1e-6, `streamed ppl ${s['ppl-streamed'].ppl} vs resident ${s.ppl.ppl}: relative ${d}`);
      assert.deepEqual(s['generate-streamed'].ids, (s.generate.ids as number[]).slice(0, 13));
      assert.deepEqual(maskDifferences(out('webgpu', 'wanda'), out('webgpu', 'wanda-streamed')), { masks: 0, values: 0, maxAbs: 0 });
    });

    for (const m of UNSTRUCTURED) {
      it(`${m.method} (unstructured ${m.sparsity}): identical masks${m.updatesWeights ? ', kept weights within fp32 rounding' : ', identical weights'}`, () => {
        const d = maskDifferences(out('wasm', m.method), out('webgpu', m.method));
        assert.equal(d.masks, 0, `${m.method}: ${d.masks} mask entries differ`);
        // SparseGPT and FISTAPruner update the kept weights from Gram-matrix solves whose fp32 sums
        // the GPU orders differently: measured at most 3.4e-6 apart (weights up to ~0.5).
        if (m.updatesWeights) assert.ok(d.maxAbs <= 1e-5, `${m.method}: kept weights ${d.maxAbs} apart`);
        else assert.equal(d.values, 0, `${m.method}: ${d.values} weights differ`);
      });
    }

    for (const m of STRUCTURED) {
      it(`${m.method} (structured ${m.sparsity}): the same channels kept${m.method === 'flap' ? ', compensation biases within fp32 rounding' : ', the same weights'}`, () => {
        const a = readHfCheckpoint(out('wasm', m.method));
        const b = readHfCheckpoint(out('webgpu', m.method));
        assert.deepEqual(b.config, a.config);
        for (const [name, t] of a.tensors) {
          const u = b.tensors.get(name)!;
          assert.deepEqual(u.shape, t.shape, name);
          // Kept channels are copied, never recomputed: the same bits. FLAP's bias compensation is
          // computed from column means (fp32 sums in the GPU's order): measured ≤ 1.2e-7 apart.
          if (m.method === 'flap' && name.endsWith('.bias')) assert.ok(maxAbsDiff(u.data, t.data) <= 1e-6, `${name}: ${maxAbsDiff(u.data, t.data)}`);
          else assert.ok(u.data.every((v, i) => v === t.data[i]), `${name}: weights differ`);
        }
      });
    }

    it('LoRA recovery, a few steps: the same losses and held-out NLL (within 1e-4 relative)', () => {
      const steps = (j: Record<string, unknown>) => j.log as { loss: number }[];
      const [a, b] = [wasm.commands.finetune, webgpu.commands.finetune];
      assert.equal(steps(b).length, 3);
      steps(a).forEach((s, i) => assert.ok(relDiff(steps(b)[i].loss, s.loss) <= 1e-4, `step ${i + 1}: loss ${steps(b)[i].loss} vs ${s.loss}`));
      const held = (j: Record<string, unknown>) => (j.heldOut as { after: number }).after;
      assert.ok(relDiff(held(b), held(a)) <= 1e-4, `held-out NLL ${held(b)} vs ${held(a)}`);
    });

    it('an experiment (prunelab run): wanda-sp + LoRA recovery, perplexity, zero-shot, speed; the same table as wasm', () => {
      for (const r of [webgpu.commands.run, wasm.commands.run]) assert.deepEqual(r.failed, []);
      const rows = (backend: string) => readResults(out(backend, 'experiment'));
      const [a, b] = [rows('wasm'), rows('webgpu')];
      assert.equal(b.length, 2);
      a.forEach((ra, i) => {
        const rb = b[i]!;
        assert.equal(rb.run_id, ra.run_id);
        assert.equal(rb.params_after, ra.params_after);
        const d = relDiff(Number(rb['ppl:tinystories']), Number(ra['ppl:tinystories']));
        assert.ok(d <= 1e-4, `${ra.run_id}: ppl ${rb['ppl:tinystories']} vs ${ra['ppl:tinystories']}`);
        assert.deepEqual([rb['acc:piqa'], rb['acc_norm:piqa']], [ra['acc:piqa'], ra['acc_norm:piqa']], ra.run_id);
      });
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

interface BatchResults { commands: Record<string, Record<string, unknown>>; numTensors: number | null }

/**
 * The commands every backend runs, by name; outputs go under dir/backend. Small windows and
 * limits: the software adapter is slow.
 */
function batchCommands(dir: string, backend: string): Record<string, string[]> {
  const model = ['--model', STORIES_BIN];
  const calib = ['--calib', TEXT, '--nsamples', '4', '--seqlen', '64'];
  // Streamed: a device budget of the resident weights of one layer at a time (as test/streamed.test.ts).
  const budget = String(streamedNeed(openCheckpoint(STORIES_BIN), backend).backendBytes);
  const at = (name: string) => path.join(dir, backend, name);
  const ppl = ['eval', 'ppl', ...model, '--text', TEXT, '--seqlen', '128', '--max-windows', '8'];
  const generate = (tokens: number) => ['generate', ...model, '--greedy', '--no-stop-at-eos', '--max-new-tokens', String(tokens)];
  const prune = (m: { method: string; sparsity: string; options: string[] }, out = m.method) =>
    ['prune', ...model, '--method', m.method, '--sparsity', m.sparsity, ...calib, ...m.options.flatMap((o) => ['--option', o]), '--out', at(out)];
  const commands: Record<string, string[]> = {
    ppl,
    zeroshot: ['eval', 'zeroshot', ...model, '--task', shared('zeroshot', 'piqa.jsonl'), '--limit', '20'],
    speed: ['eval', 'speed', ...model, '--prompt-tokens', '16', '--new-tokens', '8', '--repeats', '1', '--warmup', '0'],
    generate: generate(48),
    ...Object.fromEntries([...UNSTRUCTURED, ...STRUCTURED].map((m) => [`prune-${m.method}`, prune(m)])),
    finetune: ['finetune', ...model, '--data', TEXT, '--steps', '3', '--seqlen', '64', '--micro-batch', '2', '--lr', '3e-3', '--out', at('finetuned')],
    run: ['run', writeExperiment(dir, backend)],
  };
  if (backend === 'webgpu') {
    Object.assign(commands, {
      'ppl-streamed': [...ppl, '--device-memory', budget],
      'generate-streamed': [...generate(12), '--device-memory', budget],
      'prune-wanda-streamed': [...prune(UNSTRUCTURED[1]!, 'wanda-streamed'), '--device-memory', budget],
    });
  }
  return commands;
}

/** An experiment: wanda-sp 20% with two steps of LoRA recovery, and the dense model; every evaluation, small. */
function writeExperiment(dir: string, backend: string): string {
  const file = path.join(dir, `experiment-${backend}.yaml`);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(file, [
    `name: webgpu-${backend}`,
    `output: ${JSON.stringify(path.join(dir, backend, 'experiment'))}`,
    'models:',
    `  - {id: stories260K, path: ${JSON.stringify(STORIES_BIN)}}`,
    `calibration: {text: ${JSON.stringify(TEXT)}, nsamples: 4, seqlen: 64, seed: 0}`,
    'methods:',
    '  - name: wanda-sp',
    '    recovery:',
    `      - {schedule: uniform, steps: 2, lr: 0.003, rank: 4, seqlen: 64, microBatch: 2, data: ${JSON.stringify(TEXT)}}`,
    'sparsities: [0.2]',
    'evaluations:',
    `  perplexity: [{id: tinystories, text: ${JSON.stringify(TEXT)}, seqlen: 128, maxWindows: 2}]`,
    `  zeroshot: [{task: ${JSON.stringify(shared('zeroshot', 'piqa.jsonl'))}, limit: 10}]`,
    '  speed: {promptTokens: 16, newTokens: 4, warmup: 0, repeats: 1}',
    '',
  ].join('\n'));
  return file;
}

/** Every command of `batchCommands` in one child process on `backend`. */
function runBatch(backend: string, dir: string): Promise<BatchResults> {
  const commands = batchCommands(dir, backend);
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'test/webgpu-cli-batch.ts'), backend], {
    cwd: REPO_ROOT, stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  child.stdin.end(JSON.stringify(Object.values(commands)));
  const timer = setTimeout(() => child.kill('SIGKILL'), 2 * SLOW);
  return new Promise((resolve, reject) => child.on('close', (code) => {
    clearTimeout(timer);
    const lines = stdout.trim().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
    const names = Object.keys(commands);
    if (code !== 0 || lines.length !== names.length + 1) {
      reject(new Error(`${backend} batch: exit ${code}, ${lines.length} of ${names.length + 1} results\n${stderr.slice(-3000)}`));
      return;
    }
    resolve({ commands: Object.fromEntries(names.map((n, i) => [n, lines[i]!])), numTensors: lines[names.length]!.numTensors as number | null });
  }));
}

/** Entries whose zero/non-zero state differs, entries that differ at all, and the largest difference. */
function maskDifferences(dirA: string, dirB: string): { masks: number; values: number; maxAbs: number } {
  const a = readHfCheckpoint(dirA).tensors;
  const b = readHfCheckpoint(dirB).tensors;
  assert.deepEqual([...b.keys()].sort(), [...a.keys()].sort());
  const d = { masks: 0, values: 0, maxAbs: 0 };
  for (const [name, t] of a) {
    const u = b.get(name)!;
    assert.deepEqual(u.shape, t.shape, name);
    for (let i = 0; i < t.data.length; i++) {
      if ((t.data[i] === 0) !== (u.data[i] === 0)) d.masks++;
      if (t.data[i] !== u.data[i]) d.values++;
    }
    d.maxAbs = Math.max(d.maxAbs, maxAbsDiff(t.data, u.data));
  }
  return d;
}

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
