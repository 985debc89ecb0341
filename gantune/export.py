"""From a search to production: the best trial(s) -> a fixed trial config (+ generator weights).

A short, pruned search's winner is a noisy pick (GAN results move with the seed). ``--top-k K --seeds S``
re-runs the K best configs with S seeds each at a longer budget through the same Ray scheduling and MLflow
logging (a study ``<search>-reruns`` beside the search's, nested under its MLflow parent run), and picks the
config with the best mean, reporting the spread. ``--trial N`` exports trial N instead, pruned ones included:
a trial stopped for diverging after a good stretch keeps that stretch's generator (``generator_best.pt``).
"""

from __future__ import annotations

import contextlib
import math
import shutil
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from gantune import provenance
from gantune.catalogue import config_from_dict
from gantune.config import MAX_SEED, TrainConfig, TrialConfig, dump_config, steps_note, yaml_text
from gantune.data import check_data
from gantune.dburl import absolute_sqlite, redacted
from gantune.errors import GantuneError, Interrupted
from gantune.rundir import (
    BEST_GENERATOR,
    CHECKPOINT,
    GENERATOR,
    METRICS,
    atomic_write,
    check_replaceable,
    check_writable,
    is_generator_file,
    load_saved,
    make_dir,
    parents_made,
    trial_run_dir,
)
from gantune.sampling.checks import expressions
from gantune.sampling.expr import Expr, ExprError
from gantune.sampling.optuna_private import storage_of
from gantune.sampling.settings import Pruning, SearchSettings
from gantune.sampling.space import FROZEN_SECTIONS, SearchSpace, stored_specs
from gantune.sampling.study import (
    SOURCE_PARAMS,
    SOURCE_UID,
    STUDY_UID,
    explored_note,
    grid_params,
    load_search,
    one_trial,
    search_notes,
    search_settings,
    sign,
    top_trials,
    trained_params,
    trial_status,
    trial_value,
)
from gantune.sampling.votes import favourite
from gantune.sampling.warm import OVERRIDES_KEY, RECIPE_KEY


@dataclass
class Candidate:
    """One exported config with the evidence behind it."""

    trial: FrozenTrial
    config: dict[str, Any]
    search_value: float | None  # the search's objective value (``trial_value``; None: it never evaluated)
    values: list[float] = field(default_factory=list)  # objective per seed re-run (empty without re-runs)
    seeds: list[int] = field(default_factory=list)
    #: re-runs that did not complete (seed -> how it ended: pruned by a health verdict, failed): not in the mean,
    #: and they count against the config (``choose``)
    dropped: dict[int, str] = field(default_factory=dict)
    #: a multi-objective search's other objectives per seed re-run, in ``seeds``' order (the choice reads the first)
    others: dict[str, list[float]] = field(default_factory=dict)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else self.search_value

    @property
    def spread(self) -> float | None:
        """The standard deviation over the seeds; ``None`` for one seed (a spread of 0 read as no variance)."""
        return statistics.stdev(self.values) if len(self.values) > 1 else None


#: the study attribute naming the search a study holds the re-runs of (``gantune export --seeds``), and how a
#: re-runs study made before that attribute opens its space text
RERUNS_OF, RERUNS_TEXT = "gantune_reruns_of", "# re-runs of trials"


