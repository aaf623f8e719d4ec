"""The PyTorch side of `npm run bench -- --only torch`: one JSON request per stdin line, one JSON
reply per stdout line ({"ok": true, ...} or {"ok": false, "error": "..."}). Kept alive for the
whole section so models load once and PruneLab and PyTorch can be timed alternately.

Requests (`threads` sets torch.set_num_threads first):
  {"cmd": "info"}
  {"cmd": "load", "key": K, "model": DIR, "device": "cpu"|"cuda"}     device: where the weights go (default cpu)
  {"cmd": "logits", "key": K, "ids": [...], "out": FILE}          raw fp32 [T, vocab] to FILE
  {"cmd": "speed", "key": K, "prompt_tokens": T, "new_tokens": N, "threads": n}
  {"cmd": "gemm", "n": N, "threads": n}
  {"cmd": "sparsegpt", "file": F, "sparsity": s, "blocksize": B, "percdamp": p, "dtype": "float32"|"float64",
   "threads": n, "out": FILE?, "device": "cpu"|"cuda"}          F holds `weight` [rows, cols] and `x` [N, cols]
"""
import json
import os
import platform
import statistics
import sys
import time

import numpy
import torch

from checkpoint import read_checkpoint, read_safetensors, write_f32
from llama import Llama
from sparsegpt import hessian, sparsegpt

models = {}


def blas_library() -> str:
    """The BLAS shared library this process actually mapped (Debian picks it via alternatives)."""
    torch.ones(2, 2) @ torch.ones(2, 2)
    try:
        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if "blas" in line.lower()}
    except OSError:
        return "unknown"
    return ", ".join(sorted(os.path.realpath(p) for p in libs)) or "none mapped"


def prompt_ids(T: int, vocab: int) -> list:
    # The same ids as PruneLab's eval/speed.ts (batch row 0); their values do not change the work.
    return [3 + (t * 31) % max(1, vocab - 3) for t in range(T)]


def speed(m: Llama, T: int, new_tokens: int) -> dict:
    """One prefill into a fresh KV cache and `new_tokens` greedy decode steps, each forward timed
    including reading the argmax back (as PruneLab's measureSpeed)."""
    vocab = m.embed.shape[0]
    cache = m.new_cache()
    t0 = time.perf_counter()
    nxt = int(torch.argmax(m.forward(prompt_ids(T, vocab), cache)[-1]))
    prefill_ms = (time.perf_counter() - t0) * 1000
    decode_ms = 0.0
    for _ in range(new_tokens):
        t0 = time.perf_counter()
        nxt = int(torch.argmax(m.forward([nxt], cache)[-1]))
        decode_ms += (time.perf_counter() - t0) * 1000
    return {"prefill_ms": prefill_ms, "decode_ms": decode_ms}


def sync(device: str) -> None:
    """Wait for queued GPU work, so a wall-clock time covers it (CUDA kernels run asynchronously)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def gemm(n: int, repeats: int) -> dict:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g)
    b = torch.randn(n, n, generator=g)
    a @ b
    ms = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        ms.append((time.perf_counter() - t0) * 1000)
    med = statistics.median(ms)
    return {"ms": med, "gflops": 2 * n ** 3 / (med * 1e6)}


def run_sparsegpt(req: dict) -> dict:
    dtype = {"float32": torch.float32, "float64": torch.float64}[req.get("dtype", "float32")]
    device = req.get("device", "cpu")
    t = read_safetensors(req["file"])
    W = t["weight"].to(device, dtype)
    x = t["x"].to(device, dtype)
    sync(device)
    t0 = time.perf_counter()
    H = hessian(x)
    sync(device)
    t1 = time.perf_counter()
    Wp, mask, loss = sparsegpt(W, H, req["sparsity"], req.get("blocksize", 128), req.get("percdamp", 0.01))
    sync(device)
    t2 = time.perf_counter()
    if req.get("out"):
        write_f32(req["out"], Wp)
    return {"hessian_s": t1 - t0, "solve_s": t2 - t1, "loss": loss, "pruned": int((~mask).sum())}


def handle(req: dict) -> dict:
    if "threads" in req:
        torch.set_num_threads(int(req["threads"]))
    cmd = req["cmd"]
    if cmd == "info":
        return {
            "torch": torch.__version__, "numpy": numpy.__version__, "python": platform.python_version(),
            "executable": sys.executable, "cores": os.cpu_count(), "default_threads": torch.get_num_threads(),
            "blas": blas_library(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(libgomp default)"),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        }
    if cmd == "load":
        config, tensors = read_checkpoint(req["model"])
        device = req.get("device", "cpu")
        models[req["key"]] = Llama(config, {k: v.to(device) for k, v in tensors.items()})
        return {}
    if cmd == "logits":
        write_f32(req["out"], models[req["key"]].forward(req["ids"]))
        return {}
    if cmd == "speed":
        return speed(models[req["key"]], req["prompt_tokens"], req["new_tokens"])
    if cmd == "gemm":
        return gemm(req["n"], req.get("repeats", 3))
    if cmd == "sparsegpt":
        return run_sparsegpt(req)
    if cmd == "unload":
        models.pop(req["key"], None)
        return {}
    raise ValueError(f"unknown command {cmd!r}")


def main() -> None:
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            reply = {"ok": True, **handle(json.loads(line))}
        except Exception as e:  # reported to the bench, which prints it and goes on
            reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
