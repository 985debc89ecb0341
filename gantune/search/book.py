"""The driver's record of a search: each trial's ending (status, reason, sample grids as Optuna artifacts), the Optuna
tell, progress lines.

Runs as a Ray Tune ``Callback`` in the driver process, so it is the one place that sees every trial's last
result and error text. It can forward each event to observers (the MLflow tracker) in the same process.
"""

from __future__ import annotations

import base64
import json
import math
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
from ray.tune import Callback
from ray.tune.experiment import Trial

from gantune import provenance
from gantune.config import parse_config
from gantune.errors import ConfigError
from gantune.events import (
    REASON_KEY,
    RULE_KEY,
    RUN_FACTS,
    STATUS_KEY,
    Observer,
    Status,
    TrialOutcome,
    first_line,
    format_params,
    warn,
)
from gantune.health import EVAL_SECONDS
from gantune.metrics import metric_keys
from gantune.progress import Meter, eta_text, rate_text
from gantune.sampling.artifacts import store_grids
from gantune.sampling.settings import sign_of
from gantune.sampling.space import numbered
from gantune.sampling.study import (
    FINISHED,
    NO_VALUE,
    best_trial,
    has_value,
    logged_params,
    ranked,
    report_intermediate,
    tell,
    trial_status,
)
from gantune.search.scheduler import RESCUED_ATTR, AshaStop, Exploit, Rescue
from gantune.search.trainable import FILES_KEY, unpack_files


def outcome_of(number: int, last: dict[str, Any], error: str | None, asha: AshaStop | None,
               objectives: list[str]) -> TrialOutcome:
    """One trial's ending from what the driver saw: its own final report, an ASHA stop, or an error (``error``:
    its trace as Tune kept it)."""
    steps = int(last.get("step", 0) or 0)
    metrics = {k.removeprefix("final/"): float(v) for k, v in last.items()
               if k.startswith("final/") and isinstance(v, (int, float))}
    if error is not None:
        if any(says in error for says in MEMORY_KILLED):  # a property of the config, as in-process OOM is
            return TrialOutcome(number, Status.FAILED_OOM, f"out of memory at step {steps}: Ray's memory monitor "
                                "killed the trial (its node ran low on memory)", steps, None)
        return TrialOutcome(number, Status.FAILED, _last_line(error), steps, None)
    if STATUS_KEY in last:
        status, reason = Status(last[STATUS_KEY]), str(last.get(REASON_KEY, ""))
        values = [metrics[o] for o in objectives] if all(o in metrics for o in objectives) else None
        if status == Status.COMPLETED and not has_value(values):
            # the study closes it FAIL (``tell``): counted, listed and reported as completed, it beat the best
            return TrialOutcome(number, Status.FAILED, NO_VALUE, steps, None, metrics)
        return TrialOutcome(number, status, reason, steps, values, metrics, rule=str(last.get(RULE_KEY, "")))
    if asha is not None:
        return TrialOutcome(number, Status.PRUNED_ASHA, asha.reason, asha.step, None, rule="asha")
    return TrialOutcome(number, Status.FAILED, "the trial ended without a final report", steps, None)


def run_facts(last: dict[str, Any]) -> dict[str, float]:
    """The trial's wall seconds and evaluation share (``RUN_FACTS``) from its last report: the final one carries
    them; a trial the scheduler stopped sent none, and its last record's running ``wall_s`` and ``eval_s`` give
    them (its study and MLflow records had neither)."""
    facts = {k: float(last[k]) for k in RUN_FACTS if isinstance(last.get(k), (int, float))}
    wall, evaluating = last.get("wall_s"), last.get(EVAL_SECONDS)
    if "trial_wall_s" not in facts and isinstance(wall, (int, float)) and wall > 0:
        facts["trial_wall_s"] = float(wall)
        if isinstance(evaluating, (int, float)):
            facts["eval_fraction"] = float(evaluating) / float(wall)
    return facts