class RerunSpace(SearchSpace):
    """Replays fixed trial configs: the sampler picks (source trial, seed) pairs enqueued beforehand."""

    warns = False

    def __init__(self, name: str, settings: SearchSettings, configs: dict[int, dict[str, Any]], seeds: int,
                 steps: int, once: bool = False) -> None:
        # the configs re-run, as comments: the re-runs' MLflow parent logs this as its space.yaml (one line of
        # trial numbers said nothing of what was trained)
        configs_text = "".join(f"# {line}\n" for line in yaml_text({f"trial {n}": configs[n]
                                                                    for n in sorted(configs)}).splitlines())
        text = f"{RERUNS_TEXT} {sorted(configs)} with {seeds} seeds at {steps} steps\n{configs_text}"
        super().__init__(name, f"<{name}>", text, settings, {}, {})
        self.configs = configs
        # the training seeds themselves (``rerun_seed``), so that the ``seed`` the study and MLflow record is the
        # one the re-run trained with
        self.seeds = sorted({rerun_seed(c, k) for c in configs.values() for k in range(seeds)})
        self.steps = steps
        #: the search was noise-aware: it set ``eval.repeat`` in every trial for ASHA, which a re-run has not
        self.once = once

    def sample(self, trial: optuna.Trial, overrides: dict[str, Any] | None = None,
               on: set[str] | None = None) -> dict[str, Any]:
        """The source trial's stored config (a recipe's overrides included: it is the config that trained)."""
        source = trial.suggest_categorical("source_trial", sorted(self.configs))
        seed = trial.suggest_categorical("seed", self.seeds)
        raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in self.configs[int(source)].items()}
        raw.setdefault("train", {})["seed"] = seed
        if self.once:  # as exported_config: a user's own eval.repeat stays
            raw["eval"] = {**(raw.get("eval") or {}), "repeat": False}
        return self.apply_settings(raw)

    def fixed_measure(self) -> dict[str, Any]:
        """Nothing to hold a resume to: each re-run measures as the trial it re-runs did (its config's ``eval``)."""
        return {}

    def label(self, number: int, params: dict[str, Any]) -> str:
        """A re-run by the trial it re-runs and its seed: its own number (0 for the first) named another trial."""
        source = params.get("source_trial")
        return f"trial {source:>3} seed {params.get('seed')}" if source in self.configs else \
            super().label(number, params)


def rerun_seed(config: dict[str, Any], k: int) -> int:
    """The training seed of a config's ``k``-th re-run: past the seed the search trained it with (seed 0 of a
    trial trained at seed 0 replayed the very run its selection picked, counting that luck again in the mean)."""
    own = int((config.get("train") or {}).get("seed", TrainConfig().seed))
    return (own + 1 + k) % (MAX_SEED + 1)


def rerun(study: optuna.Study, settings: SearchSettings, candidates: list[Candidate], seeds: int, steps: int,
          opts: Any) -> None:
    """Re-run each candidate with ``seeds`` seeds for ``steps`` steps; fills ``Candidate.values``."""
    from gantune.search import check_run, run_search

    eval_every = min(settings.eval_every, steps)
    rerun_settings = settings.model_copy(update={
        "trials": len(candidates) * seeds, "max_steps": steps, "eval_every": eval_every, "sampler": "random",
        "pruning": Pruning(asha=False, health=settings.pruning.health), "params": {},
        "warm_start": False})
    name = f"{study.study_name}-reruns"
    space = RerunSpace(name, rerun_settings, {c.trial.number: c.config for c in candidates}, seeds, steps,
                       once=settings.pruning.noise_aware)
    storage = storage_of(study)
    check_run(space, opts)  # bad flags are refused before the study of the re-runs is made
    try:
        earlier: optuna.Study | None = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        earlier = None
    if earlier is not None and not (earlier.user_attrs.get(RERUNS_OF) == study.study_name
                                    or str(earlier.user_attrs.get("space_text", "")).startswith(RERUNS_TEXT)):
        raise GantuneError(f"--seeds: the re-runs go to the study {name!r}, which holds another search (export "
                           "replaces only its own re-runs): nothing was run")
    if earlier is not None:  # re-runs of an earlier export are replaced
        for obs in opts.observers:  # a killed export's runs of them stayed RUNNING beside the new ones
            if hasattr(obs, "study_replaced"):
                obs.study_replaced(name, earlier.user_attrs.get(STUDY_UID))
        optuna.delete_study(study_name=name, storage=storage)
    rs = optuna.create_study(study_name=name, storage=storage, directions=study.directions)
    rs.set_user_attr(RERUNS_OF, study.study_name)
    rs.set_user_attr(SOURCE_UID, study.user_attrs.get(STUDY_UID))
    for c in candidates:
        for k in range(seeds):
            rs.enqueue_trial({"source_trial": c.trial.number, "seed": rerun_seed(c.config, k)},
                             user_attrs={SOURCE_PARAMS: grid_params(c.trial)})
    opts.resume = False
    if not opts.quiet:  # what the progress lines below count down
        total = rerun_settings.trials
        print(f"re-running trials {sorted(space.configs)} with {seeds} seeds at {steps} steps: {total} trials, "
              f"{total * steps} trial-steps", file=sys.stderr, flush=True)
    try:
        run_search(space, opts)
    except Interrupted:  # export has no --resume: its next run replaces these re-runs
        raise Interrupted("interrupted during the seed re-runs: nothing was exported; run the export again (it "
                          "re-runs them from the start)") from None
    for t in optuna.load_study(study_name=name, storage=storage).trials:
        for c in candidates:
            if t.params.get("source_trial") != c.trial.number:
                continue
            if t.state == TrialState.COMPLETE and t.values:
                c.values.append(float(t.values[0]))
                c.seeds.append(int(t.params["seed"]))
                for objective, value in zip(settings.objectives[1:], t.values[1:], strict=True):
                    c.others.setdefault(objective, []).append(float(value))
            else:  # a seed on which the config collapsed or diverged: dropping it silently flattered the mean
                c.dropped[int(t.params["seed"])] = trial_status(t)


