"""What TF32 does to the distance metrics, and that gantune's evaluation is spared it.

    python benchmarks/tf32_metrics.py                 # on a CPU: TF32's rounding simulated
    python benchmarks/tf32_metrics.py --device cuda   # on a GPU: TF32 itself, and the simulation beside it
    python benchmarks/tf32_metrics.py --n 300         # a smoke run

A trial on a GPU trains with ``train.tf32`` (on by default), which sets TF32 for every float32 product of its
process. ``torch.cdist`` computes squared distances as one product of ``[-2x, |x|^2, 1]`` with ``[y, 1, |y|^2]``,
so under TF32 (10 bits of mantissa) grid25's squared norms, about 32, are rounded to 1/32: an error as large as
the HQ radius^2 (0.0225) and far above the k-NN radii^2. Exact samples of each 2-D mixture are scored with the
``modes`` and ``prdc`` families, the same scorers, their distances computed:

- ``float64 (gantune's)``: what gantune's evaluation computes distances in (``gantune.metrics.base.distances``);
- ``float32``: ``cdist``'s product form in full float32 (gantune's before it moved to float64: it cancels for
  near neighbours far from the origin; the last line of each data says how far it moves the k-NN radii);
- ``TF32 simulated``: each operand of that product rounded to TF32 (round to nearest, 13 low mantissa bits
  cleared) and the products summed in float32, as a TF32 tensor core does; runs anywhere;
- ``TF32 on <GPU>`` (``--device cuda``): ``cdist`` itself with ``torch.backends.cuda.matmul.allow_tf32`` on;
- ``evaluator, trial's TF32 set``: gantune's ``Evaluator`` after the trial's speed options set TF32 on. A check
  of the evaluator only on a GPU: on a CPU nothing rounds with or without TF32, so there it reads float32's
  figures whatever the evaluator does.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from common import guarded, positive_int

from gantune import metrics
from gantune.catalogue import config_from_dict
from gantune.data import load_data
from gantune.gan.speed import Speed
from gantune.metrics import FAMILIES, Evaluator, Samples, load_reference, reference_n
from gantune.metrics.diversity import K, kth_nn_radius
from gantune.metrics.features import build_extractor
from gantune.trial import resolve_device

KEYS = ("hq", "modes", "precision", "recall", "density", "coverage")
Cdist = Callable[..., torch.Tensor]
TORCH_CDIST: Cdist = torch.cdist  # kept: ``distances`` replaces ``torch.cdist`` while a row runs


def tf32_round(t: torch.Tensor) -> torch.Tensor:
    """float32 values rounded to TF32's 10-bit mantissa (to nearest), kept as float32."""
    bits = t.float().contiguous().view(torch.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)