def rung_metrics(raw: dict[str, Any], last: dict[str, Any]) -> dict[str, float]:
    """What an ASHA-stopped trial measured last: the metrics of the evaluation report its rung read (it sends no
    final report, and its Optuna attributes had none while its MLflow run had them)."""
    try:  # the schema alone: the trial ran, so its config passed every check (the data's, on disk, too)
        keys = metric_keys(parse_config(raw, "rung"))
    except ConfigError:
        return {}
    return {k: float(last[k]) for k in keys if isinstance(last.get(k), (int, float))}


#: how Ray says its memory monitor killed a trial's worker, an actor's death (``Worker exit type``) or a task's
#: ``OutOfMemoryError``: the trial ran its node out of host memory, in another process than the trial's own
#: out-of-memory handling (``failed:oom``); it read as a plain ``failed``, which Optuna's samplers ignore, so they
#: went on drawing configs too large to fit
MEMORY_KILLED = ("Worker exit type: NODE_OUT_OF_MEMORY", "killed due to the node running low on memory")


def _error_text(trial: Trial) -> str:
    """The trial's error trace: from Tune's storage, else from the driver's own copy (Tune calls
    ``on_trial_error`` before that file reaches storage, where ``get_error`` looks)."""
    text = str(trial.get_error() or "")
    local = trial.error_file
    if not text and local and Path(local).is_file():
        text = Path(local).read_text(errors="replace")
    return text


#: what ends some torch errors' messages after the error itself: the C++ stack (``Exception raised from``, its
#: ``frame #N`` lines) and CUDA's advice (on asynchronous errors, CUDA_LAUNCH_BLOCKING, TORCH_USE_CUDA_DSA)
_TORCH_TAIL = re.compile(r"(?:\nException raised from [^\n]*|\nframe #[^\n]*|\n<[^\n]*>|\n[ \t\"')]*|"
                         r"\nCUDA kernel errors might be [^\n]*|\nFor debugging consider passing [^\n]*|"
                         r"\nCompile with `TORCH_USE_CUDA_DSA`[^\n]*)+\Z")


def _last_line(text: str) -> str:
    """The last line of an error trace (gantune's own errors say what to fix in their message: their class path
    is noise in a report), before the C++ stack torch puts in some messages (``Exception raised from ...``: the
    reason read as its last line, a lone quote)."""
    lines = [ln.strip() for ln in _TORCH_TAIL.sub("", text.strip()).splitlines() if ln.strip()]
    return re.sub(r"^gantune\.errors\.\w+: ", "", lines[-1]) if lines else "unknown error"


