"""Search efficiency over seeds: best quality per unit of compute, against random search and stock Ray Tune.

    python benchmarks/search_efficiency.py --preset grid25 [--seeds 5] [--out DIR] [--arms random gantune ...]
    python benchmarks/search_efficiency.py --preset digits [--seeds 3]
    python benchmarks/search_efficiency.py --preset toy_wide       # toy_wide.yaml: its configs barely train
    python benchmarks/search_efficiency.py --preset smoke          # a few steps of every arm (the test suite's)
    python benchmarks/search_efficiency.py --grace-evals 2 --out DIR --arms random gantune  # ASHA's first rung later

Every arm searches the same space with the same budget B of trial-steps (``trials x max_steps`` of the unpruned
arms), once per seed (the sampler's seed; ``train.seed`` stays the space's):

- ``random``: Optuna's random sampler, no pruning (what a user starts with);
- ``tpe``: Optuna TPE, no pruning;
- ``stock``: Ray Tune's own ``OptunaSearch`` (seeded TPE, the space's define-by-run sampling) and
  ``ASHAScheduler`` with the same rungs, around gantune's trial loop: what a user writes without gantune;
- ``gantune``: gantune's scheduling, TPE + ASHA + health verdicts, warm starts off: every arm starts from the
  same nothing;
- ``gantune_startup10``: the same with TPE's random start of Optuna's default length (10 trials, as stock's
  TPE has; gantune's is 5): what the start's length does on its own;
- ``gantune_group``: the same with TPE's ``group`` option (one model per set of parameters that occur together,
  Optuna's advice for conditional spaces; gantune's TPE is multivariate without it);
- ``random_asha``: the same scheduling (ASHA + health, refilled to B) with Optuna's random sampler instead of
  TPE: what the sampler adds on its own;
- ``gantune_warm``: the same with warm starts on (the data kind's known-good recipes first, projected onto the
  space);
- ``gantune_defaults``: the product as shipped, warm starts and ``search.defaults`` (an EMA of G) on: the one
  arm that does not train the configs as written; ``gantune_defaults_group``: the same with TPE's ``group``;
- ``pbt``: gantune's Population Based Training, B / max_steps members;
- ``pruned`` and ``pruned_noise``: ASHA + health on the *random* arm's configs (the same random sampler and seed
  give trial k the same config; ``train.seed`` gives it the same training), without and with noise-aware
  promotion; ``health_only``: the health verdicts alone on them (ASHA off), so what the verdicts stop is not
  hidden by an ASHA rung that came first. These judge pruning decisions against outcomes: the random arm ran
  every one of those configs to the end.

Every other arm trains the space's configs as written, without ``search.defaults`` (``benchmarks/search_defaults.py``
measures those), so that each arm trains the configs a plain Optuna or Ray Tune search of the space would.

Pruned arms get the preset's ``pruned_factor`` times the trials and are cut at B: quality is read at each evaluation
in the order the results arrived, against the trial-steps spent by then (the sum over trials of the steps each had
reported; a PBT member restored from a checkpoint counts only the steps it trains after it). Printed:

1. per arm, the final best at B (median and min-max over seeds) and the compute to reach the random arm's
   median final best: the first cumulative trial-steps (as a fraction of B) and wall seconds at which the arm's
   best-so-far reaches it (median over all seeds, a seed that never reached it counting as more than B; "k/n"
   says how many did);
2. pruning decisions judged by outcome: a config is *bad* when its unpruned final objective is non-finite or in
   the worst third of the random arm's configs, *good* when in the best third; the share of bad ones stopped
   before 25% of their budget (a trial's ``max_steps``, not the search's B), and false prunes (good ones stopped
   before the end) by who stopped them (ASHA's rungs, health verdicts);
3. how well each of ASHA's rungs ranks the configs by their end: the rank correlation (Spearman) between the
   objective at the rung and the final one over the random arm's configs (all, and those of the better half),
   pooled over seeds; a rung that cannot tell the configs that end best apart stops them by chance;
4. the evaluation noise at ASHA's rungs (the objective measured twice on the same weights, ``eval.repeat``), its
   ratio to the spread of the objective across trials there, and what noise-aware promotion rescued and cost.

The curves of the searching arms (median line, min-max band over seeds, against trial-steps and against wall
time) go to
``<out>/search_efficiency_<preset>.png``. Each arm's run is kept as ``<out>/<preset>/seed<k>/<arm>.json``: a
re-run with the same ``--out`` only runs what is missing (``--fresh`` re-runs all).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import optuna
from common import TimedCollector, guarded, positive_int, run
from ray.tune import Stopper

from gantune import env
from gantune.events import STATUS_KEY
from gantune.health import OBJECTIVE_REPEAT
from gantune.noise import rung_noise as noise_sd
from gantune.sampling.settings import SEARCH_DEFAULTS, sign_of
from gantune.sampling.space import load_space
from gantune.sampling.study import grid_params
from gantune.search.scheduler import RESCUED_ATTR
from gantune.search.trainable import RESTORED_STEP

ROOT = Path(__file__).resolve().parents[1]
K = TypeVar("K")


@dataclass(frozen=True)
class Preset:
    space: Path
    trials: int
    max_steps: int
    eval_every: int
    seeds: int
    pruned_factor: float = 3.0
    quick_every: int | None = None  # the space's cheap-check cadence unless set (``--quick-every``)
    grace_evals: int | None = None  # ASHA's first rung, in evaluations, unless the space's (``--grace-evals``)

    def overrides(self, arm: str) -> dict[str, int | None]:
        """What this run changes of the space's settings for ``arm`` (kept with its run: a kept arm run with other
        values is refused); the first rung matters only to the arms that run ASHA."""
        return {"quick_every": self.quick_every, "grace_evals": self.grace_evals if arm in ASHA_ARMS else None}

    def rungs(self, grace_evals: int, reduction_factor: int) -> list[int]:
        """ASHA's rungs (steps) under this preset: the first, ``reduction_factor`` times it, ... below the end."""
        grace = (self.grace_evals or grace_evals) * self.eval_every
        return [r for k in range(8) if (r := grace * reduction_factor ** k) < self.max_steps]


