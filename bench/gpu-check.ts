/**
 * `npm run gpu-check`: on a GPU machine, one command that answers "how fast on a GPU". It prints
 * the WebGPU adapter, then runs the same sections on WebGPU and on the WebAssembly backend (each
 * in its own process: a backend is per process) and prints them side by side with ratios:
 *
 *   prefill      forward tokens/s of a synthetic LLaMA (hidden 2048, 4 layers) at 1×256 and 4×256,
 *                and on WebGPU both attention layouts (src/backend/layout.ts), to confirm its choice
 *   logits       the same forward's logits on both backends (max |Δ|, a correctness check)
 *   sparsegpt    SparseGPT on one 4096×4096 operator with 1024 calibration tokens (Gram matrix, solve)
 *   prune        pruning stories260K (or, without the shared data, a small synthetic model) and the
 *                bench's synthetic 512×8 model (not with --quick) with wanda, sparsegpt and
 *                fistapruner at 50%, default options, calibration included
 *
 * Then, where a Python with PyTorch and CUDA is found (`bench/torch/server.py`, the anchor of
 * `npm run bench -- --only torch`), the same prefill (1×256, the same checkpoint) and SparseGPT
 * operator (the same weights and inputs) in eager PyTorch on the GPU, float32 without TF32, as the
 * column a user would otherwise pick; `--torch-device cpu` runs that column on the CPU instead.
 *
 * It fails (exit 2) when no *hardware* adapter is found: a software one (llvmpipe) measures the
 * CPU, not a GPU. `--allow-software` runs anyway (to try the script on a machine without a GPU);
 * `--quick` shrinks every section.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { activeAdapter, deviceDescription, initBackend, type ConcreteBackend } from '../src/backend/index.ts';
import { describeAdapter, type WebGPUAdapter } from '../src/backend/webgpu.ts';
import { setModelLayout } from '../src/backend/layout.ts';
import type { CausalLM } from '../src/model/causal-lm.ts';
import { loadModel } from '../src/io/load-model.ts';
import { loadTokenizer } from '../src/tokenizer/load.ts';
import { calibrationFromText } from '../src/prune/calibration.ts';
import { parseMethodOptions, resolveMethod } from '../src/prune/registry.ts';
import { pruneModel } from '../src/prune/engine.ts';
import { sharedDataDir } from '../src/util/paths.ts';
import { describeWasmMatmul } from '../src/backend/openblas.ts';
import { median } from '../src/eval/speed.ts';
import { writeHfCheckpoint } from '../src/io/hf-checkpoint.ts';
import { buildSyntheticLlama, syntheticLlamaConfig, syntheticLlamaTensors } from '../src/model/synthetic.ts';
import { operatorData, prunelabSparsegpt, writeOperator } from './torch/operator.ts';
import { TorchBridge, type TorchInfo } from './torch/bridge.ts';
import { SYNTHETIC_512X8, table, time } from './util.ts';

const argv = process.argv.slice(2);
const quick = argv.includes('--quick');
const allowSoftware = argv.includes('--allow-software');
const sideArg = argv.includes('--side') ? argv[argv.indexOf('--side') + 1] : undefined;
const torchDevice = argv.includes('--torch-device') ? argv[argv.indexOf('--torch-device') + 1]! : 'cuda';

const SYNTH = quick
  ? { hidden: 512, layers: 2, heads: 8, kvHeads: 4, ffn: 1408, vocab: 2048, seed: 1 }
  : { hidden: 2048, layers: 4, heads: 16, kvHeads: 4, ffn: 5632, vocab: 8192, seed: 1 };
const OPERATOR = quick ? { rows: 1024, cols: 1024, tokens: 256 } : { rows: 4096, cols: 4096, tokens: 1024 };
const SHARED = sharedDataDir();
const STORIES = path.join(SHARED, 'models/stories260K/stories260K.bin');
const TEXT = path.join(SHARED, 'text/tinystories-sample.txt');

/** What one side (one backend, one process) measured. */
interface SideResult {
  backend: string;
  device: string;
  /** The wasm backend's product kernel (OpenBLAS and its threads, or XNNPACK); null elsewhere. */
  matmul: string | null;
  adapter: WebGPUAdapter | null;
  prefill: { label: string; tokensPerS: number }[];
  logits: number[];
  sparsegpt: { hessianS: number; solveS: number };
  prune: { model: string; method: string; seconds: number }[];
}