class SearchBook(Callback):
    def __init__(self, study: optuna.Study, trials: dict[str, optuna.Trial], asha_stopped: dict[str, AshaStop],
                 objectives: list[str], directions: list[str], total: int, done_before: int,
                 observers: Sequence[Observer] | None = None, quiet: bool = False,
                 clock: Callable[[], float] = time.monotonic, exploits: list[Exploit] | None = None,
                 grids_dir: Path | None = None, max_steps: int = 0,
                 rescues: list[tuple[str, Rescue]] | None = None,
                 label: Callable[[int, dict[str, Any]], str] | None = None) -> None:
        self.study = study
        # how a line names a trial (export's re-runs: by the trial and seed they re-run)
        self.label = label or numbered
        self.labels: dict[int, str] = {}
        self.trials = trials
        self.asha_stopped = asha_stopped
        self.exploits = exploits if exploits is not None else []
        self.rescues = rescues if rescues is not None else []  # noise-aware ASHA's (trial id, Rescue), in order
        self.lineage: dict[int, list[dict[str, Any]]] = {}
        self.objectives = objectives
        self.sign = sign_of(directions[0])
        self.total = total
        self.observers = list(observers or [])
        self.quiet = quiet
        self.clock = clock
        self.t0 = clock()
        self.last_print = 0.0
        self.counts: Counter[str] = Counter()
        self.done_before = done_before
        self.outcomes: dict[int, TrialOutcome] = {}
        self.running: set[int] = set()
        self.best: TrialOutcome | None = None
        self._count_earlier()
        #: where each trial's sample grids go as Optuna artifacts at its ending (``None``: not kept)
        self.grids_dir = grids_dir
        #: per running trial: the base64 PNG of its last evaluation ("evaluation") and of its stop ("stop")
        self.grids: dict[int, dict[str, str]] = {}
        self.max_steps = max_steps  # each trial's budget: the progress line's ETA (0: no ETA)
        self.at_step: dict[int, int] = {}  # the last step each trial of this run reported
        #: each trial's best evaluation of the first objective so far: a stopped trial's line shows it (Optuna's
        #: value of a pruned trial is its last, which the report, export and README never call its result)
        self.best_seen: dict[int, float] = {}
        self.steps_done = 0  # trial-steps this run trained, over every trial
        self.meter = Meter(clock)

    def _count_earlier(self) -> None:
        """A resumed search's progress line counts the trials finished before it, and its best so far starts at
        theirs (it named this run's best, which the summary then contradicted)."""
        for t in self.study.get_trials(deepcopy=False, states=FINISHED):
            self.counts[trial_status(t)] += 1
        if ranked(self.study)[1] is None and (best := best_trial(self.study)) is not None:  # else: not comparable
            self.best = TrialOutcome(best.number, Status.COMPLETED, "", int(best.user_attrs.get("steps", 0)),
                                     list(best.values))
            self.labels[best.number] = self.label(best.number, best.params)

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles its callbacks with the experiment state; the observers (threads, clients) and the study
        (whose sampler may hold a lock, as Optuna's NSGA-II does) stay behind. gantune resumes from the Optuna
        study, never from Tune's state."""
        return {**self.__dict__, "observers": [], "study": None, "label": None}

    # -- Ray Tune callback hooks ---------------------------------------------------------------------------
    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._record_exploits()
        ot = self.trials.get(trial.trial_id)
        if ot is None or ot.number in self.running:  # a PBT member restarting (paused, or cloned another)
            return
        self.running.add(ot.number)
        self._notify("trial_started", ot.number, logged_params(ot), trial.config["trial"])
        if trial.config.get("recipe"):  # a warm start (gantune.sampling.warm)
            self._notify("trial_recipe", ot.number, trial.config["recipe"])
        self._progress()

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict[str, Any],
                        **info: Any) -> None:
        ot = self.trials.get(trial.trial_id)
        files = result.pop(FILES_KEY, None)  # kept out of Tune's memory and experiment state
        if files:
            try:
                unpack_files(files, Path(trial.config["run_dir"]))
            except OSError as err:  # the driver's disk full, say: the search goes on, the trial's files short
                warn(f"trial {ot.number if ot is not None else trial.trial_id}: its files could not be written "
                     f"here ({type(err).__name__}: {first_line(err)}); the search goes on")
        if isinstance(measured := result.get(provenance.KEY), str):
            result[provenance.KEY] = json.loads(measured)
            if ot is not None:
                ot.set_user_attr(provenance.ATTR, result[provenance.KEY])
        if ot is not None and isinstance(png := result.get("samples_png"), str):
            # the final report's grid is the step the trial stopped at; any other comes with an evaluation
            self.grids.setdefault(ot.number, {})["stop" if STATUS_KEY in result else "evaluation"] = png
        if ot is not None:
            self._count_steps(ot.number, int(result.get("step", 0) or 0))
            value = result.get("objective")  # an evaluation's first objective, as Optuna is told it
            if isinstance(value, (int, float)) and math.isfinite(value) and (
                    ot.number not in self.best_seen or self.sign * value < self.sign * self.best_seen[ot.number]):
                self.best_seen[ot.number] = float(value)
            self._notify("trial_result", ot.number, dict(result))  # Tune goes on adding keys to its own
        self._progress(periodic=True)

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._finish(trial, None)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._finish(trial, _error_text(trial))

    # -- bookkeeping ----------------------------------------------------------------------------------------
    def _record_exploits(self) -> None:
        """PBT's exploits since the last call, into the study (``pbt_lineage``; ``config`` becomes the config the
        member trains on now, which export reads) and to the observers. Optuna's params stay the first sample."""
        while self.exploits:
            e = self.exploits.pop(0)
            ot, donor = self.trials.get(e.member), self.trials.get(e.donor)
            if ot is None or donor is None:
                continue
            changed = {k: v for k, v in e.params.items() if e.donor_params.get(k) != v}
            entry = {"step": e.step, "from_trial": donor.number, "params": e.params, "changed": changed}
            if e.from_step is not None:  # the member's own step: the summary counts the steps it trains again
                entry["from_step"] = e.from_step
            if e.after:  # a health verdict ended the member's previous config
                entry["after"] = e.after
            if e.took:  # its networks and data are the donor's now
                entry["took"] = e.took
            lineage = self.lineage.setdefault(ot.number, [])
            lineage.append(entry)
            ot.set_user_attr("pbt_lineage", lineage)
            ot.set_user_attr("config", e.config)
            self._notify("trial_exploited", ot.number, lineage, e.config)
            self._say(f"trial {ot.number:>3} PBT: cloned trial {donor.number} at step {e.step}"
                      + (f" after {e.after}" if e.after else "")
                      + (f"; explored {format_params(changed)}" if changed else "")
                      + (f"; took its {format_params(e.took)}" if e.took else ""))

    def _finish(self, trial: Trial, error: str | None) -> None:
        self._record_exploits()
        ot = self.trials.get(trial.trial_id)
        if ot is None or ot.number in self.outcomes:
            return
        last = dict(trial.last_result or {})
        asha = self.asha_stopped.get(trial.trial_id)
        out = outcome_of(ot.number, last, error, asha, self.objectives)
        if "error" in trial.config.get("trial", {}):
            out = TrialOutcome(ot.number, Status.FAILED, trial.config["trial"]["error"], 0, None, rule="sampling")
        if asha is not None and out.status == Status.PRUNED_ASHA:
            report_intermediate(ot, asha.objective, asha.step)  # the result Tune kept from the searcher
            out.metrics = rung_metrics(trial.config.get("trial", {}), last)
        # a trial a health verdict stopped has its evaluations in the study (the searcher reported each at its
        # step) and its stop step in ``steps``: its last objective reported again at the stop step, after its last
        # evaluation, ranked it in TPE above every trial pruned at that evaluation's step, whatever their values
        self._store_grids(ot)  # before the tell: Optuna takes no attributes from a finished trial
        facts = run_facts(last)
        if asha is not None and out.status == Status.PRUNED_ASHA and facts:  # the scheduler ended it: no final
            self._notify("trial_result", ot.number, {"step": float(out.steps), **facts})  # report carried them
        # every fact, and where noise-aware ASHA kept it (against which cutoff and noise), written when unknown or
        # empty too, so that nothing of a dead attempt of the trial (the driver killed between these attributes
        # and the tell) stays: a re-run failing before its first report kept the dead attempt's wall seconds
        attrs: dict[str, Any] = {STATUS_KEY: out.status.value, REASON_KEY: out.reason, RULE_KEY: out.rule,
                                 "steps": out.steps, "metrics": out.metrics, **{k: facts.get(k) for k in RUN_FACTS}}
        attrs[RESCUED_ATTR] = [r._asdict() for tid, r in self.rescues if tid == trial.trial_id]
        tell(self.study, ot, out.status, out.values, attrs)
        self._count_steps(ot.number, out.steps)
        self.outcomes[ot.number] = out
        self.running.discard(ot.number)
        self.counts[out.status] += 1
        if out.status == Status.COMPLETED and out.values is not None and math.isfinite(out.values[0]) and (
                self.best is None or self.sign * out.values[0] < self.sign * (self.best.values or [0])[0]):
            self.best = out
        out.artifacts = trial.config.get("run_dir")
        self._notify("trial_ended", out)
        best = self.best_seen.pop(ot.number, None)
        named = self.labels[ot.number] = self.label(ot.number, ot.params)
        self._say(f"{named} {out.status:<17} steps {out.steps:>6}"
                  + ("".join(f"  {name} {value:.4g}" for name, value in zip(self.objectives, out.values, strict=False))
                     if out.values and not out.status.pruned else "")  # every objective: the line gave the first
                  + (f"  {self.objectives[0]} {best:.4g} (best evaluation)" if out.status.pruned and best is not None
                     else "")
                  + (f"  ({out.reason})" if out.reason else ""))
        self._progress()

    def _store_grids(self, ot: optuna.Trial) -> None:
        """The trial's grids into the study's artifact store (optuna-dashboard shows them); a failure to store
        them is a warning, never the end of the search."""
        grids = {role: base64.b64decode(png) for role, png in self.grids.pop(ot.number, {}).items()}
        if self.grids_dir is None or not grids:
            return
        try:
            store_grids(ot, self.grids_dir, grids.get("evaluation"), grids.get("stop"))
        except Exception as err:
            self._say(f"warning: trial {ot.number}: sample grids not stored in {self.grids_dir}: "
                      f"{type(err).__name__}: {err}")

    def _notify(self, event: str, *args: Any) -> None:
        """Forward an event; an observer's failure (say, a tracking server gone away) never stops the search."""
        for obs in self.observers:
            handler = getattr(obs, event, None)
            if handler is None:  # an event this observer does not take (trial_recipe is optional)
                continue
            try:
                handler(*args)
            except Exception as err:
                self._say(f"warning: {type(obs).__name__}.{event} failed: {type(err).__name__}: {err}")

    def _progress(self, periodic: bool = False) -> None:
        now = self.clock()
        if periodic and now - self.last_print < 15:
            return
        self.last_print = now
        done = self.done_before + len(self.outcomes)
        counts = " ".join(f"{s}={n}" for s, n in sorted(self.counts.items()))
        named = " ".join(self.labels[self.best.number].split()) if self.best else ""  # unpadded
        best = (f"  best {self.objectives[0]} {self.best.values[0]:.4g} ({named})"
                if self.best and self.best.values else "")
        self._say(f"[{now - self.t0:6.0f}s] {done}/{self.total} done, {len(self.running)} running"
                  + (f"  | {counts}" if counts else "") + best + self._eta())

    def _count_steps(self, number: int, step: int) -> None:
        """Trial-steps trained since the last report of this trial (a trial run again from scratch counts anew)."""
        self.steps_done += max(0, step - self.at_step.get(number, 0))
        self.at_step[number] = max(step, self.at_step.get(number, 0))
        self.meter.update(self.steps_done)

    def trial_steps_left(self) -> int:
        """At most this many trial-steps to go: every trial not started yet at the full budget, every running one
        from its last reported step; ended trials (pruned ones too) need none."""
        waiting = self.total - self.done_before - len(self.outcomes) - len(self.running)
        running = sum(max(0, self.max_steps - self.at_step.get(n, 0)) for n in self.running)
        return max(0, waiting) * self.max_steps + running

    def _eta(self) -> str:
        """``  | ETA 4m10s, 30000 of 60000 trial-steps left at 120 trial-steps/s`` (the rate: this run's, over all
        trials; pruning may end it sooner)."""
        if not self.max_steps:
            return ""
        left = self.trial_steps_left()
        return (f"  | {eta_text(self.meter.eta(left))}, {left} of {self.total * self.max_steps} trial-steps left "
                f"at {rate_text(self.meter.rate, 'trial-steps')}")

    def _say(self, line: str) -> None:
        if not self.quiet:
            print(line, file=sys.stderr, flush=True)
