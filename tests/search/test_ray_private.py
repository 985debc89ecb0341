"""Each Ray internal gantune's PBT uses, checked against the installed Ray: a release that renames a method,
changes its parameters or drops the per-member state fails here, by name, instead of mid-search."""

from __future__ import annotations

import inspect
import math
import random

import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import AsyncHyperBandScheduler, PopulationBasedTraining, TrialScheduler
from ray.tune.search import Searcher, SearchGenerator

from gantune.search.ray_private import (
    PBT_OVERRIDES,
    WithoutSearcher,
    asha_rung,
    has_local_token,
    member_state,
    quantiles,
    take_back_stop,
)
from gantune.search.scheduler import RecordingPBT


def _pbt() -> PopulationBasedTraining:
    return PopulationBasedTraining(time_attr="step", metric="objective", mode="min", perturbation_interval=2,
                                   hyperparam_mutations={"lr": [0.1, 0.2]})


@pytest.mark.parametrize("name", sorted(PBT_OVERRIDES))
def test_the_overridden_methods_are_there_with_their_parameters(name: str) -> None:
    method = getattr(PopulationBasedTraining, name, None)
    assert method is not None, f"Ray's PopulationBasedTraining has no {name} any more"
    assert tuple(inspect.signature(method).parameters) == PBT_OVERRIDES[name]
    assert name in RecordingPBT.__dict__  # what the list is for: gantune overrides it


class _Controller:
    """What ``on_trial_add`` reads of Tune's controller: its search algorithm."""

    def __init__(self) -> None:
        self.search_alg = SearchGenerator(Searcher(metric="objective", mode="min"))


def test_a_member_is_added_beside_a_searcher_only_through_the_proxy() -> None:
    pbt, trial = _pbt(), Trial("__fake", config={"lr": 0.1}, stub=True)
    with pytest.raises(ValueError, match="Search algorithms cannot be used"):
        pbt.on_trial_add(_Controller(), trial)  # type: ignore[arg-type]
    pbt.on_trial_add(WithoutSearcher(_Controller()), trial)  # type: ignore[arg-type]
    state = member_state(pbt, trial)
    assert state.last_checkpoint is None and state.last_result is None  # the fields RecordingPBT reads


def test_the_token_lookup_answers() -> None:
    assert isinstance(has_local_token(), bool)


@pytest.mark.parametrize("mode", ["min", "max"])
@pytest.mark.parametrize("stop_last", [False, True])
def test_the_asha_rung_read_beforehand_is_where_asha_decides(mode: str, stop_last: bool) -> None:
    """Random streams of eight trials: ASHA stops a result exactly when ``asha_rung`` named a rung whose cutoff the
    value is worse than, and then holds the value at that rung."""
    rng = random.Random(0)
    asha = AsyncHyperBandScheduler(time_attr="step", metric="objective", mode=mode, max_t=80, grace_period=10,
                                   reduction_factor=2, stop_last_trials=stop_last)
    trials = [Trial("__fake", config={}, stub=True) for _ in range(8)]
    for t in trials:
        asha.on_trial_add(None, t)  # type: ignore[arg-type]
    sign = 1.0 if mode == "min" else -1.0
    decided, stops = 0, 0
    for step in range(10, 100, 10):
        for t in trials:
            value = rng.uniform(0, 10)
            result = {"step": float(step), "objective": value}
            rung = asha_rung(asha, t, result)
            decision = asha.on_trial_result(None, t, result)  # type: ignore[arg-type]
            worse = rung is not None and rung[1] is not None and sign * value > sign * rung[1]
            last = stop_last and step >= 80  # max_t: every trial stops, at no rung
            assert (decision == TrialScheduler.STOP) == (worse or last), (step, value, rung, decision)
            stops += worse
            if rung is not None:
                decided += 1
                held = dict(asha._brackets[0]._rungs)[rung[0]]
                assert held[t.trial_id] == -sign * value
    assert decided >= 8 * 3 and 0 < stops < decided  # at the rungs 10, 20 and 40 at least; some stopped there


def test_a_stop_taken_back_leaves_asha_counting_the_others() -> None:
    asha = AsyncHyperBandScheduler(time_attr="step", metric="objective", mode="min", max_t=10)
    asha._num_stopped = 2  # two stops decided
    take_back_stop(asha)
    assert asha.debug_string().startswith("Using AsyncHyperBand: num_stopped=1\n")


def test_the_population_ranking_is_read_from_the_last_scores() -> None:
    pbt = _pbt()
    trials = [Trial("__fake", config={"lr": 0.1}, stub=True) for _ in range(5)]
    for t in trials:
        pbt.on_trial_add(WithoutSearcher(_Controller()), t)  # type: ignore[arg-type]
    assert quantiles(pbt) == ([], [])
    member_state(pbt, trials[0]).last_score = 1.0
    assert quantiles(pbt) == ([], [])  # one scored member ranks against nobody
    for score, t in zip((3.0, -math.inf, 2.0), trials[1:4], strict=True):
        member_state(pbt, t).last_score = score
    assert quantiles(pbt) == ([trials[2]], [trials[1]])  # a quarter of four: the worst, the best


def test_a_ray_without_token_authentication_has_no_local_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by an audit: ``AuthenticationTokenLoader`` is newer than Ray 2.41, the oldest gantune takes; there
    joining a cluster on this machine raised ImportError before ``ray.init``."""
    import ray._raylet

    monkeypatch.delattr(ray._raylet, "AuthenticationTokenLoader", raising=False)  # absent before about 2.52
    assert has_local_token() is False
