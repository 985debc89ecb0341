"""What a perfect generator scores on stacked digits: modes and KL of real stacked digits, as the metric reads them.

    python benchmarks/stacked_floor.py [--n 26000] [--resolution 8 16] [--seed 0]

Stacked digits (``data.name: stacked_digits``) are three digits drawn uniformly with replacement, one per channel;
``stacked_modes`` classifies each channel with the digits classifier. Each row stacks ``n`` real digits of one split
(train: the 1,437 digits GANs train on; held-out: the 360 no model has seen) and reports, per resolution:

- the classifier's accuracy on that split's single digits at that resolution, and the share of the ``n`` stacked
  samples whose triple it reads exactly right (about accuracy^3);
- ``stacked_modes`` / ``stacked_kl`` as a search measures them (the ``stacked_digits`` extractor, then the family),
  with ``stacked_channel_kl`` (the part of the KL the channels' own digit histograms explain) and
  ``stacked_confidence`` (the classifier's mean top probability): a generator's values beside these say whether its
  KL comes from uneven or unreadable digits;
- the same two on the true triples (no classifier): what the finite sample alone gives;
- the expected KL of an exactly uniform sample of ``n`` over 1,000 modes (the mean of 200 multinomial draws):
  999 / (2 n) to first order, 0.019 at 26,000.
"""

from __future__ import annotations

import argparse

import torch
from common import guarded, positive_int

from gantune.catalogue import config_from_dict
from gantune.data import STACKED_DIGITS, digits_split, load_data, stack, stack_labels
from gantune.metrics import FAMILIES, Reference, Samples
from gantune.metrics.features import build_extractor
from gantune.metrics.modes import histogram_kl

CPU = torch.device("cpu")
MODES = 10**STACKED_DIGITS


def uniform_kl(n: int, draws: int = 200, seed: int = 0) -> float:
    """Mean KL from uniform of ``draws`` histograms of ``n`` samples drawn exactly uniformly over the modes."""
    gen = torch.Generator().manual_seed(seed)
    kls = [histogram_kl(torch.bincount(torch.randint(MODES, (n,), generator=gen), minlength=MODES))
           for _ in range(draws)]
    return sum(kls) / draws


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=positive_int, default=26000,
                   help="stacked samples a row (the published protocol: 26,000)")
    p.add_argument("--resolution", type=int, nargs="+", default=[8, 16])
    p.add_argument("--seed", type=int, default=0, help="seed of the draws")
    args = p.parse_args()
    print(f"uniform over {MODES} modes, n = {args.n}: expected KL {uniform_kl(args.n):.4f} "
          f"(first order 999/(2n) = {(MODES - 1) / (2 * args.n):.4f})")
    print(f"{'px':>3} {'split':<8}{'digit acc':>10}{'triples right':>15}{'modes':>7}{'KL':>8}"
          f"{'chan. KL':>10}{'conf.':>7}{'true modes':>12}{'true KL':>9}")
    for res in args.resolution:
        cfg = config_from_dict({"data": {"name": "stacked_digits", "resolution": res},
                                "eval": {"n_samples": args.n}})
        data = load_data(cfg.data, CPU, args.seed)
        extractor = build_extractor(cfg, CPU)
        assert data.images is not None and data.heldout is not None and data.labels is not None
        pools = {"train": (data.images, data.labels),
                 "heldout": (data.heldout, torch.from_numpy(digits_split("heldout")[1]))}
        for split, (pool, labels) in pools.items():
            draws = torch.randint(len(pool), (args.n, STACKED_DIGITS), generator=torch.Generator().manual_seed(
                args.seed))
            x = stack(pool, draws)
            feats, logits = extractor(x)
            assert logits is not None
            scorer = FAMILIES.get("stacked_modes")(Reference(x=x, feats=feats, logits=logits,
                                                                   depth=extractor.depth))
            out = scorer(Samples(x=x, feats=feats, logits=logits))
            _, digit_logits = extractor(pool)
            assert digit_logits is not None
            digit_acc = float((digit_logits.argmax(1) == labels).float().mean())
            truth = stack_labels(labels, draws)
            read = (logits.reshape(args.n, STACKED_DIGITS, 10).argmax(2)
                    * torch.tensor([100, 10, 1])).sum(1)
            true_counts = torch.bincount(truth, minlength=MODES)
            print(f"{res:>3} {split:<8}{100 * digit_acc:>9.2f}%{100 * float((read == truth).float().mean()):>14.2f}%"
                  f"{out['stacked_modes']:>7.0f}{out['stacked_kl']:>8.4f}{out['stacked_channel_kl']:>10.4f}"
                  f"{out['stacked_confidence']:>7.3f}{int((true_counts > 0).sum()):>12}"
                  f"{histogram_kl(true_counts):>9.4f}")


if __name__ == "__main__":
    guarded(main)
