"""Train the digits feature extractor and write its weights into the package.

    python -m gantune.metrics.train_digits_classifier [--out PATH] [--epochs N] [--seed S]

It trains on the digits' train split only (``gantune.data.digits_split``: 1,437 digits; GANs train on the same
split) and prints its accuracy on the held-out split (360 digits), the one FID/KID/PRDC compare against.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from gantune.data import digits_split
from gantune.metrics.digits_net import DigitsNet, weights_path
from gantune.rundir import atomic_save


def _shift(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random +-1 px translations: the generator's digits are rarely perfectly centred."""
    dx, dy = torch.randint(-1, 2, (2,), generator=gen).tolist()
    return torch.roll(x, shifts=(dy, dx), dims=(2, 3))


def heldout_accuracy(net: DigitsNet) -> float:
    """Share of the held-out digits the classifier labels right."""
    x_te, y_te = digits_split("heldout")
    with torch.no_grad():
        _, logits = net.eval()(torch.from_numpy(x_te))
    return float((logits.argmax(1).numpy() == y_te).mean())


def train_classifier(path: Path, epochs: int = 60, seed: int = 0) -> float:
    """Train, write the weights (fp16) to ``path`` and return the held-out accuracy."""
    torch.manual_seed(seed)
    x_tr, y_tr = digits_split("train")
    xt, yt = torch.from_numpy(x_tr), torch.from_numpy(y_tr).long()
    net = DigitsNet()
    opt = torch.optim.Adam(net.parameters(), 2e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=gen)
        for idx in perm.split(64):
            _, logits = net(_shift(xt[idx], gen))
            loss = F.cross_entropy(logits, yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    acc = heldout_accuracy(net)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save({k: v.half() for k, v in net.state_dict().items()}, path)
    print(f"held-out accuracy: {acc:.4f} on the held-out split; weights: {path} ({path.stat().st_size // 1024} KB)")
    return acc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=weights_path(),
                    help="where the weights go (default: the package's, which FID on digits reads)")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    train_classifier(args.out, args.epochs, args.seed)


if __name__ == "__main__":
    main()
