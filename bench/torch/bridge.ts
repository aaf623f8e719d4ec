/**
 * The PyTorch reference as a child process (`bench/torch/server.py`): one JSON request per line
 * on its stdin, one JSON reply per line on its stdout, strictly one request at a time, so the
 * two sides never run at the same moment and both see the same machine.
 */
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

const SERVER = path.join(path.dirname(fileURLToPath(import.meta.url)), 'server.py');

/** How to get PyTorch here, printed with every skip. */
export const TORCH_INSTALL_HINT = 'apt-get install python3-torch libopenblas0-openmp';

export interface TorchInfo {
  torch: string;
  numpy: string;
  python: string;
  executable: string;
  cores: number;
  default_threads: number;
  /** The BLAS libraries the Python process mapped. */
  blas: string;
  omp_wait_policy: string;
}

/**
 * Interpreters to try, in order: `PRUNELAB_TORCH_PYTHON`, `python3` on the PATH, and the system
 * one (Debian's `python3-torch` installs into /usr/bin/python3, which a pyenv or venv `python3`
 * on the PATH hides).
 */
export function pythonCandidates(env: NodeJS.ProcessEnv = process.env): string[] {
  const list = [env.PRUNELAB_TORCH_PYTHON, 'python3', '/usr/bin/python3'].filter((p): p is string => !!p);
  return [...new Set(list)];
}

/** Why `python` cannot import torch (its last stderr line), or null when it can. */
export function torchImportProblem(python: string): string | null {
  const r = spawnSync(python, ['-c', 'import torch, numpy'], { encoding: 'utf8', timeout: 120_000 });
  if (r.error) return (r.error as NodeJS.ErrnoException).code === 'ENOENT' ? 'not found' : r.error.message;
  if (r.status === 0) return null;
  const lines = (r.stderr ?? '').trim().split('\n');
  return lines[lines.length - 1] || `exit status ${r.status}`;
}

interface Pending {
  resolve: (v: Record<string, unknown>) => void;
  reject: (e: Error) => void;
}

export class TorchBridge {
  private pending: Pending | null = null;
  private exited: string | null = null;

  private constructor(private readonly child: ChildProcessWithoutNullStreams, readonly python: string) {
    readline.createInterface({ input: child.stdout }).on('line', (line) => {
      const p = this.pending;
      this.pending = null;
      if (!p) return;
      let reply: Record<string, unknown>;
      try {
        reply = JSON.parse(line) as Record<string, unknown>;
      } catch {
        p.reject(new Error(`PyTorch reference: unreadable reply ${JSON.stringify(line.slice(0, 200))}`));
        return;
      }
      if (reply.ok === true) p.resolve(reply);
      else p.reject(new Error(`PyTorch reference: ${String(reply.error)}`));
    });
    child.stderr.on('data', (d: Buffer) => process.stderr.write(d));
    child.on('exit', (code, signal) => {
      this.exited = `exited (${signal ?? `status ${code}`})`;
      this.pending?.reject(new Error(`PyTorch reference ${this.exited}`));
      this.pending = null;
    });
  }

  /** A running reference, or the one-line reason there is none. */
  static start(candidates = pythonCandidates()): { bridge: TorchBridge } | { skip: string } {
    const tried: string[] = [];
    for (const python of candidates) {
      const problem = torchImportProblem(python);
      if (problem === null) {
        // libgomp's default spin-waiting makes multi-threaded PyTorch 10–50× slower when another
        // process holds a core (measured on the shared 2-core machine); passive waiting does not
        // change single-threaded runs. A value set by the user is kept.
        const env = { ...process.env, OMP_WAIT_POLICY: process.env.OMP_WAIT_POLICY ?? 'PASSIVE' };
        const child = spawn(python, ['-u', '-B', SERVER], { stdio: ['pipe', 'pipe', 'pipe'], env });
        return { bridge: new TorchBridge(child, python) };
      }
      tried.push(`${python}: ${problem}`);
    }
    return { skip: `no Python that imports torch (${tried.join('; ')}); install it with \`${TORCH_INSTALL_HINT}\`` };
  }

  /** Send one request; resolves with the reply's fields (without `ok`). */
  request<T>(req: Record<string, unknown>): Promise<T> {
    if (this.exited) return Promise.reject(new Error(`PyTorch reference ${this.exited}`));
    if (this.pending) return Promise.reject(new Error('PyTorch reference: one request at a time'));
    return new Promise<T>((resolve, reject) => {
      this.pending = { resolve: (v) => resolve(v as T), reject };
      this.child.stdin.write(JSON.stringify(req) + '\n');
    });
  }

  close(): Promise<void> {
    if (this.exited) return Promise.resolve();
    return new Promise((resolve) => {
      this.child.once('exit', () => resolve());
      this.child.stdin.end();
    });
  }
}
