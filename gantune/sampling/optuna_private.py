"""The Optuna internals gantune relies on, in one place (``tests/sampling/test_optuna_private.py`` fails loudly
when an Optuna release changes one of them).

Optuna has no public call to re-open a trial by its id, to read a trial's stored attributes afresh, or to
forget the intermediate values of a trial that runs again from step 0 after its driver was killed; a resumed
search needs all three, and ``export`` creates its re-run study in the storage of the search it reads.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import FrozenTrial


def storage_of(study: optuna.Study) -> BaseStorage:
    """The storage object a study was opened on (``optuna.create_study`` takes it in place of a URL)."""
    return study._storage


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The storage's id of a trial (not its number)."""
    return trial._trial_id


def live_trial(study: optuna.Study, trial: optuna.Trial | FrozenTrial) -> optuna.Trial:
    """A fresh ``optuna.Trial`` for an existing trial: it can report and be told again (a ``Trial`` caches the
    values it has seen, so this also re-reads them)."""
    return optuna.Trial(study, trial_id(trial))


def stored_user_attrs(trial: optuna.Trial) -> dict[str, Any]:
    """The trial's user attributes as the storage holds them now."""
    return dict(storage_of(trial.study).get_trial_user_attrs(trial_id(trial)))


def clear_intermediate_values(trial: optuna.Trial) -> bool:
    """Delete the trial's reported intermediate values; whether the storage allowed it (RDB storages, sqlite
    included: a cached storage wraps one as ``_backend``)."""
    from optuna.storages._rdb import models

    storage = getattr(storage_of(trial.study), "_backend", storage_of(trial.study))
    if not isinstance(storage, RDBStorage):
        return False
    session = storage.scoped_session()
    try:
        session.query(models.TrialIntermediateValueModel).filter_by(trial_id=trial_id(trial)).delete()
        session.commit()
    finally:
        session.close()
    return True
