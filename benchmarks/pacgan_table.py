"""A search's exported best generator scored with PacGAN's rule, beside PacGAN's published Table 1.

    python benchmarks/pacgan_table.py [--space search_spaces/grid25.yaml] [--n 2500] [--seed 2718]

Runs the space's search (its own settings: sampler, trials, budget, pruning), exports the best trial the way
`gantune export SEARCH --weights DIR` does, draws ``--n`` fresh samples from the exported ``generator.pt`` (a
seed no trial used) and scores them with gantune's ``modes`` metric, the documented PacGAN/VEEGAN rule: a
sample is high quality (HQ) within 3 sigma of its nearest mean, a mode is covered with at least one HQ sample,
reverse KL is that of the HQ samples' mode histogram from uniform. Prints the search's wall time and the row
beside the published ones (Lin et al. 2018, Table 1: plain GAN and PacGAN, 2,500 samples).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from common import run

from gantune.data import load_data
from gantune.export import export
from gantune.generate import load_generator, sample
from gantune.metrics import Evaluator

PUBLISHED = {  # Lin et al. 2018 (PacGAN), Table 1: modes, HQ %, reverse KL
    "grid25": [("GAN", 17.3, 94.8, 0.70), ("PacGAN4", 24.8, 93.6, 0.04)],
    "ring8": [("GAN", 6.3, 98.2, 0.45), ("PacGAN2", 7.9, 95.6, 0.07)],
}
TARGETS = {"grid25": (25, 95.0, 0.03), "ring8": (8, 98.0, 0.05)}  # issue 11: modes, HQ %, KL


def score(weights: Path, n: int, seed: int) -> dict[str, float]:
    """``n`` fresh samples of the generator in ``weights``, scored with the ``modes`` metric."""
    device = torch.device("cpu")
    net, cfg = load_generator(weights, device)
    cfg.eval.metrics = ["modes"]
    cfg.eval.n_samples = n
    fake = sample(net, cfg, n, device, seed)
    return Evaluator(cfg, load_data(cfg.data, device, seed), device)(lambda k: fake[:k])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default=str(Path(__file__).resolve().parents[1] / "search_spaces" / "grid25.yaml"))
    ap.add_argument("--n", type=int, default=2500)
    ap.add_argument("--seed", type=int, default=2718, help="seed of the scored samples (no trial draws with it)")
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="gantune-pacgan-"))
    name = Path(args.space).stem
    t0 = time.monotonic()
    summary, _, _ = run(args.space, name, workdir, {})
    wall = time.monotonic() - t0
    exported = export(name, f"sqlite:///{workdir / 'optuna.db'}", out=workdir / "best.yaml",
                      weights=workdir / "weights")
    metrics = score(workdir / "weights" / "generator.pt", args.n, args.seed)
    data = summary["best"]["config"]["data"]["name"]
    counts = ", ".join(f"{k} {v}" for k, v in summary["counts"].items() if v)
    print(f"\nsearch {args.space}: {summary['trials']} trials in {wall:.0f}s ({counts}); exported trial "
          f"{exported['trial']}; {args.n} fresh samples (seed {args.seed})")
    print(f"{'':<22}{'modes':>7}{'HQ %':>7}{'rev. KL':>9}")
    for label, modes, hq, kl in PUBLISHED.get(data, []):
        print(f"{'PacGAN Table 1: ' + label:<22}{modes:>7.1f}{hq:>7.1f}{kl:>9.2f}")
    hq = 100 * metrics["hq"]
    print(f"{'gantune (plain GAN)':<22}{metrics['modes']:>7.0f}{hq:>7.1f}{metrics['mode_kl']:>9.3f}")
    if data in TARGETS:
        want_modes, want_hq, want_kl = TARGETS[data]
        met = metrics["modes"] >= want_modes and hq >= want_hq and metrics["mode_kl"] <= want_kl
        print(f"target {want_modes} modes, HQ >= {want_hq}%, KL <= {want_kl}: {'met' if met else 'NOT met'}")
    print(f"(work files in {workdir}; exported config {workdir / 'best.yaml'})")


if __name__ == "__main__":
    main()
