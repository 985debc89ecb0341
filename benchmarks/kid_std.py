"""Is ``kid_std`` the spread of ``kid`` between draws? Each case scores many draws of reals and fakes and compares.

    python benchmarks/kid_std.py [--draws 150]
    python benchmarks/kid_std.py --draws 5        # a smoke run

``kid_std`` claims to be the standard error of ``kid`` between independent draws of the reals and the fakes. Each
case draws ``--draws`` pairs of sets, scores each pair as a search does (the ``kid`` family), and prints the spread
(standard deviation) of ``kid`` over the draws beside the root mean square and the median of the ``kid_std``
reported: the first two should agree (a variance estimate is unbiased in its square, so its root mean square is
what compares; single values scatter around it, the median lower). Cases: the digits classifier's features of
disjoint draws of training digits (360 reals, as the held-out reference, against 500 fakes; the 1,437 digits are
one pool, so the draws overlap and the spread reads low if anything), and heavy-tailed synthetic features
(Student-t, 5 degrees of freedom, mixed into 64 dimensions; independent draws), alike and shifted.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from common import guarded, positive_int

from gantune.data import digits_split
from gantune.metrics import FAMILIES, Reference, Samples
from gantune.metrics.digits_net import load_digits_net

Draw = Callable[[torch.Generator], tuple[torch.Tensor, torch.Tensor]]


def digits_case(fakes: int) -> Draw:
    net = load_digits_net(torch.device("cpu"))
    with torch.no_grad():
        feats, _ = net(torch.from_numpy(digits_split("train")[0]))

    def draw(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        order = torch.randperm(len(feats), generator=gen)
        return feats[order[:360]], feats[order[360:360 + fakes]]

    return draw


def student_case(reals: int, fakes: int, shift: float, dim: int = 64) -> Draw:
    mix = torch.randn(dim, dim, generator=torch.Generator().manual_seed(0)) / dim**0.5

    def sample(n: int, gen: torch.Generator) -> torch.Tensor:
        # Student-t(5): a normal over the root of a chi-square(5) / 5 (torch.distributions takes no generator)
        normal = torch.randn(n, dim, generator=gen)
        gamma = torch.stack([torch.randn(n, dim, generator=gen) ** 2 for _ in range(5)]).sum(0)  # chi-square(5)
        return (normal / (gamma / 5).sqrt()) @ mix

    def draw(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return sample(reals, gen), sample(fakes, gen) + shift

    return draw


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--draws", type=positive_int, default=150, help="pairs of sets scored per case (default 150)")
    args = p.parse_args()
    if args.draws < 2:
        raise SystemExit("--draws: at least 2 (a spread needs two values)")
    cases: list[tuple[str, int, int, Draw]] = [
        ("digits features", 360, 500, digits_case(500)),
        ("Student-t 64-D", 360, 500, student_case(360, 500, 0.0)),
        ("Student-t 64-D", 360, 1000, student_case(360, 1000, 0.0)),
        ("Student-t shifted", 360, 1000, student_case(360, 1000, 0.15)),
        ("Student-t 64-D", 1000, 1000, student_case(1000, 1000, 0.0)),
    ]
    print(f"draws per case: {args.draws}")
    print(f"{'case':<19}{'reals':>6}{'fakes':>6}{'spread of kid':>15}{'rms kid_std':>13}{'median kid_std':>16}"
          f"{'spread/rms':>12}")
    kid = FAMILIES.get("kid")
    for label, reals, fakes, draw in cases:
        gen = torch.Generator().manual_seed(1)
        kids, stds = [], []
        for _ in range(args.draws):
            real, fake = draw(gen)
            out = kid(Reference(x=real, feats=real))(Samples(x=fake, feats=fake))
            kids.append(out["kid"])
            stds.append(out["kid_std"])
        spread = float(torch.tensor(kids).std())
        std = torch.tensor(stds)
        rms = float((std**2).mean().sqrt())
        print(f"{label:<19}{reals:>6}{fakes:>6}{spread:>15.4g}{rms:>13.4g}{float(std.median()):>16.4g}"
              f"{spread / rms:>12.2f}")


if __name__ == "__main__":
    guarded(main)
