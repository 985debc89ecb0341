"""Image grids as users see them: small images are enlarged whole, pixel for pixel."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from gantune.viz import MIN_CELL_PX, image_grid, samples_png


def _png_size(png: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(png)).size


def test_small_images_are_enlarged_by_a_whole_factor_each_pixel_a_block() -> None:
    images = torch.rand(16, 3, 8, 8) * 2 - 1
    native = 4 * (8 + 1) + 1  # 4 x 4 grid, 1-px padding
    scale = MIN_CELL_PX // 8
    assert _png_size(samples_png(images, None)) == (native * scale, native * scale)
    grid = image_grid(images)
    blocks = grid.reshape(native, scale, native, scale, 3)
    assert (blocks == blocks[:, :1, :, :1]).all()  # nearest neighbour: nothing smoothed
    first = ((images[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(grid[scale: scale + 8 * scale: scale, scale: scale + 8 * scale: scale], first)


def test_images_of_the_cell_size_keep_their_size() -> None:
    images = torch.zeros(4, 1, MIN_CELL_PX, MIN_CELL_PX)
    side = 2 * (MIN_CELL_PX + 1) + 1
    assert image_grid(images).shape == (side, side, 1)
    assert _png_size(samples_png(images, None)) == (side, side)
