"""The health verdicts replayed on trials that ran to the end: what they would stop, judged by outcome.

    python benchmarks/health_replay.py --out DIR [--preset grid25] [--set min_progress=0.5 ...] [--check health_only]
    python benchmarks/health_replay.py --out DIR --grid patience=1,2,3 min_hq=0.02,0.05,0.1 ...
    python benchmarks/health_replay.py --out DIR --pooled [--grid ...]
    python benchmarks/health_replay.py --out DIR --ceiling [--pooled]
    python benchmarks/health_replay.py --out DIR --preset toy_wide --fit-on grid25 --fit-out DIR2 [--pooled]

Reads the random arm that ``search_efficiency.py --out DIR`` kept (``DIR/<preset>/seed<k>/random.json`` and the
trial folders in its ``workdir``: each trial's ``config.yaml`` and ``metrics.jsonl``) and feeds each trial's
logged records, in order, to the ``HealthMonitor`` its config builds, as the trial loop's ``should_stop`` does.
The records a trial logs do not depend on whether anything watches them (seeded training), so the first verdict
is where the ``health_only`` arm (verdicts alone, ASHA off) stops that config; ``--check health_only`` compares
the two on the seeds where that arm was kept. Without training anything it answers in seconds what a change of
thresholds (``--set key=value``: a ``health`` setting) does to the verdicts: bad configs (worst third of final
objectives, or non-finite) stopped before 25% of the budget, good ones (best third) stopped at all, with each
such decision listed (rule, step, the config's final objective and modes).

``--grid`` replays every combination of the values given and prints the frontier: for each count of good configs
stopped, the most bad ones any combination stopped before 25% of the budget (and the first combination that did).

The labels are ``search_efficiency.labels``: the same configs and outcomes as its pruning table, thirds seed by seed.
``--pooled`` takes the thirds of every replayed seed's configs together instead: one cutoff for all, so a seed
where few configs train well does not count its collapsed ones among the good.

``--ceiling`` asks whether the verdicts miss what the early signals hold or the signals do not hold it: a random
forest is fitted to the outcomes (bad or good) of every other seed's configs on every reading logged before 25% of
the budget (``modes@400``, ``loss_d@475``, ...) and predicts each held-out seed's configs (2 seeds or more); it
prints, per count of good configs stopped, the bad ones it stops. It is fitted on the benchmark's own outcomes, so
it is a reference for what any rule on these readings could reach on this space, not a verdict. ``--fit-on
PRESET`` fits the forest on another space's kept random arm instead (every seed, readings before the earlier of
the two spaces' 25%) and judges every config here: whether a verdict learned on one space's searches carries over.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
from common import count, guarded
from search_efficiency import PRESETS, ROOT, labels, load_kept, thirds

from gantune.catalogue import load_config
from gantune.config import TrialConfig
from gantune.health import EVAL_SECONDS, HealthMonitor, logged_numbers
from gantune.metrics import collapse_signals
from gantune.rundir import METRICS, read_metrics
from gantune.sampling.settings import sign_of


@dataclasses.dataclass(frozen=True, eq=False)
class Replayed:
    """One config's verdict, replayed: ``step`` where it would stop (``None``: it trains to the end)."""

    seed: int
    trial: int
    label: str
    step: int | None
    rule: str
    final: float
    modes: float
    early: dict[str, float]  # each signal's best reading before 25% of the budget (``early_best``)
    spread: float  # the widest diversity ratio two checks in a row held (the spread ceiling's evidence)
    readings: dict[str, float] = dataclasses.field(default_factory=dict)  # ``early_readings`` (``--ceiling``)


def overrides(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs as ``health`` settings (values read as YAML would: numbers stay numbers)."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set {pair}: expected key=value")
        out[key] = yaml.safe_load(value)
    return out


def monitor(cfg: TrialConfig, changes: dict[str, Any]) -> HealthMonitor:
    """The trial's own monitor, with ``changes`` to its ``health`` thresholds."""
    if changes:  # the config's dataclasses check the changed values as they check a config's
        cfg = dataclasses.replace(cfg, health=dataclasses.replace(cfg.health, **changes))
    return HealthMonitor.for_trial(cfg)


def replay(folder: Path, changes: dict[str, Any]) -> tuple[int | None, str, list[dict[str, Any]]]:
    """The step and rule of the first verdict on ``folder``'s logged records (``None``: no verdict), and the
    records."""
    logged = read_metrics(folder)
    watch = monitor(load_config(folder / "config.yaml"), changes)
    for rec in logged:
        verdict = watch(logged_numbers(rec))
        if verdict is not None:
            return int(rec["step"]), verdict.rule, logged
    return None, "", logged


