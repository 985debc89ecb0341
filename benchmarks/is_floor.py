"""What real data scores on the Inception Score family ``is`` (digits and stacked digits, the digits classifier).

    python benchmarks/is_floor.py [--n 1000 26000] [--resolution 8 16]

Each row builds the evaluator a trial of ``eval.metrics: [is]`` builds (``n`` samples an evaluation) and prints
what it records: the held-out reference's own score (provenance ``reference_values``: real digits the classifier
never trained on, at ``reference_n`` samples) and the floor (``n`` training samples, on which it did). The scores'
ceiling is the number of classes (10; 1,000 triples on stacked digits) or the samples a split (n / 10), whichever
is smaller (the ceiling column: the training floor's). Digits have 360 held-out images: their reference never
exceeds 360 samples, and n beyond 1,000 adds nothing there.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch
from common import guarded, positive_int

from gantune.catalogue import config_from_dict
from gantune.data import load_data
from gantune.metrics import Evaluator
from gantune.metrics.inception_score import SPLITS

CPU = torch.device("cpu")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=positive_int, nargs="+", default=[1000, 26000],
                   help="samples an evaluation (stacked digits)")
    p.add_argument("--resolution", type=int, nargs="+", default=[8, 16])
    args = p.parse_args()
    os.environ.setdefault("GANTUNE_CACHE_DIR", tempfile.mkdtemp())  # measured afresh, not from a cache
    print(f"{'data':<15}{'px':>3}{'n':>7}{'ceiling':>9}{'ref n':>7}{'held-out is':>13}{'is_std':>8}"
          f"{'train is':>10}{'is_std':>8}{'s':>6}")
    runs = [("digits", res, 1000) for res in args.resolution]
    runs += [("stacked_digits", res, n) for res in args.resolution for n in args.n]
    for name, res, n in runs:
        t = time.perf_counter()
        cfg = config_from_dict({"data": {"name": name, "resolution": res}, "eval": {"metrics": ["is"], "n_samples": n}})
        prov = Evaluator(cfg, load_data(cfg.data, CPU, 0), CPU).provenance
        ref, floor = prov["reference_values"], prov["floor"]
        ceiling = min(10 if name == "digits" else 1000, n // SPLITS)
        print(f"{name:<15}{res:>3}{n:>7}{ceiling:>9}{prov['reference_n']:>7}{ref['is']:>13.2f}{ref['is_std']:>8.2f}"
              f"{floor['is']:>10.2f}{floor['is_std']:>8.2f}{time.perf_counter() - t:>6.1f}", flush=True)


if __name__ == "__main__":
    guarded(main)
