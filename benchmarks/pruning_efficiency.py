"""How much compute pruning saves: the same space, trial count and seeds searched three ways, side by side.

    python benchmarks/pruning_efficiency.py [--space search_spaces/toy_wide.yaml] [--trials 16] [--max-steps 1500]

(a) no pruning, (b) ASHA on the objective only, (c) gantune's health-aware pruning (ASHA + health verdicts),
and the anchor (d) "stock": what a user writes without gantune, the same trial loop under Ray Tune's own
``OptunaSearch`` (the space's define-by-run sampling) and ``ASHAScheduler`` with the same rungs, no health
verdicts. The random sampler with a fixed seed gives trial N the same config in every run. A trial is *bad* when
the health monitor, replayed over its full history in run (a), judges it diverged, collapsed or stalled; the
table says how many bad trials each mode stopped before 25% of their budget. A trial that goes NaN ends in
every mode (it cannot continue). Targets: (c) uses >= 3x fewer trial-steps than (a) at equal best quality
within noise, and stops >= 90% of bad trials before 25% of the budget.

A second table shows how each run left its Optuna study: stock ``OptunaSearch`` tells Optuna COMPLETE, with
a truncated value, for every trial ASHA stopped, so TPE then learns from those as finished results.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
from common import run

from gantune import env
from gantune.catalogue import config_from_dict
from gantune.health import HealthMonitor
from gantune.sampling.space import load_space

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
        monitor = HealthMonitor.for_trial(cfg)
        path = Path(t.user_attrs["run_dir"]) / "metrics.jsonl"
        for line in path.read_text().splitlines() if path.exists() else []:
            if monitor(json.loads(line)) is not None:
                bad[t.number] = monitor.verdict.kind  # type: ignore[union-attr]
                break
    return bad


def last_step(run_dir: Path) -> int:
    """The last step a trial trained to, from its metrics.jsonl (what it really cost, whoever stopped it)."""
    path = run_dir / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return max((int(json.loads(ln)["step"]) for ln in lines if ln.strip()), default=0)


def trial_steps(summary: dict[str, Any], study: optuna.Study) -> dict[int, int]:
    """Steps each trial trained: gantune keeps them on the trial, the stock run measured them from its files."""
    return summary.get("steps") or {t.number: int(t.user_attrs.get("steps", 0)) for t in study.trials}


class DefineByRun:
    """OptunaSearch's define-by-run space: the space's own sampling (a class: Tune pickles its searcher)."""

    def __init__(self, space: Any) -> None:
        self.space = space

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        return {"trial": self.space.sample(trial), "number": trial.number}


def stock(space_path: str, trials: int, max_steps: int, seed: int, workdir: Path) -> tuple[dict[str, Any],
                                                                                          optuna.Study]:
    """The anchor: gantune's trial loop under Ray Tune's stock OptunaSearch + ASHAScheduler, no health verdicts."""
    import ray
    import torch
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from gantune.trial import train

    env.configure()
    space = load_space(space_path, name="bench-stock")
    raw = space.settings.model_dump()
    raw.update(trials=trials, max_steps=max_steps, eval_every=min(raw["eval_every"], max_steps))
    s = space.settings = type(space.settings).model_validate(raw)
    objective, mode = s.objectives[0], ("min" if s.directions[0] == "minimize" else "max")
    runs = workdir / "runs" / "bench-stock"

    def trainable(config: dict[str, Any]) -> None:
        torch.set_num_threads(1)

        def report(record: dict[str, float]) -> None:
            if objective in record:  # OptunaSearch needs the metric in every result
                tune.report({**record, "objective": record[objective]})

        train(config_from_dict(config["trial"]), report=report, run_dir=runs / f"trial-{config['number']:04d}",
              device="cpu")

    storage = f"sqlite:///{workdir / 'stock.db'}"
    searcher = OptunaSearch(space=DefineByRun(space), metric="objective", mode=mode, study_name="bench-stock",
                            storage=optuna.storages.RDBStorage(storage),
                            sampler=optuna.samplers.RandomSampler(seed=seed))
    scheduler = ASHAScheduler(time_attr="step", metric="objective", mode=mode, max_t=s.max_steps,
                              grace_period=s.pruning.grace_evals * s.eval_every,
                              reduction_factor=s.pruning.reduction_factor)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        tune.Tuner(tune.with_resources(trainable, {"cpu": 1}),
                   tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=trials),
                   run_config=tune.RunConfig(storage_path=str(workdir / "stock-ray"), verbose=0)).fit()
    finally:
        ray.shutdown()
    study = optuna.load_study(study_name="bench-stock", storage=storage)
    steps = {t.number: last_step(runs / f"trial-{t.number:04d}") for t in study.trials}  # what each really trained
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None]
    best = max(done, key=lambda t: t.value if mode == "max" else -t.value) if done else None  # type: ignore[operator]
    summary = {"trial_steps": sum(steps.values()), "best": {"values": {objective: best.value}} if best else None,
               "steps": steps}
    return summary, study


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default=str(Path(__file__).resolve().parents[1] / "search_spaces" / "toy_wide.yaml"))
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--max-steps", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--concurrent", type=int, default=0)
    ap.add_argument("--modes", nargs="+", choices=[*MODES, "stock"], default=[*MODES, "stock"],
                    help="the runs to make (bad trials are judged on the 'none' run when it is made)")
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="gantune-pruning-"))
    results = {}
    for mode, pruning in MODES.items():
        if mode not in args.modes:
            continue
        t0 = time.monotonic()
        summary, study, _ = run(args.space, f"bench-{mode}", workdir, {
            "trials": args.trials, "max_steps": args.max_steps, "sampler": "random", "seed": args.seed,
            "concurrency": args.concurrent, "pruning": pruning,
            "warm_start": False})  # the same random configs for every arm (stock Ray Tune has no recipes)
        results[mode] = (summary, study, time.monotonic() - t0)
        print(f"  {mode}: {summary['trial_steps']} trial-steps, {time.monotonic() - t0:.0f}s", flush=True)
    if "stock" in args.modes:
        t0 = time.monotonic()
        summary, study = stock(args.space, args.trials, args.max_steps, args.seed, workdir)
        results["stock"] = (summary, study, time.monotonic() - t0)
        print(f"  stock: {summary['trial_steps']} trial-steps, {time.monotonic() - t0:.0f}s", flush=True)
    bad = bad_trials(results["none"][1], workdir / "runs") if "none" in results else {}
    quarter = 0.25 * args.max_steps
    objective = load_space(args.space).settings.objectives[0]
    base_steps = results["none"][0]["trial_steps"] if "none" in results else args.trials * args.max_steps
    print(f"\nspace {args.space}: {args.trials} trials x {args.max_steps} steps, random sampler seed {args.seed}")
    print(f"bad trials (health replay over unpruned histories): {len(bad)} {dict(sorted(bad.items()))}")
    print(f"{'mode':<10}{'trial-steps':>12}{'vs none':>9}{'wall s':>8}{'best ' + objective:>16}"
          f"{'bad stopped <25%':>18}")
    for mode, (summary, study, wall) in results.items():
        steps = trial_steps(summary, study)
        early = sum(1 for n in bad if steps.get(n, args.max_steps) < quarter)
        best = summary["best"]["values"][objective] if summary["best"] else float("nan")
        ratio = base_steps / max(summary["trial_steps"], 1)
        print(f"{mode:<10}{summary['trial_steps']:>12}{ratio:>8.2f}x{wall:>8.0f}{best:>16.4g}"
              f"{f'{early}/{len(bad)}':>18}")
    print("\nhow each run recorded its trials in Optuna (stopped early = trained fewer steps than the budget):")
    print(f"{'mode':<10}{'COMPLETE':>10}{'PRUNED':>8}{'FAIL':>6}{'RUNNING':>9}{'stopped early, yet COMPLETE':>30}")
    for mode, (summary, study, _) in results.items():
        states = Counter(t.state.name for t in study.trials)
        steps = trial_steps(summary, study)
        truncated = sum(1 for t in study.trials if t.state.name == "COMPLETE" and steps[t.number] < args.max_steps)
        print(f"{mode:<10}{states['COMPLETE']:>10}{states['PRUNED']:>8}{states['FAIL']:>6}{states['RUNNING']:>9}"
              f"{truncated:>30}")
    print(f"(work files in {workdir})")


if __name__ == "__main__":
    main()