def float32_cdist(x: torch.Tensor, y: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """``torch.cdist`` in float32, whatever the scorer passed."""
    return TORCH_CDIST(x.float(), y.float(), *args, **kwargs)


def simulated_cdist(x: torch.Tensor, y: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """``torch.cdist``'s product form with TF32 operands, summed in float32."""
    x, y = x.float(), y.float()
    ones_x, ones_y = torch.ones(len(x), 1, device=x.device), torch.ones(len(y), 1, device=y.device)
    left = torch.cat([-2 * x, (x * x).sum(1, keepdim=True), ones_x], 1)
    right = torch.cat([y, ones_y, (y * y).sum(1, keepdim=True)], 1)
    return (tf32_round(left) @ tf32_round(right).T).clamp_min(0).sqrt()


@contextmanager
def distances(cdist: Cdist, tf32: bool) -> Iterator[None]:
    """``torch.cdist`` replaced by ``cdist`` and CUDA's TF32 flag set to ``tf32``, with a cache of references of
    its own (their k-NN radii are computed under these distances, not read from another row's), all undone after."""
    original, flag, cache = torch.cdist, torch.backends.cuda.matmul.allow_tf32, os.environ.get("GANTUNE_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="gantune-tf32-") as own:
        torch.cdist = cdist  # type: ignore[assignment]
        torch.backends.cuda.matmul.allow_tf32 = tf32
        os.environ["GANTUNE_CACHE_DIR"] = own
        metrics._MEMO.clear()
        try:
            yield
        finally:
            torch.cdist = original
            torch.backends.cuda.matmul.allow_tf32 = flag
            if cache is None:
                os.environ.pop("GANTUNE_CACHE_DIR", None)
            else:
                os.environ["GANTUNE_CACHE_DIR"] = cache
            metrics._MEMO.clear()


def scored(name: str, n: int, device: torch.device, cdist: Cdist, tf32: bool) -> dict[str, float]:
    """The modes and prdc families on ``n`` exact samples of ``name``, the reference built and scored under the
    given distances (nothing cached: the k-NN radii are computed here)."""
    cfg = config_from_dict({"data": {"name": name}, "eval": {"n_samples": n, "metrics": ["modes", "prdc"]}})
    data = load_data(cfg.data, device, 0)
    extractor = build_extractor(cfg, device)
    with distances(cdist, tf32):
        ref = load_reference(cfg, data, extractor, reference_n(data, n), device)
        x = data.sample(n)
        feats, logits = extractor(x)
        fake = Samples(x=x, feats=feats, logits=logits)
        out: dict[str, float] = {}
        for family in ("modes", "prdc"):
            out.update(FAMILIES.get(family)(ref)(fake))
    return out


def radius_error(name: str, n: int, device: torch.device) -> tuple[float, float]:
    """How far float32 ``cdist`` puts the reference's k-NN radii (PRDC's balls) from float64's: the largest and
    the median relative error."""
    cfg = config_from_dict({"data": {"name": name}, "eval": {"n_samples": n}})
    data = load_data(cfg.data, device, 0)
    x = data.reference(reference_n(data, n)).double()
    exact = kth_nn_radius(x, K)
    with distances(float32_cdist, tf32=False):
        rel = ((kth_nn_radius(x, K) - exact) / exact).abs()
    return float(rel.max()), float(rel.median())


def evaluated(name: str, n: int, device: torch.device) -> dict[str, float]:
    """gantune's ``Evaluator`` on ``n`` exact samples, after a trial's speed options set TF32 on."""
    cfg = config_from_dict({"data": {"name": name}, "eval": {"n_samples": n, "metrics": ["modes", "prdc"]}})
    data = load_data(cfg.data, device, 0)
    precision, cudnn, tuned = (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32,
                               torch.backends.cudnn.benchmark)
    with distances(torch.cdist, tf32=False):  # a cache of its own; the trial's speed options set TF32 next
        Speed(tf32=True).set_backends(torch.device("cuda"))  # the flags a GPU trial trains with (only flags here)
        try:
            return Evaluator(cfg, data, device)(lambda k: data.sample(k))
        finally:
            torch.set_float32_matmul_precision(precision)
            torch.backends.cudnn.allow_tf32 = cudnn
            torch.backends.cudnn.benchmark = tuned


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    ap.add_argument("--n", type=positive_int, default=2500, help="samples a side (default: 2500, eval.n_samples)")
    args = ap.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    print(f"device: {device}; {args.n} exact samples a side, the reference drawn as a trial draws it")
    print(f"{'data':<8}{'distances':<34}" + "".join(f"{k:>11}" for k in KEYS))
    for name in ("grid25", "ring8"):
        rows: list[tuple[str, dict[str, float]]] = [
            ("float64 (gantune's)", scored(name, args.n, device, torch.cdist, tf32=False)),
            ("float32", scored(name, args.n, device, float32_cdist, tf32=False)),
            ("TF32 simulated", scored(name, args.n, device, simulated_cdist, tf32=False))]
        if device.type == "cuda":
            rows.append((f"TF32 on {torch.cuda.get_device_name(device)}"[:33],
                         scored(name, args.n, device, torch.cdist, tf32=True)))
        rows.append(("evaluator, trial's TF32 set", evaluated(name, args.n, device)))
        for label, out in rows:
            print(f"{name:<8}{label:<34}" + "".join(f"{out[k]:>11.3f}" for k in KEYS), flush=True)
        worst, median = radius_error(name, args.n, device)
        print(f"{name:<8}float32 k-NN radii against float64: {worst:.1%} off at most, {median:.2%} the median")


if __name__ == "__main__":
    guarded(main)