def early_best(logged: list[dict[str, Any]], before: float, objective: str, sign: float) -> dict[str, float]:
    """Each signal's best reading before step ``before``: the healthiest the config looked in that stretch. The
    collapse signals the metric families declare and their gates (the HQ share) by value, a signal with a ceiling
    (the diversity ratio) by closeness to the data's 1 (``min(v, 1/v)``), the objective by its direction."""
    keys: dict[str, Any] = {}
    for sig in collapse_signals():
        keys[sig.key] = (lambda v: min(v, 1 / v) if v > 0 else 0.0) if sig.ceiling is not None else float
        if sig.gate is not None:
            keys[sig.gate[0]] = float
    keys[objective] = lambda v: -sign * v
    best: dict[str, float] = {}
    for rec in logged:
        if rec["step"] >= before:
            break
        for key, read in keys.items():
            if isinstance(rec.get(key), (int, float)) and math.isfinite(rec[key]):
                best[key] = max(best.get(key, -math.inf), read(rec[key]))
    return best


#: record keys that are not the trial's signals (when and how fast it ran)
NOT_SIGNALS = frozenset({"step", "wall_s", "steps_per_s", EVAL_SECONDS})


def early_readings(logged: list[dict[str, Any]], before: float) -> dict[str, float]:
    """Every signal logged before step ``before``, by signal and step (``modes@400``): all that a rule stopping a
    trial before then can read."""
    return {f"{k}@{rec['step']:g}": float(v) for rec in logged if rec["step"] < before for k, v in rec.items()
            if k not in NOT_SIGNALS and isinstance(v, (int, float))}


def ceiling(rows: list[Replayed], trees: int = 300, fit_on: list[Replayed] | None = None) -> list[tuple[int, int]]:
    """A random forest's held-out verdicts on ``rows``' early readings (``--ceiling``): fitted on the bad and good
    configs of every other seed, it ranks each held-out seed's configs by their probability of being bad; per count
    of good configs stopped (0, 1, ...), the bad ones stopped with them. With ``fit_on`` (another space's configs:
    ``--fit-on``) it is fitted on those alone and ranks every config of ``rows``: whether what it learned carries
    over. The labels are taken as given: pooled thirds put their cutoff with the held-out seed's finals counted
    too."""
    from sklearn.ensemble import RandomForestClassifier

    judged = [r for r in rows if r.label in ("bad", "good")]
    learned = [r for r in fit_on or [] if r.label in ("bad", "good")]
    keys = sorted({k for r in learned or judged for k in r.readings})
    if fit_on is None and len({r.seed for r in judged}) < 2:
        raise ValueError("needs bad and good configs of 2 seeds or more")
    if not judged or (fit_on is not None and not learned):
        raise ValueError("no bad or good configs to fit on or to judge")
    if not keys:
        raise ValueError("no readings before 25% of the budget")
    x, y = _readings(judged, keys), np.array([r.label == "bad" for r in judged])
    p = np.zeros(len(judged))
    if fit_on is not None:
        folds = [(np.ones(len(learned), dtype=bool), np.ones(len(judged), dtype=bool))]
        x_fit, y_fit = _readings(learned, keys), np.array([r.label == "bad" for r in learned])
    else:
        seeds = np.array([r.seed for r in judged])
        folds = [(seeds != seed, seeds == seed) for seed in np.unique(seeds)]
        x_fit, y_fit = x, y
    for fit, held in folds:
        if len(set(y_fit[fit])) < 2:  # one kind of outcome to learn from: predict it
            p[held] = float(y_fit[fit][0])
            continue
        forest = RandomForestClassifier(trees, min_samples_leaf=2, random_state=0).fit(x_fit[fit], y_fit[fit])
        p[held] = forest.predict_proba(x[held])[:, list(forest.classes_).index(True)]
    good = np.sort(p[~y])[::-1]
    out = []
    for k in range(len(good) + 1):  # stop every config above the k-th most bad-looking good one
        cut = good[k] if k < len(good) else -math.inf
        out.append((int((p[~y] > cut).sum()), int((p[y] > cut).sum())))
    return out


