"""The Optuna study behind a search: samplers by name, create / resume, and the ask-tell bookkeeping.

The study lives in sqlite (``sqlite:///optuna.db`` by default, next to MLflow's ``mlflow.db``) so
optuna-dashboard can open it and an interrupted search can resume from it. Only the driver touches it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from gantune.errors import GantuneError
from gantune.registry import Registry
from gantune.space import SearchSettings

DEFAULT_STORAGE = "sqlite:///optuna.db"

SAMPLERS: Registry[Callable[[SearchSettings], optuna.samplers.BaseSampler]] = Registry("sampler")
SAMPLERS.add("tpe", lambda s: optuna.samplers.TPESampler(seed=s.seed, constant_liar=True,
                                                         multivariate=True, n_startup_trials=min(5, s.trials)))
SAMPLERS.add("random", lambda s: optuna.samplers.RandomSampler(seed=s.seed))
SAMPLERS.add("qmc", lambda s: optuna.samplers.QMCSampler(seed=s.seed, warn_independent_sampling=False))
SAMPLERS.add("gp", lambda s: optuna.samplers.GPSampler(seed=s.seed))
SAMPLERS.add("cmaes", lambda s: optuna.samplers.CmaEsSampler(seed=s.seed, warn_independent_sampling=False))

#: gantune status -> the state Optuna is told
OPTUNA_STATE = {"completed": TrialState.COMPLETE, "failed": TrialState.FAIL}
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def absolute_sqlite(uri: str) -> str:
    """``sqlite:///relative.db`` -> ``sqlite:////abs/path/relative.db``; other URIs unchanged."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/") and ":memory:" not in uri:
        return prefix + str((Path.cwd() / uri.removeprefix(prefix)).resolve())
    return uri


def open_study(name: str, storage: str, settings: SearchSettings, resume: bool) -> optuna.Study:
    """Create the study, or with ``resume`` load it; refuse to silently mix two searches under one name."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = SAMPLERS.get(settings.sampler)(settings)
    directions = settings.directions
    try:
        existing = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
    except KeyError:
        existing = None
    started = [] if existing is None else existing.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
    if existing is not None and not resume and started:
        raise GantuneError(f"search {name!r} already exists in {storage} ({len(started)} trials); "
                           "pass --resume to continue it or --name to start another")
    if existing is None and resume:
        raise GantuneError(f"--resume: no search named {name!r} in {storage}")
    if existing is not None:
        if [d.name.lower() for d in existing.directions] != directions:
            raise GantuneError(f"--resume: search {name!r} was created with other objective directions")
        return existing
    return optuna.create_study(study_name=name, storage=storage, sampler=sampler,
                               directions=[optuna.study.StudyDirection[d.upper()] for d in directions])


def search_settings(study: optuna.Study) -> SearchSettings:
    """The search settings a study was run with (``run_search`` stores them on the study)."""
    return SearchSettings.model_validate(study.user_attrs.get("settings") or {})


def interrupted_trials(study: optuna.Study) -> list[optuna.Trial]:
    """Trials left RUNNING by a search that was killed: a resumed search runs them again, same number."""
    return [optuna.Trial(study, t._trial_id) for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]


def finished_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def report_intermediate(trial: optuna.Trial, value: float, step: int) -> None:
    """Record the objective at ``step`` (single-objective studies; Optuna keeps the first value per step)."""
    if len(trial.study.directions) == 1 and math.isfinite(value):
        trial.report(value, step)


def tell(study: optuna.Study, trial: optuna.Trial, status: str, values: list[float] | None,
         attrs: dict[str, Any]) -> None:
    """Close a trial: COMPLETE with its values, PRUNED (pruned:*) at its last step, or FAIL."""
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    state = OPTUNA_STATE.get(status, TrialState.PRUNED if status.startswith("pruned:") else TrialState.FAIL)
    if state == TrialState.COMPLETE and (values is None or not all(math.isfinite(v) for v in values)):
        state = TrialState.FAIL
        trial.set_user_attr("gantune_reason", "no finite objective value at the end of the trial")
    study.tell(trial, values if state == TrialState.COMPLETE else None, state=state)


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best COMPLETE trial (multi-objective: the Pareto trial best on the first objective)."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        return None
    if len(study.directions) == 1:
        return study.best_trial
    sign = 1 if study.directions[0] == optuna.study.StudyDirection.MINIMIZE else -1
    return min(study.best_trials, key=lambda t: sign * t.values[0])
