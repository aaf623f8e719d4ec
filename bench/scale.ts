/**
 * `npm run bench -- --only scale`: PruneLab on real model shapes read from disk — random bf16
 * checkpoints of the TinyLlama-1.1B shape (one 2.2 GB file, and 1.5 GB shards) and, when the disk
 * has room, of the LLaMA-2-7B shape (13.5 GB) — cached across runs (bench/scale-checkpoints.ts).
 *
 * Every step is the real CLI run as a child process under `/usr/bin/time`, so its wall time and
 * peak RSS (the largest process of the command: `ru_maxrss` of its process tree) are its own. A
 * step that fails reports `failed: <its error line>` and the rest go on. Steps that put the
 * model through a forward pass need streamed execution (one layer on the backend: the whole
 * model does not fit the WebAssembly heap); until that lands they fail up front with the memory
 * error, which is what this section then shows.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { cachedCheckpoint, cacheRoot, checkpointDataBytes, isCached, LLAMA2_7B, TINYLLAMA, type CachedCheckpoint } from './scale-checkpoints.ts';
import { table, type Cell } from './util.ts';
import { sharedDataDir } from '../src/util/paths.ts';

const ROOT = path.resolve(import.meta.dirname, '..');
const CLI = path.join(ROOT, 'bin/prunelab.js');
const TIME = '/usr/bin/time';
const GB = 1e9;

/** What a step needs beyond reading headers and files. */
type Needs = 'headers only' | 'tensor by tensor' | 'streamed execution';

interface StepResult {
  ok: boolean;
  seconds: number;
  /** Peak RSS in bytes, or NaN without /usr/bin/time. */
  rss: number;
  /** Parsed JSON of the command, when it printed one. */
  json: Record<string, unknown> | null;
  /** One line: the error, or a summary of the result. */
  line: string;
}

/** Run `argv` (node arguments) as a child under /usr/bin/time; never throws. */
function runTimed(argv: string[], timeoutS: number): StepResult {
  const timeFile = path.join(cacheRoot(), `time-${process.pid}.txt`);
  const haveTime = fs.existsSync(TIME);
  const [cmd, args] = haveTime ? [TIME, ['-f', '%M', '-o', timeFile, process.execPath, ...argv]] : [process.execPath, argv];
  const t0 = performance.now();
  const r = spawnSync(cmd, args, { cwd: ROOT, encoding: 'utf8', timeout: timeoutS * 1000, maxBuffer: 64 << 20 });
  const seconds = (performance.now() - t0) / 1000;
  let rss = NaN;
  if (haveTime && fs.existsSync(timeFile)) {
    const kb = Number(fs.readFileSync(timeFile, 'utf8').trim().split('\n').at(-1));
    if (Number.isFinite(kb)) rss = kb * 1024;
    fs.rmSync(timeFile, { force: true });
  }
  let json: Record<string, unknown> | null = null;
  const out = (r.stdout ?? '').trim().split('\n').filter((l) => l.startsWith('{'));
  try {
    if (out.length > 0) json = JSON.parse(out.at(-1) as string) as Record<string, unknown>;
  } catch {
    json = null;
  }
  const lastErr = (r.stderr ?? '').trim().split('\n').filter((l) => l.trim() !== '' && !/^\s+at /.test(l) && !l.startsWith('Command exited')).at(-1) ?? '';
  const ok = r.status === 0 && r.error === undefined;
  const why = r.error ? `${(r.error as NodeJS.ErrnoException).code === 'ETIMEDOUT' ? `timed out after ${timeoutS} s` : r.error.message}`
    : (json?.error as string | undefined) ?? lastErr.replace(/^prunelab: /, '');
  // The checkpoint's path leads most messages; the table already names it.
  // The first sentence says what failed; the options after it are in the command's own output.
  const short = why.replace(/^\/\S+: /, '').replace(/\. [A-Z].*$/s, '.');
  const line = ok ? '' : short.length > 220 ? `${short.slice(0, 217)}…` : short;
  return { ok, seconds, rss, json, line };
}

const cli = (args: string[]) => [CLI, ...args, '--json', '--backend', 'wasm'];

const inspect = (dir: string): Step => ({
  label: 'inspect', needs: 'headers only', argv: cli(['inspect', '--model', dir]),
  summary: (j) => `${((j?.parameters as { total?: number })?.total ?? 0).toLocaleString('en-US')} parameters`,
});

interface Step {
  label: string;
  needs: Needs;
  argv: string[];
  /** What to report from a successful run's JSON. */
  summary?: (json: Record<string, unknown> | null) => string;
  /** Folders the step writes (removed after it). */
  writes?: string[];
}

export interface ScaleOptions {
  quick: boolean;
  print: (s: string) => void;
  /** Per-step limit in seconds. */
  stepTimeoutS?: number;
}

function freeBytes(dir: string): number {
  fs.mkdirSync(dir, { recursive: true });
  const s = fs.statfsSync(dir);
  return s.bavail * s.bsize;
}

