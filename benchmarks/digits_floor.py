"""What digits FID values mean: the classifier's held-out accuracy, the real-vs-real floor and two bad generators.

    python benchmarks/digits_floor.py [--n 1000] [--resolution 8 16 32]

Every figure is measured as a search measures it (``gantune.metrics.Evaluator``, the held-out reference): the
floor is ``n`` train-split digits scored like a generator's samples against the 360 held-out digits; "noise" is
uniform noise, "one class" is ``n`` train-split images of one digit (a fully collapsed generator).
"""

from __future__ import annotations

import argparse

import torch
from common import guarded, positive_int

from gantune.catalogue import config_from_dict
from gantune.data import load_data
from gantune.metrics import Evaluator
from gantune.metrics.digits_net import load_digits_net
from gantune.metrics.train_digits_classifier import heldout_accuracy

CPU = torch.device("cpu")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=positive_int, default=1000, help="samples per evaluation (the digits spaces use 1,000)")
    p.add_argument("--resolution", type=int, nargs="+", default=[8, 16, 32])
    args = p.parse_args()
    print(f"digits classifier: held-out accuracy {100 * heldout_accuracy(load_digits_net(CPU)):.2f}% (360 digits)")
    print(f"{'px':>4}{'n':>6}{'ref n':>7}{'floor FID':>11}{'floor KID':>11}{'noise FID':>11}{'one class FID':>15}")
    for res in args.resolution:
        cfg = config_from_dict({"data": {"name": "digits", "resolution": res},
                                "eval": {"n_samples": args.n, "metrics": ["fid", "kid"]}})
        data = load_data(cfg.data, CPU, 0)
        ev = Evaluator(cfg, data, CPU)
        floor = ev.provenance["floor"]
        noise = ev(lambda n, res=res: torch.rand(n, 1, res, res, generator=torch.Generator().manual_seed(1)) * 2 - 1)
        assert data.labels is not None and data.images is not None
        ones = data.images[data.labels == 1]
        one_class = ev(lambda n, ones=ones: ones[torch.randint(len(ones), (n,), generator=torch.Generator()
                                                               .manual_seed(2))])
        print(f"{res:>4}{args.n:>6}{ev.provenance['reference_n']:>7}{floor['fid']:>11.2f}{floor['kid']:>11.4f}"
              f"{noise['fid']:>11.1f}{one_class['fid']:>15.1f}")


if __name__ == "__main__":
    guarded(main)