function ids(B: number, T: number, vocab: number): number[][] {
  return Array.from({ length: B }, (_, b) => Array.from({ length: T }, (_, t) => 3 + ((b * 131 + t * 17) % (vocab - 3))));
}

function tokensPerS(model: CausalLM, B: number, T: number, repeats: number): number {
  const x = ids(B, T, model.config.vocabSize);
  const ms = time(() => tf.tidy(() => { model.forward(x).dataSync(); }), repeats);
  return (B * T) / (ms / 1000);
}

async function runSide(backend: ConcreteBackend): Promise<SideResult | { adapterOnly: WebGPUAdapter }> {
  await initBackend(backend, true);
  // A software adapter measures the CPU: report it before spending minutes on it.
  const adapter = activeAdapter();
  if (adapter?.software && !allowSoftware) return { adapterOnly: adapter };
  const log = (s: string) => process.stderr.write(`gpu-check [${backend}]: ${s}\n`);
  const repeats = quick ? 2 : 3;
  const model = buildSyntheticLlama(SYNTH);
  const prefill: SideResult['prefill'] = [];
  const shapes: [number, number][] = quick ? [[1, 128]] : [[1, 256], [4, 256]];
  const layouts = backend === 'webgpu' ? [false, true] : [null];
  for (const [B, T] of shapes) {
    for (const batched of layouts) {
      if (batched !== null) setModelLayout({ batchedAttention: batched });
      const tps = tokensPerS(model, B, T, repeats);
      prefill.push({ label: `${B}×${T}${batched === null ? '' : batched ? ', batched attention' : ', per-group attention'}`, tokensPerS: tps });
      log(`prefill ${prefill.at(-1)!.label}: ${tps.toFixed(0)} tokens/s`);
    }
  }
  setModelLayout(null);
  const logits = tf.tidy(() => Array.from(model.forward(ids(1, 64, SYNTH.vocab)).dataSync().slice(0, 4096)));
  model.dispose();

  const op = await prunelabSparsegpt(OPERATOR, operatorData(OPERATOR, 7), 0.5);
  log(`sparsegpt ${OPERATOR.rows}×${OPERATOR.cols}: Gram ${op.hessianS.toFixed(2)} s, solve ${op.solveS.toFixed(2)} s`);

  const prune: SideResult['prune'] = [];
  const haveStories = fs.existsSync(STORIES);
  const small = { hidden: 256, layers: 2, heads: 4, kvHeads: 2, ffn: 688, vocab: 512, seed: 2 };
  const cases: { label: string; make: () => CausalLM; windows: number[][] }[] = [haveStories
    ? {
      label: 'stories260K',
      make: () => loadModel(STORIES).model,
      windows: calibrationFromText(await loadTokenizer(path.join(SHARED, 'models/stories260K/tok512.bin')), { text: TEXT, nsamples: 16, seqlen: 128, seed: 0 }).windows,
    }
    : { label: 'synthetic 256×2', make: () => buildSyntheticLlama(small), windows: ids(16, 128, small.vocab) }];
  if (!quick) cases.push({ label: 'synthetic 512×8', make: () => buildSyntheticLlama(SYNTHETIC_512X8), windows: ids(8, 128, SYNTHETIC_512X8.vocab) });
  for (const c of cases) {
    for (const name of ['wanda', 'sparsegpt', 'fistapruner']) {
      const method = await resolveMethod(name);
      const m = c.make();
      const t0 = performance.now();
      await pruneModel(m, { method, options: parseMethodOptions(method, {}), target: { sparsity: 0.5, pattern: { kind: 'unstructured' } }, windows: c.windows });
      prune.push({ model: c.label, method: name, seconds: (performance.now() - t0) / 1000 });
      log(`prune ${c.label} ${name}: ${prune.at(-1)!.seconds.toFixed(2)} s`);
      m.dispose();
    }
  }
  const mm = describeWasmMatmul();
  const matmul = mm === null ? null : mm.kernel === 'openblas' ? `OpenBLAS (${mm.openblas}), ${mm.threads} threads, products in ≥ ${mm.minTiles ?? 4} tiles` : 'XNNPACK';
  return { backend, device: deviceDescription(), matmul, adapter: activeAdapter(), prefill, logits, sparsegpt: { hessianS: op.hessianS, solveS: op.solveS }, prune };
}

