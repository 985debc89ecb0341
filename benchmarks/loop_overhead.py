"""Trial-loop overhead: gantune's ``train()`` vs. a bare hand-written PyTorch loop doing the same work, both timed
over the same window of steps. Prints gantune steps/s / bare steps/s (target >= 0.95) with every repeat's numbers.

    python benchmarks/loop_overhead.py                  # DCGAN-32 on digits, batch 64 (2-core CPU: about 3 min)
    python benchmarks/loop_overhead.py --preset mlp     # the 2-D MLP on grid25, batch 512
    python benchmarks/loop_overhead.py --config my_trial.yaml --warmup 100 --steps 1000 --log-every 50 --repeats 7

Defaults: on a CPU 10 warm-up + 80 timed steps, a host sync every 10; on a GPU 100 + 1000, every 50; 5 repeats.

The same in both loops:
 - config, seed, data and its sampler (``RealData.sample``: random on-device indexing), batch size, G and D (the
   same builders), Adam with the same learning rates and betas (fused on CUDA in both), the loss (gantune's
   registered loss functions), ``optim.n_critic`` discriminator updates per generator step with the last fake
   reused by the generator update, D's weight gradients switched off during the generator update (gantune does
   this; a bare loop that does not computes gradients gantune skips, which measures that choice, not overhead),
   the EMA of G when ``optim.ema > 0`` (the same warmed-up decay), and the CUDA backend flags (``train.tf32``,
   ``train.cudnn_benchmark``).
 - The window: ``--warmup`` untimed steps, then ``--steps`` timed ones (steps warmup+1 .. warmup+steps in both).
   Both synchronise with the host at the same steps, every ``--log-every``: gantune reads its step statistics
   there; the bare loop reads ``loss_d.item()`` and ``loss_g.item()``, as a hand-written loop that prints its
   losses does. Each clock starts right after the sync at step ``warmup`` and stops right after the sync at the
   last step. gantune's clock is read from outside its loop, through its ``report`` callback (called at those
   log steps), not taken from its own ``steps_per_s``.
 - No evaluation in either: gantune's ``eval.every`` and quick checks lie beyond the run, and ``should_stop`` ends
   its trial at the last timed step, so neither its final evaluation nor its last sample grid falls in the window.
   Set-up (data, nets, optimisers) is outside the window in both.
 - The order: one process, interleaved gantune, bare, gantune, bare, ...; the ratio printed is the median of the
   per-repeat ratios (each pair ran back to back), next to each loop's median steps/s.

Not the same, and counted against gantune, since this is the overhead measured: its per-step ``schedule()`` (sets
both optimisers' learning rates and betas), its on-device step statistics (losses, D's scores, d_win, summed every
step), and at each log step the two gradient norms, the host read of the statistics, the non-finite check, the
record and the ``report``/``should_stop`` calls.

A config using what the bare loop does not write out (a gradient penalty or weight clipping, R1, feature matching,
gradient clipping, an optimiser other than Adam, channels_last, bf16 or compile where they act) is refused.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from common import guarded
from torch import Tensor

from gantune.catalogue import config_from_dict, load_config
from gantune.config import TrialConfig
from gantune.data import data_shape, load_data
from gantune.errors import GantuneError
from gantune.gan.losses import LOSSES
from gantune.gan.nets import build_discriminator, build_generator, resolve_arch
from gantune.gan.speed import Speed
from gantune.gan.step import ema_decay
from gantune.health import Verdict
from gantune.trial import Record, resolve_device, train

PRESETS: dict[str, dict[str, Any]] = {
    "dcgan32": {"data": {"name": "digits", "resolution": 32},
                "model": {"arch": "dcgan", "z_dim": 100, "g_width": 64, "d_width": 64, "g_depth": 1, "d_depth": 1,
                          "g_norm": "batch", "d_norm": "batch"},
                "train": {"batch_size": 64}},
    "mlp": {"data": {"name": "grid25"},
            "model": {"z_dim": 16, "g_width": 256, "d_width": 256, "g_norm": "none", "d_norm": "none"},
            "train": {"batch_size": 512}},
}

#: (warm-up steps, timed steps, host sync every) by device type when not given
DEFAULT_SIZES: dict[str, tuple[int, int, int]] = {"cpu": (10, 80, 10), "cuda": (100, 1000, 50)}

#: what the bare loop does not write out: (the setting, whether a config on a device uses it)
UNMATCHED: tuple[tuple[str, Callable[[TrialConfig, torch.device], bool]], ...] = (
    ("a loss with a gradient penalty or weight clipping (loss.name)",
     lambda c, d: LOSSES.get(c.loss.name).gradient_penalty or LOSSES.get(c.loss.name).weight_clipping),
    ("loss.r1_weight", lambda c, d: c.loss.r1_weight > 0),
    ("loss.feature_matching", lambda c, d: c.loss.feature_matching > 0),
    ("optim.grad_clip", lambda c, d: c.optim.grad_clip > 0),
    ("optim.name other than adam", lambda c, d: c.optim.name != "adam"),
    ("train.channels_last", lambda c, d: Speed.resolve(c.train, d).channels_last),
    ("train.precision: bf16", lambda c, d: Speed.resolve(c.train, d).bf16),
    ("train.compile", lambda c, d: Speed.resolve(c.train, d).compile),
    # found by a review: accepted, trained by gantune's step only
    ("loss.label_smoothing", lambda c, d: c.loss.label_smoothing > 0),
    ("loss.instance_noise", lambda c, d: c.loss.instance_noise > 0),
    ("loss.unroll", lambda c, d: c.loss.unroll > 0),
    ("optim.weight_decay", lambda c, d: c.optim.weight_decay > 0),
    ("optim.decay", lambda c, d: c.optim.decay != "none"),
    ("data.augment", lambda c, d: bool(c.data.augment)),
    ("model.conditional", lambda c, d: c.model.conditional),
    ("model.progressive", lambda c, d: c.model.progressive is not None),
)


def check_bare(cfg: TrialConfig, device: torch.device) -> None:
    """Refuse a config the bare loop would train differently from gantune's step (one line naming the settings)."""
    used = [what for what, on in UNMATCHED if on(cfg, device)]
    if used:
        raise GantuneError(f"the bare loop does not implement {', '.join(used)}: turn it off to compare the loops")