def _collapsed(c: Candidate) -> int:
    """The seeds on which a health verdict pruned ``c``'s re-run (a failure, out of memory say, says nothing of
    the config: it is named in the header, not counted)."""
    return sum(status.startswith("pruned") for status in c.dropped.values())


def choose(study: optuna.Study, candidates: list[Candidate]) -> Candidate:
    """The best mean among the candidates a health verdict pruned on the fewest seeds: a config that collapsed
    on a seed is less robust than one that never did, whatever its other seeds' mean."""
    scored = [c for c in candidates if c.values] or candidates
    fewest = min(_collapsed(c) for c in scored)
    return min((c for c in scored if _collapsed(c) == fewest),
               key=lambda c: sign(study) * c.mean if c.mean is not None else math.inf)


def describe(chosen: Candidate, objective: str, digits: int) -> str:
    """The chosen trial's search value; for a pruned one (``--trial``), how it ended and its best evaluation."""
    t, value = chosen.trial, chosen.search_value
    got = f"{objective} {value:.{digits}g}" if value is not None else f"no {objective} reported"
    if t.state == TrialState.COMPLETE:
        return got
    ended = f"{trial_status(t)} at step {t.user_attrs.get('steps', '?')}"
    return f"{ended}; " + (f"best evaluation {got}" if value is not None else got)


#: an export's first line, to the search's name: ``--out`` replaces a file that starts so, no other
EXPORT_MARK = "# exported by gantune from search "


