"""The Optuna study behind a search: create / resume, and the ask-tell bookkeeping.

The study lives in sqlite (``sqlite:///optuna.db`` by default, next to MLflow's ``mlflow.db``) so
optuna-dashboard can open it and an interrupted search can resume from it. Only the driver touches it.
"""

from __future__ import annotations

import contextlib
import math
import os
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    check_distribution_compatibility,
)
from optuna.trial import FrozenTrial, TrialState
from pydantic import ValidationError

from gantune import provenance
from gantune.config import format_validation_error
from gantune.data import listing_change
from gantune.dburl import (
    OPTUNA,
    absolute_sqlite,
    check_not_other,
    check_options,
    foreign,
    sqlite_file,
    sqlite_owner,
)
from gantune.errors import ConfigError, GantuneError
from gantune.events import REASON_KEY, STATUS_KEY, Status, first_line, warn
from gantune.registry import plugin_hint
from gantune.rundir import check_writable, holder, read_metrics, trial_run_dir
from gantune.sampling.optuna_private import clear_intermediate_values, live_trial
from gantune.sampling.settings import SAMPLERS, SearchSettings, sign_of
from gantune.sampling.specs import fixed_measure, on_grid

# Optuna's INFO lines ("A new study created in RDB ...") are noise beside gantune's own (export's re-runs
# printed one); every command that opens a study imports this module
optuna.logging.set_verbosity(optuna.logging.WARNING)

DEFAULT_STORAGE = "sqlite:///optuna.db"

#: gantune status -> the state Optuna is told (pruned:* -> PRUNED). An out-of-memory trial is told PRUNED, not
#: FAIL: Optuna's samplers ignore FAIL trials, while TPE ranks a PRUNED trial without values below every other,
#: so it learns to stay away from configs that do not fit in memory.
OPTUNA_STATE = {Status.COMPLETED: TrialState.COMPLETE, Status.FAILED: TrialState.FAIL,
                Status.FAILED_OOM: TrialState.PRUNED}
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


