"""Cost of each metric family (and of feature extraction) at the default sample counts, on this machine.

    python benchmarks/metric_cost.py [--device cpu|cuda]

Fakes are real reference samples with noise added (the cost does not depend on quality). Prints a table:
dataset, extractor, samples, then seconds per evaluation for extraction and each family (best of 3).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
from common import guarded

from gantune.catalogue import config_from_dict
from gantune.data import load_data
from gantune.metrics import FAMILIES, Samples, default_metrics, load_reference, reference_n
from gantune.metrics.features import build_extractor
from gantune.trial import resolve_device

CASES: list[tuple[dict[str, Any], int]] = [({"name": "grid25"}, 2500), ({"name": "ring8"}, 2500),
                                           ({"name": "digits", "resolution": 16}, 1000),
                                           ({"name": "digits", "resolution": 32}, 2500)]


def best_of(fn: object, repeats: int = 3) -> float:
    assert callable(fn)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = resolve_device(args.device)
    print(f"device: {device}, torch threads: {torch.get_num_threads()}")
    width = {name: max(10, len(name) + 2) for name in FAMILIES.names()}  # a column per family, wide as its name
    print(f"{'data':<12}{'extractor':<10}{'n':>6}{'extract':>9}" + "".join(f"{n:>{w}}" for n, w in width.items()))
    for data_cfg, n in CASES:
        cfg = config_from_dict({"data": data_cfg, "eval": {"n_samples": n}})
        data = load_data(cfg.data, device, 0)
        extractor = build_extractor(cfg, device)
        ref = load_reference(cfg, data, extractor, reference_n(data, n), device)
        x = data.reference(n, seed=99)
        x = x + 0.05 * torch.randn_like(x)
        feats, logits = extractor(x)
        fake = Samples(x=x, feats=feats, logits=logits)
        row = f"{data_cfg['name'] + str(data_cfg.get('resolution', '')):<12}{extractor.name:<10}{n:>6}"
        row += f"{best_of(lambda e=extractor, x=x: e(x)):>9.3f}"
        names = default_metrics(data.is_points, extractor.name)
        for name in FAMILIES.names():
            if name not in names:
                row += f"{'-':>{width[name]}}"
                continue
            scorer = FAMILIES.get(name)(ref)
            row += f"{best_of(lambda s=scorer, f=fake: s(f)):>{width[name]}.3f}"
        print(row, flush=True)


if __name__ == "__main__":
    guarded(main)