def header(study: optuna.Study, chosen: Candidate, candidates: list[Candidate], objective: str, steps: int,
           trains: int | None = None) -> str:
    """The export's comment lines: the chosen trial, the seed re-runs at ``steps`` (the re-runs' steps, the
    search's budget when no ``--steps`` was given), its parameters; ``trains``: the steps the exported config trains
    (said beside the search's value when the trial was measured at others: ``--steps``)."""
    trained = chosen.trial.user_attrs.get("steps")
    at = f" at step {trained} (this config trains {trains})" if chosen.trial.state == TrialState.COMPLETE and \
        isinstance(trained, int) and trains is not None and trained != trains else ""
    lines = [f"{EXPORT_MARK}{study.study_name!r}",
             f"# chosen: trial {chosen.trial.number}, search {describe(chosen, objective, 6)}{_others(study, chosen)}"
             f"{at}"]
    floor = provenance.floor(chosen.trial)
    for name in (n for n in search_settings(study).objectives if n in floor):  # each objective's (the first only)
        lines.append(f"# real-vs-real {name} ({provenance.floor_scored(provenance.of(chosen.trial))}): "
                     f"{floor[name]:.6g}")
    for c in candidates:
        if c.values:
            spread = f"+- {c.spread:.3g} (std)" if c.spread is not None else "(one seed: no spread)"
            lines.append(f"# trial {c.trial.number}: {objective} mean {c.mean:.6g} {spread} over "
                         f"{len(c.values)} seed(s) {c.seeds} at {steps} steps; per seed {_per_seed(c.values)}"
                         + _other_means(c) + _dropped(c))
        elif c.dropped:
            lines.append(f"# trial {c.trial.number}: no seed re-run completed at {steps} steps{_dropped(c)}")
    lines.append(f"# params: {_written(trained_params(chosen.trial))}{explored_note(chosen.trial, _written)}")
    if recipe := chosen.trial.user_attrs.get(RECIPE_KEY):  # what it set beyond the params, or the file's keys
        # that the space never mentions came from nowhere the header said
        overrides = chosen.trial.user_attrs.get(OVERRIDES_KEY) or {}
        lines.append(f"# warm start: recipe {recipe}" + (f", which also set {_written(overrides)} (keys the space "
                                                         "leaves unset)" if overrides else ""))
    return "\n".join(lines) + "\n"


def _other_means(c: Candidate) -> str:
    """A multi-objective search's other objectives over the same seeds (the line gave the first alone)."""
    return "".join(f"; {name} mean {statistics.fmean(vs):.6g}, per seed {_per_seed(vs)}"
                   for name, vs in c.others.items())


def _per_seed(values: list[float]) -> str:
    """Each seed's value to the digits of the mean beside it (fewer would hide what the mean was made of)."""
    return ", ".join(f"{v:.6g}" for v in values)


def _written(params: dict[str, Any]) -> str:
    """Params as the header writes them: every digit (the file is the record of the trial)."""
    return ", ".join(f"{k}={v}" for k, v in params.items())


def _others(study: optuna.Study, chosen: Candidate, digits: int = 6) -> str:
    """A multi-objective search's other values of the chosen trial (the header named the first only)."""
    values = _values(search_settings(study).objectives, chosen.trial) or {}
    return "".join(f", {name} {value:.{digits}g}" for name, value in list(values.items())[1:])


def _values(objectives: list[str], trial: FrozenTrial) -> dict[str, float] | None:
    """A completed trial's value of each objective (``export --json``: ``search_value`` is the first one's);
    ``None`` for another (a pruned trial's stored value is its last, not its best: ``trial_value``)."""
    values = (trial.values or []) if trial.state == TrialState.COMPLETE else []
    return dict(zip(objectives, values, strict=True)) if len(values) == len(objectives) else None


def steps_readers(study: optuna.Study) -> list[str]:
    """The config keys an expression or condition of the search's space computed from ``train.steps``
    (``decay_start: {expr: "2000 / train.steps"}``), directly or through free parameters and other keys: each
    trial holds their values at the search's steps, and so does its export."""
    try:
        leaves, params = stored_specs(str(study.user_attrs.get("space_text", "")), "the search's space")
    except GantuneError:
        return []
    reads: dict[str, set[str]] = {}
    for path, _, text in expressions(leaves, params):
        reads.setdefault(path, set()).update(_names(text))
    stale, more = {"train.steps"}, True
    while more:  # through free parameters and other keys: decay_start reads w, which reads train.steps
        grown = stale | {path for path, names in reads.items() if names & stale}
        stale, more = grown, grown != stale
    return [path for path in reads if path in stale and "." in path]  # config keys: a free parameter has no dot


def _names(text: str) -> set[str]:
    try:
        return set(Expr(text).names)
    except ExprError:
        return set()