@contextlib.contextmanager
def opening(storage: str) -> Iterator[None]:
    """One line for a storage that is there but is no Optuna database (another file named by --storage, a
    server that refuses us), instead of SQLAlchemy's traceback."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except SQLAlchemyError as err:
        raise GantuneError(f"--storage {storage}: cannot open it as an Optuna storage ({storage_said(err)})") from None


def storage_said(err: BaseException) -> str:
    """A storage's failure in one line: the database driver's own error (SQLAlchemy's ``orig``), not SQLAlchemy's
    wrapper of it with the statement and a link to its docs."""
    cause = getattr(err, "orig", None) or err
    return first_line(cause) or type(cause).__name__


def find_study(name: str, storage: str) -> optuna.Study | None:
    """The study called ``name``, or ``None``; a sqlite file that does not exist yet is not created."""
    db = check_storage(storage)
    if db is not None and (not db.exists() or (db.is_file() and foreign(db))):
        return None  # opening a file Optuna has not made writes its schema in (a refused search left it there)
    try:
        with opening(storage):
            return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None


def continued(name: str, storage: str, settings: SearchSettings) -> SearchSettings:
    """``settings`` for a ``--resume`` without ``--trials``: the study's own trial count where it is the larger
    (``--trials 50`` on a file of 20, then ``--resume``, ran to 20 and stored 20; killed at 30 started, it was
    refused)."""
    existing = find_study(name, storage)
    stored = (existing.user_attrs.get("settings") or {}).get("trials") if existing is not None else None
    if isinstance(stored, int) and stored > settings.trials:
        return settings.model_copy(update={"trials": stored})
    return settings


def check_study(name: str, storage: str, settings: SearchSettings, resume: bool,
                distributions: dict[str, BaseDistribution], measured: Sequence[str] = (),
                listings: dict[str, dict[str, Any]] | None = None, measure: dict[str, Any] | None = None) -> None:
    """Refuse to silently mix two searches under one name, or to resume one that does not exist, or one whose
    trials were measured otherwise (``measured``: the data the space's trials can train on, ``measured_on``; an
    image folder whose files changed since, ``listings``; ``measure``: the space's ``fixed_measure``) or drew
    from ``distributions`` Optuna cannot continue. Writes nothing (the study is opened by ``open_study`` once
    every other input has been checked)."""
    existing = find_study(name, storage)
    started = [] if existing is None else existing.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
    if existing is not None and not resume and started:
        raise GantuneError(f"search {name!r} already exists in {storage} ({len(started)} trial"
                           f"{'s' * (len(started) != 1)}); "
                           "pass --resume to continue it or --name to start another")
    if existing is None and resume:
        raise GantuneError(f"--resume: no search named {name!r} in {storage}")
    # a search running from another --runs-dir (or working directory) holds no lock this one meets: its running
    # trials were taken as interrupted, run again beside it, and its records broken
    if held := [h for h in search_holders([t for t in started if t.state == TrialState.RUNNING])
                if h[0] != str(os.getpid())]:
        raise GantuneError(f"search {name!r} is running (pid {held[0][0]}, its trials in {held[0][1]}): wait for it "
                           "to end, or stop it, before --resume")
    if existing is not None and len(started) > settings.trials:
        # its interrupted trials would run anyway, and the smaller count replaced the one its summary, export and
        # report measure the budget by
        running = sum(t.state == TrialState.RUNNING for t in started)
        raise GantuneError(f"--resume: search {name!r} has {len(started)} trials started ({len(started) - running} "
                           f"finished, {running} to run again) and search.trials (or --trials) is "
                           f"{settings.trials}: give --trials {len(started)} or more")
    if existing is not None:  # other objectives first: a direction per objective then differs too, and said less
        check_same_measure(name, existing, settings, measure)
        check_same_data(name, existing, measured)
        check_same_files(name, existing, listings or {})
    if existing is not None and (was := [d.name.lower() for d in existing.directions]) != settings.directions \
            and not started and not resume:  # a study made by hand to queue trials in (Optuna's default: minimize)
        raise GantuneError(f"study {name!r} in {storage} holds no trial run yet and was created with direction "
                           f"{', '.join(was)}, where this space says {', '.join(settings.directions)}: create it with "
                           f"{_directions_arg(settings.directions)} before queueing trials in it, or delete it")
    if existing is not None and (was := [d.name.lower() for d in existing.directions]) != settings.directions:
        raise GantuneError(f"--resume: search {name!r} was created with direction {', '.join(was)}, and this space "
                           f"says {', '.join(settings.directions)} (a direction left out is each objective's better "
                           f"side, where it once was minimize): resume with direction: {', '.join(was)}, or start "
                           "another with --name")
    if existing is not None:
        check_same_draws(name, existing, distributions)


def _directions_arg(directions: list[str]) -> str:
    """How ``optuna.create_study`` is told ``directions``."""
    return f"direction={directions[0]!r}" if len(directions) == 1 else f"directions={directions!r}"


def check_same_draws(name: str, study: optuna.Study, distributions: dict[str, BaseDistribution]) -> None:
    """Optuna samples a parameter only from what it drew before: the same kind and log scale, a categorical
    with the same choices (a range may widen or narrow); otherwise every new trial fails to sample."""
    before: dict[str, BaseDistribution] = {}
    for t in study.get_trials(deepcopy=False):
        for key, dist in t.distributions.items():
            before.setdefault(key, dist)
    for key, now in distributions.items():
        if key in before:
            try:
                check_distribution_compatibility(before[key], now)
            except ValueError as err:
                raise GantuneError(f"--resume: {key}: search {name!r} drew it from {_shown(before[key])}; this "
                                   f"space from {_shown(now)} ({err}): keep what it was, or start another search "
                                   "with --name") from None


def _shown(dist: BaseDistribution) -> str:
    if isinstance(dist, CategoricalDistribution):
        return f"choices {list(dist.choices)}"
    low, high = getattr(dist, "low", None), getattr(dist, "high", None)
    log = " (log)" if getattr(dist, "log", False) else ""
    return f"{type(dist).__name__.removesuffix('Distribution').lower()} [{low}, {high}]{log}"


def check_same_measure(name: str, study: optuna.Study, settings: SearchSettings,
                       measure: dict[str, Any] | None = None) -> None:
    """A resumed search ranks its new trials with its old ones: they must be measured alike, by the same
    objectives after the same number of steps, with the same samples and features (``measure``, the resumed
    space's ``fixed_measure``, against the stored space's; a study from before the settings were kept is not
    checked)."""
    try:
        before = search_settings(study) if "settings" in study.user_attrs else None
    except ConfigError:  # kept by a release whose settings this one reads otherwise
        before = None
    if before is None:
        return
    if before.objectives != settings.objectives:
        raise GantuneError(f"--resume: search {name!r} ranks its trials by {', '.join(before.objectives)}; this space "
                           f"asks for {', '.join(settings.objectives)}: the values would not compare (start another "
                           "search with --name)")
    if before.max_steps != settings.max_steps:
        raise GantuneError(f"--resume: search {name!r} trains each trial for {before.max_steps} steps; this run asks "
                           f"for {settings.max_steps}: trials of two budgets would be ranked together (continue it "
                           f"with --max-steps {before.max_steps}, or start another search with --name)")
    text = study.user_attrs.get("space_text")
    if not measure or not isinstance(text, str):
        return
    from gantune.sampling.space import stored_specs

    try:
        leaves, _ = stored_specs(text, "the search's space")
    except ConfigError:
        return
    then = fixed_measure(leaves, before.defaults)
    for key in measure.keys() & then.keys():
        if measure[key] != then[key]:
            raise GantuneError(f"--resume: search {name!r} measured its trials with {key} {then[key]}; this space "
                               f"with {measure[key]}: the values would not compare (keep {key}: {then[key]}, or "
                               "start another search with --name)")


def check_same_data(name: str, study: optuna.Study, measured: Sequence[str]) -> None:
    """A resumed search whose space trains on none of the data its trials were measured on (``provenance``): it
    ran, and the sampler and ASHA compared grid25's values with ring8's, the summary then ranking the new trials
    alone. A space that samples its data passes when any of its data is the trials'."""
    trials = study.get_trials(deepcopy=False)
    before = dict.fromkeys(m for t in trials if (m := provenance.measured_on(provenance.of(t))))
    if before and measured and not set(before) & set(measured):
        raise GantuneError(f"--resume: search {name!r} measured its trials on {', '.join(before)}; this space trains "
                           f"on {', '.join(measured)}: the values would not compare (start another search with --name)")


#: a trial's user attribute with the params it is logged with besides those it drew: a seed re-run of
#: ``gantune export`` draws only its source trial and seed, and is that trial's config
SOURCE_PARAMS = "gantune_source_params"


def grid_params(trial: optuna.Trial | FrozenTrial) -> dict[str, Any]:
    """The trial's params as it trained them: a stepped float on its grid (``on_grid``), where Optuna keeps its
    binary ``low + k * step`` (MLflow, the export's header and the summaries showed ``0.6000000000000001``)."""
    params = dict(trial.params)
    for name, dist in trial.distributions.items():
        if isinstance(dist, FloatDistribution) and dist.step is not None and name in params:
            params[name] = on_grid(params[name], dist.low, dist.step)
    return params


def logged_params(trial: optuna.Trial | FrozenTrial) -> dict[str, Any]:
    """The params an MLflow child run shows: the trial's, after those of the trial it re-runs (``SOURCE_PARAMS``),
    so that re-runs compare by their hyperparameters in the MLflow UI as the search's trials do."""
    source = trial.user_attrs.get(SOURCE_PARAMS)
    return {**(source if isinstance(source, dict) else {}), **grid_params(trial)}


#: the study's user attribute holding the files of each image folder its trials train on (``data_listing``, by
#: ``data_label``), as the search found them when it began
LISTINGS_KEY = "gantune_data_listings"


def check_same_files(name: str, study: optuna.Study, listings: dict[str, dict[str, Any]]) -> None:
    """A resumed search on an image folder whose images were added, removed or replaced since it began: its new
    trials trained on other images and were ranked with the old ones. A study from before listings were kept
    (2026-12-04) has none to compare."""
    kept = study.user_attrs.get(LISTINGS_KEY)
    for label, now in listings.items():
        then = kept.get(label) if isinstance(kept, dict) else None
        if isinstance(then, dict) and (change := listing_change(then, now)):
            raise GantuneError(f"--resume: {label} changed since search {name!r} began ({change}): its trials would "
                               "not compare; restore it, or start another search with --name")


def record_files(study: optuna.Study, listings: dict[str, dict[str, Any]]) -> None:
    """Keep the image folders' listings a resume compares (``check_same_files``): the first reading of each."""
    kept = study.user_attrs.get(LISTINGS_KEY)
    kept = dict(kept) if isinstance(kept, dict) else {}
    if any(label not in kept for label in listings):
        study.set_user_attr(LISTINGS_KEY, {**listings, **kept})


#: the study's user attribute naming this study apart from any earlier study of the same name (one deleted and
#: made again, as ``gantune export`` does with its re-runs): its MLflow parent run carries the same value
STUDY_UID = "gantune_uid"
#: an export's re-runs study's user attribute: the ``STUDY_UID`` of the search whose trials it re-runs, whose
#: MLflow parent run the re-runs' parent is nested under (not another search's of the same name, in another storage)
SOURCE_UID = "gantune_source_uid"


#: the study's user attribute listing the wall seconds of each ``gantune search`` invocation that ran it
WALLS_KEY = "gantune_wall_s"


def earlier_walls(study: optuna.Study) -> list[float]:
    """The wall seconds of the invocations that ran the search before this one (``record_wall``)."""
    walls = study.user_attrs.get(WALLS_KEY)
    return [float(w) for w in walls if isinstance(w, (int, float))] if isinstance(walls, list) else []


def record_wall(study: optuna.Study, earlier: Sequence[float], wall_s: float) -> None:
    """Add this invocation's wall seconds to the study's record (an interrupted one's too). A storage that fails
    now has its error said by what reads it next: the record is not worth a second one."""
    with contextlib.suppress(Exception):
        study.set_user_attr(WALLS_KEY, [*earlier, round(wall_s, 2)])


def open_study(name: str, storage: str, settings: SearchSettings) -> optuna.Study:
    """Create the study, or load it when it exists (``check_study`` first says whether that is allowed); a study
    without a ``STUDY_UID`` gets one. A study that holds trials gets its sampler seeded with ``search.seed`` and
    their count (``resumed_seed``): seeded as at the start, it would draw its first configs again."""
    kind = SAMPLERS.get(settings.sampler)
    with warnings.catch_warnings(record=True) as caught:  # Optuna's "experimental" notes: one line each
        warnings.simplefilter("always", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(study_name=name, storage=storage, sampler=kind.build(settings),
                                    directions=[optuna.study.StudyDirection[d.upper()] for d in settings.directions],
                                    load_if_exists=True)
        if held := len(study.get_trials(deepcopy=False)):
            study.sampler = kind.build(settings.model_copy(update={"seed": resumed_seed(settings.seed, held)}))
    said = set()
    for w in caught:
        if not issubclass(w.category, optuna.exceptions.ExperimentalWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        elif (line := " ".join(str(w.message).split())) not in said:  # a raw warning was two lines and a path
            said.add(line)
            warn(f"search.sampler {settings.sampler}: Optuna says {line}")
    if STUDY_UID not in study.user_attrs:
        study.set_user_attr(STUDY_UID, uuid.uuid4().hex)
    return study


def resumed_seed(seed: int, trials: int) -> int:
    """The sampler's seed for a study resumed with ``trials`` trials: a function of both, so the same resume
    draws the same configs, and another count other ones."""
    return int(np.random.SeedSequence([seed, trials]).generate_state(1)[0])


def search_settings(study: optuna.Study) -> SearchSettings:
    """The search settings a study was run with (``run_search`` stores them on the study). ``ConfigError`` in one
    line where they no longer validate: a sampler a plugin registered, given without its ``--plugin`` (it was a
    traceback in export, report and review), or settings of a release that read them otherwise."""
    try:
        return SearchSettings.model_validate(study.user_attrs.get("settings") or {})
    except ValidationError as err:
        text = format_validation_error(err, f"search {study.study_name!r}", "search")
        raise ConfigError(plugin_hint(text)) from None


def interrupted_trials(study: optuna.Study) -> list[optuna.Trial]:
    """Trials left RUNNING by a search that was killed: a resumed search runs them again, same number."""
    return [live_trial(study, t) for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]


def finished_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def restart_trial(trial: optuna.Trial) -> optuna.Trial:
    """A RUNNING trial about to run again from step 0, with the intermediate values of its dead attempt forgotten.

    Optuna has no public call for this; its RDB storage (sqlite, the default) is cleared directly. With other
    storages the old values stay until the re-run reports the same steps.
    """
    attrs = trial.user_attrs
    if dead := _dead_attempt_steps(attrs.get("run_dir")):  # before the worker clears the folder for the re-run
        trial.set_user_attr(DEAD_STEPS, int(attrs.get(DEAD_STEPS, 0)) + dead)
    clear_intermediate_values(trial)
    if BEST_REPORTED in attrs:
        trial.set_user_attr(BEST_REPORTED, None)
    return live_trial(trial.study, trial)


#: the steps a trial's killed attempts trained before ``--resume`` ran it again from step 0: compute spent, which
#: ``trained_steps`` counts (the summary's trial-steps, and the share of the budget pruning saved, left them out)
DEAD_STEPS = "steps_of_killed_attempts"


def _dead_attempt_steps(run_dir: Any) -> int:
    """The last step a killed attempt logged in its run directory (0 where it left none here: a cluster's trial
    ships its files at evaluations, so a later step may be missing)."""
    if not isinstance(run_dir, str):
        return 0
    return max((int(r["step"]) for r in read_metrics(Path(run_dir))), default=0)


#: a multi-objective trial's best first-objective evaluation (Optuna keeps reported values for single-objective
#: studies only; ``trial_value`` reads it for a pruned trial)
BEST_REPORTED = "best_reported"


def report_intermediate(trial: optuna.Trial, value: float, step: int) -> None:
    """Record the objective at ``step`` (Optuna keeps the first value per step, and a health verdict at an
    evaluation reports that step again: its warning about it is noise); in a multi-objective study, the best
    value so far (``BEST_REPORTED``)."""
    if not math.isfinite(value):
        return
    if len(trial.study.directions) > 1:
        best = trial.user_attrs.get(BEST_REPORTED)
        if best is None or sign(trial.study) * value < sign(trial.study) * best:
            trial.set_user_attr(BEST_REPORTED, value)
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The reported value is ignored", category=UserWarning)
        trial.report(value, step)


#: why a trial that trained to the end is closed FAIL (``has_value`` false)
NO_VALUE = "no finite objective value at the end of the trial"


def has_value(values: list[float] | None) -> bool:
    """Whether a trial's final objective values can be told to the study (each finite)."""
    return values is not None and all(math.isfinite(v) for v in values)


def tell(study: optuna.Study, trial: optuna.Trial, status: Status, values: list[float] | None,
         attrs: dict[str, Any]) -> None:
    """Close a trial: COMPLETE with its values, PRUNED (pruned:*) at its last step, or FAIL."""
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    state = OPTUNA_STATE.get(status, TrialState.PRUNED if status.pruned else TrialState.FAIL)
    if state == TrialState.COMPLETE and not has_value(values):
        state = TrialState.FAIL  # and so it reads: a status "completed" on a FAIL trial was counted as completed
        trial.set_user_attr(STATUS_KEY, Status.FAILED.value)
        trial.set_user_attr(REASON_KEY, NO_VALUE)
    study.tell(trial, values if state == TrialState.COMPLETE else None, state=state)


def trial_status(t: FrozenTrial) -> str:
    """The gantune status a trial was closed with (``completed``, ``pruned:asha``, …); for one gantune has not
    closed, Optuna's state in gantune's words (``running``, ``failed``)."""
    if STATUS_KEY in t.user_attrs and not (t.state == TrialState.FAIL and t.user_attrs[STATUS_KEY] ==
                                            Status.COMPLETED.value):  # a study of an earlier release said so
        return str(t.user_attrs[STATUS_KEY])
    return Status.FAILED.value if t.state == TrialState.FAIL else t.state.name.lower()


def trained_params(t: FrozenTrial) -> dict[str, Any]:
    """The parameter values ``t`` ended on: a PBT member's last explored ones (Optuna keeps its first sample as
    its params, which its exported config no longer holds), else its params."""
    lineage = t.user_attrs.get("pbt_lineage") or []
    return dict(lineage[-1]["params"]) if lineage else grid_params(t)


def explored_note(t: FrozenTrial, shown: Callable[[dict[str, Any]], str]) -> str:
    """After ``trained_params(t)`` where PBT explored away from its first sample: when, and that sample (as
    ``shown`` writes params); "" for a trial PBT never cloned."""
    lineage = t.user_attrs.get("pbt_lineage") or []
    return f" (PBT's explore at step {lineage[-1]['step']}; first sampled: {shown(grid_params(t))})" if lineage else ""


def trained_steps(t: FrozenTrial) -> int:
    """The steps ``t`` trained: its last step, those of its attempts a killed search left (``DEAD_STEPS``), and for
    a PBT member the steps each clone of a donor's checkpoint behind it trained again (one ahead of it skipped
    steps, trained by the donor: they count there)."""
    lineage = t.user_attrs.get("pbt_lineage") or []
    again = sum(int(e["from_step"]) - int(e["step"]) for e in lineage if "from_step" in e)
    return int(t.user_attrs.get("steps", 0)) + int(t.user_attrs.get(DEAD_STEPS, 0)) + again


def sign(study: optuna.Study) -> float:
    """1.0 when the first objective is minimised, -1.0 when maximised: ``sign * value`` ranks best first."""
    return sign_of(study.directions[0].name)


def ranked(study: optuna.Study) -> tuple[list[FrozenTrial], str | None]:
    """The COMPLETE trials that may be ranked together (measured like the newest one: ``provenance.comparable``)
    and the one line that names the others, if any."""
    return provenance.comparable(_evaluated(study))


def measured_as(study: optuna.Study) -> dict[str, Any]:
    """The provenance ``ranked`` compares trials with (``provenance.otherwise`` says how another trial differs)."""
    return provenance.reference(_evaluated(study))


def _evaluated(study: optuna.Study) -> list[FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.values]


def search_holders(trials: Sequence[FrozenTrial]) -> list[tuple[str, Path]]:
    """The pid of each gantune search that holds a run folder of ``trials`` now (its lock, ``holder``), with the
    folder."""
    folders = {run_dir.parent for t in trials if (run_dir := trial_run_dir(t.user_attrs)) is not None}
    return [(h[0], folder) for folder in sorted(folders) if (h := holder(folder)) is not None and h[1] == "search"]


def search_notes(study: optuna.Study, ranking: bool = True) -> str | None:
    """What a reader of the search's results must know, in one line: trials measured differently (``ranked``;
    ``ranking``), and a search still running (its run folder's lock held), whose best is only the best so far."""
    held = search_holders(study.get_trials(deepcopy=False))
    unfinished = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)))
    notes = [ranked(study)[1] if ranking else None,  # (a train of the exported config may hold the same folder)
             f"search {study.study_name!r} is still running (pid {held[0][0]}): its best so far" if held else None,
             # a killed search's export chose among the trials that ended, without a word (the report said it)
             f"{unfinished} unfinished trial{'s are' if unfinished > 1 else ' is'} not in it (running, or "
             "interrupted: search --resume runs them again)" if unfinished else None]
    return "; ".join(n for n in notes if n) or None


def best_first(study: optuna.Study, done: list[FrozenTrial]) -> list[FrozenTrial]:
    """``done`` best first on the first objective; with several objectives the Pareto front's trials come first,
    so no trial goes before one that dominates it (the search's summary, export and the report agree)."""
    front = {t.number for t in study.best_trials} if len(study.directions) > 1 else set()
    return sorted(done, key=lambda t: (t.number not in front, sign(study) * t.values[0]))


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best COMPLETE trial among those measured alike (multi-objective: the Pareto trial best on the first
    objective)."""
    done, _ = ranked(study)
    return best_first(study, done)[0] if done else None


def check_storage(storage: str, writing: bool = True) -> Path | None:
    """Fail with one line on a storage URL Optuna cannot open, opening nothing (opening a sqlite URL creates its
    file); the sqlite file it names, if any. A sqlite file to write needs a writable folder that exists."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    check_options(storage, "--storage")
    try:
        url = make_url(storage)
        url.get_dialect().import_dbapi()
    except (ArgumentError, NoSuchModuleError, ValueError) as err:
        raise GantuneError(f"--storage {storage}: not a database URL Optuna can open ({err}); e.g. "
                           "sqlite:///optuna.db or postgresql://user@host/db") from None
    except ImportError as err:
        raise GantuneError(f"--storage {storage}: the driver for it is not installed ({err})") from None
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        raise GantuneError(f"--storage {storage}: an in-memory database ends with this process, and the search "
                           "with it (no --resume, export or report); name a file, e.g. sqlite:///optuna.db")
    db = sqlite_file(storage)
    check_not_other(db, "--storage", storage, OPTUNA, "sqlite:///optuna.db")
    if db is not None and writing:
        if not db.parent.is_dir():
            raise GantuneError(f"--storage {storage}: folder {db.parent} does not exist")
        check_writable(db, "--storage", is_dir=False)
        if db.is_file() and not os.access(db, os.W_OK):  # sqlite writes the file in place, not beside it: a
            # read-only or immutable one was "the database failed on reading ...: a damaged file?" after the start
            raise GantuneError(f"--storage {storage}: cannot write {db} (the file is read-only here); make it "
                               "writable or copy it")
    return db


def load_search(name: str, storage: str) -> optuna.Study:
    """The study of the search called ``name``; a one-line error naming the searches there otherwise, or saying
    that the study is not a gantune search's. Reading creates nothing: a sqlite file that is not there holds no
    search."""
    db = check_storage(absolute_sqlite(storage), writing=False)
    if db is not None and not db.is_file():
        raise GantuneError(f"no search named {name!r} in {storage} ({db} does not exist)")
    owner = sqlite_owner(db) if db is not None else OPTUNA
    if owner == "":  # Optuna would write its schema into it
        raise GantuneError(f"no search named {name!r} in {storage} ({db} is empty)")
    if db is not None and foreign(db):  # another program's tables, or MLflow's: left as they are
        what = owner or "no Optuna storage: its tables are another program's"
        raise GantuneError(f"no search named {name!r} in {storage} ({db} is {what})")
    try:
        with opening(storage):
            study = optuna.load_study(study_name=name, storage=absolute_sqlite(storage))
            made = "settings" in study.user_attrs
    except KeyError:
        with opening(storage):
            names = [s.study_name for s in optuna.get_all_study_summaries(absolute_sqlite(storage))]
        raise GantuneError(f"no search named {name!r} in {storage} (searches there: "
                           f"{', '.join(names) or 'none'})") from None
    if not made:  # a study of a storage shared with other Optuna work: a KeyError later
        raise GantuneError(f"{name!r} in {storage} is an Optuna study that no gantune search made (it holds no "
                           "search settings): give the name of a gantune search")
    return study


def one_trial(study: optuna.Study, number: int) -> FrozenTrial:
    """Trial ``number`` when it trained to an end Optuna knows (COMPLETE or PRUNED): a pruned trial's best
    evaluation can beat every completed one (a run that diverged after a good stretch). A trial that ran out of
    memory is PRUNED to Optuna (so TPE learns to avoid its region) but trained nothing: refused as failed ones."""
    found = [t for t in study.get_trials(deepcopy=False) if t.number == number]
    if not found:
        raise GantuneError(f"--trial {number}: search {study.study_name!r} has no trial {number} "
                           f"({len(study.trials)} trials, numbered from 0)")
    t = found[0]
    status = trial_status(t)
    if t.state not in (TrialState.COMPLETE, TrialState.PRUNED) or "config" not in t.user_attrs or \
            status.startswith(Status.FAILED.value):
        raise GantuneError(f"--trial {number}: trial {number} of search {study.study_name!r} is {status}, "
                           "not a completed or pruned run")
    return t


def trial_value(study: optuna.Study, t: FrozenTrial) -> float | None:
    """The trial's first-objective value: a COMPLETE trial's final value, any other's best evaluation.

    Optuna stores a PRUNED trial's *last* reported value as its value: for a trial stopped for diverging after a
    good stretch that is the bad end, while its ``generator_best.pt`` holds the stretch. The reported
    (intermediate) values are the evaluations of the first objective (a multi-objective search keeps the best of
    them, ``BEST_REPORTED``).
    """
    if t.state == TrialState.COMPLETE and t.values:
        return float(t.values[0])
    reported = [v for v in t.intermediate_values.values() if math.isfinite(v)]
    if t.user_attrs.get(BEST_REPORTED) is not None:  # a multi-objective trial's
        reported.append(float(t.user_attrs[BEST_REPORTED]))
    if not reported:
        return None
    return float(min(reported, key=lambda v: sign(study) * v))


def top_trials(study: optuna.Study, k: int) -> list[FrozenTrial]:
    """The ``k`` best COMPLETE trials on the first objective (Pareto front first), among those measured alike."""
    done, _ = ranked(study)
    if not done:
        raise GantuneError(f"search {study.study_name!r} has no completed trial to export")
    return best_first(study, done)[:k]


def queued_problems(study: optuna.Study, distributions: dict[str, BaseDistribution]) -> list[str]:
    """What the trials queued in ``study`` by hand (``study.enqueue_trial``) give that the space does not draw:
    a name it has not (Optuna ignores it: the trial draws that parameter afresh), a value outside a range (Optuna
    trains it, with a warning of its own) or not among the choices (the trial fails). One line each."""
    found = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        for name, value in (t.system_attrs.get("fixed_params") or {}).items():
            dist = distributions.get(name)
            if dist is None:
                close = [n for n in distributions if n.rsplit(".", 1)[-1] == name.rsplit(".", 1)[-1]]
                found.append(f"queued trial {t.number}: {name} is not a parameter of this space (ignored: the trial "
                             f"draws its own){f'; did you mean {close[0]}?' if close else ''}")
            elif isinstance(dist, CategoricalDistribution):
                if value not in dist.choices:  # Optuna finds a choice with == (0 is the choice 0.0)
                    found.append(f"queued trial {t.number}: {name} {value!r} is not among its choices "
                                 f"{list(dist.choices)} (the trial fails)")
            elif problem := _off_range(value, dist):
                found.append(f"queued trial {t.number}: {name} {value!r} {problem}")
    return found


def _off_range(value: Any, dist: BaseDistribution) -> str:
    """Why a queued ``value`` is not one a numeric distribution draws ("" when it is)."""
    low, high, step = dist.low, dist.high, dist.step  # type: ignore[attr-defined]
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "is not a number (the trial fails)"
    if isinstance(dist, IntDistribution) and value != int(value):
        return "is not an integer (Optuna truncates it)"
    if not low <= value <= high:
        return f"is outside its range [{low:g}, {high:g}] (it trains at that value)"
    if step is not None and abs((value - low) / step - round((value - low) / step)) > 1e-9:
        return f"is off its step {step:g} from {low:g} (it trains at that value)"
    return ""