PRESETS = {
    "grid25": Preset(ROOT / "benchmarks" / "spaces" / "grid25_wide.yaml", trials=16, max_steps=2000, eval_every=250,
                     seeds=5),
    # the quickstart's wide space, whose configs barely train in 1,500 steps (kept: figures in
    # benchmarks/RESULTS.md came from it)
    "toy_wide": Preset(ROOT / "search_spaces" / "toy_wide.yaml", trials=16, max_steps=1500, eval_every=250, seeds=5),
    "digits": Preset(ROOT / "benchmarks" / "spaces" / "digits_wide.yaml", trials=8, max_steps=1000, eval_every=200,
                     seeds=3),
    "smoke": Preset(ROOT / "search_spaces" / "toy_wide.yaml", trials=3, max_steps=40, eval_every=20, seeds=1,
                    pruned_factor=2.0),
}
#: the arms, in the order they run and print
ARMS = ("random", "tpe", "stock", "gantune", "gantune_startup10", "gantune_group", "random_asha", "gantune_warm",
        "gantune_defaults", "gantune_defaults_group", "pbt", "pruned", "pruned_noise", "health_only")
NO_PRUNING = {"asha": False, "health": False}
#: gantune's pruning as shipped
ASHA_HEALTH = {"scheduler": "asha", "asha": True, "health": True}
#: TPE's option to model each set of parameters that occur together on its own (Optuna's advice for conditional spaces)
TPE_GROUP = {"group": True}
#: arms that exist to judge pruning decisions on known outcomes (left out of the curves)
JUDGED_ONLY = ("pruned", "pruned_noise", "health_only")
#: the arms ASHA prunes (``--grace-evals`` moves their first rung)
ASHA_ARMS = ("stock", "gantune", "gantune_startup10", "gantune_group", "random_asha", "gantune_warm",
             "gantune_defaults", "gantune_defaults_group", "pruned", "pruned_noise")