def _chosen_by_seeds(chosen: Candidate, objective: str) -> str:
    """The chosen config and its mean over the seed re-runs, in a line (``gantune.export_chosen``)."""
    if not chosen.values:
        return f"trial {chosen.trial.number}: no re-run completed; {describe(chosen, objective, 4)}"
    spread = f" +- {chosen.spread:.2g}" if chosen.spread is not None else ""
    return f"trial {chosen.trial.number}: {objective} mean {chosen.mean:.4g}{spread} over seeds {chosen.seeds}"


def _dropped(c: Candidate) -> str:
    return "".join(f"; seed {seed} {status}, not in the mean" for seed, status in sorted(c.dropped.items()))


def with_steps(config: dict[str, Any], steps: int | None) -> dict[str, Any]:
    """A copy of ``config`` (its sections copied) with ``train.steps`` set to ``steps`` when given."""
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in config.items()}
    if steps is not None:
        raw.setdefault("train", {})["steps"] = steps
    return raw


def exported_config(study: optuna.Study, chosen: Candidate, candidates: list[Candidate],
                    steps: int | None, storage: str, search_steps: int, readers: list[str]) -> TrialConfig:
    """The chosen trial's config as production trains it; ``readers``: the keys the space computed from
    ``train.steps`` (``steps_readers``), recorded so that ``gantune train --steps N`` can say which it keeps."""
    raw = with_steps(chosen.config, steps)
    if ((study.user_attrs.get("settings") or {}).get("pruning") or {}).get("noise_aware"):
        # the search set it in every trial for ASHA's noise estimate: a production run paid each evaluation twice
        raw["eval"] = {**(raw.get("eval") or {}), "repeat": False}
    # the chosen trial first: after --top-k re-runs it need not be the search's best, and the header comment
    # that named it does not travel with the config
    trials = [chosen.trial.number, *(c.trial.number for c in candidates if c.trial.number != chosen.trial.number)]
    raw["origin"] = {"search": study.study_name, "trials": trials,
                     # the record stays true once the file moves; a password stays out of it (best.yaml travels to
                     # the run's config.yaml, the weights' embedded config and the tracking server)
                     "study_storage": redacted(absolute_sqlite(storage))}
    if readers:
        raw["origin"].update(steps_read=readers, steps_read_at=search_steps)
    return config_from_dict(raw, f"search {study.study_name!r} trial {chosen.trial.number}")


def _at(config: Any, name: str) -> Any:
    for part in name.split("."):
        config = config.get(part) if isinstance(config, dict) else None
    return config


def other_run(path: Path, trial: FrozenTrial) -> str | None:
    """Why the weights file ``path`` is not ``trial``'s (a sampled key whose value in its embedded config is not
    the one the trial trained with), or ``None``. Two searches of one name in different storages shared
    ``runs/<name>/``: the later one's trial folders replaced the earlier one's, and its weights were exported as
    the earlier trial's without a word. Both configs are compared as the trial config reads them (``augment:
    "translation,cutout"`` is a list there). A PBT member's best generator may come from before an exploit, so
    only the keys explore never changes (``FROZEN_SECTIONS``) are compared for it."""
    payload = load_saved(path)
    embedded = payload.get("config") if isinstance(payload, dict) else None
    trained = trial.user_attrs.get("config", {})
    with contextlib.suppress(GantuneError, ValueError, TypeError):  # a moved init_from: compare as stored
        trained = config_from_dict(trained).to_dict()
    pbt = bool(trial.user_attrs.get("pbt_lineage"))
    for name in (n for n in trial.params if "." in n and (not pbt or n.split(".", 1)[0] in FROZEN_SECTIONS)):
        held, value = _at(embedded, name), _at(trained, name)
        same = held == value or (isinstance(held, float) and isinstance(value, float) and math.isclose(held, value))
        if value is not None and not same:
            return f"its {name} is {held!r}, the trial's {value!r}"
    return None


