"""SparseGPT on one operator in PyTorch (Frantar & Alistarh 2023), written for this benchmark:
damped Hessian, upper Cholesky factor of its inverse, left-to-right OBS sweep in blocks of
`blocksize` columns with the lazy batch update W[:, i2:] -= Err · U[i1:i2, i2:] as one matmul.

Mask selection follows PruneLab's documented interpretation so both compute the same thing:
exactly floor(sparsity · rows · count) weights per block, lowest w²/U_jj² first, ties to the
lower row-major index (a stable sort)."""
import math

import torch


@torch.inference_mode()
def hessian(x: torch.Tensor) -> torch.Tensor:
    """H = (2/N) · XᵀX for calibration inputs x [N, cols], in x's dtype."""
    return (2.0 / x.shape[0]) * (x.t() @ x)


@torch.inference_mode()
def sparsegpt(W: torch.Tensor, H: torch.Tensor, sparsity: float, blocksize: int = 128, percdamp: float = 0.01):
    """(updated weight with pruned entries 0, keep mask, loss); W [rows, cols], H [cols, cols]."""
    W = W.clone()
    H = H.clone()
    rows, cols = W.shape
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    idx = torch.arange(cols, device=W.device)
    H[idx, idx] += percdamp * torch.mean(torch.diag(H))
    Hinv = torch.cholesky_inverse(torch.linalg.cholesky(H))
    U = torch.linalg.cholesky(Hinv, upper=True)
    mask = torch.ones(rows, cols, dtype=torch.bool, device=W.device)
    loss = torch.zeros((), dtype=W.dtype, device=W.device)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()
        U1 = U[i1:i2, i1:i2]
        Err1 = torch.zeros_like(W1)
        d = torch.diag(U1)
        scores = (W1 * W1 / (d * d)).flatten()
        k = math.floor(sparsity * rows * count)
        keep = torch.ones(rows * count, dtype=torch.bool, device=W.device)
        if k > 0:
            keep[torch.sort(scores, stable=True).indices[:k]] = False
        keep = keep.view(rows, count)
        for i in range(count):
            w = W1[:, i]
            err = torch.where(keep[:, i], torch.zeros_like(w), w) / d[i]
            loss += (err * err).sum() / 2
            W1[:, i:] -= err.unsqueeze(1) * U1[i, i:].unsqueeze(0)
            Err1[:, i] = err
        W[:, i1:i2] = W1 * keep
        mask[:, i1:i2] = keep
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]
    return W, mask, float(loss)
