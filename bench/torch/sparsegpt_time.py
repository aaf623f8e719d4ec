"""SparseGPT (bench/torch/sparsegpt.py) on one random n×n operator, one thread, wall and CPU seconds:
    /usr/bin/python3 bench/torch/sparsegpt_time.py [cols=4096]
The counterpart of bench/sparsegpt-operator.ts."""
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from sparsegpt import hessian, sparsegpt  # noqa: E402

torch.set_num_threads(1)
n = int(sys.argv[1]) if len(sys.argv) > 1 else 4096
torch.manual_seed(0)
H = hessian(torch.randn(4096, n))
W = torch.randn(n, n)
c0, t0 = time.process_time(), time.perf_counter()
_, _, loss = sparsegpt(W, H, 0.5)
print(f'PyTorch {n}×{n}: {time.perf_counter() - t0:.2f} s wall / {time.process_time() - c0:.2f} s CPU, loss {loss:.4e}')
