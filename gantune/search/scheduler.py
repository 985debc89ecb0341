"""Scheduling: ASHA on the objective, remembering which trials it stopped (to tell them apart later), or PBT,
remembering which member cloned which (the lineage the study and MLflow record).

Health verdicts act inside each trial (its ``should_stop``), so a diverging or collapsing trial ends at the
first signal, without waiting for a rung; ASHA handles trials that are merely worse than their peers. A
noise-aware ASHA (``pruning.noise_aware``) keeps a trial whose objective is within the evaluation noise of the
rung's cutoff: that ranking is a coin toss, and a stop cannot be undone. Under PBT
nothing is stopped for being worse: the bottom of the population clones the top (exploit) and perturbs its
hyperparameters (explore, ``Explorer``). A member that a health verdict (or a non-finite value) ends clones a
top member at once, instead of ending and leaving its share of the budget unspent; it ends with its verdict only
while fewer than two other members have a score (the first to run). A member's evaluation at the last step is
its end, never a decision: an exploit there would send it back to train the same steps again.

PBT's explore on a gantune space perturbs a member's sampled parameters and derives its trial config again.
Exploit copies a member's G, D and optimiser state into another; explore then changes only what such a
checkpoint can carry on with (``SearchSpace.mutable_params``: learning rates, betas, n_critic, penalty weights,
and the free parameters of ``search.params`` that feed them). The new config comes from the space itself
(``SearchSpace.sample`` on an ``optuna.trial.FixedTrial``), so expressions such as ``lr_d = lr_g * ttur_ratio``
stay true. A perturbation that would change the networks, the data, the loss or the optimiser kind (a free
parameter feeding a width, a ``when`` switching a leaf on) is dropped: the member keeps the donor's value.
"""

from __future__ import annotations

import contextlib
import json
import math
import posixpath
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import optuna
from ray.tune.experiment import Trial
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, PopulationBasedTraining, TrialScheduler

from gantune.catalogue import config_from_dict
from gantune.config import TrialConfig, parse_config
from gantune.errors import ConfigError
from gantune.events import first_line, warn
from gantune.gan.nets import resolve_arch
from gantune.health import OBJECTIVE_REPEAT
from gantune.noise import rung_noise
from gantune.sampling.space import FROZEN_SECTIONS, SearchSpace
from gantune.sampling.specs import CategoricalSpec, FloatSpec, IntSpec
from gantune.sampling.warm import OVERRIDES_KEY, RECIPE_KEY
from gantune.search.ray_private import (
    WithoutSearcher,
    asha_rung,
    member_state,
    quantiles,
    record_at_rungs,
    take_back_stop,
)
from gantune.search.trainable import ORIGIN, STOPPING_KEY, VERDICT_KEY

#: Ray Tune's PBT perturbation factors
FACTORS = (0.8, 1.2)
#: the Optuna user attribute of a trial noise-aware ASHA kept: its rescues, ``[{step, value, cutoff, sigma}]``
RESCUED_ATTR = "asha_rescued"


@dataclass(frozen=True)
class AshaStop:
    """Where ASHA stopped a trial: Tune does not pass that result on to the searcher, so it is kept here."""

    step: int
    objective: float

    @property
    def reason(self) -> str:
        return f"ASHA: objective {self.objective:.4g} worse than the rung cutoff at step {self.step}"


