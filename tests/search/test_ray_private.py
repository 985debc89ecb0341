"""Each Ray internal gantune's PBT uses, checked against the installed Ray: a release that renames a method,
changes its parameters or drops the per-member state fails here, by name, instead of mid-search."""

from __future__ import annotations

import inspect

import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import PopulationBasedTraining
from ray.tune.search import Searcher, SearchGenerator

from gantune.search.ray_private import PBT_OVERRIDES, WithoutSearcher, has_local_token, member_state
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