/** Run one side in a child process; its result is the last line of its stdout. */
function child(backend: ConcreteBackend): SideResult | { adapterOnly: WebGPUAdapter } | string {
  const script = fileURLToPath(import.meta.url);
  const flags = [...(quick ? ['--quick'] : []), ...(allowSoftware ? ['--allow-software'] : [])];
  // The parent's own loader flags (`--import tsx` under npm run), so a child runs the same way.
  const r = spawnSync(process.execPath, [...process.execArgv, script, '--side', backend, ...flags], {
    encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 64 << 20,
  });
  const last = r.stdout.trim().split('\n').at(-1) ?? '';
  try {
    const parsed = JSON.parse(last) as SideResult | { adapterOnly: WebGPUAdapter } | { error: string };
    return 'error' in parsed ? parsed.error : parsed;
  } catch {
    return `the ${backend} side ended with exit ${r.status} and no result`;
  }
}

/** What PyTorch measured on `torchDevice`: prefill 1×TORCH_TOKENS tokens/s and the SparseGPT operator; or why not. */
interface TorchResult { label: string; prefillTps: number; hessianS: number; solveS: number }
const TORCH_TOKENS = quick ? 128 : 256;

/**
 * The same synthetic checkpoint (written once, loaded by PyTorch onto `torchDevice`) and the same
 * SparseGPT operator in eager PyTorch (bench/torch/server.py): one warm-up, then the median of
 * three prefills (into a fresh KV cache, the last position's argmax read back) and the second of
 * two SparseGPT runs (the first pays CUDA's library start-up).
 */