def _readings(rows: list[Replayed], keys: list[str]) -> np.ndarray:
    """``rows``' readings as a matrix, a column per key; a reading a config never logged (it stopped, or the
    other space logs it and this one does not) or logged non-finite reads below every real value."""
    missing = -1e30
    x = np.array([[r.readings.get(k, missing) for k in keys] for r in rows], dtype=float)
    x[~np.isfinite(x)] = missing
    return x


def before(rows: list[Replayed], step: float) -> list[Replayed]:
    """``rows`` with only the readings logged before ``step`` (two spaces' budgets differ: ``--fit-on`` reads both
    up to the earlier 25%)."""
    return [dataclasses.replace(r, readings={k: v for k, v in r.readings.items()
                                             if float(k.rpartition("@")[2]) < step}) for r in rows]


def shadows(bad: Replayed, good: list[Replayed]) -> list[Replayed]:
    """The good configs that looked no healthier than ``bad`` by every signal's best early reading: a rule that
    stops ``bad`` on those readings before 25% of the budget stops each of them too."""
    keys = set(bad.early)
    return [g for g in good if keys <= set(g.early) and all(g.early[k] <= bad.early[k] for k in keys)]


def seed_runs(out: Path, preset: str, seeds: list[int] | None = None) -> dict[int, dict[str, Any]]:
    """The kept random arm of each seed (of ``seeds``; all kept by default), by seed."""
    runs = {}
    for path in sorted((out / preset).glob("seed*/random.json"), key=lambda p: int(p.parent.name[4:])):
        seed = int(path.parent.name.removeprefix("seed"))
        if seeds is None or seed in seeds:
            runs[seed] = load_kept(path)
    return runs


def first_config(run: dict[str, Any]) -> Path:
    """The config.yaml of a kept random arm's first trial folder (they live in its temporary workdir)."""
    found = sorted((Path(run["workdir"]) / "runs" / "eff-random").glob("trial-*/config.yaml"))
    if not found:
        raise SystemExit(f"{run['workdir']}: no trial folders; run search_efficiency.py --arms random again with "
                         "this --out and --fresh (the trial folders live in its temporary workdir)")
    return found[0]


def replay_seed(seed: int, run: dict[str, Any], max_steps: int, changes: dict[str, Any]) -> list[Replayed]:
    first = first_config(run)
    cfg0, folders = load_config(first), first.parents[1]
    lab = labels(run, max_steps, sign_of(cfg0.health.mode))
    out = []
    for number in sorted(lab):
        folder = folders / f"trial-{number:04d}"
        if not (folder / METRICS).is_file():
            raise SystemExit(f"{folder / METRICS}: missing; run search_efficiency.py --arms random again with this "
                             "--out (the trial folders live in its temporary workdir)")
        step, rule, logged = replay(folder, changes)
        last = logged[-1] if logged else {}
        objective = cfg0.health.objective
        final = float(last.get(objective, math.nan)) if last.get("step") == max_steps else math.nan
        early = early_best(logged, 0.25 * max_steps, objective, sign_of(cfg0.health.mode))
        ratios = [float(rec["diversity"]) for rec in logged if "diversity" in rec]
        spread = max((min(a, b) for a, b in itertools.pairwise(ratios)), default=math.nan)
        out.append(Replayed(seed, number, lab[number], step, rule, final, float(last.get("modes", math.nan)),
                            early, spread, early_readings(logged, 0.25 * max_steps)))
    return out


def pooled(rows: list[Replayed], sign: float) -> list[Replayed]:
    """``rows`` labelled by thirds of all their seeds' final objectives together (``--pooled``), not seed by seed:
    one cutoff for every seed, so a seed where few configs train well has fewer good ones, not collapsed ones
    ranked good."""
    lab = thirds({(r.seed, r.trial): r.final for r in rows}, sign)
    return [dataclasses.replace(r, label=lab[(r.seed, r.trial)]) for r in rows]


def stopped_before(r: Replayed, step: float) -> bool:
    """Whether the replayed verdict stops the config before ``step`` (one at the last step stops nothing:
    ``search_efficiency.decisions`` reads it so too)."""
    return r.step is not None and r.step < step


def summary(rows: list[Replayed], max_steps: int) -> dict[str, int]:
    bad = [r for r in rows if r.label == "bad"]
    good = [r for r in rows if r.label == "good"]
    return {"bad": len(bad), "bad_early": sum(stopped_before(r, 0.25 * max_steps) for r in bad),
            "good": len(good), "good_stopped": sum(stopped_before(r, max_steps) for r in good)}