def check_window(warmup: int, steps: int, log_every: int) -> None:
    """gantune's clock is read at its log steps, so both ends of the window must be log steps."""
    if steps < 1 or log_every < 1 or warmup < log_every:
        raise GantuneError(f"--steps and --log-every must be at least 1 and --warmup at least --log-every "
                           f"(got {steps}, {log_every}, {warmup})")
    if warmup % log_every or steps % log_every:
        raise GantuneError(f"--warmup ({warmup}) and --steps ({steps}) must be multiples of --log-every ({log_every})")


def bare_loop(cfg: TrialConfig, device: torch.device, steps: int, *, warmup: int = 10, log_every: int = 10) -> float:
    """A hand-written loop doing the work of gantune's step (see the module docstring). Returns steps/s over the
    ``steps`` steps after ``warmup``, synchronising with the host every ``log_every`` steps."""
    check_bare(cfg, device)
    tc, o = cfg.train, cfg.optim
    cuda = device.type == "cuda"
    if cuda:  # the same process-wide flags gantune's trial sets
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tc.tf32
        torch.backends.cudnn.benchmark = tc.cudnn_benchmark
    torch.manual_seed(tc.seed)
    data = load_data(cfg.data, device, tc.seed)
    shape = data_shape(cfg.data)
    G = build_generator(cfg.model, resolve_arch(cfg), shape).to(device)
    D = build_discriminator(cfg.model, resolve_arch(cfg), shape).to(device)
    opt_g = torch.optim.Adam(G.parameters(), o.lr_g, betas=(o.beta1, o.beta2), fused=cuda or None)
    opt_d = torch.optim.Adam(D.parameters(), o.lr_d, betas=(o.beta1, o.beta2), fused=cuda or None)
    g_params: list[Tensor] = list(G.parameters())
    ema_params: list[Tensor] = list(copy.deepcopy(G).requires_grad_(False).parameters()) if o.ema > 0 else []
    loss = LOSSES.get(cfg.loss.name)
    bs, z_dim = tc.batch_size, cfg.model.z_dim

    def one_step(step: int) -> tuple[Tensor, Tensor]:
        for i in range(o.n_critic):
            real = data.sample(bs)
            with torch.set_grad_enabled(i == o.n_critic - 1):  # the last fake serves the generator update too
                fake = G(torch.randn(bs, z_dim, device=device))
            loss_d = loss.d(D(real)[0], D(fake.detach())[0])
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
        D.requires_grad_(False)
        loss_g = loss.g_loss(D(real)[0] if loss.g_paired is not None else None, D(fake)[0])  # relativistic: D(x)
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        D.requires_grad_(True)
        opt_g.step()
        if ema_params:
            with torch.no_grad():
                torch._foreach_lerp_(ema_params, g_params, 1.0 - ema_decay(o.ema, step))
        return loss_d, loss_g

    t0 = 0.0
    for step in range(1, warmup + steps + 1):
        loss_d, loss_g = one_step(step)
        if step % log_every == 0 or step in (warmup, warmup + steps):  # the window's ends are synced too
            _ = (loss_d.item(), loss_g.item())  # a host sync, like printing the losses
            _sync(device)
            if step == warmup:
                t0 = time.perf_counter()
    return steps / (time.perf_counter() - t0)


