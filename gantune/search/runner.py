"""``run_search``: one search from a validated space to a summary.

Local Ray by default (sized to this machine), a cluster when an address is given (gantune's code travels as
a runtime-env module: nothing gantune-specific is installed on the cluster). The Optuna study is the source of
truth for resume: finished trials are kept, trials left RUNNING by a killed search run again under their own
numbers, and only the rest are asked anew, so the study ends with exactly the requested number of trials.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gantune.errors import GantuneError
from gantune.space import SearchSettings, SearchSpace
from gantune.study import (
    DEFAULT_STORAGE,
    FINISHED,
    absolute_sqlite,
    best_trial,
    finished_count,
    interrupted_trials,
    open_study,
)


@dataclass
class SearchOptions:
    """Command-line overrides and where things are kept."""

    trials: int | None = None
    max_steps: int | None = None
    concurrent: int | None = None
    gpus_per_trial: float | None = None
    ray_address: str | None = None
    storage: str | None = None
    runs_dir: str = "runs"
    resume: bool = False
    quiet: bool = False
    observers: list[Any] = field(default_factory=list)


def apply_overrides(settings: SearchSettings, opts: SearchOptions) -> SearchSettings:
    from pydantic import ValidationError

    from gantune.config import format_validation_error

    raw = settings.model_dump()
    for key, value in (("trials", opts.trials), ("max_steps", opts.max_steps), ("concurrency", opts.concurrent)):
        if value is not None:
            raw[key] = value
    if opts.gpus_per_trial is not None:
        raw["resources"]["gpu"] = opts.gpus_per_trial
    if opts.max_steps is not None:
        raw["eval_every"] = min(raw["eval_every"], opts.max_steps)
    try:
        return SearchSettings.model_validate(raw)
    except ValidationError as err:
        raise GantuneError(format_validation_error(err, "command line", "search")) from None


def _init_ray(address: str | None, gpus_per_trial: float) -> bool:
    """Start (or join) Ray; returns True when this process started it and must shut it down."""
    import ray

    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no CSV/JSON/TensorBoard files per trial
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # only evaluation records carry the objective; ASHA skips the others by design
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    if ray.is_initialized():
        return False
    if address:
        import gantune

        ray.init(address=address, runtime_env={"py_modules": [str(Path(gantune.__file__).parent)]},
                 log_to_driver=False, logging_level=logging.ERROR)
        _quiet_ray()
        return True
    import torch

    gpus = torch.cuda.device_count()
    if gpus_per_trial > 0 and gpus == 0:
        raise GantuneError(f"--gpus-per-trial {gpus_per_trial:g}: this machine has no CUDA GPU")
    ray.init(num_cpus=os.cpu_count() or 1, num_gpus=gpus, include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR, configure_logging=True)
    _quiet_ray()
    return True


def _quiet_ray() -> None:
    """Ray's own notices (token auth, searcher save, per-trial logger files) are not the user's business;
    trial failures reach the user through SearchBook."""

    for name in ("ray", "ray.tune", "ray.tune.analysis.experiment_analysis", "ray.train"):
        logging.getLogger(name).setLevel(logging.ERROR)


def run_search(space: SearchSpace, opts: SearchOptions) -> dict[str, Any]:
    """Run (or resume) the search and return the summary dict the CLI prints."""
    t0 = time.monotonic()
    settings = apply_overrides(space.settings, opts)
    space.settings = settings
    storage = absolute_sqlite(opts.storage or DEFAULT_STORAGE)
    study = open_study(space.name, storage, settings, opts.resume)
    study.set_user_attr("space_text", space.text)
    study.set_user_attr("settings", settings.model_dump())
    resumed = interrupted_trials(study)
    done_before = finished_count(study)
    to_create = max(0, settings.trials - done_before - len(resumed))
    run_root = (Path(opts.runs_dir) / space.name).resolve()
    for obs in opts.observers:
        obs.search_started(study, space, [t.number for t in resumed])
    started_ray = False
    if resumed or to_create:
        from ray import tune
        from ray.tune import FailureConfig

        from gantune.search.book import SearchBook
        from gantune.search.scheduler import AshaStop, make_scheduler
        from gantune.search.searcher import OptunaStudySearcher
        from gantune.search.trainable import run_trial

        started_ray = _init_ray(opts.ray_address, settings.resources.gpu)
        asha_stopped: dict[str, AshaStop] = {}
        searcher = OptunaStudySearcher(space, study, to_create, resumed, run_root)
        book = SearchBook(study, searcher.trials, asha_stopped, settings.objectives, settings.directions,
                          settings.trials, done_before, observers=opts.observers, quiet=opts.quiet)
        resources = {"cpu": settings.resources.cpu, "gpu": settings.resources.gpu}
        tuner = tune.Tuner(
            tune.with_resources(run_trial, resources),
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=make_scheduler(settings, asha_stopped),
                                        num_samples=to_create + len(resumed),
                                        max_concurrent_trials=settings.concurrency or None),
            run_config=tune.RunConfig(name=f"{space.name}-{int(time.time())}", storage_path=str(run_root / "ray"),
                                      verbose=0, callbacks=[book], log_to_file=False,
                                      failure_config=FailureConfig(max_failures=0, fail_fast=False)),
        )
        try:
            tuner.fit()
        finally:
            if started_ray:
                import ray

                ray.shutdown()
    summary = summarize(study, space, settings, storage, run_root, time.monotonic() - t0)
    for obs in opts.observers:
        summary = obs.search_ended(summary)
    return summary


def summarize(study: Any, space: SearchSpace, settings: SearchSettings, storage: str, run_root: Path,
              wall_s: float) -> dict[str, Any]:
    from gantune.search.book import STATUSES

    counts = dict.fromkeys(STATUSES, 0)
    steps = 0
    from optuna.trial import TrialState

    started = study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
    for t in started:
        status = t.user_attrs.get("gantune_status", "running" if t.state.name == "RUNNING" else "failed")
        counts[status] = counts.get(status, 0) + 1
        steps += int(t.user_attrs.get("steps", 0))
    best = best_trial(study)
    best_info: dict[str, Any] | None = None
    if best is not None:
        samples = sorted((run_root / f"trial-{best.number:04d}" / "samples").glob("*.png"))
        best_info = {"trial": best.number, "values": dict(zip(settings.objectives, best.values, strict=True)),
                     "params": best.params, "config": best.user_attrs.get("config"),
                     "samples": str(samples[-1]) if samples else None}
    return {
        "search": space.name, "best": best_info, "counts": counts, "trials": len(started),
        "trial_steps": steps, "budget_steps": settings.trials * settings.max_steps,
        "wall_s": round(wall_s, 2), "study_storage": storage, "study_name": space.name,
        "runs_dir": str(run_root),
    }