def weights_problem(c: Candidate, search: str, uid: str | None, tracking_uri: str | None) -> str | None:
    """Why ``copy_weights`` would find no usable generator of the trial (``None``: it would): its run folder's
    files checked as the copy checks them (loadable, the trial's own; only their being there was asked, so a
    damaged file failed the export after hours of seed re-runs), else whether its MLflow run logged any."""
    src = trial_run_dir(c.trial.user_attrs)
    found = [] if src is None else [src / n for n in (GENERATOR, BEST_GENERATOR) if (src / n).is_file()]
    for f in found:
        try:
            why = other_run(f, c.trial)
        except GantuneError as err:
            return str(err)
        if why:
            return f"{f} is not the trial's ({why})"
    if found:
        return None
    if tracking_uri is None:  # --no-tracking: MLflow is not asked
        return "no weights in the run folder"
    from gantune.tracking import trial_weights_logged

    if trial_weights_logged(tracking_uri, search, uid, c.trial.number):
        return None
    return "no weights in the run folder or in MLflow"


def copy_weights(search: str, uid: str | None, chosen: Candidate, dest: Path, tracking_uri: str | None) -> list[str]:
    """The chosen trial's generator weights: from its run directory (each file checked loadable, and trained with
    the trial's sampled values, first), else from its MLflow child run (checked the same). A folder this made is
    removed again when nothing could be put in it."""
    number = chosen.trial.number
    src = trial_run_dir(chosen.trial.user_attrs)
    found = [] if src is None else [src / n for n in (GENERATOR, BEST_GENERATOR) if (src / n).is_file()]
    names = [f.name for f in found]
    for f in found:
        try:
            why = other_run(f, chosen.trial)
        except GantuneError as err:
            raise GantuneError(f"--weights: trial {number}'s {err}") from None
        if why:
            raise GantuneError(f"--weights: {f} is not trial {number}'s ({why}): another search of the name "
                               f"{search!r} wrote its run folder (give each storage its own --runs-dir)")
    for n in (GENERATOR, BEST_GENERATOR):  # named now, not as "cannot write to" the folder with half of it copied
        if (dest / n).exists() and not (dest / n).is_file():
            raise GantuneError(f"--weights: {dest / n} is in the way (not a file); remove it or choose another folder")
    made = not dest.exists()

    def clear() -> None:
        if made:  # through a symlink to a folder it made: that folder
            shutil.rmtree(dest.resolve(), ignore_errors=True)

    parts = [dest / f".{n}.export-part" for n in names]
    try:
        make_dir(dest)
        for f, part in zip(found, parts, strict=True):  # all copied before any replaces what is there
            atomic_write(part, f.read_bytes())
        for n, part in zip(names, parts, strict=True):
            part.replace(dest / n)
        got = [str(dest / n) for n in names]
        if not got and tracking_uri is not None:
            try:
                got = weights_from_mlflow(tracking_uri, search, uid, chosen.trial, dest)
            except GantuneError as err:
                clear()
                raise GantuneError(f"--weights: {err}") from None
    except BaseException as err:  # a Ctrl-C too: a full-size part file and a folder made for nothing were left
        for part in parts:
            part.unlink(missing_ok=True)
        clear()
        if isinstance(err, OSError):
            raise GantuneError(f"--weights: cannot write to {dest} ({err.strerror or err})") from None
        raise
    if not got:
        clear()
        where = src if src is not None else "its run folder (none recorded)"
        raise GantuneError(f"--weights: no weights of trial {number} in {where}"
                           + (" or in MLflow" if tracking_uri is not None else " (--no-tracking: MLflow not asked)"))
    for n in {GENERATOR, BEST_GENERATOR} - {Path(g).name for g in got}:  # an earlier export's, of another trial:
        (dest / n).unlink(missing_ok=True)  # `generate` of it sampled that trial beside this one's config
    return got