class RecordingASHA(AsyncHyperBandScheduler):
    """ASHA that records the trials it stops and the step it stopped them at.

    A report on which the trial's own health verdict fired (``STOPPING_KEY``) still counts at its rung, but is
    not a stop of ASHA's: the trial ends right after it with the verdict's status and reason. Stopped there by
    ASHA, it was filed as ASHA's prune, and what the verdict saw (a collapse, a divergence) was lost.
    """

    def __init__(self, stopped: dict[str, AshaStop], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stopped = stopped

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> str:
        decision = self.decide(tune_controller, trial, result)
        if decision == TrialScheduler.STOP and result.get(STOPPING_KEY):
            take_back_stop(self)
            return TrialScheduler.CONTINUE
        if decision == TrialScheduler.STOP:
            self.stopped[trial.trial_id] = AshaStop(int(result["step"]), float(result["objective"]))
        return decision

    def decide(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> str:
        """ASHA's decision on ``result`` (a subclass may temper it; only a final STOP is recorded)."""
        return super().on_trial_result(tune_controller, trial, result)


class Rescue(NamedTuple):
    """A stop ``NoiseAwareASHA`` turned into CONTINUE: at ``step`` the objective was ``value``, the rung's cutoff
    ``cutoff`` (both in the objective's units), and one evaluation's noise there ``sigma``."""

    step: int
    value: float
    cutoff: float
    sigma: float


class NoiseAwareASHA(RecordingASHA):
    """ASHA that does not stop a trial within ``noise_margin`` evaluation noise of the rung's cutoff.

    Every evaluation report carries its objective measured twice on the same weights (``objective`` and
    ``objective_repeat``, ``eval.repeat``). The pairs decided at one rung (milestone) pool into that rung's noise,
    ``sigma = rung_noise(pairs)``, the standard deviation of one evaluation: noise changes with training (early
    samples are spread wider), so each rung keeps its own. Where plain ASHA would stop a trial and
    ``|value - cutoff| <= noise_margin * sigma``, it continues instead, and the rescue is kept: ``rescued``
    (trial id -> its latest ``Rescue``) and ``rescues`` (every one, in order; a trial may be rescued at several
    rungs). Its value stays recorded at the rung, as ASHA records every value it decides on. Fewer than two pairs
    at a rung: plain ASHA's decision.
    """

    def __init__(self, stopped: dict[str, AshaStop], *, noise_margin: float = 1.0,
                 rescues: list[tuple[str, Rescue]] | None = None, **kwargs: Any) -> None:
        super().__init__(stopped, **kwargs)
        self.noise_margin = noise_margin
        self.pairs: dict[float, list[tuple[float, float]]] = {}  # rung milestone -> (objective, objective_repeat)
        self.rescues = rescues if rescues is not None else []  # shared with the search's book, like ``stopped``

    @property
    def rescued(self) -> dict[str, Rescue]:
        """Each rescued trial's latest ``Rescue`` (derived from ``rescues``, the one record kept)."""
        return dict(self.rescues)

    def noise(self, milestone: float) -> float:
        """One evaluation's standard deviation at the rung ``milestone`` (NaN below two pairs)."""
        return rung_noise(self.pairs.get(milestone, []))

    def decide(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> str:
        rung = asha_rung(self, trial, result)  # before ASHA records the result there
        if rung is not None and OBJECTIVE_REPEAT in result:
            self.pairs.setdefault(rung[0], []).append((float(result["objective"]), float(result[OBJECTIVE_REPEAT])))
        decision = super().decide(tune_controller, trial, result)
        if decision != TrialScheduler.STOP or rung is None or result.get(STOPPING_KEY):
            return decision  # (a trial its own verdict stops here is no rescue: ``on_trial_result``)
        milestone, cutoff = rung
        if cutoff is None:  # ASHA stops nobody against an empty rung; kept for the type's sake
            return decision
        value, sigma = float(result["objective"]), self.noise(milestone)
        if not math.isfinite(sigma) or abs(value - cutoff) > self.noise_margin * sigma:
            return decision
        self.rescues.append((trial.trial_id, Rescue(int(result["step"]), value, cutoff, sigma)))
        take_back_stop(self)
        return TrialScheduler.CONTINUE


@dataclass(frozen=True)
class Exploit:
    """One PBT exploit: ``member`` now trains on from ``donor``'s checkpoint at ``step`` with explored
    ``params`` (the donor's were ``donor_params``) and the trial config ``config`` derived from them; ``after``:
    the verdict that ended the member's previous config (empty for PBT's own exploit of a low score)."""

    member: str
    donor: str
    step: int
    params: dict[str, Any]
    donor_params: dict[str, Any]
    config: dict[str, Any]
    after: str = ""
    from_step: int | None = None  # the member's own step when it cloned: above ``step``, steps it trains again
    #: what the member takes from its donor beside the explored values: the networks and data its checkpoint
    #: carries (``_frozen``), where they differ from the member's own (dotted key -> the donor's value)
    took: dict[str, Any] = field(default_factory=dict)


class RecordingPBT(PopulationBasedTraining):
    """Ray Tune's PBT on a gantune space: a member keeps its own identity (Optuna trial number, run directory)
    when it takes a donor's explored hyperparameters, each exploit is recorded, a member a verdict ended is
    replaced at once (``_replace``) and a member at the end of its budget ends."""

    def __init__(self, exploits: list[Exploit], last_step: int, slots: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.exploits = exploits
        self.last_step = last_step  # every member's budget: its evaluation there is its end
        self.slots = slots  # trials the cluster runs at once (0: unknown, Ray's rule alone)
        self._waited: dict[str, set[str]] = {}  # by member: the members waiting at its last decision
        self._copies: list[tuple[Any, str]] = []  # (file system, path) of each checkpoint copy a clone took

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> str:
        if result.get("step", 0) >= self.last_step:
            # a member that has trained its budget ends, with its verdict if it got one there: an exploit would send
            # it back to a donor's earlier checkpoint to train the same steps again (and again, while it ranks
            # low), past its budget
            return TrialScheduler.CONTINUE
        if VERDICT_KEY in result:
            member_state(self, trial).last_train_time = result.get("step", 0)  # where the clone leaves it
            return self._replace(tune_controller, trial, str(result[VERDICT_KEY]))
        if result.get(STOPPING_KEY):
            # a verdict fired on this report: the member says so next (VERDICT_KEY) and is replaced there. Decided
            # on here, PBT paused it (another member waiting) or ranked it, and it came back from this report's
            # checkpoint with a fresh monitor: the verdict was lost and the failed state stayed a possible donor
            return TrialScheduler.CONTINUE
        decision = str(super().on_trial_result(tune_controller, trial, result))
        if decision == TrialScheduler.PAUSE and self._free_slot(tune_controller, trial):
            # Ray pauses a member at each decision while another waits, for that one to run in its place; with a
            # slot free the waiting one starts there. Paused, this member handed its worker process to the waiting
            # member (reuse_actors) and the members took turns on one process: on 2 CPUs, one ran at a time
            return TrialScheduler.CONTINUE
        return decision

    def _free_slot(self, tune_controller: Any, trial: Trial) -> bool:
        """Whether fewer members run than the cluster has slots for, and no member waits that already waited at
        this member's last decision: a slot counted at the start that no waiting member could take (another
        job's CPUs, a node lost since) would otherwise keep the members
        beyond the slots waiting until a running one ended its budget."""
        trials = tune_controller.get_trials()
        waiting = {t.trial_id for t in trials if t.status in (Trial.PENDING, Trial.PAUSED)}
        before, self._waited[trial.trial_id] = self._waited.get(trial.trial_id, set()), waiting
        running = sum(t.status == Trial.RUNNING for t in trials)
        return 0 < running < self.slots and not waiting & before

    def _replace(self, tune_controller: Any, trial: Trial, verdict: str) -> str:
        """A member ended by a verdict (its trial function waits in ``tune.report``) clones a top member of the
        others now, whatever the perturbation interval; the exploit pauses it (NOOP: this attempt stops) and it
        trains on from the donor's checkpoint. CONTINUE (fewer than two others scored, or the donor without a
        checkpoint) lets it end with its verdict.

        Its own score goes: it belonged to the config that just failed, and a clone has none until its next
        decision (a stale one would rank it, or make it a donor, for what it no longer is)."""
        state = member_state(self, trial)
        state.last_score = None
        _, upper = quantiles(self)
        if not upper:
            return TrialScheduler.CONTINUE
        state.last_score = -math.inf  # Ray's exploit logs the clone's score
        self._keep_latest(upper)
        try:  # any donor, behind it or not: the member's own config failed
            PopulationBasedTraining._checkpoint_or_exploit(self, trial, tune_controller, upper, [trial])
        finally:
            state.last_score = None
        if trial.status != Trial.PAUSED:  # no exploit (the donor had no checkpoint)
            return TrialScheduler.CONTINUE
        self.exploits[-1] = replace(self.exploits[-1], after=verdict)  # the one ``_exploit`` recorded
        return TrialScheduler.NOOP

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        # Ray's PBT refuses a search algorithm (one that samples new points would fight explore). gantune's
        # searcher only draws the initial population from the Optuna study and tells it each ending.
        super().on_trial_add(WithoutSearcher(tune_controller), trial)  # type: ignore[arg-type]

    def _get_new_config(self, trial: Trial, trial_to_clone: Trial) -> tuple[dict[str, Any], dict[str, Any]]:
        """The donor's explored hyperparameters and its recipe (a clone of a warm-start recipe's member trains
        with the recipe's overrides: without them the next explore rebuilt every candidate without them, saw the
        optimiser kind change, and dropped every change), under the member's own identity."""
        explored, operations = super()._get_new_config(trial, trial_to_clone)  # explores the donor's config
        taken = {k: explored[k] for k in ("params", "trial", RECIPE_KEY, OVERRIDES_KEY) if k in explored}
        return {**trial.config, **taken}, operations

    def _checkpoint_or_exploit(self, trial: Trial, tune_controller: Any, upper_quantile: list[Trial],
                               lower_quantile: list[Trial]) -> None:
        """PBT's own exploit of a low score clones only a donor whose checkpoint is at or past the member's step.
        In a population that takes turns, a member ranked against a paused donor's older score cloned that
        donor's older checkpoint, trained back up, ranked low again and cloned it again: 144 clones in a search
        of two 200-step members (50 s for 2 s of budget), with the summary's trial-steps none the wiser."""
        self._keep_latest(upper_quantile)
        if trial in lower_quantile:
            now = member_state(self, trial).last_train_time
            upper_quantile = [top for top in upper_quantile if self._checkpoint_step(top) >= now]
            if not upper_quantile:
                lower_quantile = []  # nobody to clone without going back: the member trains on as it is
        super()._checkpoint_or_exploit(trial, tune_controller, upper_quantile, lower_quantile)

    def _keep_latest(self, upper_quantile: list[Trial]) -> None:
        """Ray's PBT keeps a checkpoint only for a member it found in the top quantile at that member's own
        decision; in a population that takes turns, the first decisions see too few scored members for that,
        and every exploit of such a donor is skipped ("no checkpoint"). Each gantune evaluation reports a
        checkpoint: a top member without a kept one is cloned from its latest."""
        for top in upper_quantile:
            state = member_state(self, top)
            if state.last_checkpoint is None and top.checkpoint is not None:
                state.last_checkpoint = top.checkpoint

    def drop_copies(self) -> None:
        """Delete the checkpoint copies clones restored from, at the search's end (deleting a member's earlier copy
        at its next exploit failed a member Tune later restored from that copy)."""
        for fs, path in self._copies:
            with contextlib.suppress(OSError):
                fs.delete_dir(path)
        self._copies.clear()

    def _checkpoint_step(self, donor: Trial) -> int:
        """The step of the checkpoint a clone of ``donor`` trains on from (its ``origin.json``), else the step
        of the donor's last decision."""
        state = member_state(self, donor)
        path = getattr(state.last_checkpoint, "path", None)
        if path is not None and (origin := Path(path) / ORIGIN).is_file():
            return int(json.loads(origin.read_text())["step"])
        return int((state.last_result or {}).get("step", state.last_train_time))

    def _exploit(self, tune_controller: Any, trial: Trial, trial_to_clone: Trial) -> None:
        """Ray's exploit, from a copy of the donor's checkpoint (``pinned``): Tune keeps each member's last few
        (``num_to_keep``), and with members side by side the donor trained on and Tune deleted the one its clone
        was to start from ("Could not recover from checkpoint as it does not exist on storage anymore"). A
        checkpoint gone already is no exploit: the member trains on as it is."""
        now = int(member_state(self, trial).last_train_time)  # the exploit moves it to the donor's
        before = trial.config["trial"]
        donor = member_state(self, trial_to_clone)
        kept, step = donor.last_checkpoint, self._checkpoint_step(trial_to_clone)
        try:
            donor.last_checkpoint = pinned(kept, f"{trial.trial_id}-{len(self.exploits)}")
        except OSError as err:  # gone already (FileNotFoundError), or a full disk: no exploit
            warn(f"PBT: trial {trial.config.get('number', trial.trial_id)} does not clone trial "
                 f"{trial_to_clone.config.get('number', trial_to_clone.trial_id)}: its checkpoint could not be "
                 f"copied ({first_line(err)})")
            return
        try:
            super()._exploit(tune_controller, trial, trial_to_clone)
        finally:
            copied, donor.last_checkpoint = donor.last_checkpoint, kept
        if (path := getattr(copied, "path", None)) is not None:
            self._copies.append((copied.filesystem, path))
        self.exploits.append(Exploit(trial.trial_id, trial_to_clone.trial_id, step,
                                     dict(trial.config["params"]), dict(trial_to_clone.config["params"]),
                                     trial.config["trial"], from_step=now, took=taken(before, trial.config["trial"])))


def pinned(checkpoint: Any, name: str) -> Any:
    """A copy of a Tune checkpoint (on its own file system) beside it, named ``clone-<name>``: Tune never deletes
    it (it tracks only the checkpoints members reported). What is not a stored checkpoint is returned as it is."""
    path, fs = getattr(checkpoint, "path", None), getattr(checkpoint, "filesystem", None)
    if path is None or fs is None:
        return checkpoint
    import pyarrow.fs  # Ray's own storage layer: installed with it

    if fs.get_file_info(path).type == pyarrow.fs.FileType.NotFound:
        raise FileNotFoundError(path)
    copy = posixpath.join(posixpath.dirname(path.rstrip("/")), f"clone-{name}")
    try:
        fs.create_dir(copy, recursive=True)  # copy_files makes the folders of subfolders only
        pyarrow.fs.copy_files(path, copy, source_filesystem=fs, destination_filesystem=fs)
    except OSError:  # a full disk: no part of a copy stays
        with contextlib.suppress(OSError):
            fs.delete_dir(copy)
        raise
    return type(checkpoint)(path=copy, filesystem=fs)


#: the Optuna states of the trials an earlier invocation ended: what ASHA's rungs held of them
ENDED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)


def make_scheduler(space: SearchSpace, stopped: dict[str, AshaStop], exploits: list[Exploit],
                   rescues: list[tuple[str, Rescue]] | None = None,
                   study: optuna.Study | None = None, slots: int = 0) -> TrialScheduler:
    """PBT (decisions every ``pbt.interval_evals`` evaluations), or ASHA with rungs at evaluation steps
    (grace = ``grace_evals`` evaluations; noise-aware with ``pruning.noise_aware``, its rescues appended to
    ``rescues``), or FIFO when ASHA is off. ASHA's rungs start with what ``study``'s ended trials reported at them
    (a resumed search's ASHA started empty: the first trial at each rung went on whatever its value, and trials
    worse than the cutoff that had stopped an earlier one ran their whole budget). A multi-objective study keeps
    no values by step (Optuna's ``report`` is single-objective): there the rungs start empty. ``slots``: the trials
    the cluster runs at once, which PBT fills before it pauses a member for another."""
    scheduler = _scheduler(space, stopped, exploits, rescues, slots)
    if isinstance(scheduler, AsyncHyperBandScheduler) and study is not None and len(study.directions) == 1:
        for t in study.get_trials(deepcopy=False, states=ENDED):
            record_at_rungs(scheduler, f"study-trial-{t.number}", t.intermediate_values)
    return scheduler


def _scheduler(space: SearchSpace, stopped: dict[str, AshaStop], exploits: list[Exploit],
               rescues: list[tuple[str, Rescue]] | None, slots: int) -> TrialScheduler:
    settings = space.settings
    p = settings.pruning
    mode = settings.mode
    if p.scheduler == "pbt":
        # only evaluation reports carry the objective and a checkpoint: log reports pass (require_attrs off)
        return RecordingPBT(exploits, settings.max_steps, slots, time_attr="step", metric="objective", mode=mode,
                            perturbation_interval=p.pbt.interval_evals * settings.eval_every,
                            quantile_fraction=p.pbt.quantile, custom_explore_fn=Explorer(space, settings.seed),
                            require_attrs=False)
    if not p.asha:
        return FIFOScheduler()
    if settings.idle_scheduler():
        return FIFOScheduler()  # no rung before the end of the budget (the search warned)
    # max_t just under the budget: no rung at the last step, where a trial has already spent everything
    asha: dict[str, Any] = {"time_attr": "step", "metric": "objective", "mode": mode,
                            "max_t": settings.max_steps - 1, "grace_period": p.grace_evals * settings.eval_every,
                            "reduction_factor": p.reduction_factor, "stop_last_trials": False}
    if p.noise_aware:
        return NoiseAwareASHA(stopped, noise_margin=p.noise_margin, rescues=rescues, **asha)
    return RecordingASHA(stopped, **asha)


def taken(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What of ``_frozen`` a clone's config ``after`` has other than the member's own ``before`` (a member sampled
    at z_dim 4 trains the donor's z_dim 2 from its clone on), by dotted key, with ``after``'s value. Compared with
    the schema's defaults filled in: a recipe's member spells out keys that others leave unset."""
    try:
        mine, theirs = (_frozen(_resolved(parse_config(raw))) for raw in (before, after))
    except ConfigError:
        return {}
    return {key: value for key, value in theirs.items() if mine.get(key) != value}


def _resolved(cfg: TrialConfig) -> dict[str, Any]:
    """The config as a mapping with the defaults and ``model.arch: auto`` resolved."""
    out = cfg.to_dict()
    out["model"]["arch"] = resolve_arch(cfg)
    return out



def _frozen(raw: dict[str, Any]) -> dict[str, Any]:
    """What a cloned checkpoint cannot change, by dotted key: networks and data, loss kind, optimiser kind, EMA
    on/off."""
    loss, optim = raw.get("loss") or {}, raw.get("optim") or {}
    return {**{f"{s}.{k}": v for s in FROZEN_SECTIONS for k, v in (raw.get(s) or {}).items()},
            "loss.name": loss.get("name"), "optim.name": optim.get("name"), "optim.ema": bool(optim.get("ema", 0))}


class Explorer:
    """Ray Tune's ``custom_explore_fn``: ``config["params"]`` (the Optuna parameters) perturbed, and
    ``config["trial"]`` derived again from them."""

    def __init__(self, space: SearchSpace, seed: int = 0) -> None:
        self.space = space
        self.names = space.mutable_params()
        self.probability = space.settings.pruning.pbt.resample_probability
        self.rng = random.Random(seed)

    def perturb(self, name: str, value: Any) -> Any:
        """Resample with ``resample_probability``; else x0.8 / x1.2 (clipped to the range) or a neighbouring
        choice, as Ray Tune's PBT does."""
        spec = self.space.params.get(name) or self.space.leaves[name]
        resample = self.rng.random() < self.probability
        if isinstance(spec, CategoricalSpec):
            choices = spec.choices
            if resample or value not in choices:
                return self.rng.choice(choices)
            i = choices.index(value) + self.rng.choice((-1, 1))
            return choices[min(max(i, 0), len(choices) - 1)]
        assert isinstance(spec, (FloatSpec, IntSpec))
        lo, hi = spec.range
        if resample:  # an int's ends as likely as its other values: half a step more each way before rounding
            a, b = (lo - spec.step / 2, hi + spec.step / 2) if isinstance(spec, IntSpec) else (lo, hi)
            return self._snap(spec, math.exp(self.rng.uniform(math.log(a), math.log(b))) if spec.log
                              else self.rng.uniform(a, b))
        factor = self.rng.choice(FACTORS)
        new = self._snap(spec, value * factor)
        if new == value and spec.step is not None:  # x0.8 / x1.2 of 1 or 2 rounds back to it: a step that way
            new = self._snap(spec, value + (spec.step if factor > 1 else -spec.step))
        return new

    @staticmethod
    def _snap(spec: FloatSpec | IntSpec, new: float) -> Any:
        """``new`` clipped to the range and on its ``step`` grid, as every draw is (Optuna warns off it, and TPE
        reads it); an int's as an int."""
        lo, hi = spec.range
        new = min(max(new, lo), hi)
        if spec.step is not None:
            new = lo + min(round((new - lo) / spec.step), math.floor((hi - lo) / spec.step + 1e-9)) * spec.step
            new = min(max(float(f"{new:.12g}"), lo), hi)  # 0.1 + 2 * 0.1 is 0.30000000000000004, past 0.3
        return round(new) if isinstance(spec, IntSpec) else float(new)

    def derive(self, params: dict[str, Any], overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """The config of ``params``, with the member's recipe overrides (``gantune.sampling.warm``) kept."""
        return self.space.sample(optuna.trial.FixedTrial(params), overrides)  # type: ignore[arg-type]

    def __call__(self, config: dict[str, Any]) -> dict[str, Any]:
        params = dict(config["params"])
        raw = config["trial"]
        for name in self.names:
            if name not in params:  # switched off by its ``when`` in this member
                continue
            trial_params = {**params, name: self.perturb(name, params[name])}
            try:
                candidate = self.derive(trial_params, config.get("recipe_overrides"))
                config_from_dict(candidate, "explore")  # a member whose config fails would fail at once
            except (ValueError, TypeError, ArithmeticError, ConfigError):
                # a ``when`` now asks for a parameter this member never had, an expression fails at the new value
                # (``0.1 / (ratio - 1)`` at a ratio clipped to 1), or a key leaves its bounds: not this change
                continue
            if _frozen(candidate) == _frozen(raw):
                params, raw = trial_params, candidate
        return {**config, "params": params, "trial": raw}
