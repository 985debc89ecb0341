"""Search defaults, measured: the same configs of a space trained with and without each default of ``search.defaults``.

    python benchmarks/search_defaults.py [--space FILE ...] [--arms none ema decay both] [--trials N] [--seed S]
    python benchmarks/search_defaults.py --trials 2 --max-steps 40          # a smoke run of the harness only

For each space (default: the three spaces written the way a user would, ``tests/fixtures/user_*.yaml``) and each
arm, a search with the random sampler, no pruning and no warm start trains the same configs (the same sampler seed
gives trial k the same config in every arm, and ``train.seed`` the same training); the arms differ only in
``search.defaults``: ``none`` (the schema's defaults: no EMA, constant learning rates), ``ema`` (an EMA of G,
0.999, for evaluation), ``decay`` (learning rates annealed linearly to 0 over the trial) and ``both``. The last
evaluation of each trial is read: per arm, the median and best final objective over the configs, how many configs
the arm improves over ``none``, and the best config's other metrics (HQ and modes for 2-D mixtures, classes for
digits). Each arm's run is kept as ``<out>/<space>/<arm>[-t<trials>]-seed<seed>.json``, so a re-run only runs
what is missing; a run with ``--max-steps`` checks the harness and keeps nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from common import count, guarded, positive_int, run

from gantune.sampling.settings import sign_of
from gantune.sampling.space import load_space
from gantune.sampling.study import grid_params

ROOT = Path(__file__).resolve().parents[1]
SPACES = [ROOT / "tests" / "fixtures" / f"user_{n}.yaml" for n in ("grid25", "ring8", "digits")]
ARMS: dict[str, dict[str, Any]] = {
    "none": {},
    "ema": {"optim.ema": 0.999},
    "decay": {"optim.decay": "linear"},
    "both": {"optim.ema": 0.999, "optim.decay": "linear"},
}
#: metrics shown beside the objective, when the space's evaluation has them
SHOWN = ("modes", "hq", "mode_kl", "coverage", "fid", "classes")


def run_arm(space: Path, arm: str, trials: int | None, max_steps: int | None, seed: int) -> dict[str, Any]:
    """One arm: every config of the space's random draw, unpruned, with ``arm``'s defaults; per-trial finals."""
    settings = load_space(space).settings
    overrides: dict[str, Any] = {"sampler": "random", "seed": seed, "warm_start": False, "defaults": ARMS[arm],
                                 "trials": trials or settings.trials, "pruning": {"asha": False, "health": False}}
    if max_steps is not None:
        overrides.update(max_steps=max_steps, eval_every=min(settings.eval_every, max_steps))
    workdir = Path(tempfile.mkdtemp(prefix="gantune-defaults-"))
    t0 = time.time()
    summary, study, _ = run(space, f"defaults-{arm}", workdir, overrides)
    finals: dict[int, dict[str, Any]] = {}
    for t in study.trials:
        value = t.values[0] if t.values else None
        finals[t.number] = {"objective": value if value is not None and math.isfinite(value) else None,
                            "steps": int(t.user_attrs.get("steps", 0)), "params": grid_params(t),
                            "metrics": {k: v for k, v in (t.user_attrs.get("metrics") or {}).items() if k in SHOWN}}
    return {"trials": finals, "wall_s": time.time() - t0, "trial_steps": summary["trial_steps"],
            "defaults": ARMS[arm], "seed": seed}


def report(space: Path, runs: dict[str, dict[str, Any]]) -> None:
    settings = load_space(space).settings
    sign = sign_of(settings.directions[0])
    first = next(iter(runs.values()))
    print(f"\n{space.name}: objective {settings.objectives[0]} ({settings.directions[0]}), "
          f"{count(len(first['trials']), 'config')} (random sampler, seed {first.get('seed', 0)}), unpruned, "
          "no warm start")
    print(f"{'arm':<7}{'defaults':<38}{'median':>10}{'best':>10}{'better than none':>18}{'wall s':>9}   "
          "best config's metrics")
    base = runs.get("none")
    for arm, r in runs.items():
        values = {n: t["objective"] for n, t in r["trials"].items() if t["objective"] is not None}
        ranked = sorted(values, key=lambda n: sign * values[n])
        median = statistics.median(values.values()) if values else math.nan
        best = values[ranked[0]] if ranked else math.nan
        better = "-"
        if base is not None and arm != "none":
            before = {n: t["objective"] for n, t in base["trials"].items()}
            wins = sum(1 for n, v in values.items()
                       if n in before and (before[n] is None or sign * v < sign * before[n]))
            better = f"{wins}/{len(before)}"
        shown = r["trials"][ranked[0]]["metrics"] if ranked else {}
        failed = len(r["trials"]) - len(values)
        label = ", ".join(f"{k} {v}" for k, v in r["defaults"].items()) or "(schema's)"
        print(f"{arm:<7}{label:<38}{median:>10.4g}{best:>10.4g}{better:>18}{r['wall_s']:>9.0f}   "
              + ", ".join(f"{k} {v:.4g}" for k, v in shown.items()) + (f"; {failed} non-finite" if failed else ""))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", nargs="+", type=Path, default=SPACES)
    ap.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    ap.add_argument("--trials", type=positive_int, default=None, help="configs per space (default: the space's)")
    ap.add_argument("--max-steps", type=positive_int, default=None, help="steps per trial (default: the space's)")
    ap.add_argument("--seed", type=int, default=0, help="sampler seed: which configs are drawn")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "defaults")
    args = ap.parse_args(argv)
    for space in args.space:
        runs: dict[str, dict[str, Any]] = {}
        for arm in args.arms:
            kept = args.max_steps is None  # a shortened run is a check of the harness, not a figure to keep
            path = args.out / space.stem / f"{arm}{f'-t{args.trials}' if args.trials else ''}-seed{args.seed}.json"
            if kept and path.exists():
                runs[arm] = json.loads(path.read_text())
                runs[arm]["trials"] = {int(k): v for k, v in runs[arm]["trials"].items()}
                continue
            runs[arm] = run_arm(space, arm, args.trials, args.max_steps, args.seed)
            if kept:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(runs[arm]))
        report(space, runs)


if __name__ == "__main__":
    guarded(main)
