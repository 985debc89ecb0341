"""gantune's trial loop vs a bare hand-written PyTorch GAN loop: same nets, batch, steps, device.

Both run side by side in one process (alternating repeats, best of N) and the ratio is printed:
gantune it/s / bare it/s. Target: >= 0.95. Evaluation is off in gantune's run (eval.every > steps).

    python benchmarks/loop_overhead.py                  # DCGAN-32 on digits, CPU or the GPU if present
    python benchmarks/loop_overhead.py --preset mlp     # the 2-D MLP
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
import torch.nn.functional as F

from gantune.config import TrialConfig, config_from_dict
from gantune.data import data_shape, load_data
from gantune.gan.nets import build_discriminator, build_generator
from gantune.trial import resolve_device, train

PRESETS: dict[str, dict[str, Any]] = {
    "dcgan32": {"data": {"name": "digits", "resolution": 32},
                "model": {"arch": "dcgan", "z_dim": 100, "g_width": 64, "d_width": 64, "g_depth": 1, "d_depth": 1,
                          "g_norm": "batch", "d_norm": "batch"},
                "train": {"batch_size": 64}},
    "mlp": {"data": {"name": "grid25"},
            "model": {"z_dim": 16, "g_width": 256, "d_width": 256, "g_norm": "none", "d_norm": "none"},
            "train": {"batch_size": 512}},
}




def bare_loop(cfg: TrialConfig, device: torch.device, steps: int) -> float:
    """The PyTorch DCGAN-tutorial loop: what a researcher writes by hand. Returns it/s."""
    torch.manual_seed(0)
    shape = data_shape(cfg.data)
    data = load_data(cfg.data, device, 0)
    G = build_generator(cfg.model, cfg.resolved_arch, shape).to(device)
    D = build_discriminator(cfg.model, cfg.resolved_arch, shape).to(device)
    opt_g = torch.optim.Adam(G.parameters(), cfg.optim.lr_g, betas=(cfg.optim.beta1, cfg.optim.beta2))
    opt_d = torch.optim.Adam(D.parameters(), cfg.optim.lr_d, betas=(cfg.optim.beta1, cfg.optim.beta2))
    bs = cfg.train.batch_size

    def one_step() -> None:
        real = data.sample(bs)
        fake = G(torch.randn(bs, cfg.model.z_dim, device=device))
        loss_d = F.softplus(-D(real)[0]).mean() + F.softplus(D(fake.detach())[0]).mean()
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        loss_g = F.softplus(-D(fake)[0]).mean()
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()

    for _ in range(5):
        one_step()
    _sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        one_step()
    _sync(device)
    return steps / (time.perf_counter() - t)


def gantune_loop(cfg: TrialConfig, device: torch.device, steps: int) -> float:
    raw = cfg.to_dict()
    raw["train"].update(steps=steps, log_every=max(steps // 4, 1), checkpoint_every=10**9)
    raw["eval"].update(every=10**9)
    raw["eval"].update(metrics=[])
    result = train(config_from_dict(raw), device=str(device))
    # steps_per_s of the last window excludes set-up, like the bare loop's timer
    return float(result.last["steps_per_s"])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="dcgan32")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per repeat (default: 100 CPU, 1000 GPU)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = resolve_device(args.device)
    steps = args.steps or (1000 if device.type == "cuda" else 100)
    raw = PRESETS[args.preset]
    cfg = config_from_dict({**raw, "loss": {"name": "nonsaturating"}, "train": {**raw["train"], "device": str(device)}})
    bare, ours = [], []
    for _ in range(args.repeats):  # alternate so both see the same machine state
        bare.append(bare_loop(cfg, device, steps))
        ours.append(gantune_loop(cfg, device, steps))
    b, g = max(bare), max(ours)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {name}   preset: {args.preset}   batch: {cfg.train.batch_size}   steps/repeat: {steps}")
    print(f"{'loop':<10}{'it/s':>10}{'img/s':>12}")
    print(f"{'bare':<10}{b:>10.1f}{b * cfg.train.batch_size:>12.0f}")
    print(f"{'gantune':<10}{g:>10.1f}{g * cfg.train.batch_size:>12.0f}")
    print(f"ratio gantune/bare: {g / b:.3f}  (target >= 0.95)")


if __name__ == "__main__":
    main()
