"""Each remedy's effect, measured once where the literature says it helps: the same run with the knob off and on.

    python benchmarks/remedies.py [--only unroll augment ...] [--seeds 3] [--steps-scale 1.0]
    python benchmarks/remedies.py --cost [--only ...] [--cost-steps 40] [--threads 1]

A *setting* is a base config (data, nets, loss, budget) chosen to show the failure a remedy answers: ring8 with a
small D (mode collapse, Metz et al. 2017), 10% of the digits train split (D overfits a small set, Zhao et al.
2020), stacked digits with a small D (missing modes, Salimans et al. 2016; PacGAN Table 3). Each row of the
table runs the setting with the knob off (shared by the rows of one setting) and on, over ``--seeds`` training
seeds (the same seeds for both), and reads the last evaluation: ``gantune.trial.train`` with no pruning, so both
arms spend exactly the same steps. Metrics: held-out FID for digits (the 360 digits no trial trains on), the
PacGAN modes / HQ / reverse-KL rule for ring8, the stacked-modes rule for stacked digits (26,000 samples, the
published protocol). Prints mean ± standard deviation over the seeds, and the per-seed values.

``--cost`` prints what each knob costs instead: ms per training step of the setting off and on, side by side in
one process (gantune's loop with evaluation off, timed over ``--cost-steps`` steps after 10 warm-up steps, the best
of ``--repeats``; ``loop_overhead.gantune_loop``). Transfer and progressive growing print n/a (``NO_STEP_COST``).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import guarded, positive_float, positive_int
from loop_overhead import gantune_loop
from PIL import Image

from gantune import env
from gantune.catalogue import config_from_dict
from gantune.data import digits_split, load_data
from gantune.trial import train

Overrides = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class Setting:
    """A base config where some failure shows, and the metrics that read it (first: the headline)."""

    why: str
    base: Overrides
    metrics: tuple[str, ...]


@dataclass(frozen=True)
class Remedy:
    """A knob turned on in a setting. ``prepare`` may build what the knob needs (e.g. weights to start from)."""

    technique: str
    knob: str
    setting: str
    on: Overrides
    prepare: Callable[[Path, int, float], Overrides] | None = field(default=None)


RING8_SMALL_D: Overrides = {  # Metz et al.'s mixture test: a plain GAN with a weak, small D rotates between modes
    "data": {"name": "ring8"},
    "model": {"arch": "mlp", "z_dim": 64, "g_width": 128, "g_depth": 3, "d_width": 32, "d_depth": 2,
              "g_norm": "none", "d_norm": "none"},
    "loss": {"name": "nonsaturating"},
    "optim": {"lr_g": 1e-3, "lr_d": 1e-3, "beta1": 0.5},
    "train": {"steps": 3000, "batch_size": 256, "log_every": 500},
    "eval": {"every": 3000, "n_samples": 2500, "metrics": ["modes"]},
}
DIGITS_LIMITED: Overrides = {  # DiffAugment's limited-data case: 144 of the 1,437 train digits (10%)
    "data": {"name": "digits", "resolution": 16, "max_images": 144},
    "model": {"arch": "dcgan", "z_dim": 64, "g_width": 32, "d_width": 32, "g_depth": 1, "d_depth": 1,
              "g_norm": "batch", "d_norm": "spectral"},
    "loss": {"name": "nonsaturating"},
    "optim": {"lr_g": 2e-4, "lr_d": 4e-4, "beta1": 0.0, "beta2": 0.9, "ema": 0.999},
    "train": {"steps": 3000, "batch_size": 64, "log_every": 500},
    "eval": {"every": 3000, "n_samples": 1000, "metrics": ["fid", "classes"]},
}
DIGITS_FULL: Overrides = {  # all 1,437 train digits: where growing and conditioning are compared
    **DIGITS_LIMITED, "data": {"name": "digits", "resolution": 16},
}
STACKED_SMALL_D: Overrides = {  # PacGAN Table 3's hard case: D a quarter of G's width
    "data": {"name": "stacked_digits", "resolution": 8},
    "model": {"arch": "dcgan", "z_dim": 64, "g_width": 64, "d_width": 16, "g_depth": 1, "d_depth": 1,
              "g_norm": "batch", "d_norm": "none"},
    "loss": {"name": "nonsaturating"},
    "optim": {"lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.5},
    "train": {"steps": 3000, "batch_size": 64, "log_every": 500},
    "eval": {"every": 3000, "n_samples": 26000, "metrics": ["stacked_modes"]},
}

SETTINGS: dict[str, Setting] = {
    "ring8-small-d": Setting("ring8, MLP D of width 32 (G 128), no R1/EMA/decay, 3,000 steps", RING8_SMALL_D,
                             ("modes", "hq", "mode_kl")),
    "digits-10pct": Setting("144 train digits (10%), 16 px DCGAN, 3,000 steps; FID vs the 360 held-out digits",
                            DIGITS_LIMITED, ("fid", "classes")),
    "digits-full": Setting("the 1,437 train digits, 16 px DCGAN, 3,000 steps; FID vs the 360 held-out digits",
                           DIGITS_FULL, ("fid", "classes", "class_kl")),
    "stacked-small-d": Setting("stacked digits 8 px, D width 16 (G 64), 3,000 steps, 26,000 samples",
                               STACKED_SMALL_D, ("stacked_modes", "stacked_kl")),
}

#: digits the limited-data setting trains on (the first of the shuffled train split, as ``data.max_images`` takes)
LIMITED = DIGITS_LIMITED["data"]["max_images"]


def pretrained(workdir: Path, seed: int, scale: float) -> Overrides:
    """Transfer learning's source: the same nets trained as long on the *other* 1,293 train digits (written as a
    folder of 16 px PNGs, disjoint from the 144 the setting trains on and from the held-out reference)."""
    folder = workdir.parent / "other-digits"
    if not folder.is_dir():
        cfg = config_from_dict({"data": {"name": "digits", "resolution": 16}})
        images = load_data(cfg.data, torch.device("cpu"), 0).images
        assert images is not None and len(images) == len(digits_split("train")[0])
        folder.mkdir(parents=True)
        for i, img in enumerate(images[LIMITED:]):
            pixels = ((img[0].numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(folder / f"{i:05d}.png")
    source = merged(DIGITS_LIMITED, {"data": {"name": "folder", "path": str(folder), "channels": 1,
                                              "resolution": 16, "max_images": None},
                                     "train": {"seed": seed}, "eval": {"metrics": []}})
    steps = max(1, round(source["train"]["steps"] * scale))
    cfg = config_from_dict(merged(source, {"train": {"steps": steps, "checkpoint_every": steps},
                                           "eval": {"every": steps}}))
    result = train(cfg, run_dir=workdir, device="cpu")
    assert result.status == "completed", result.reason
    return {"model": {"init_from": str(workdir)}}


REMEDIES: dict[str, Remedy] = {r.technique: r for r in [
    Remedy("unroll", "loss.unroll: 5", "ring8-small-d", {"loss": {"unroll": 5}}),
    Remedy("instance_noise", "loss.instance_noise: 0.1", "ring8-small-d", {"loss": {"instance_noise": 0.1}}),
    Remedy("rpgan", "loss.name: rpgan", "ring8-small-d", {"loss": {"name": "rpgan"}}),
    Remedy("ragan", "loss.name: ragan", "ring8-small-d", {"loss": {"name": "ragan"}}),
    Remedy("r3gan", "loss: {name: rpgan, r1_weight: 0.1, r2_weight: 0.1}", "ring8-small-d",
           {"loss": {"name": "rpgan", "r1_weight": 0.1, "r2_weight": 0.1}}),
    Remedy("augment", "data.augment: [translation, cutout]", "digits-10pct",
           {"data": {"augment": ["translation", "cutout"]}}),
    Remedy("ada", "data: {augment: [translation, cutout], ada_target: 0.6, ada_kimg: 100}", "digits-10pct",
           {"data": {"augment": ["translation", "cutout"], "ada_target": 0.6, "ada_kimg": 100}}),
    Remedy("d_dropout", "model.d_dropout: 0.3", "digits-10pct", {"model": {"d_dropout": 0.3}}),
    Remedy("weight_decay", "optim.weight_decay: 0.01", "digits-10pct", {"optim": {"weight_decay": 0.01}}),
    Remedy("label_smoothing", "loss.label_smoothing: 0.1", "digits-10pct", {"loss": {"label_smoothing": 0.1}}),
    Remedy("init_from", "model.init_from: a run on the other 1,293 digits", "digits-10pct", {},
           prepare=pretrained),
    Remedy("conditional", "model.conditional: true", "digits-full", {"model": {"conditional": True}}),
    Remedy("progressive", "model.progressive: {start: 8, fade_steps: 500}", "digits-full",
           {"model": {"progressive": {"start": 8, "fade_steps": 500}}}),
    Remedy("minibatch_disc", "model.minibatch_disc: 32", "stacked-small-d",
           {"model": {"minibatch_disc": 32, "minibatch_disc_dim": 8}}),
    Remedy("unroll_stacked", "loss.unroll: 5", "stacked-small-d", {"loss": {"unroll": 5}}),
    Remedy("rpgan_stacked", "loss.name: rpgan", "stacked-small-d", {"loss": {"name": "rpgan"}}),
    Remedy("r3gan_stacked", "loss: {name: rpgan, r1_weight: 0.02, r2_weight: 0.02}", "stacked-small-d",
           {"loss": {"name": "rpgan", "r1_weight": 0.02, "r2_weight": 0.02}}),
]}


def merged(base: Overrides, *over: Overrides) -> Overrides:
    """``base`` with each section of ``over`` updated key by key."""
    out = copy.deepcopy(base)
    for o in over:
        for section, values in o.items():
            out.setdefault(section, {}).update(values)
    return out


def run_once(raw: Overrides, seed: int, scale: float, metrics: tuple[str, ...], workdir: Path) -> dict[str, float]:
    """One training run of ``raw`` (seeded, steps scaled), its last evaluation's ``metrics``."""
    raw = merged(raw, {"train": {"seed": seed}})
    steps = max(1, round(raw["train"]["steps"] * scale))
    raw = merged(raw, {"train": {"steps": steps, "checkpoint_every": steps + 1}, "eval": {"every": steps}})
    grow = raw["model"].get("progressive")
    if grow:  # the growth schedule is in steps too: unscaled, a short run would end before its fades
        raw["model"]["progressive"] = {k: max(1, round(v * scale)) if k in ("fade_steps", "stage_steps") and v
                                       else v for k, v in grow.items()}
    cfg = config_from_dict(raw)
    result = train(cfg, run_dir=workdir, device="cpu")
    if result.status != "completed":
        print(f"  {result.status}: {result.reason}", flush=True)
        return {m: float("nan") for m in metrics}
    return {m: float(result.last_eval[m]) for m in metrics} | {"_wall_s": result.wall_s}


