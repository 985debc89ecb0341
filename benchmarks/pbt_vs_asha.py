"""PBT against TPE + ASHA on the same space and the same budget of trial-steps, side by side in one run.

    python benchmarks/pbt_vs_asha.py [--space search_spaces/toy.yaml] [--trials 16] [--max-steps N] [--seed 0]

(a) gantune's default: TPE samples ``--trials`` configs, ASHA and the health verdicts stop the poor ones.
(b) Population Based Training (``pruning: {scheduler: pbt}``): a population drawn by the same sampler, as many
members as (a)'s trial-steps buy full-length trials (so both spend the same compute), each evaluation an
exploit/explore decision; health verdicts still end diverged members.
Printed per run: trial-steps, wall seconds, the best trial's objective and its last evaluation's mode/class
metrics, and how many exploits PBT made. PBT trains every member to the end, so what it buys is a
schedule of hyperparameters (its best member's lineage), not a cheaper search.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import run

from gantune.sampling.space import load_space

SHOWN = ("modes", "hq", "mode_kl", "classes", "fid")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default=str(Path(__file__).resolve().parents[1] / "search_spaces" / "toy.yaml"))
    ap.add_argument("--trials", type=int, default=None, help="TPE+ASHA trials (default: the space's)")
    ap.add_argument("--max-steps", type=int, default=None, help="steps per trial (default: the space's)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    settings = load_space(args.space).settings
    trials, max_steps = args.trials or settings.trials, args.max_steps or settings.max_steps
    eval_every = min(settings.eval_every, max_steps)
    workdir = Path(tempfile.mkdtemp(prefix="gantune-pbt-"))
    # schedulers compared from the same kind of start: no recipe trials in either
    common = {"max_steps": max_steps, "eval_every": eval_every, "sampler": "tpe", "seed": args.seed,
              "warm_start": False}

    rows = []
    t0 = time.monotonic()
    summary, study, _ = run(args.space, "bench-asha", workdir, {
        **common, "trials": trials, "pruning": {"scheduler": "asha", "asha": True, "health": True}})
    rows.append(("TPE+ASHA", summary, time.monotonic() - t0, 0))
    population = max(2, round(summary["trial_steps"] / max_steps))
    print(f"  TPE+ASHA: {summary['trial_steps']} trial-steps, {rows[-1][2]:.0f}s -> PBT population {population}",
          flush=True)
    t0 = time.monotonic()
    summary, study, _ = run(args.space, "bench-pbt", workdir, {
        **common, "trials": population, "pruning": {"scheduler": "pbt", "health": True}})
    exploits = sum(len(t.user_attrs.get("pbt_lineage", [])) for t in study.trials)
    rows.append(("PBT", summary, time.monotonic() - t0, exploits))

    objective = settings.objectives[0]
    print(f"\nspace {args.space}: TPE+ASHA {trials} trials vs PBT {population} members, {max_steps} steps each, "
          f"seed {args.seed}")
    print(f"{'run':<10}{'trials':>7}{'trial-steps':>13}{'wall s':>8}{'exploits':>10}{'best ' + objective:>16}"
          "  best trial's last evaluation")
    for name, s, wall, n_exploits in rows:
        best = s["best"]
        value = best["values"][objective] if best else float("nan")
        shown = ", ".join(f"{k} {best['metrics'][k]:.3g}" for k in SHOWN if best and k in best["metrics"])
        print(f"{name:<10}{s['trials']:>7}{s['trial_steps']:>13}{wall:>8.0f}{n_exploits:>10}{value:>16.4g}  {shown}")
    print(f"(work files in {workdir})")


if __name__ == "__main__":
    main()
