"""The analysis formulas in plain PyTorch: mean attention distance and per-head statistics (LATER.md §4.1, §4.4),
linear / RBF CKA with the biased and the unbiased HSIC (§4.2; Kornblith et al. 2019, Song et al. 2012).

Mirror of ``jaxkd.analyze.attention`` and ``jaxkd.analyze.cka`` by name, written from LATER.md's text and the papers,
not from jaxkd: coordinates from ``torch.meshgrid``, distances from explicit differences, the unbiased HSIC as the
paper's matrix expression with ones vectors, the biased one with an explicit centring matrix H = I − 11ᵀ/n, the
RBF bandwidth from ``torch.quantile`` over the upper triangle.

Attention: ``attn`` (B, H, T, T), rows = queries; the first ``num_prefix`` tokens are special (CLS, DIST) and are
removed from queries and keys; each query row is renormalised over the patch keys; a (gh, gw) patch grid, row-major;
distances in patch units. Every per-head statistic is returned per image and head, (B, H).
"""

from __future__ import annotations

import torch

__all__ = ["grid_coordinates", "grid_distances", "patch_attention", "attention_distance", "head_statistics",
           "linear_kernel", "rbf_kernel", "kernel", "hsic", "cka", "cka_matrix"]


def grid_coordinates(grid, dtype=torch.float64) -> torch.Tensor:
    """(gh·gw, 2) (row, col) of the patches in token order (row-major)."""
    gh, gw = int(grid[0]), int(grid[1])
    r, c = torch.meshgrid(torch.arange(gh, dtype=dtype), torch.arange(gw, dtype=dtype), indexing="ij")
    return torch.stack([r.reshape(-1), c.reshape(-1)], dim=1)


def grid_distances(grid, dtype=torch.float64) -> torch.Tensor:
    """(N, N) Euclidean distances between patch positions, in patches."""
    c = grid_coordinates(grid, dtype)
    diff = c.unsqueeze(1) - c.unsqueeze(0)
    return diff.pow(2).sum(-1).sqrt()


def patch_attention(attn: torch.Tensor, num_prefix: int) -> torch.Tensor:
    """Patch queries × patch keys, each row divided by its total over the patch keys."""
    a = attn[:, :, num_prefix:, num_prefix:]
    return a / a.sum(dim=-1, keepdim=True)


def attention_distance(attn: torch.Tensor, num_prefix: int, grid) -> torch.Tensor:
    """(B, H): for each image and head, the mean over patch queries of the expected key distance."""
    a = patch_attention(attn, num_prefix)
    expected = (a * grid_distances(grid, a.dtype)).sum(dim=-1)  # (B, H, N)
    return expected.mean(dim=-1)


def head_statistics(attn: torch.Tensor, num_prefix: int, grid) -> dict:
    """(B, H) each: mean_distance, entropy (nats) of the query-averaged patch attention, cls_dispersion (spatial
    variance var(row) + var(col) of the CLS query's renormalised attention over the patches, patches²) and
    cls_self_attention (the CLS query's weight on itself in the full softmax)."""
    a = patch_attention(attn, num_prefix)
    avg = a.mean(dim=-2)  # (B, H, N): average over the queries
    entropy = torch.special.entr(avg).sum(dim=-1)
    w = attn[:, :, 0, num_prefix:]
    w = w / w.sum(dim=-1, keepdim=True)
    pos = grid_coordinates(grid, attn.dtype)  # (N, 2)
    centre = w @ pos  # (B, H, 2)
    spread = (w.unsqueeze(-1) * (pos - centre.unsqueeze(-2)).pow(2)).sum(dim=(-2, -1))
    return {"mean_distance": attention_distance(attn, num_prefix, grid), "entropy": entropy,
            "cls_dispersion": spread, "cls_self_attention": attn[:, :, 0, 0]}


def linear_kernel(x: torch.Tensor) -> torch.Tensor:
    return x @ x.T


def rbf_kernel(x: torch.Tensor, sigma_frac: float = 1.0) -> torch.Tensor:
    """exp(−‖x_i − x_j‖²/(2σ²)), σ² = sigma_frac² × the median of ‖x_i − x_j‖² over pairs i < j (an even count's
    median: the midpoint of its two middle values)."""
    d2 = (x.unsqueeze(1) - x.unsqueeze(0)).pow(2).sum(-1)
    i, j = torch.triu_indices(x.shape[0], x.shape[0], offset=1)
    sigma2 = sigma_frac ** 2 * torch.quantile(d2[i, j], 0.5, interpolation="midpoint")
    return torch.exp(-d2 / (2 * sigma2))


def kernel(x: torch.Tensor, name: str, sigma_frac: float = 1.0) -> torch.Tensor:
    return {"linear": lambda: linear_kernel(x), "rbf": lambda: rbf_kernel(x, sigma_frac)}[name]()


def hsic(k: torch.Tensor, l: torch.Tensor, estimator: str = "unbiased") -> torch.Tensor:
    """biased: tr(KHLH)/(n−1)²; unbiased (Song et al. 2012): with K̃, L̃ the kernels without their diagonal,
    [tr(K̃L̃) + 1ᵀK̃1·1ᵀL̃1/((n−1)(n−2)) − 2/(n−2)·1ᵀK̃L̃1] / (n(n−3))."""
    n = k.shape[0]
    if estimator == "biased":
        h = torch.eye(n, dtype=k.dtype) - torch.full((n, n), 1.0 / n, dtype=k.dtype)
        return torch.trace(k @ h @ l @ h) / (n - 1) ** 2
    kt = k - torch.diag(torch.diagonal(k))
    lt = l - torch.diag(torch.diagonal(l))
    one = torch.ones(n, dtype=k.dtype)
    term1 = torch.trace(kt @ lt)
    term2 = (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
    term3 = 2.0 / (n - 2) * (one @ kt @ lt @ one)
    return (term1 + term2 - term3) / (n * (n - 3))


def cka(k: torch.Tensor, l: torch.Tensor, estimator: str = "unbiased") -> torch.Tensor:
    return hsic(k, l, estimator) / torch.sqrt(hsic(k, k, estimator) * hsic(l, l, estimator))


def cka_matrix(xs, ys=None, *, kernel_name: str = "linear", estimator: str = "unbiased",
               sigma_frac: float = 1.0) -> torch.Tensor:
    """(len(xs), len(ys)) CKA of every pair of (n, d) feature matrices (ys=None: xs against themselves)."""
    ys = xs if ys is None else ys
    out = torch.empty(len(xs), len(ys), dtype=xs[0].dtype)
    for a, x in enumerate(xs):
        for b, y in enumerate(ys):
            out[a, b] = cka(kernel(x, kernel_name, sigma_frac), kernel(y, kernel_name, sigma_frac), estimator)
    return out
