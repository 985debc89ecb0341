"""Aggregate images/s of a search of batch-64 DCGAN-32 trials sharing one GPU, next to one bare loop.

    python benchmarks/gpu_throughput.py [--concurrency 1 2 4 8 16] [--steps 600]
    python benchmarks/gpu_throughput.py --cpu --concurrency 1 2 --steps 30     # exercise the harness on CPU
    python benchmarks/gpu_throughput.py --cpu --concurrency 1 --steps 10 --batch 8   # the test suite's smoke run

Each row runs a gantune search of N identical trials (fractional GPUs: 1/N each, one cheap evaluation at the
end) and reports the sum of the trials' steady-state throughput (median steps/s x batch), and images / wall
time of the whole search including its trials' start-up (from the first trial's start, after ``ray.init``);
"together" is the share of the trials' logging span in which every one of them was logging (a sum of rates
measured one after another would overstate the device's throughput). The "bare" row is
``loop_overhead.bare_loop`` on the same config (the trials without the search's defaults or recipes, so without
an EMA of G), synchronising with the host at the trials' log cadence. For scale only, not measured by this repository's
benchmarks: a bare hand-written DCGAN-32 loop timed on an H100 outside them gave 1 process 10.3k img/s,
16 processes 79.5k img/s, batch-2048 bf16 129k img/s. Without a GPU (and without --cpu) it says so and stops.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml
from common import TimedCollector, guarded, positive_int, run
from loop_overhead import bare_loop

from gantune.catalogue import config_from_dict

BATCH = 64
TRIAL: dict[str, Any] = {
    "data": {"name": "digits", "resolution": 32, "channels": 3},
    "model": {"arch": "dcgan", "z_dim": 100, "g_width": 64, "d_width": 64, "g_depth": 1, "d_depth": 1,
              "g_norm": "batch", "d_norm": "batch"},
    "loss": {"name": "nonsaturating"}, "train": {"batch_size": BATCH, "log_every": 50},
    "eval": {"metrics": ["diversity"], "n_samples": 256},  # one cheap evaluation, at the last step
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--cpu", action="store_true", help="run the harness on the CPU (no fractional GPUs)")
    ap.add_argument("--batch", type=positive_int, default=BATCH, help=f"images a step (default {BATCH}, the figure "
                    "measured; smaller only to exercise the harness cheaply)")
    args = ap.parse_args()
    if not torch.cuda.is_available() and not args.cpu:
        print("no GPU found: this benchmark measures trials sharing one CUDA GPU; nothing to measure here "
              "(use --cpu to exercise the harness on the CPU)")
        return
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU x{os.cpu_count()}"
    workdir = Path(tempfile.mkdtemp(prefix="gantune-gpu-"))
    space_path = workdir / "dcgan32.yaml"
    trial = dict(TRIAL)
    trial["train"] = {**TRIAL["train"], "log_every": max(10, args.steps // 10), "batch_size": args.batch}
    # a search needs an objective its evaluations report: the diversity ratio, evaluated once at the end; its
    # trials' device is their GPU share's (resources below)
    space_path.write_text(yaml.safe_dump({"name": "throughput", "search": {"objective": "diversity",
                                                                       "direction": "maximize"}, **trial}))
    cfg = config_from_dict({**trial, "train": {**trial["train"], "device": device.type, "steps": args.steps}})
    bare = bare_loop(cfg, device, args.steps, log_every=cfg.train.log_every) * args.batch
    print(f"device: {name}   DCGAN-32 (3x32x32), batch {args.batch}, {args.steps} steps per trial")
    print(f"{'trials':>7}{'per trial':>12}{'aggregate img/s':>17}{'end-to-end img/s':>18}{'vs bare':>9}"
          f"{'together':>10}")
    print(f"{'bare':>7}{_rate(bare):>12}{_rate(bare):>17}{'':>18}{1.0:>8.2f}x")
    cpus = os.cpu_count() or 1
    for n in args.concurrency:
        collector = TimedCollector()
        resources = {"gpu": 1.0 / n if device.type == "cuda" else 0.0, "cpu": max(1.0, cpus // n)}
        _, study, _ = run(space_path, f"throughput-{n}", workdir, {
            "trials": n, "max_steps": args.steps, "eval_every": args.steps, "concurrency": n,
            "resources": resources, "pruning": {"asha": False, "health": False},
            # the bare loop's work: no search default (an EMA of G) and no recipe in the trials
            "defaults": {}, "warm_start": False}, collector, warn=False)
        per_trial = [collector.median_steps_per_s(t.number) * args.batch for t in study.trials]
        aggregate = sum(per_trial)
        starts = [t.datetime_start for t in study.trials if t.datetime_start]
        ends = [t.datetime_complete for t in study.trials if t.datetime_complete]
        span = (max(ends) - min(starts)).total_seconds() if starts and ends else float("nan")
        e2e = n * args.steps * args.batch / span
        print(f"{n:>7}{_rate(aggregate / n):>12}{_rate(aggregate):>17}{_rate(e2e):>18}{aggregate / bare:>8.2f}x"
              f"{100 * collector.together():>9.0f}%", flush=True)
    print(f"(work files in {workdir})")


def _rate(img_s: float) -> str:
    """An img/s figure: whole above 100, else three significant digits (a slow or busy CPU's end-to-end rate of
    0.4 img/s printed as 0)."""
    return f"{img_s:.0f}" if img_s >= 100 else f"{img_s:.3g}"


if __name__ == "__main__":
    guarded(main)
