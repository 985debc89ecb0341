"""Walks through a generator's latent space: spherical interpolation (slerp) between fixed latents, and the
pictures of it (an image grid, or the paths 2-D points take).

Latents are drawn from N(0, I), whose mass lies near the sphere of radius sqrt(z_dim). A straight line (lerp)
between two of them cuts through the low-norm middle that G never saw in training, so its midpoints show what G
does off its input distribution; slerp follows the great circle and keeps the norm (White 2016, "Sampling
generative networks"). A smooth walk says G learnt a continuous map; a sudden jump or a constant row says
where it tears or has collapsed.
"""

from __future__ import annotations

import csv
import io

import torch
from torch import Tensor

from gantune.viz import image_grid, plane, plane_png, png_bytes

#: below this, sin(omega) is treated as 0: the endpoints are parallel (or opposite) and slerp is undefined
SIN_EPS = 1e-6


def slerp(a: Tensor, b: Tensor, t: Tensor | float) -> Tensor:
    """``sin((1-t)Ω)/sin Ω · a + sin(tΩ)/sin Ω · b`` with ``Ω = arccos(â · b̂)`` over the last dimension.

    ``a`` and ``b`` have the same shape ``(..., d)``; ``t`` broadcasts against ``a.shape[:-1]``. Where sin Ω is
    about 0 (the vectors are parallel, or opposite, so no single great circle joins them) it is the lerp
    ``(1-t)·a + t·b``. Computed in float64 (arccos near 1 loses float32's digits), returned in ``a``'s dtype;
    ``t = 0`` and ``t = 1`` give ``a`` and ``b`` exactly.
    """
    a64, b64 = a.double(), b.double()
    tt = torch.as_tensor(t, dtype=torch.float64, device=a.device).unsqueeze(-1)
    dot = (a64 / a64.norm(dim=-1, keepdim=True) * (b64 / b64.norm(dim=-1, keepdim=True))).sum(-1, keepdim=True)
    omega = torch.arccos(dot.clamp(-1.0, 1.0))
    so = torch.sin(omega)
    flat = so.abs() < SIN_EPS
    safe = torch.where(flat, torch.ones_like(so), so)
    spherical = torch.sin((1.0 - tt) * omega) / safe * a64 + torch.sin(tt * omega) / safe * b64
    linear = (1.0 - tt) * a64 + tt * b64
    return torch.where(flat, linear, spherical).to(a.dtype)


def endpoints(rows: int, z_dim: int, seed: int) -> tuple[Tensor, Tensor]:
    """``rows`` pairs of N(0, I) latents, the same for the same ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(rows, z_dim, generator=gen), torch.randn(rows, z_dim, generator=gen)


def walk(rows: int, n: int, z_dim: int, seed: int) -> Tensor:
    """``(rows, n, z_dim)``: row ``r`` goes from the ``r``-th start to the ``r``-th end in ``n`` slerp steps."""
    if n < 2:
        raise ValueError("an interpolation needs at least 2 steps (its two endpoints)")
    a, b = endpoints(rows, z_dim, seed)
    t = torch.linspace(0.0, 1.0, n)
    return slerp(a[:, None, :].expand(rows, n, z_dim), b[:, None, :].expand(rows, n, z_dim), t)


def grid_png(images: Tensor, n: int) -> bytes:
    """``(rows * n, C, H, W)`` images in [-1, 1], row-major, as a PNG grid of ``n`` columns (1 px gaps)."""
    return png_bytes(image_grid(images, nrow=n))


def paths_csv(points: Tensor) -> bytes:
    """``(rows, n, 2)`` points as CSV: ``row, step, t, x, y``."""
    rows, n, _ = points.shape
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["row", "step", "t", "x", "y"])
    for r in range(rows):
        for i in range(n):
            x, y = points[r, i].tolist()
            w.writerow([r, i, f"{i / (n - 1):.6f}", f"{x:.6f}", f"{y:.6f}"])
    return buf.getvalue().encode()


def paths_png(points: Tensor, samples: Tensor | None, means: Tensor | None, title: str = "") -> bytes:
    """``(rows, n, 2)`` interpolation paths as lines (start: circle, end: square) over G's ``samples`` (grey)
    and the true mixture ``means`` (red crosses): a G that separates modes jumps between them along a path."""
    fig, ax = plane(means)
    if samples is not None:
        s = samples.detach().float().cpu().numpy()
        ax.scatter(s[:, 0], s[:, 1], s=2, alpha=0.25, color="0.6", label="samples")
    p = points.detach().float().cpu().numpy()
    import matplotlib

    colors = matplotlib.colormaps["tab10"]
    for r in range(p.shape[0]):
        c = colors(r % 10)
        ax.plot(p[r, :, 0], p[r, :, 1], "-", color=c, lw=1, marker=".", ms=4)
        ax.plot(p[r, 0, 0], p[r, 0, 1], "o", color=c, ms=6)
        ax.plot(p[r, -1, 0], p[r, -1, 1], "s", color=c, ms=6)
    return plane_png(fig, ax, title)