def arm_settings(arm: str, preset: Preset, seed: int) -> dict[str, Any]:
    """The ``search`` settings one of gantune's arms overrides in the space."""
    trials = preset.trials
    settings: dict[str, Any] = {"max_steps": preset.max_steps, "eval_every": preset.eval_every, "seed": seed,
                                "warm_start": False, "concurrency": 0, "defaults": {}}
    if preset.quick_every is not None:
        settings["quick_every"] = preset.quick_every
    extra = max(trials, math.ceil(preset.pruned_factor * trials))
    searching = {"sampler": "tpe", "trials": extra, "pruning": ASHA_HEALTH}  # gantune's scheduling, TPE
    # the product as shipped: warm starts and the search defaults (``SEARCH_DEFAULTS``: an EMA of G)
    shipped = {**searching, "warm_start": True, "defaults": dict(SEARCH_DEFAULTS)}
    settings.update({
        "random": {"sampler": "random", "trials": trials, "pruning": NO_PRUNING},
        "tpe": {"sampler": "tpe", "trials": trials, "pruning": NO_PRUNING},
        "gantune": searching,
        # the same with TPE's random start as long as Optuna's default (10 trials; stock's TPE has it)
        "gantune_startup10": {**searching, "sampler_options": {"n_startup_trials": 10}},
        "gantune_group": {**searching, "sampler_options": dict(TPE_GROUP)},
        "random_asha": {**searching, "sampler": "random"},
        "gantune_warm": {**searching, "warm_start": True},
        "gantune_defaults": shipped,
        "gantune_defaults_group": {**shipped, "sampler_options": dict(TPE_GROUP)},
        "pbt": {"sampler": "tpe", "trials": trials, "pruning": {"scheduler": "pbt", "health": True}},
        "pruned": {"sampler": "random", "trials": trials, "pruning": {"asha": True, "health": True}},
        "health_only": {"sampler": "random", "trials": trials, "pruning": {"asha": False, "health": True}},
        "pruned_noise": {"sampler": "random", "trials": trials,
                         "pruning": {"asha": True, "health": True, "noise_aware": True, "noise_margin": 1.0}},
    }[arm])
    if preset.grace_evals is not None and arm in ASHA_ARMS:
        settings["pruning"] = {**settings["pruning"], "grace_evals": preset.grace_evals}
    return settings


def gantune_arm(arm: str, preset: Preset, seed: int, workdir: Path) -> dict[str, Any]:
    """One of gantune's arms through ``run_search``; returns its events and per-trial outcomes."""
    collector = TimedCollector()
    t0 = time.time()
    summary, study, _ = run(preset.space, f"eff-{arm}", workdir, arm_settings(arm, preset, seed), collector)
    trials_out = {}
    for t in study.trials:
        status = str(t.user_attrs.get(STATUS_KEY, t.state.name.lower()))
        trials_out[t.number] = {"status": status, "steps": int(t.user_attrs.get("steps", 0)),
                                "params": {k: _plain(v) for k, v in grid_params(t).items()},
                                "rescued": t.user_attrs.get(RESCUED_ATTR, [])}
    events = [[r["_t"] - t0, n, int(r.get("step", 0)), r.get("objective"), r.get(OBJECTIVE_REPEAT),
               r.get(RESTORED_STEP)] for n, recs in collector.records.items() for r in recs]
    return {"events": sorted(events), "trials": trials_out, "wall_s": time.time() - t0,
            "trial_steps": summary["trial_steps"]}


def _plain(v: Any) -> Any:
    return v if isinstance(v, (int, float, str, bool)) or v is None else str(v)


class DefineByRun:
    """OptunaSearch's define-by-run space: the space's own sampling (a class: Tune pickles its searcher)."""

    def __init__(self, space: Any) -> None:
        self.space = space

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        return {"trial": self.space.sample(trial), "number": trial.number}


