"""Scheduling: ASHA on the objective, remembering which trials it stopped (to tell them apart later).

Health verdicts act inside each trial (its ``should_stop``), so a diverging or collapsing trial ends at the
first signal, without waiting for a rung; ASHA handles trials that are merely worse than their peers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler

from gantune.space import SearchSettings


@dataclass(frozen=True)
class AshaStop:
    """Where ASHA stopped a trial: Tune does not pass that result on to the searcher, so it is kept here."""

    step: int
    objective: float

    @property
    def reason(self) -> str:
        return f"ASHA: objective {self.objective:.4g} worse than the rung cutoff at step {self.step}"


class RecordingASHA(AsyncHyperBandScheduler):
    """ASHA that records the trials it stops and the step it stopped them at."""

    def __init__(self, stopped: dict[str, AshaStop], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stopped = stopped

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        if decision == TrialScheduler.STOP:
            self.stopped[trial.trial_id] = AshaStop(int(result["step"]), float(result["objective"]))
        return decision


def make_scheduler(settings: SearchSettings, stopped: dict[str, AshaStop]) -> TrialScheduler:
    """ASHA with rungs at evaluation steps (grace = ``grace_evals`` evaluations), or FIFO when it is off."""
    p = settings.pruning
    if not p.asha:
        return FIFOScheduler()
    grace = p.grace_evals * settings.eval_every
    if grace >= settings.max_steps:
        return FIFOScheduler()  # no rung before the end of the budget
    mode = "min" if settings.directions[0] == "minimize" else "max"
    # max_t just under the budget: no rung at the last step, where a trial has already spent everything
    return RecordingASHA(stopped, time_attr="step", metric="objective", mode=mode, max_t=settings.max_steps - 1,
                         grace_period=grace, reduction_factor=p.reduction_factor, stop_last_trials=False)