def weights_from_mlflow(tracking_uri: str, search: str, uid: str | None, trial: FrozenTrial, dest: Path
                        ) -> list[str]:
    """``trial``'s weights from its MLflow child run (of the search whose ``STUDY_UID`` is ``uid``) into ``dest``
    (``[]``: none kept), each checked to be the trial's (``other_run``) first; a ``GantuneError`` saying why where
    one is not, ``dest`` as it was."""
    from gantune.tracking import download_trial_weights

    def check(f: Path) -> str | None:
        try:
            return other_run(f, trial)
        except GantuneError as err:
            return str(err)

    return download_trial_weights(tracking_uri, search, uid, trial.number, dest, check)


def write_export(path: Path, text: str, then: Callable[[], list[str]] = list) -> list[str]:
    """Write the config, then ``then()`` (the weights' copy; its result returned). The config goes first, so a
    path the system refuses fails before any weights move (they replaced an earlier export's); when ``then``
    fails, the file is as it was (or gone) and the folders made for it too."""
    previous = path.read_bytes() if path.is_file() else None
    try:
        with parents_made(path):
            atomic_write(path, text.encode())
            try:
                return then()
            except BaseException:
                if previous is None:
                    path.unlink(missing_ok=True)
                else:
                    atomic_write(path, previous)
                raise
    except OSError as err:
        raise GantuneError(f"--out: cannot write {path} ({err.strerror or err})") from None


#: ``--by``: which trial is "the best" when ``--trial`` names none (None: the best k by the metric)
PICKS: dict[str, Callable[[optuna.Study], int | None]] = {"metric": lambda study: None, "human": favourite}
BY_NOTE = {"human": "# chosen by a person: the Bradley-Terry favourite of the votes of gantune review\n"}


