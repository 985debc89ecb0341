"""Each Optuna internal gantune uses, exercised on a real sqlite study: an Optuna release that moves one fails
here, by name, instead of in a resumed search."""

from __future__ import annotations

from pathlib import Path

import optuna

from gantune.sampling.optuna_private import (
    clear_intermediate_values,
    live_trial,
    storage_of,
    stored_user_attrs,
    trial_id,
)


def _study(tmp_path: Path) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path / 'o.db'}")


def test_a_running_trial_is_reopened_read_afresh_and_its_values_forgotten(tmp_path: Path) -> None:
    study = _study(tmp_path)
    first = study.ask()
    first.report(0.5, 10)
    first.report(0.4, 20)
    study.ask()  # a second trial: ids and numbers are the storage's, not positions
    storage_of(study).set_trial_user_attr(trial_id(first), "config", {"a": 1})  # written by another handle
    assert stored_user_attrs(first) == {"config": {"a": 1}}

    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    again = live_trial(study, running[0])
    assert again.number == first.number and trial_id(again) == trial_id(running[0])

    assert clear_intermediate_values(again)
    assert study.trials[first.number].intermediate_values == {}
    reopened = live_trial(study, again)
    reopened.report(0.3, 10)  # the step can be reported again: Optuna keeps the first value per step
    study.tell(reopened, 0.3)
    assert study.trials[first.number].intermediate_values == {10: 0.3}


def test_a_study_in_memory_keeps_its_values(tmp_path: Path) -> None:
    study = optuna.create_study()
    trial = study.ask()
    trial.report(1.0, 1)
    assert not clear_intermediate_values(trial)  # nothing to clear there: the re-run reports over them
    assert study.trials[0].intermediate_values == {1: 1.0}