class BudgetStop(Stopper):
    """A Tune ``Stopper`` ending the experiment once its trials have reported the budget's trial-steps (what the
    analysis reads stops there; training past it would only cost the benchmark's time)."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.steps: dict[str, int] = {}

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        self.steps[trial_id] = int(result.get("step", 0))
        return False

    def stop_all(self) -> bool:
        return sum(self.steps.values()) >= self.budget


def stock_arm(preset: Preset, seed: int, workdir: Path) -> dict[str, Any]:
    """Ray Tune's own ``OptunaSearch`` (seeded TPE) + ``ASHAScheduler`` with the space's rungs, no health
    verdicts, around gantune's trial loop: each report goes to Tune and, with its time, to a log per trial."""
    import torch
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from gantune.catalogue import config_from_dict
    from gantune.trial import train

    env.configure()
    space = load_space(preset.space, name="eff-stock")
    raw = space.settings.model_dump()
    raw.update(max_steps=preset.max_steps, eval_every=preset.eval_every, seed=seed, defaults={})
    if preset.quick_every is not None:
        raw["quick_every"] = preset.quick_every
    if preset.grace_evals is not None:
        raw["pruning"]["grace_evals"] = preset.grace_evals
    s = space.settings = type(space.settings).model_validate(raw)
    objective, mode = s.objectives[0], s.mode
    logs = workdir / "stock-logs"
    logs.mkdir(parents=True, exist_ok=True)
    trials = max(preset.trials, math.ceil(preset.pruned_factor * preset.trials))
    t0 = time.time()

    def trainable(config: dict[str, Any]) -> None:
        torch.set_num_threads(1)
        log = (logs / f"{config['number']}.jsonl").open("a")

        def report(record: dict[str, float]) -> None:
            line = {"t": time.time() - t0, "step": int(record["step"]), "objective": record.get(objective)}
            log.write(json.dumps(line) + "\n")
            log.flush()
            if objective in record:  # OptunaSearch needs the metric in every result
                tune.report({**record, "objective": record[objective]})

        with log:
            train(config_from_dict(config["trial"]), report=report, device="cpu",
                  run_dir=workdir / "stock-runs" / f"trial-{config['number']:04d}")

    searcher = OptunaSearch(space=DefineByRun(space), metric="objective", mode=mode,
                            sampler=optuna.samplers.TPESampler(seed=seed))
    scheduler = ASHAScheduler(time_attr="step", metric="objective", mode=mode, max_t=s.max_steps,
                              grace_period=s.pruning.grace_evals * s.eval_every,
                              reduction_factor=s.pruning.reduction_factor)
    tune.Tuner(tune.with_resources(trainable, {"cpu": 1}),
               tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=trials),
               run_config=tune.RunConfig(storage_path=str(workdir / "stock-ray"), verbose=0,
                                         stop=BudgetStop(preset.trials * preset.max_steps))).fit()
    events, trials_out = [], {}
    for path in logs.glob("*.jsonl"):
        number = int(path.stem)
        lines = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
        events += [[ln["t"], number, ln["step"], ln["objective"], None, None] for ln in lines]
        trials_out[number] = {"status": "", "steps": max((ln["step"] for ln in lines), default=0), "params": {}}
    return {"events": sorted(events), "trials": trials_out, "wall_s": time.time() - t0,
            "trial_steps": sum(t["steps"] for t in trials_out.values())}


def run_arm(arm: str, preset: Preset, seed: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"gantune-eff-{arm}-"))
    out = stock_arm(preset, seed, workdir) if arm == "stock" else gantune_arm(arm, preset, seed, workdir)
    out["workdir"] = str(workdir)
    return out


# ---------------------------------------------------------------------------------------------------- analysis
@dataclass
class Curve:
    """Best-so-far ``best[i]`` (signed: lower is better) after ``steps[i]`` trial-steps and ``wall[i]`` seconds."""

    steps: list[float]
    wall: list[float]
    best: list[float]

    def wall_at(self, budget: float) -> float:
        """Seconds from the arm's start to its last evaluation within the budget."""
        return max((w for s, w in zip(self.steps, self.wall, strict=True) if s <= budget), default=math.nan)

    def at_budget(self, budget: float) -> float:
        values = [b for s, b in zip(self.steps, self.best, strict=True) if s <= budget]
        return values[-1] if values else math.inf

    def reach(self, target: float, budget: float) -> tuple[float, float] | None:
        """(trial-steps, wall seconds) where the best-so-far first reaches ``target`` within the budget."""
        for s, w, b in zip(self.steps, self.wall, self.best, strict=True):
            if s <= budget and b <= target:
                return s, w
        return None