async function torchAnchor(): Promise<TorchResult | string> {
  const started = TorchBridge.start();
  if ('skip' in started) return started.skip;
  const torch = started.bridge;
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'prunelab-gpu-check-'));
  try {
    const info = await torch.request<TorchInfo & { cuda: string | null }>({ cmd: 'info' });
    if (torchDevice === 'cuda' && !info.cuda) return `PyTorch ${info.torch} (${info.executable}) sees no CUDA device`;
    const label = `PyTorch ${info.torch} ${torchDevice === 'cuda' ? `CUDA (${info.cuda})` : `CPU (${info.default_threads} threads)`}`;
    const config = syntheticLlamaConfig(SYNTH);
    const dir = path.join(tmp, 'model');
    writeHfCheckpoint(dir, config, syntheticLlamaTensors(config, SYNTH.seed, 0.02));
    await torch.request({ cmd: 'load', key: 'synth', model: dir, device: torchDevice });
    const prefill = async () => (await torch.request<{ prefill_ms: number }>({ cmd: 'speed', key: 'synth', prompt_tokens: TORCH_TOKENS, new_tokens: 0 })).prefill_ms;
    await prefill();
    const ms = [await prefill(), await prefill(), await prefill()];
    const file = path.join(tmp, 'operator.safetensors');
    writeOperator(file, OPERATOR, operatorData(OPERATOR, 7));
    const solve = () => torch.request<{ hessian_s: number; solve_s: number }>({ cmd: 'sparsegpt', file, sparsity: 0.5, dtype: 'float32', device: torchDevice });
    await solve();
    const sg = await solve();
    return { label, prefillTps: TORCH_TOKENS / (median(ms) / 1000), hessianS: sg.hessian_s, solveS: sg.solve_s };
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  } finally {
    await torch.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

function fail(message: string): never {
  process.stderr.write(`gpu-check: ${message}\n`);
  process.exit(2);
}

if (sideArg !== undefined) {
  try {
    process.stdout.write(JSON.stringify(await runSide(sideArg as ConcreteBackend)) + '\n');
  } catch (e) {
    process.stdout.write(JSON.stringify({ error: e instanceof Error ? e.message : String(e) }) + '\n');
  }
  process.exit(0);
}

const gpu = child('webgpu');
if (typeof gpu === 'string') fail(`no WebGPU: ${gpu}`);
const adapter = 'adapterOnly' in gpu ? gpu.adapterOnly : gpu.adapter;
if (adapter === null) fail('the webgpu side reported no adapter');
console.log(`# gpu-check (${new Date().toISOString()}${quick ? ', quick' : ''})\n\nWebGPU adapter: ${describeAdapter(adapter)}`);
console.log(`  vendor ${adapter.vendor}, architecture ${adapter.architecture}, device ${adapter.device}; `
  + `maxBufferSize ${adapter.maxBufferSize}, maxStorageBufferBindingSize ${adapter.maxStorageBufferBindingSize}\n`);
if ('adapterOnly' in gpu) {
  fail(`only a software adapter (${describeAdapter(adapter)}): it measures the CPU, not a GPU. On a GPU machine this means `
    + 'Dawn found no Vulkan driver for the GPU: install the vendor\'s Vulkan driver (NVIDIA: the driver\'s Vulkan ICD, '
    + '/usr/share/vulkan/icd.d/nvidia_icd.json; in a container also NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics), '
    + 'check with `vulkaninfo --summary`, then run again. --allow-software runs anyway.');
}
const cpu = child('wasm');
if (typeof cpu === 'string' || 'adapterOnly' in cpu) fail(`the wasm side failed: ${typeof cpu === 'string' ? cpu : 'no result'}`);

const anchor = await torchAnchor();
const pt = typeof anchor === 'string' ? null : anchor;
const rows: (string | number)[][] = [];
const wasmPrefill = (label: string) => cpu.prefill.find((p) => label.startsWith(p.label))?.tokensPerS ?? NaN;
// PyTorch's column: batch 1 only (its reference model runs one sequence).
const ptPrefill = (label: string) => (pt && label.startsWith(`1×${TORCH_TOKENS}`) ? pt.prefillTps : NaN);
const cell = (v: number) => (Number.isNaN(v) ? '—' : v);
for (const p of gpu.prefill) {
  const w = wasmPrefill(p.label), t = ptPrefill(p.label);
  rows.push([`prefill tokens/s ${p.label}`, p.tokensPerS, w, p.tokensPerS / w, cell(t), cell(p.tokensPerS / t)]);
}
const op = `sparsegpt ${OPERATOR.rows}×${OPERATOR.cols}`;
const timeRow = (label: string, g: number, c: number, t: number) => rows.push([`${label} s (lower is better)`, g, c, c / g, cell(t), cell(t / g)]);
timeRow(`${op} Gram`, gpu.sparsegpt.hessianS, cpu.sparsegpt.hessianS, pt?.hessianS ?? NaN);
timeRow(`${op} solve`, gpu.sparsegpt.solveS, cpu.sparsegpt.solveS, pt?.solveS ?? NaN);
for (const [i, p] of gpu.prune.entries()) timeRow(`prune ${p.model} ${p.method} 50%`, p.seconds, cpu.prune[i]!.seconds, NaN);
console.log(table(['', 'webgpu', 'wasm', 'webgpu ÷ wasm', 'PyTorch', 'webgpu ÷ PyTorch'], rows));
console.log(pt
  ? `\nPyTorch column: ${pt.label}, eager float32${torchDevice === 'cuda' ? ' (TF32 off, PyTorch\'s default)' : ''}, bench/torch/server.py: prefill into a fresh KV cache with the last`
    + ' argmax read back (PruneLab reads all logits back), SparseGPT on the same weights and inputs (second of two runs).'
  : `\nPyTorch column skipped: ${anchor}.`);
let maxDiff = 0;
let scale = 0;
gpu.logits.forEach((v, i) => { maxDiff = Math.max(maxDiff, Math.abs(v - cpu.logits[i])); scale = Math.max(scale, Math.abs(cpu.logits[i])); });
console.log(`Logits of the synthetic model (1×64 tokens, first 4096 values): max |Δ| ${maxDiff.toExponential(2)} at max |logit| ${scale.toFixed(3)}.`);
console.log(`wasm side: ${cpu.device}, products on ${cpu.matmul ?? 'an unknown kernel'}. Synthetic LLaMA: hidden ${SYNTH.hidden}, ${SYNTH.layers} layers, ${SYNTH.heads} heads / ${SYNTH.kvHeads} kv, `
  + `FFN ${SYNTH.ffn}, vocab ${SYNTH.vocab}; medians of ${quick ? 2 : 3} after a warm-up. Ratios: speed-ups of webgpu (tokens/s ratio, or time ratio inverted).`);
if (maxDiff > 1e-4 * Math.max(1, scale)) fail(`the logits differ beyond 1e-4 relative (max |Δ| ${maxDiff})`);