export async function runScaleSection(o: ScaleOptions): Promise<void> {
  const log = (m: string) => console.error(m);
  const text = path.join(sharedDataDir(), 'text/wikitext2-test.txt');
  const timeout = o.stepTimeoutS ?? Number(process.env.PRUNELAB_SCALE_STEP_TIMEOUT ?? 3600);
  const root = cacheRoot();
  o.print('## Scale: real model shapes from disk (random bf16 weights)\n');
  if (!fs.existsSync(text)) {
    o.print(`(skipped: the calibration/evaluation text ${text} is missing; set PRUNELAB_SHARED_DATA)\n`);
    return;
  }
  const scratch = path.join(root, `scratch-${process.pid}`);
  const rows: Cell[][] = [];
  const notes: string[] = [];
  const row = (ck: CachedCheckpoint, name: string, s: Step, r: StepResult) => {
    const ratio = r.rss / ck.bytes;
    const bound = 1.5 * ck.bytes + GB;
    rows.push([name, s.label, s.needs, r.ok ? (s.summary?.(r.json) ?? 'ok') : `failed: ${r.line}`, r.seconds, r.rss / GB, ratio,
      Number.isNaN(r.rss) || Number.isNaN(bound) ? '–' : r.rss <= bound ? 'yes' : 'no']);
    log(`scale: ${name} ${s.label}: ${r.ok ? 'ok' : `failed: ${r.line}`} (${r.seconds.toFixed(1)} s, peak RSS ${(r.rss / GB).toFixed(2)} GB)`);
  };
  const runSteps = (ck: CachedCheckpoint, name: string, steps: Step[]) => {
    for (const s of steps) {
      const r = runTimed(s.argv, timeout);
      row(ck, name, s, r);
      for (const w of s.writes ?? []) fs.rmSync(w, { recursive: true, force: true });
    }
  };
  const out = (n: string) => path.join(scratch, n);
  const ppl = (j: Record<string, unknown> | null) => `ppl ${Number(j?.ppl).toFixed(1)} (${String(j?.tokens)} tokens)`;
  const pruned = (j: Record<string, unknown> | null) => `${(100 * Number((j?.zeros as { overall?: { sparsity?: number } })?.overall?.sparsity)).toFixed(1)}% zeros`;

  try {
    // What every step pays before its work: process start-up (Node, tsx, TensorFlow.js) on a tiny model.
    const embedded = path.join(ROOT, 'data/brown-llama');
    const base = { dir: embedded, bytes: NaN, files: 1, buildSeconds: 0 }; // no ratio: a 7 MB model
    runSteps(base, 'embedded brown-llama (7 MB)', [{ ...inspect(embedded), label: 'inspect (start-up baseline)' }]);

    // ---- TinyLlama-1.1B shape: one file and 1.5 GB shards --------------------------------------
    const tinyBytes = checkpointDataBytes(TINYLLAMA);
    const tinyNeed = [Infinity, 1.5e9].filter((b) => !isCached(TINYLLAMA, b)).length * tinyBytes + 2 * tinyBytes + 2 * GB;
    if (freeBytes(root) < tinyNeed) {
      o.print(`(${TINYLLAMA.label} skipped: it needs ${(tinyNeed / GB).toFixed(1)} GB free under ${root}, ${(freeBytes(root) / GB).toFixed(1)} GB are; set PRUNELAB_BENCH_CACHE)\n`);
    } else {
      const one = cachedCheckpoint(TINYLLAMA, Infinity, log);
      const sharded = cachedCheckpoint(TINYLLAMA, 1.5e9, log);
      for (const [ck, what] of [[one, 'one file'], [sharded, '1.5 GB shards']] as const) {
        notes.push(`${TINYLLAMA.label} (${what}): ${(ck.bytes / GB).toFixed(2)} GB in ${ck.files} file(s), ${ck.buildSeconds > 0 ? `built in ${ck.buildSeconds.toFixed(0)} s this run` : 'from the cache'} (${ck.dir})`);
      }
      const m = sharded.dir;
      runSteps(one, `${TINYLLAMA.label}, one file`, [inspect(one.dir), {
        // The one file runs past 2 GiB: its tensors there must read back as the shards hold them.
        label: 'read every tensor, compared with the shards', needs: 'tensor by tensor',
        summary: (j) => (j?.identical ? `${String(j?.tensors)} tensors bit-identical` : `DIFFERENT: ${JSON.stringify(j?.differ)}`),
        argv: ['--import', 'tsx', path.join(ROOT, 'bench/scale-reload.ts'), m, one.dir],
      }]);
      runSteps(sharded, `${TINYLLAMA.label}, shards`, [
        inspect(m),
        {
          label: 'Wanda 50%, 16 × 512 calibration tokens', needs: 'streamed execution', summary: pruned,
          argv: cli(['prune', '--model', m, '--method', 'wanda', '--sparsity', '0.5', '--calib', text, '--nsamples', '16', '--seqlen', '512', '--out', out('wanda')]),
        },
        {
          // The pruned checkpoint (written in the input's bf16) loaded again and evaluated.
          label: 'reload the Wanda checkpoint: eval ppl, 8 × 512', needs: 'streamed execution', summary: ppl, writes: [out('wanda')],
          argv: cli(['eval', 'ppl', '--model', out('wanda'), '--text', text, '--seqlen', '512', '--max-windows', '8']),
        },
        {
          label: 'SparseGPT 50%, layer 0 only, 16 × 512', needs: 'streamed execution', summary: pruned, writes: [out('sparsegpt')],
          argv: cli(['prune', '--model', m, '--method', 'sparsegpt', '--sparsity', '0.5', '--layers', '0', '--calib', text, '--nsamples', '16', '--seqlen', '512', '--out', out('sparsegpt')]),
        },
        {
          label: 'eval ppl, 8 × 512 tokens', needs: 'streamed execution', summary: ppl,
          argv: cli(['eval', 'ppl', '--model', m, '--text', text, '--seqlen', '512', '--max-windows', '8']),
        },
        {
          label: 'save (convert, 1.5 GB shards)', needs: 'tensor by tensor', summary: (j) => `${((j?.files as string[]) ?? []).filter((f) => f.endsWith('.safetensors')).length} weight files, ${(Number(j?.bytes) / GB).toFixed(2)} GB`,
          argv: cli(['convert', '--model', m, '--out', out('saved'), '--shard-size', '1.5GB']),
        },
        {
          label: 'reload (every tensor read back, compared with the source)', needs: 'tensor by tensor', writes: [out('saved')],
          summary: (j) => (j?.identical ? `${String(j?.tensors)} tensors bit-identical` : `DIFFERENT: ${JSON.stringify(j?.differ)}`),
          argv: ['--import', 'tsx', path.join(ROOT, 'bench/scale-reload.ts'), m, out('saved')],
        },
      ]);
    }

    // ---- LLaMA-2-7B shape: only with the disk room for it and its pruned copy ---------------------
    const bigBytes = checkpointDataBytes(LLAMA2_7B);
    const bigNeed = (isCached(LLAMA2_7B, 2e9) ? 0 : bigBytes) + bigBytes + 5 * GB;
    if (o.quick) {
      o.print(`(${LLAMA2_7B.label} skipped with --quick)\n`);
    } else if (freeBytes(root) < bigNeed) {
      o.print(`(${LLAMA2_7B.label} skipped: it needs ${(bigNeed / GB).toFixed(1)} GB free under ${root} (the checkpoint and its pruned copy), `
        + `${(freeBytes(root) / GB).toFixed(1)} GB are; set PRUNELAB_BENCH_CACHE)\n`);
    } else {
      const big = cachedCheckpoint(LLAMA2_7B, 2e9, log);
      notes.push(`${LLAMA2_7B.label} (2 GB shards): ${(big.bytes / GB).toFixed(2)} GB in ${big.files} files, ${big.buildSeconds > 0 ? `built in ${big.buildSeconds.toFixed(0)} s this run` : 'from the cache'} (${big.dir})`);
      runSteps(big, LLAMA2_7B.label, [
        inspect(big.dir),
        {
          label: 'Wanda 50%, layers 0-1, 16 × 512 calibration tokens', needs: 'streamed execution', summary: pruned, writes: [out('wanda7b')],
          argv: cli(['prune', '--model', big.dir, '--method', 'wanda', '--sparsity', '0.5', '--layers', '0-1', '--calib', text, '--nsamples', '16', '--seqlen', '512', '--out', out('wanda7b')]),
        },
        {
          label: 'one decode step (prompt + 1 token, greedy)', needs: 'streamed execution', summary: () => 'ok',
          argv: cli(['generate', '--model', big.dir, '--prompt', 'The history of', '--max-new-tokens', '2', '--greedy']),
        },
      ]);
    }
  } finally {
    fs.rmSync(scratch, { recursive: true, force: true });
  }

  o.print(table(['checkpoint', 'step', 'needs', 'result', 'wall s', 'peak RSS GB', 'RSS ÷ checkpoint', '≤ 1.5 × ckpt + 1 GB'], rows));
  o.print('');
  for (const n of notes) o.print(`* ${n}`);
  o.print('\nEach step is `prunelab …` (or bench/scale-reload.ts) run as a child: wall time includes process start-up (the baseline'
    + ` row), peak RSS is \`${TIME} -f %M\` (the largest process of the command). What limits each figure: inspect reads kilobytes of`
    + ' headers, so it costs the start-up; save reads and writes every byte once and widens each tensor to fp32 for the NaN/Inf check'
    + ' (disk and that pass; RSS: the runtime plus the largest tensor, stored and widened); reload reads both copies. Steps that need'
    + ' streamed execution (one layer on the backend at a time) stop up front at the 4 GiB WebAssembly heap until it lands.\n');
}