def gantune_loop(cfg: TrialConfig, device: torch.device, steps: int, *, warmup: int = 10,
                 log_every: int = 10) -> float:
    """gantune's ``train()`` with evaluation off. Returns steps/s over the ``steps`` steps after ``warmup``, timed
    from outside through its ``report`` callback at the log steps that bound the window."""
    check_window(warmup, steps, log_every)
    end = warmup + steps
    raw = cfg.to_dict()
    # one step beyond the window, so that no step in it is the last (which always evaluates); should_stop ends it
    raw["train"].update(steps=end + 1, log_every=log_every, checkpoint_every=10**9)
    raw["eval"].update(every=10**9, quick_every=0, metrics=[])
    marks: dict[int, float] = {}

    def report(record: Record) -> None:
        step = int(record["step"])
        if step in (warmup, end):
            _sync(device)  # already synchronised by the statistics read; kept for symmetry with the bare loop
            marks[step] = time.perf_counter()

    def should_stop(record: Record) -> Verdict | None:
        return Verdict("stalled", "end of the benchmark window") if int(record["step"]) >= end else None

    result = train(config_from_dict(raw), report, should_stop, device=str(device))
    if set(marks) != {warmup, end}:
        raise RuntimeError(f"gantune's trial ended at step {result.steps} ({result.status}: {result.reason}) "
                           f"before the window {warmup + 1}-{end} was timed")
    return steps / (marks[end] - marks[warmup])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _config(args: argparse.Namespace) -> TrialConfig:
    if args.config is not None:
        cfg = load_config(args.config)
    else:
        cfg = config_from_dict({**PRESETS[args.preset], "loss": {"name": "nonsaturating"}})
    if args.device is None:
        return cfg
    raw = cfg.to_dict()
    raw["train"]["device"] = args.device
    return config_from_dict(raw)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--preset", choices=sorted(PRESETS), default="dcgan32")
    which.add_argument("--config", help="a trial config YAML (what `gantune train` takes) instead of a preset")
    ap.add_argument("--warmup", type=int, help="untimed steps before the window (default: 10 CPU, 100 GPU)")
    ap.add_argument("--steps", type=int, help="timed steps per repeat (default: 80 CPU, 1000 GPU)")
    ap.add_argument("--log-every", type=int, help="host sync (gantune's log step) every N steps (default: 10 CPU, "
                                                   "50 GPU); --warmup and --steps must be multiples of it")
    ap.add_argument("--repeats", type=int, default=5, help="gantune/bare pairs; the ratio is their median")
    ap.add_argument("--device", help="auto, cpu, cuda, cuda:N (default: the config's train.device)")
    args = ap.parse_args()
    try:
        cfg = _config(args)
        device = resolve_device(cfg.train.device)
        given = (args.warmup, args.steps, args.log_every)
        default = DEFAULT_SIZES["cuda" if device.type == "cuda" else "cpu"]
        warmup, steps, log_every = (d if g is None else g for g, d in zip(given, default, strict=True))
        check_window(warmup, steps, log_every)
        check_bare(cfg, device)
        if args.repeats < 1:
            raise GantuneError(f"--repeats must be at least 1 (got {args.repeats})")
    except GantuneError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {name}   config: {args.config or 'preset ' + args.preset}   batch: {cfg.train.batch_size}")
    print(f"window: steps {warmup + 1}-{warmup + steps} ({steps} timed after {warmup} warm-up), host sync every "
          f"{log_every}; evaluation off in both; order gantune, bare, gantune, bare, ...")
    print(f"{'repeat':<8}{'gantune it/s':>14}{'bare it/s':>12}{'ratio':>8}", flush=True)
    ours, bare, ratios = [], [], []
    for i in range(args.repeats):
        ours.append(gantune_loop(cfg, device, steps, warmup=warmup, log_every=log_every))
        bare.append(bare_loop(cfg, device, steps, warmup=warmup, log_every=log_every))
        ratios.append(ours[-1] / bare[-1])
        print(f"{i + 1:<8}{ours[-1]:>14.2f}{bare[-1]:>12.2f}{ratios[-1]:>8.3f}", flush=True)
    print(f"{'median':<8}{statistics.median(ours):>14.2f}{statistics.median(bare):>12.2f}"
          f"{statistics.median(ratios):>8.3f}")
    note = "" if args.repeats >= 5 else f"; only {args.repeats} repeat(s): not a figure to quote"
    print(f"ratio gantune/bare steps/s: {statistics.median(ratios):.3f} (median of {args.repeats} per-repeat "
          f"ratios; target >= 0.95{note})")


if __name__ == "__main__":
    guarded(main)