def check(out: Path, preset: str, arm: str, rows: list[Replayed]) -> list[str]:
    """Where the kept ``arm`` (verdicts alone) stopped a config other than the replay says."""
    differ = []
    for r in rows:
        path = out / preset / f"seed{r.seed}" / f"{arm}.json"
        if not path.is_file():
            continue
        info = load_kept(path)["trials"].get(r.trial)
        if info is None:
            continue
        ran = None if info["steps"] >= PRESETS[preset].max_steps and not info["status"].startswith("pruned") \
            else int(info["steps"])
        if ran != r.step:
            differ.append(f"seed {r.seed} trial {r.trial}: {arm} stopped at {ran} ({info['status']}), replay at "
                          f"{r.step} ({r.rule or 'no verdict'})")
    return differ


def frontier(runs: dict[int, dict[str, Any]], max_steps: int, grid: dict[str, list[Any]],
             pooled_sign: float | None = None) -> None:
    """Every combination of ``grid``'s values replayed; per count of good configs stopped, the most bad ones
    stopped before 25% of the budget (labelled by ``pooled`` thirds when ``pooled_sign`` is given)."""
    best: dict[int, tuple[int, dict[str, Any]]] = {}
    combos = list(itertools.product(*grid.values()))
    for values in combos:
        changes = dict(zip(grid, values, strict=True))
        rows = [r for seed, run in runs.items() for r in replay_seed(seed, run, max_steps, changes)]
        s = summary(rows if pooled_sign is None else pooled(rows, pooled_sign), max_steps)
        if s["bad_early"] > best.get(s["good_stopped"], (-1, {}))[0]:
            best[s["good_stopped"]] = (s["bad_early"], changes)
    print(f"frontier over {count(len(combos), 'combination')} ({s['bad']} bad, "
          f"{count(s['good'], 'good config')}):")
    top = -1
    for good in sorted(best):
        bad, changes = best[good]
        if bad > top:  # only a point that stops more bad configs than every point with fewer good ones stopped
            top = bad
            print(f"  good stopped {good}/{s['good']}: bad stopped before 25% {bad}/{s['bad']} with {changes}")


