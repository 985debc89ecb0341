"""Each speed option of the trial loop off and on, side by side in one process: img/s and the ratio to all-off.

    python benchmarks/speed_options.py [--steps 200] [--preset dcgan32]
    python benchmarks/speed_options.py --preset mlp --steps 10 --repeats 1 --no-compile   # the test suite's smoke run

Options: TF32, cuDNN autotuning, channels_last, bf16 autocast (CUDA only: on a CPU they are no-ops and are
reported as such) and torch.compile (any device; the first steps, which compile, are outside the timed window).
Each row is the best of ``--repeats`` runs of gantune's loop with evaluation off, timed over ``--steps`` steps
after 10 warm-up steps (a multiple of 10: the loop syncs with the device every 10 steps). ``--no-compile`` leaves
out the rows that compile (a compile costs tens of seconds on a CPU), for a quick check that the harness runs.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import torch
from common import guarded
from loop_overhead import PRESETS, check_window, gantune_loop

from gantune import env
from gantune.catalogue import config_from_dict
from gantune.errors import GantuneError
from gantune.trial import resolve_device

OFF = {"tf32": False, "cudnn_benchmark": False, "channels_last": False, "precision": "fp32", "compile": False}
ROWS: list[tuple[str, dict[str, Any], bool]] = [  # name, options on top of OFF, CUDA only
    ("tf32", {"tf32": True}, True),
    ("cudnn_benchmark", {"cudnn_benchmark": True}, True),
    ("channels_last", {"channels_last": True}, True),
    ("bf16", {"precision": "bf16"}, True),
    ("compile", {"compile": True}, False),
    ("defaults (tf32 + cudnn_benchmark)", {"tf32": True, "cudnn_benchmark": True}, True),
    ("all on", {"tf32": True, "cudnn_benchmark": True, "channels_last": True, "precision": "bf16",
                "compile": True}, False),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="dcgan32")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-compile", action="store_true", help="leave out the rows that use torch.compile")
    args = ap.parse_args()
    try:
        check_window(10, args.steps, 10)  # gantune_loop's warm-up and host-sync cadence
    except GantuneError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    env.configure()
    device = resolve_device(args.device)
    preset = PRESETS[args.preset]
    batch = preset["train"]["batch_size"]

    def img_per_s(options: dict[str, Any]) -> float:
        cfg = config_from_dict({**preset, "train": {**preset["train"], **OFF, **options}})
        return max(gantune_loop(cfg, device, args.steps) for _ in range(args.repeats)) * batch

    print(f"device: {device}   preset {args.preset}, batch {batch}, {args.steps} steps, best of {args.repeats}")
    base = img_per_s({})
    print(f"{'option':<36}{'img/s':>10}{'vs off':>9}")
    print(f"{'all off':<36}{base:>10.0f}{1.0:>8.2f}x")
    for name, options, cuda_only in ROWS:
        if cuda_only and device.type != "cuda" and name != "all on":
            print(f"{name:<36}{'n/a':>10}{'':>9}  (CUDA only: no effect on {device.type})")
            continue
        if args.no_compile and options.get("compile"):
            print(f"{name:<36}{'skipped':>10}{'':>9}  (--no-compile)")
            continue
        try:
            rate = img_per_s(options)
        except Exception as err:  # a combination the device's kernels fail: said in its row, the table goes on
            print(f"{name:<36}{'failed':>10}{'':>9}  ({type(err).__name__}: {str(err).splitlines()[0][:100]})",
                  flush=True)
            continue
        print(f"{name:<36}{rate:>10.0f}{rate / base:>8.2f}x", flush=True)


if __name__ == "__main__":
    torch.backends.cudnn.benchmark = False
    guarded(main)
