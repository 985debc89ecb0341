"""The Ray internals gantune relies on, in one place (``tests/search/test_ray_private.py`` fails loudly when a
Ray release changes one of them).

Ray Tune's ``PopulationBasedTraining`` has no public hooks for what gantune's PBT needs: a member that keeps its
identity when it takes a donor's config (``_get_new_config``), a top member cloned from its latest checkpoint
(``_checkpoint_or_exploit`` and the per-member ``_trial_state``), each exploit recorded (``_exploit``), a member
ended by a health verdict cloning a top one at once (the population's ranking, ``_quantiles``), and a
searcher beside it that only draws the first population (``on_trial_add`` refuses any search algorithm). Ray
also has no public call to ask whether a local auth token exists (``ray._raylet``). ``AsyncHyperBandScheduler``
does not say at which rung, against which cutoff, it decides a result (``NoiseAwareASHA`` needs both):
``asha_rung`` reads them from its brackets (``_trial_info``, ``_Bracket._rungs``, ``_Bracket.cutoff``), and a
stop it turns into CONTINUE is taken back from ASHA's count (``_num_stopped``). ASHA has no call to start from
results it did not see: a resumed search's earlier trials are written into its rungs (``record_at_rungs``).
"""

from __future__ import annotations

import math
from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import AsyncHyperBandScheduler, PopulationBasedTraining

#: the private methods of ``PopulationBasedTraining`` that ``RecordingPBT`` overrides, with their parameters
PBT_OVERRIDES: dict[str, tuple[str, ...]] = {
    "_get_new_config": ("self", "trial", "trial_to_clone"),
    "_checkpoint_or_exploit": ("self", "trial", "tune_controller", "upper_quantile", "lower_quantile"),
    "_exploit": ("self", "tune_controller", "trial", "trial_to_clone"),
}


def asha_rung(asha: AsyncHyperBandScheduler, trial: Trial, result: dict[str, Any]) -> tuple[float, float | None] | None:
    """Where ASHA's ``on_trial_result`` will decide ``result``: the rung's milestone and its cutoff then, in the
    metric's own units (None while the rung has recorded nobody); None when it decides nothing there.

    Read before the call, which records the result at that rung: the walk of ``_Bracket.on_result`` (the rungs
    from the highest milestone down; a trial decided once per rung; with ``stop_last_trials`` off, never again
    once recorded at a rung it has reached), and its cutoff in the ``metric_op * value`` space ASHA ranks in.
    """
    time_attr, metric, op = asha._time_attr, asha._metric, asha._metric_op
    if time_attr not in result or metric not in result or op is None:
        return None
    t = result[time_attr]
    if t >= asha._max_t and asha._stop_last_trials:
        return None
    bracket = asha._trial_info[trial.trial_id]
    for milestone, recorded in bracket._rungs:
        if t >= milestone and trial.trial_id in recorded and not bracket._stop_last_trials:
            return None
        if t < milestone or trial.trial_id in recorded:
            continue
        cutoff = bracket.cutoff(recorded)
        return float(milestone), None if cutoff is None else float(op * cutoff)
    return None


def record_at_rungs(asha: AsyncHyperBandScheduler, key: str, values: dict[int, float]) -> None:
    """Record ``values`` (step -> objective, a trial of an earlier invocation of the search) at each of ASHA's
    rungs whose milestone has one, in every bracket, as ASHA would have recorded that trial's reports there (in its
    ``metric_op * value`` space, under ``key``, an id no running trial has)."""
    op = asha._metric_op
    for bracket in asha._brackets:
        for milestone, recorded in bracket._rungs:
            value = values.get(int(milestone))
            if value is not None and math.isfinite(value) and op is not None:
                recorded[key] = op * value


def take_back_stop(asha: AsyncHyperBandScheduler) -> None:
    """ASHA counted the stop it decided (``num_stopped`` in its status line); a stop turned into CONTINUE is not
    one."""
    asha._num_stopped -= 1


def member_state(pbt: PopulationBasedTraining, trial: Trial) -> Any:
    """PBT's record of one member: its ``last_checkpoint`` (what a clone starts from) and ``last_result``."""
    return pbt._trial_state[trial]


def quantiles(pbt: PopulationBasedTraining) -> tuple[list[Trial], list[Trial]]:
    """PBT's bottom and top members by their last scores (both empty while fewer than two are scored)."""
    lower, upper = pbt._quantiles()
    return list(lower), list(upper)


class WithoutSearcher:
    """The Tune controller as PBT's ``on_trial_add`` sees it: without a search algorithm."""

    search_alg = None

    def __init__(self, controller: Any) -> None:
        self._controller = controller

    def __getattr__(self, name: str) -> Any:
        return getattr(self._controller, name)


def has_local_token() -> bool:
    """Whether a Ray auth token is where Ray looks for one (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``,
    ``~/.ray/auth_token``), whatever the auth mode says. ``False`` on a Ray without token authentication (before
    about 2.52; gantune takes 2.41 on)."""
    try:
        from ray._raylet import AuthenticationTokenLoader  # type: ignore[attr-defined]  # not in its stub
    except ImportError:
        return False
    return bool(AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True))


def reload_config() -> None:
    """Make Ray read its config (``RAY_AUTH_MODE``…) again: it reads it once, at import."""
    from ray._raylet import Config  # type: ignore[attr-defined]  # not in its stub

    Config.initialize("")
