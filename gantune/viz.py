"""Pictures of samples: image grids as PNG, 2-D points as a scatter over the true mixture means."""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import torch


def as_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] as uint8 pixels, rounded to the nearest level: the inverse of ``gantune.data.as_float``
    (a plain cast floors, so 63 of the 256 levels of a real image came back one lower, and Inception saw other
    pixels than the data's)."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


#: an image in a grid is drawn ``MIN_CELL_PX // side`` times its size (``image_grid``): 8 px 4x, 16 px 2x
MIN_CELL_PX = 32


def image_grid(images: torch.Tensor, nrow: int | None = None, pad: int = 1) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (H', W', C) uint8 grid. Images of half ``MIN_CELL_PX`` or less are enlarged by
    ``MIN_CELL_PX // side``, each pixel a block (nothing is smoothed): 16 stacked digits of 8 px made a 37-pixel
    PNG."""
    x = as_uint8(images.cpu())
    n, c, h, w = x.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    ncol = math.ceil(n / nrow)
    grid = torch.zeros(c, ncol * (h + pad) + pad, nrow * (w + pad) + pad, dtype=torch.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        grid[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = x[i]
    scale = max(1, MIN_CELL_PX // max(h, w))
    out = grid.permute(1, 2, 0).numpy()
    return out.repeat(scale, axis=0).repeat(scale, axis=1) if scale > 1 else out


#: the ``Software`` text of every PNG gantune writes: ``generate --out x.png`` replaces a PNG that says so, no other
PNG_SOFTWARE = "gantune"
_PNG_MARK = b"tEXtSoftware\x00" + PNG_SOFTWARE.encode()


def png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image, PngImagePlugin

    img = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", PNG_SOFTWARE)
    buf = io.BytesIO()
    img.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def gantune_png(head: bytes) -> bool:
    """Whether a file's first KiB is a PNG gantune wrote (its ``Software`` text comes before the pixels)."""
    return head.startswith(b"\x89PNG") and _PNG_MARK in head


def plane(means: torch.Tensor | None) -> tuple[Any, Any]:
    """A 5 x 5 in matplotlib figure and axes (Agg) for 2-D points, with the mixture ``means`` as red crosses and
    the view fitted to them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    if means is not None:
        m = means.numpy()
        ax.scatter(m[:, 0], m[:, 1], s=60, marker="x", color="tab:red", label="true means", zorder=3)
        span = float(np.abs(m).max()) * 1.5 + 0.5
        ax.set_xlim(-span, span)
        ax.set_ylim(-span, span)
    return fig, ax


def plane_png(fig: Any, ax: Any, title: str) -> bytes:
    """The figure of ``plane`` (equal aspect, titled, with its legend) as PNG bytes; the figure is closed."""
    import matplotlib.pyplot as plt

    ax.set_aspect("equal")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", metadata={"Software": PNG_SOFTWARE})
    plt.close(fig)
    return buf.getvalue()


def scatter_png(points: torch.Tensor, means: torch.Tensor | None, title: str = "") -> bytes:
    """Generated 2-D points (blue) over the mixture means (red crosses), as PNG bytes."""
    fig, ax = plane(means)
    p = points.detach().float().cpu().numpy()
    ax.scatter(p[:, 0], p[:, 1], s=3, alpha=0.4, color="tab:blue", label="generated")
    return plane_png(fig, ax, title)


def samples_png(samples: torch.Tensor, means: torch.Tensor | None, title: str = "",
                nrow: int | None = None) -> bytes:
    """A PNG of samples, whichever their kind: points as a scatter plot, images as a grid (``nrow`` images a
    row; default: a square)."""
    if samples.ndim == 2:
        return scatter_png(samples, means, title)
    return png_bytes(image_grid(samples, nrow))