def summarise(values: list[float]) -> str:
    finite = [v for v in values if v == v]
    if not finite:
        return "failed"
    mean = statistics.fmean(finite)
    sd = statistics.stdev(finite) if len(finite) > 1 else 0.0
    digits = 0 if mean >= 100 else 1 if mean >= 10 else 3
    return f"{mean:.{digits}f} ± {sd:.{digits}f}" + ("" if len(finite) == len(values) else f" ({len(finite)} ok)")


#: remedies whose cost is not a dearer step, and why
NO_STEP_COST = {"init_from": "costs its source run, not a dearer step",
                "progressive": "the step's cost grows with each stage (a short window times the first)"}


def step_ms(raw: Overrides, steps: int, repeats: int) -> float:
    """Milliseconds a training step of ``raw`` takes on the CPU: the best of ``repeats`` timed windows."""
    cfg = config_from_dict(merged(raw, {"train": {"device": "cpu"}}))
    return 1000 / max(gantune_loop(cfg, torch.device("cpu"), steps) for _ in range(repeats))


def costs(chosen: list[Remedy], steps: int, repeats: int) -> None:
    """Each knob's cost per step beside its setting's, measured side by side."""
    print(f"ms per training step on the CPU ({torch.get_num_threads()} threads), best of {repeats} windows of "
          f"{steps} steps after 10 warm-up steps; evaluation off")
    print("\n| technique | knob | setting | off ms/step | on ms/step | on / off |\n|---|---|---|---|---|---|")
    off: dict[str, float] = {}
    for remedy in chosen:
        if (why := NO_STEP_COST.get(remedy.technique)) is not None:
            print(f"| {remedy.technique} | `{remedy.knob}` | {remedy.setting} | n/a | n/a | {why} |")
            continue
        base = SETTINGS[remedy.setting].base
        if remedy.setting not in off:
            off[remedy.setting] = step_ms(base, steps, repeats)
        on = step_ms(merged(base, remedy.on), steps, repeats)
        print(f"| {remedy.technique} | `{remedy.knob}` | {remedy.setting} | {off[remedy.setting]:.1f} | {on:.1f} | "
              f"{on / off[remedy.setting]:.2f}x |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=sorted(REMEDIES), default=sorted(REMEDIES))
    ap.add_argument("--seeds", type=positive_int, default=3, help="training seeds per arm (0 .. N-1, both arms)")
    ap.add_argument("--steps-scale", type=positive_float, default=1.0, help="scale every setting's steps (quick looks)")
    ap.add_argument("--cost", action="store_true", help="print each knob's ms per step off and on instead")
    ap.add_argument("--cost-steps", type=positive_int, default=40,
                    help="--cost: timed steps per window (a multiple of 10)")
    ap.add_argument("--repeats", type=positive_int, default=3, help="--cost: timed windows per arm (the best counts)")
    ap.add_argument("--threads", type=positive_int, help="torch threads (default: torch's)")
    args = ap.parse_args()
    env.configure()
    if args.threads:
        torch.set_num_threads(args.threads)
    chosen = [REMEDIES[t] for t in args.only]
    if args.cost:
        costs(chosen, args.cost_steps, args.repeats)
        return
    off: dict[str, list[dict[str, float]]] = {}
    rows: list[tuple[Remedy, list[dict[str, float]]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for remedy in chosen:
            setting = SETTINGS[remedy.setting]
            arms: list[tuple[str, Overrides]] = []
            if remedy.setting not in off:
                arms.append(("off", setting.base))
            arms.append(("on", setting.base))
            for arm, base in arms:
                results = []
                for seed in range(args.seeds):
                    t0 = time.perf_counter()
                    extra = remedy.on if arm == "on" else {}
                    if arm == "on" and remedy.prepare is not None:
                        prep = Path(tmp) / f"prep-{remedy.technique}-{seed}"
                        extra = merged(extra, remedy.prepare(prep, seed, args.steps_scale))
                    r = run_once(merged(base, extra), seed, args.steps_scale, setting.metrics,
                                 Path(tmp) / f"{remedy.technique}-{arm}-{seed}")
                    results.append(r)
                    shown = "  ".join(f"{k}={v:.4g}" for k, v in r.items() if not k.startswith("_"))
                    print(f"[{remedy.setting} | {remedy.knob if arm == 'on' else 'off'} | seed {seed}] {shown}"
                          f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
                if arm == "off":
                    off[remedy.setting] = results
                else:
                    rows.append((remedy, results))
    print(f"\nseeds per arm: {args.seeds}; steps scale {args.steps_scale}")
    for name, setting in SETTINGS.items():
        if name in off:
            print(f"setting {name}: {setting.why}")
    print("\n| technique | knob | setting | metric | off | on |\n|---|---|---|---|---|---|")
    for remedy, results in rows:
        for metric in SETTINGS[remedy.setting].metrics:
            before = [r[metric] for r in off[remedy.setting]]
            after = [r[metric] for r in results]
            print(f"| {remedy.technique} | `{remedy.knob}` | {remedy.setting} | {metric} | {summarise(before)} | "
                  f"{summarise(after)} |")


if __name__ == "__main__":
    guarded(main)
