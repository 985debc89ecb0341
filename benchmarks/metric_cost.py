"""Cost of each metric family (and of feature extraction) at the default sample counts, on this machine.

    python benchmarks/metric_cost.py [--device cpu|cuda]
    python benchmarks/metric_cost.py --max-n 300         # a smoke run: at most 300 samples a case

Fakes are real training samples with noise added (the cost does not depend on quality), with random class labels
where a conditional family reads them. Each family is measured on a case it fits: the 2-D mixtures, digits at
16 px, digits at 32 px of a conditional generator with the Inception Score (on the digits classifier's logits),
and stacked digits at the protocol's 26,000 samples. Prints a table: case, extractor, samples, then seconds per
evaluation for extraction and each family (best of 3; "-" where the family does not measure the case).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
from common import guarded, positive_int

from gantune.catalogue import config_from_dict
from gantune.data import load_data
from gantune.metrics import FAMILIES, Samples, load_reference, metric_names, reference_n
from gantune.metrics.features import build_extractor
from gantune.trial import resolve_device

#: (row label, config): every family is measured on at least one row
CASES: list[tuple[str, dict[str, Any]]] = [
    ("grid25", {"data": {"name": "grid25"}, "eval": {"n_samples": 2500}}),
    ("ring8", {"data": {"name": "ring8"}, "eval": {"n_samples": 2500}}),
    ("digits16", {"data": {"name": "digits", "resolution": 16}, "eval": {"n_samples": 1000}}),
    ("digits32 cond", {"data": {"name": "digits", "resolution": 32}, "model": {"conditional": True},
                       "eval": {"n_samples": 2500, "metrics": ["default", "is"]}}),
    ("stacked", {"data": {"name": "stacked_digits"}, "eval": {"n_samples": 26000, "metrics": ["default", "is"]}}),
]


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
    ap.add_argument("--max-n", type=positive_int, default=None, help="cap every case's sample count (a smoke run)")
    args = ap.parse_args()
    device = resolve_device(args.device)
    print(f"device: {device}, torch threads: {torch.get_num_threads()}")
    width = {name: max(10, len(name) + 2) for name in FAMILIES.names()}  # a column per family, wide as its name
    print(f"{'case':<14}{'extractor':<16}{'n':>6}{'extract':>9}" + "".join(f"{n:>{w}}" for n, w in width.items()))
    for label, raw in CASES:
        cfg = config_from_dict(raw)
        n = min(cfg.eval.n_samples, args.max_n or cfg.eval.n_samples)
        data = load_data(cfg.data, device, 0)
        extractor = build_extractor(cfg, device)
        ref = load_reference(cfg, data, extractor, reference_n(data, n), device)
        x = data.sample(n)  # n of them: the held-out digits the reference draws from are 360
        x = x + 0.05 * torch.randn_like(x)
        feats, logits = extractor(x)
        labels = torch.randint(max(data.n_classes, 1), (n,), generator=torch.Generator().manual_seed(0))
        fake = Samples(x=x, feats=feats, logits=logits, labels=labels.to(device) if cfg.model.conditional else None)
        row = f"{label:<14}{extractor.name:<16}{n:>6}"
        row += f"{best_of(lambda e=extractor, x=x: e(x)):>9.3f}"
        names = metric_names(cfg)
        for name in FAMILIES.names():
            if name not in names:
                row += f"{'-':>{width[name]}}"
                continue
            scorer = FAMILIES.get(name)(ref)
            row += f"{best_of(lambda s=scorer, f=fake: s(f)):>{width[name]}.3f}"
        print(row, flush=True)

if __name__ == "__main__":
    guarded(main)
