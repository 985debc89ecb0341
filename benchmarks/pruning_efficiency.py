"""How much compute pruning saves: the same space, trial count and seeds searched three ways, side by side.

    python benchmarks/pruning_efficiency.py [--space search_spaces/toy.yaml] [--trials 16] [--max-steps 1500]

(a) no pruning, (b) ASHA on the objective only, (c) gantune's health-aware pruning (ASHA + health verdicts).
The random sampler with a fixed seed gives trial N the same config in all three runs. A trial is *bad* when
the health monitor, replayed over its full history in run (a), judges it diverged, collapsed or stalled; the
table says how many bad trials each mode stopped before 25% of their budget. A trial that goes NaN ends in
every mode (it cannot continue). Targets: (c) uses >= 3x fewer trial-steps than (a) at equal best quality
within noise, and stops >= 90% of bad trials before 25% of the budget.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from common import run

from gantune.config import config_from_dict
from gantune.health import HealthMonitor

MODES = {"none": {"asha": False, "health": False}, "asha": {"asha": True, "health": False},
         "gantune": {"asha": True, "health": True}}


def bad_trials(study, runs_dir: Path) -> dict[int, str]:
    """Trials of the unpruned run that the health monitor judges bad over their whole history."""
    bad = {}
    for t in study.trials:
        if t.user_attrs.get("gantune_status") == "pruned:diverged":  # went NaN: ended by the loop itself
            bad[t.number] = "diverged"
            continue
        cfg = config_from_dict(t.user_attrs["config"])
        monitor = HealthMonitor(cfg.health)
        path = Path(t.user_attrs["run_dir"]) / "metrics.jsonl"
        for line in path.read_text().splitlines() if path.exists() else []:
            if monitor(json.loads(line)) is not None:
                bad[t.number] = monitor.verdict.kind  # type: ignore[union-attr]
                break
    return bad


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default=str(Path(__file__).resolve().parents[1] / "search_spaces" / "toy.yaml"))
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--max-steps", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--concurrent", type=int, default=0)
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="gantune-pruning-"))
    results = {}
    for mode, pruning in MODES.items():
        t0 = time.monotonic()
        summary, study, space = run(args.space, f"bench-{mode}", workdir, {
            "trials": args.trials, "max_steps": args.max_steps, "sampler": "random", "seed": args.seed,
            "concurrency": args.concurrent, "pruning": pruning})
        results[mode] = (summary, study, time.monotonic() - t0)
        print(f"  {mode}: {summary['trial_steps']} trial-steps, {time.monotonic() - t0:.0f}s", flush=True)
    bad = bad_trials(results["none"][1], workdir / "runs")
    quarter = 0.25 * args.max_steps
    objective = space.settings.objectives[0]
    base_steps = results["none"][0]["trial_steps"]
    print(f"\nspace {args.space}: {args.trials} trials x {args.max_steps} steps, random sampler seed {args.seed}")
    print(f"bad trials (health replay over unpruned histories): {len(bad)} {dict(sorted(bad.items()))}")
    print(f"{'mode':<10}{'trial-steps':>12}{'vs none':>9}{'wall s':>8}{'best ' + objective:>16}"
          f"{'bad stopped <25%':>18}")
    for mode, (summary, study, wall) in results.items():
        steps = {t.number: int(t.user_attrs.get("steps", 0)) for t in study.trials}
        early = sum(1 for n in bad if steps.get(n, args.max_steps) < quarter)
        best = summary["best"]["values"][objective] if summary["best"] else float("nan")
        ratio = base_steps / max(summary["trial_steps"], 1)
        print(f"{mode:<10}{summary['trial_steps']:>12}{ratio:>8.2f}x{wall:>8.0f}{best:>16.4g}"
              f"{f'{early}/{len(bad)}':>18}")
    print(f"(work files in {workdir})")


if __name__ == "__main__":
    main()