def curve(run_: dict[str, Any], sign: float) -> Curve:
    """The best-so-far curve of one arm's run, from its events in arrival order."""
    done: dict[int, int] = {}  # steps each trial has trained (a restored PBT member: only its own training)
    at: dict[int, int] = {}  # the step each trial reported last
    spent = 0
    out = Curve([], [], [])
    best = math.inf
    for t, number, step, value, _, restored in run_.get("events", []):
        prev = int(restored) if restored is not None else at.get(number, 0)
        gained = max(0, step - prev)
        at[number] = step
        done[number] = done.get(number, 0) + gained
        spent += gained
        if value is not None and math.isfinite(value):
            best = min(best, sign * value)
        if math.isfinite(best):
            out.steps.append(spent)
            out.wall.append(t)
            out.best.append(best)
    return out


def final_values(run_: dict[str, Any], max_steps: int) -> dict[int, float]:
    """Each trial's objective at its last step when it trained to the end; NaN when it never got there."""
    values = dict.fromkeys(run_["trials"], math.nan)
    for _, number, step, value, _, _ in run_["events"]:
        if step == max_steps and value is not None:
            values[number] = value
    return values


def labels(random_run: dict[str, Any], max_steps: int, sign: float) -> dict[int, str]:
    """Each config by its unpruned outcome: ``bad`` (non-finite, or in the worst third of final objectives),
    ``good`` (the best third) or ``mid``; a config that never reached the end ranks below every finite one."""
    return thirds(final_values(random_run, max_steps), sign)