def export(name: str, storage: str, *, top_k: int = 1, seeds: int = 0, steps: int | None = None,
           out: Path, weights: Path | None = None, tracking_uri: str | None = None,
           search_opts: Any = None, trial: int | None = None, by: str = "metric") -> dict[str, Any]:
    """Export the best config of search ``name`` (or its trial ``trial``; ``by="human"``: the favourite of the
    review's votes); see the module docstring."""
    study = load_search(name, storage)
    trial = PICKS[by](study) if trial is None else trial
    if weights is not None:  # before any re-run: a folder that cannot be made failed only after them
        check_writable(weights, "--weights", is_dir=True)
        if held := [n for n in (CHECKPOINT, METRICS) if (weights / n).exists()]:  # its weights are a run's own
            raise GantuneError(f"--weights: {weights} is a run's folder (it holds {held[0]}): its generators "
                               "would be replaced; choose another folder")
        for n in (GENERATOR, BEST_GENERATOR):
            if (weights / n).is_file() and not is_generator_file(weights / n):
                raise GantuneError(f"--weights: {weights / n} is not a gantune generator file, and the copy would "
                                   "replace it; move it away or choose another folder")
    check_writable(out, "--out", is_dir=False)
    check_replaceable(out, "--out", ("export of gantune's", lambda head: head.startswith(EXPORT_MARK.encode())))
    if weights is not None and weights.resolve().is_relative_to(out.resolve()):
        # the weights' folder made where the config goes: the config could not be written, the weights were
        raise GantuneError(f"--weights: {weights} would be a folder at or under --out {out}; give them apart")
    for n in (GENERATOR, BEST_GENERATOR):
        if weights is not None and out.resolve().is_relative_to((weights / n).resolve()):
            # the config was written over the weights just copied there (or failed under them, the weights kept)
            raise GantuneError(f"--out: {out} is where --weights puts {n}; give the config another name")
    chosen_trials = [one_trial(study, trial)] if trial is not None else top_trials(study, top_k)
    note = search_notes(study, ranking=trial is None)
    settings = search_settings(study)
    objective = settings.objectives[0]
    front = ""
    if trial is None and len(study.directions) > 1:  # a Pareto front has no one best: say which was taken
        objectives = settings.objectives
        chose = (f"the seed re-runs' mean {objectives[0]} chose among the top {len(chosen_trials)} (the Pareto front "
                 f"first)" if seeds > 0 else f"the chosen trial is the Pareto front's best on {objectives[0]}")
        front = (f"{len(objectives)} objectives ({', '.join(objectives)}): {chose}; export another with --trial N "
                 "(gantune report shows the front)")
    elif trial is not None and len(study.directions) > 1 and trial not in {t.number for t in study.best_trials}:
        # the front holds completed trials only: a pruned one is off it for that, whatever its values
        front = f"trial {trial} is not on the Pareto front: " + (
            "another trial beats it on one objective and is no worse on the rest"
            if chosen_trials[0].state == TrialState.COMPLETE else
            f"the front holds completed trials, and this one ended {trial_status(chosen_trials[0])}")
    readers = steps_readers(study)  # parses the stored space: once
    stale = steps_note(readers, settings.max_steps, steps)
    note = "; ".join(part for part in (note, front, stale) if part)
    candidates = [Candidate(t, t.user_attrs["config"], trial_value(study, t)) for t in chosen_trials]
    for c in candidates:  # before any re-run: a loss of a plugin not given, or a --steps the config cannot
        # train to (a progressive net's fades end later), ran failing re-runs, then said so
        cfg = config_from_dict(with_steps(c.config, steps), f"search {name!r} trial {c.trial.number}")
        if seeds > 0:  # an image folder moved since the search: every re-run failed, and the export went on
            try:
                check_data(cfg.data)
            except GantuneError as err:
                raise GantuneError(f"--seeds: trial {c.trial.number}'s re-runs cannot train: {err}") from None
    if seeds > 0 and weights is not None:  # the re-runs may choose any candidate: each must have weights
        uid = study.user_attrs.get(STUDY_UID)
        problems = {c.trial.number: why for c in candidates
                    if (why := weights_problem(c, name, uid, tracking_uri)) is not None}
        if problems:
            them = "; ".join(f"trial {n}: {why}" for n, why in problems.items())
            raise GantuneError(f"--weights: {them}; the seed re-runs may choose "
                               f"{'them' if len(problems) > 1 else 'it'}: export without --weights, or the others "
                               "(--trial N)")
    if seeds > 0:
        rerun(study, settings, candidates, seeds, steps or settings.max_steps, search_opts)
    chosen = choose(study, candidates)
    for obs in search_opts.observers if seeds > 0 else []:
        if hasattr(obs, "reruns_chose"):
            obs.reruns_chose(chosen.trial.number, _chosen_by_seeds(chosen, objective))
    cfg = exported_config(study, chosen, candidates, steps, storage, settings.max_steps, readers)
    text = (header(study, chosen, candidates, objective, steps or settings.max_steps, cfg.train.steps)
            + (f"# note: {stale}\n" if stale else "") + (f"# {front}\n" if front else "") + BY_NOTE.get(by, "")
            + dump_config(cfg))
    uid = study.user_attrs.get(STUDY_UID)
    copied = write_export(out, text, (lambda: copy_weights(name, uid, chosen, weights, tracking_uri))
                          if weights is not None else list)
    return {"search": name, "trial": chosen.trial.number, "objective": objective,
            "status": trial_status(chosen.trial),
            "search_value": chosen.search_value, "chosen": describe(chosen, objective, 4) + _others(study, chosen, 4),
            "values": _values(settings.objectives, chosen.trial),
            "mean": chosen.mean if chosen.values else None,
            "spread": chosen.spread if chosen.values else None, "seed_values": chosen.values,
            "candidates": {c.trial.number: {"mean": c.mean, "spread": c.spread, "values": c.values,
                                            "others": c.others, "dropped": c.dropped}
                           for c in candidates},
            "out": str(out), "weights": copied, "note": note, "by": by}