def print_ceiling(rows: list[Replayed], s: dict[str, int], fit_on: list[Replayed] | None = None,
                  fitted: str = "the other seeds' outcomes (held-out)") -> None:
    try:
        points = ceiling(rows, fit_on=fit_on)
    except ValueError as err:
        print(f"{'--ceiling' if fit_on is None else '--fit-on'}: {err}")
        return
    print(f"a random forest on every reading before 25% of the budget, fitted to {fitted}: stops, of {s['bad']} "
          f"bad, with good stopped of {s['good']}:")
    top = -1
    for good, bad in points:
        if bad > top:
            top = bad
            print(f"  good {good}/{s['good']} ({good / max(1, s['good']):.0%}): bad {bad}/{s['bad']}"
                  f" ({bad / max(1, s['bad']):.0%})")
        if bad == s["bad"]:
            break


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=list(PRESETS), default="grid25")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out")
    ap.add_argument("--seeds", type=int, nargs="*", help="the kept seeds to replay (default: all)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="health thresholds to change")
    ap.add_argument("--check", metavar="ARM", help="compare with this kept arm's stops (health_only)")
    ap.add_argument("--grid", nargs="*", default=[], metavar="KEY=V1,V2", help="print the frontier over these values")
    ap.add_argument("--pooled", action="store_true", help="label good and bad by thirds of every seed's configs "
                    "together (one cutoff), not seed by seed")
    ap.add_argument("--ceiling", action="store_true", help="also print what a random forest fitted to the other "
                    "seeds' outcomes on the readings before 25%% of the budget stops (a reference, not a verdict)")
    ap.add_argument("--fit-on", choices=list(PRESETS), metavar="PRESET", help="also print what a random forest "
                    "fitted to another preset's kept random arm stops here (does what it learned carry over?)")
    ap.add_argument("--fit-out", type=Path, help="the --out that holds --fit-on's random arm (default: --out)")
    args = ap.parse_args(argv)
    if (args.ceiling or args.fit_on) and args.grid:
        ap.error("--ceiling and --fit-on replay the thresholds as configured (or --set): not with --grid")
    changes = overrides(args.set)
    max_steps = PRESETS[args.preset].max_steps
    runs = seed_runs(args.out, args.preset, args.seeds)
    if not runs:
        raise SystemExit(f"no random arm kept in {args.out / args.preset}: run search_efficiency.py --preset "
                         f"{args.preset} --arms random --out {args.out} first")
    cfg0 = load_config(first_config(runs[min(runs)]))
    sign = sign_of(cfg0.health.mode)
    if args.grid:
        grid = {k: [overrides([f"{k}={v}"])[k] for v in vs.split(",")]
                for k, vs in (pair.partition("=")[::2] for pair in args.grid)}
        frontier(runs, max_steps, grid, sign if args.pooled else None)
        return
    rows = [r for seed, run in runs.items() for r in replay_seed(seed, run, max_steps, changes)]
    if args.pooled:
        rows = pooled(rows, sign)
    s = summary(rows, max_steps)
    print(f"{args.preset}, seeds {sorted(runs)}, health {changes or 'as configured'}, good and bad by thirds "
          + ("of every seed's configs together" if args.pooled else "seed by seed"))
    print(f"bad stopped before 25% of the budget: {s['bad_early']}/{s['bad']}"
          f" ({s['bad_early'] / max(1, s['bad']):.0%}); good stopped: {s['good_stopped']}/{s['good']}"
          f" ({s['good_stopped'] / max(1, s['good']):.0%})")
    for r in rows:
        stopped_good = r.label == "good" and stopped_before(r, max_steps)  # as ``summary`` counts (it listed a
        missed_bad = r.label == "bad" and not stopped_before(r, 0.25 * max_steps)  # verdict at the last step)
        if stopped_good or missed_bad:
            what = "good stopped" if stopped_good else "bad missed "
            where = f"at {r.step} by {r.rule}" if r.step is not None else "never stopped"
            print(f"  {what}  seed {r.seed} trial {r.trial:2d}: {where}; final {r.final:.3f}, {r.modes:g} modes")
    ceiling = monitor(cfg0, changes).cfg.max_diversity
    wide = [r for r in rows if r.spread > ceiling]
    worst = max((r.final for r in wide), default=math.nan)
    widest = max((r.spread for r in rows if not r.final <= worst), default=math.nan)
    print(f"diversity ratio above {ceiling:g} two checks in a row: {len(wide)}/{len(rows)} configs"
          + (f", ending at {worst:.3f} or less; the widest two in a row of a config ending above that: {widest:.2f}"
             if wide else ""))
    good = [r for r in rows if r.label == "good"]
    missed = [r for r in rows if r.label == "bad" and (r.step is None or r.step >= 0.25 * max_steps)]
    shadowed = {r: shadows(r, good) for r in missed}
    print(f"bad configs missed before 25% that looked, by every signal's best reading before step "
          f"{0.25 * max_steps:g}, no worse than a good config: {sum(bool(v) for v in shadowed.values())}/{len(missed)}")
    for r, like in shadowed.items():
        if like:
            names = ", ".join(f"seed {g.seed} trial {g.trial} ({g.final:.3f})" for g in like[:3])
            print(f"  seed {r.seed} trial {r.trial:2d} ({r.final:.3f}): as healthy as good {names}"
                  f"{f' and {len(like) - 3} more' if len(like) > 3 else ''}")
    if args.ceiling:
        print_ceiling(rows, s)
    if args.fit_on:
        other = PRESETS[args.fit_on].max_steps
        fit_out = args.fit_out or args.out
        runs_on = seed_runs(fit_out, args.fit_on)
        if not runs_on:
            raise SystemExit(f"--fit-on {args.fit_on}: no random arm kept in {fit_out / args.fit_on}")
        fit = [r for seed, run in runs_on.items() for r in replay_seed(seed, run, other, {})]
        step = 0.25 * min(max_steps, other)
        fit = pooled(fit, sign) if args.pooled else fit
        print_ceiling(before(rows, step), s, before(fit, step),
                      f"{args.fit_on}'s outcomes (seeds {sorted(runs_on)}; both spaces' readings before step {step:g})")
    if args.check:
        if not any((args.out / args.preset / f"seed{r.seed}" / f"{args.check}.json").is_file() for r in rows):
            raise SystemExit(f"--check {args.check}: no arm of that name kept in {args.out / args.preset} (it "
                             "compared nothing and said 'the same stops')")
        differ = check(args.out, args.preset, args.check, rows)
        print(f"{args.check}: {'the same stops' if not differ else f'{len(differ)} differ'}")
        for line in differ:
            print("  " + line)


if __name__ == "__main__":
    guarded(main)