def thirds(finals: dict[K, float], sign: float) -> dict[K, str]:
    """``labels``' rule on any set of final objectives (one seed's configs, or several seeds' pooled). A config
    tied with the last one of a third is in it: three configs ending at coverage 0.0 where the worst third held
    two were split by their trial numbers (one "mid"), so the counts depended on the order trials were drawn."""
    key = {n: sign * v if math.isfinite(v) else math.inf for n, v in finals.items()}
    order = sorted(finals, key=key.__getitem__)
    third = max(1, len(order) // 3)
    if not order:
        return {}
    good_at, bad_at = key[order[third - 1]], key[order[len(order) - third]]
    return {n: "bad" if key[n] >= bad_at else "good" if key[n] <= good_at else "mid" for n in order}


DECISIONS = ("bad", "bad_early", "bad_early_health", "good", "good_asha", "good_health")


def decisions(pruned: dict[str, Any], lab: dict[int, str], max_steps: int) -> dict[str, int]:
    """How a pruned arm treated configs of known outcome."""
    c = dict.fromkeys(DECISIONS, 0)
    for n, info in pruned["trials"].items():
        kind = lab.get(n)
        steps, status = info["steps"], info["status"]
        early = steps < 0.25 * max_steps
        if kind == "bad":
            c["bad"] += 1
            c["bad_early"] += early
            c["bad_early_health"] += early and status.startswith("pruned:") and status != "pruned:asha"
        elif kind == "good":
            c["good"] += 1
            if steps < max_steps and status == "pruned:asha":
                c["good_asha"] += 1
            elif steps < max_steps and status.startswith("pruned:"):
                c["good_health"] += 1
    return c


def rung_noise(run_: dict[str, Any], rungs: list[int]) -> dict[int, tuple[float, float, int]]:
    """Per rung: (the sd of one evaluation from the pairs measured on the same weights, the sd of the objective
    across trials there, pairs)."""
    out = {}
    for rung in rungs:
        pairs = [(v, r) for _, _, step, v, r, _ in run_["events"]
                 if step == rung and v is not None and r is not None and math.isfinite(v) and math.isfinite(r)]
        if len(pairs) >= 2:
            out[rung] = (noise_sd(pairs), statistics.stdev(a for a, _ in pairs), len(pairs))
    return out


def rung_agreement(random_runs: list[dict[str, Any]], rungs: list[int], max_steps: int,
                   sign: float) -> dict[int, tuple[float, float, int]]:
    """Per rung: the rank correlation between the objective there and the final one over the unpruned configs
    that reported both (finite), then over the better half by their final (where the configs worth keeping are
    told apart), and the number of configs. The final is read at ``max_steps``."""
    out = {}
    for rung in rungs:
        pairs = []
        for r in random_runs:
            at: dict[int, dict[int, float]] = {}
            for _, number, step, value, _, _ in r["events"]:
                if step in (rung, max_steps) and value is not None and math.isfinite(value):
                    at.setdefault(number, {})[step] = sign * value
            pairs += [(v[rung], v[max_steps]) for v in at.values() if len(v) == 2]
        if len(pairs) >= 4:
            top = sorted(pairs, key=lambda p: p[1])[: len(pairs) // 2]  # signed: lower is better
            out[rung] = (spearman(pairs), spearman(top), len(pairs))
    return out


def spearman(pairs: list[tuple[float, float]]) -> float:
    """Spearman's rank correlation (ties share their mean rank); NaN where one side does not vary."""
    xs, ys = (_ranks([p[i] for p in pairs]) for i in (0, 1))
    try:
        return statistics.correlation(xs, ys)
    except statistics.StatisticsError:
        return math.nan


def _ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in order[i:j + 1]:
            ranks[k] = (i + j) / 2
        i = j + 1
    return ranks


def _med(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def to_target(reached: list[tuple[float, float]], missed_walls: list[float], budget: float) -> tuple[str, str]:
    """The median seed's trial-steps (of B) and seconds to the target, as printed, from the seeds that reached it
    (steps, seconds) and the wall at B of those that did not. A seed that never reached it counts as more than B
    (and never, in seconds). Where exactly half did, the median halves the last that did and one that did not:
    a bound ("> 69.6% of B"), which "> B" overstated."""
    fracs, walls = [s / budget for s, _ in reached], [w for _, w in reached]
    missed = [math.inf] * len(missed_walls)
    frac, wall = _med(fracs + missed), _med(walls + missed)
    if reached and len(reached) == len(missed_walls) and (bound := _med(fracs + [1.0] * len(missed))) < 1:
        return f"> {bound:.1%} of B", f"> {_med(walls + missed_walls):.0f} s"
    return (f"{frac:.1%} of B" if math.isfinite(frac) else "> B", f"{wall:.0f} s" if math.isfinite(wall) else "never")


def report(preset_name: str, preset: Preset, runs: dict[str, dict[int, dict[str, Any]]], out: Path) -> None:
    settings = load_space(preset.space).settings
    objective = settings.objectives[0]
    sign = sign_of(settings.directions[0])
    budget = preset.trials * preset.max_steps
    curves = {arm: {seed: curve(r, sign) for seed, r in by_seed.items()} for arm, by_seed in runs.items()}
    finals = {arm: {seed: c.at_budget(budget) for seed, c in by_seed.items()} for arm, by_seed in curves.items()}
    seeds = sorted(runs.get("random", {}))
    target = _med([finals["random"][s] for s in seeds]) if seeds else math.nan
    print(f"\npreset {preset_name}: {preset.space.name}, budget {budget} trial-steps ({preset.trials} x "
          f"{preset.max_steps}) per search, objective {objective} ({settings.directions[0]}), seeds "
          f"{sorted({s for r in runs.values() for s in r})}")
    print(f"target: the random arm's median final best, {objective} {sign * target:.4g}")
    w = max(18, max(map(len, curves), default=0) + 2)  # the arm column fits the longest name
    print(f"{'arm':<{w}}{'final best: median':>20}{'[min, max]':>22}{'reached':>9}{'steps to target':>17}"
          f"{'wall to target':>16}{'wall to B (s)':>15}")
    for arm, by_seed in curves.items():
        values = sorted(sign * v for v in finals[arm].values())
        reached = [r for c in by_seed.values() if (r := c.reach(target, budget)) is not None]
        missed_walls = [c.wall_at(budget) for c in by_seed.values() if c.reach(target, budget) is None]
        to_steps, to_wall = to_target(reached, missed_walls, budget)
        walls = _med([c.wall_at(budget) for c in by_seed.values()])
        spread = f"[{values[0]:.4g}, {values[-1]:.4g}]" if values else ""
        print(f"{arm:<{w}}{sign * _med([sign * v for v in values]):>20.4g}{spread:>22}"
              f"{f'{len(reached)}/{len(by_seed)}':>9}{to_steps:>17}{to_wall:>16}{walls:>15.0f}")
    for arm in JUDGED_ONLY:
        if arm not in runs or "random" not in runs:
            continue
        total = dict.fromkeys(DECISIONS, 0)
        false_prunes, best_stopped = [], 0
        for seed, r in runs[arm].items():
            if seed not in runs["random"]:
                continue
            lab = labels(runs["random"][seed], preset.max_steps, sign)
            for k, v in decisions(r, lab, preset.max_steps).items():
                total[k] += v
            finals = final_values(runs["random"][seed], preset.max_steps)
            best = min(finals, key=lambda n: sign * finals[n] if math.isfinite(finals[n]) else math.inf)
            best_stopped += r["trials"][best]["steps"] < preset.max_steps
            false_prunes += [f"seed {seed} trial {n}: {finals[n]:.3g} ({t['status']} at {t['steps']})"
                             for n, t in r["trials"].items() if lab.get(n) == "good" and t["steps"] < preset.max_steps]
        bad, good = max(total["bad"], 1), max(total["good"], 1)
        print(f"\n{arm} (all seeds): bad configs stopped before 25% of their steps {total['bad_early']}/{total['bad']} "
              f"({total['bad_early'] / bad:.0%}; by health verdicts {total['bad_early_health']}, "
              f"{total['bad_early_health'] / bad:.0%}); false prunes of good configs: by health verdicts "
              f"{total['good_health']}/{total['good']} ({total['good_health'] / good:.0%}), by ASHA "
              f"{total['good_asha']}/{total['good']} ({total['good_asha'] / good:.0%}); "
              f"trial-steps {sum(r['trial_steps'] for r in runs[arm].values())}")
        print(f"  the config that ends best unpruned was stopped early in {best_stopped} of {len(runs[arm])} seeds; "
              f"the good configs stopped, with their unpruned final {objective}: "
              + ("; ".join(false_prunes) or "none"))
    rungs = preset.rungs(settings.pruning.grace_evals, settings.pruning.reduction_factor)
    agreement = rung_agreement(list(runs.get("random", {}).values()), rungs, preset.max_steps, sign)
    if agreement:  # four configs at least (the smoke run has three)
        print(f"\nhow ASHA's rungs rank the random arm's configs by their final {objective} (Spearman, all seeds "
              "pooled): " + "; ".join(f"step {rung}: {rho:.2f} over {n} configs, {rho_top:.2f} over the better half"
                                       for rung, (rho, rho_top, n) in agreement.items()))
    if "pruned_noise" in runs:
        print("\nevaluation noise at ASHA's rungs (objective measured twice on the same weights, all seeds pooled):")
        for seed, r in sorted(runs["pruned_noise"].items()):
            for rung, (noise, spread, n) in rung_noise(r, rungs).items():
                print(f"  seed {seed} step {rung}: sd of one evaluation {noise:.3g}, sd across trials {spread:.3g} "
                      f"(noise/spread {noise / spread if spread else math.nan:.2f}, {n} trials)")
        rescued = [(seed, int(n)) for seed, r in runs["pruned_noise"].items() for n, t in r["trials"].items()
                   if t.get("rescued")]
        kinds = [labels(runs["random"][seed], preset.max_steps, sign).get(n, "?") if seed in runs.get("random", {})
                 else "?" for seed, n in rescued]
        cost = {arm: sum(r["trial_steps"] for r in runs[arm].values()) for arm in ("pruned", "pruned_noise")
                if arm in runs}
        print(f"noise-aware promotion kept {len(rescued)} trials ASHA would have stopped (by outcome: "
              f"{kinds.count('good')} good, {kinds.count('mid')} mid, {kinds.count('bad')} bad); trial-steps "
              + " vs ".join(f"{arm} {steps}" for arm, steps in cost.items()))
    plot(curves, budget, target, objective, sign, out / f"search_efficiency_{preset_name}.png")


def plot(curves: dict[str, dict[int, Curve]], budget: float, target: float, objective: str, sign: float,
         path: Path) -> None:
    """Median best-so-far with the min-max band over seeds, against trial-steps and against wall time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, xkey, xmax, label in ((axes[0], "steps", budget, "trial-steps (fraction of the budget B)"),
                                  (axes[1], "wall", None, "wall seconds")):
        for arm, by_seed in curves.items():
            if not by_seed or arm in JUDGED_ONLY:
                continue
            top = xmax or max((getattr(c, xkey)[-1] for c in by_seed.values() if c.steps), default=1.0)
            grid = [top * i / 100 for i in range(1, 101)]
            rows = [[_value_at(getattr(c, xkey), c.best, x) for x in grid] for c in by_seed.values()]
            cols = [[v for v in col if math.isfinite(v)] for col in zip(*rows, strict=True)]
            xs = [x / budget if xkey == "steps" else x for x, col in zip(grid, cols, strict=True) if col]
            kept = [col for col in cols if col]
            line = ax.plot(xs, [sign * statistics.median(c) for c in kept], label=arm, drawstyle="steps-post")[0]
            ax.fill_between(xs, [sign * min(c) for c in kept], [sign * max(c) for c in kept], alpha=0.15,
                            color=line.get_color(), step="post")
        if math.isfinite(target):
            ax.axhline(sign * target, color="grey", linestyle="--", linewidth=0.8, label="random's median final best")
        ax.set_xlabel(label)
        ax.set_ylabel(f"best {objective} so far")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"\ncurves: {path}")


def _value_at(xs: list[float], best: list[float], x: float) -> float:
    value = math.inf
    for xi, b in zip(xs, best, strict=True):
        if xi > x:
            break
        value = b
    return value


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=list(PRESETS), default="grid25")
    ap.add_argument("--seeds", type=positive_int, default=None, help="sampler seeds 0..N-1 (default: the preset's)")
    ap.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out")
    ap.add_argument("--fresh", action="store_true", help="re-run arms already kept in --out")
    ap.add_argument("--quick-every", type=positive_int, help="cheap collapse checks every N steps (default: the "
                    "space's); a kept arm of another cadence is refused")
    ap.add_argument("--grace-evals", type=positive_int, help="ASHA's first rung after N evaluations in the arms ASHA "
                    "prunes (default: the space's); a kept arm of another rung is refused")
    args = ap.parse_args(argv)
    preset = dataclasses.replace(PRESETS[args.preset], quick_every=args.quick_every, grace_evals=args.grace_evals)
    runs: dict[str, dict[int, dict[str, Any]]] = {arm: {} for arm in args.arms}
    env.configure()
    import ray

    # one local Ray for every arm (each search joins it): no arm pays Ray's start, and each sees the same CPUs
    ray.init(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR)  # as gantune's own searches: no token-authentication warning
    try:
        run_all(args, preset, runs)
    finally:
        ray.shutdown()
    report(args.preset, preset, runs, args.out)


def load_kept(path: Path) -> dict[str, Any]:
    """An arm's run kept in ``--out``, its trials by number (JSON keeps them as strings)."""
    kept = json.loads(path.read_text())
    kept["trials"] = {int(n): t for n, t in kept["trials"].items()}
    return kept


def run_all(args: argparse.Namespace, preset: Preset, runs: dict[str, dict[int, dict[str, Any]]]) -> None:
    """Each arm of each seed not kept in ``--out`` yet, run and kept."""
    for seed in range(args.seeds or preset.seeds):
        for arm in args.arms:
            path = args.out / args.preset / f"seed{seed}" / f"{arm}.json"
            if path.exists() and not args.fresh:
                kept = load_kept(path)
                for key, value in preset.overrides(arm).items():  # None: the space's own
                    if kept.get(key) != value:
                        option = "--" + key.replace("_", "-")
                        raise SystemExit(f"{path}: kept with {option} {kept.get(key)}, asked for {value}: use "
                                         "another --out, or --fresh")
                runs[arm][seed] = kept
                continue
            t0 = time.monotonic()
            result = run_arm(arm, preset, seed) | preset.overrides(arm)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(result))
            runs[arm][seed] = result
            print(f"  seed {seed} {arm}: {result['trial_steps']} trial-steps, {time.monotonic() - t0:.0f} s",
                  flush=True)


if __name__ == "__main__":
    guarded(main)
