"""Spherical interpolation between latents (``gantune.latent``)."""

from __future__ import annotations

import math

import pytest
import torch

from gantune.latent import slerp, walk


def _pair(d: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(d, generator=g), torch.randn(d, generator=g)


def test_endpoints_are_exact() -> None:
    a, b = _pair()
    assert torch.equal(slerp(a, b, 0.0), a)
    assert torch.equal(slerp(a, b, 1.0), b)
    batch = slerp(a.expand(3, -1), b.expand(3, -1), torch.tensor([0.0, 0.5, 1.0]))
    assert torch.equal(batch[0], a) and torch.equal(batch[2], b)


def test_unit_inputs_stay_on_the_unit_sphere_where_lerp_does_not() -> None:
    a, b = _pair(64, seed=3)
    a, b = a / a.norm(), b / b.norm()
    t = torch.linspace(0, 1, 11)
    path = slerp(a.expand(11, -1), b.expand(11, -1), t)
    assert torch.allclose(path.norm(dim=-1), torch.ones(11), atol=1e-5)
    lerp_mid = 0.5 * (a + b)
    assert lerp_mid.norm() < 0.9  # two random unit vectors in 64-D are nearly orthogonal: lerp shrinks them


def test_the_angle_moves_uniformly_along_the_great_circle() -> None:
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    mid = slerp(a, b, 0.5)
    assert torch.allclose(mid, torch.tensor([math.sqrt(0.5), math.sqrt(0.5)]), atol=1e-6)
    third = slerp(a, b, 1 / 3)
    assert torch.allclose(third, torch.tensor([math.cos(math.pi / 6), math.sin(math.pi / 6)]), atol=1e-6)


def test_parallel_and_opposite_endpoints_fall_back_to_lerp() -> None:
    a = torch.tensor([1.0, 2.0, -0.5])
    for b in (a.clone(), 2 * a, -a):  # sin(omega) = 0: no single great circle, the formula would divide by 0
        for t in (0.0, 0.25, 0.5, 1.0):
            out = slerp(a, b, t)
            assert torch.isfinite(out).all()
            assert torch.allclose(out, (1 - t) * a + t * b, atol=1e-6), (b, t)


def test_the_dtype_and_batch_shape_are_kept() -> None:
    a, b = torch.randn(4, 5, 8), torch.randn(4, 5, 8)
    out = slerp(a, b, torch.rand(4, 5))
    assert out.shape == (4, 5, 8) and out.dtype == torch.float32
    assert slerp(a.half(), b.half(), 0.5).dtype == torch.float16


def test_walk_is_fixed_by_the_seed_and_runs_between_its_endpoints() -> None:
    z = walk(3, 5, 8, seed=1)
    assert z.shape == (3, 5, 8)
    assert torch.equal(z, walk(3, 5, 8, seed=1)) and not torch.equal(z, walk(3, 5, 8, seed=2))
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(3, 8, generator=g), torch.randn(3, 8, generator=g)
    assert torch.equal(z[:, 0], a) and torch.equal(z[:, -1], b)
    with pytest.raises(ValueError, match="at least 2"):
        walk(3, 1, 8, seed=0)
