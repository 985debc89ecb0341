"""The Ray internals gantune relies on, in one place (``tests/search/test_ray_private.py`` fails loudly when a
Ray release changes one of them).

Ray Tune's ``PopulationBasedTraining`` has no public hooks for what gantune's PBT needs: a member that keeps its
identity when it takes a donor's config (``_get_new_config``), a top member cloned from its latest checkpoint
(``_checkpoint_or_exploit`` and the per-member ``_trial_state``), each exploit recorded (``_exploit``), and a
searcher beside it that only draws the first population (``on_trial_add`` refuses any search algorithm). Ray
also has no public call to ask whether a local auth token exists (``ray._raylet``).
"""

from __future__ import annotations

from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import PopulationBasedTraining

#: the private methods of ``PopulationBasedTraining`` that ``RecordingPBT`` overrides, with their parameters
PBT_OVERRIDES: dict[str, tuple[str, ...]] = {
    "_get_new_config": ("self", "trial", "trial_to_clone"),
    "_checkpoint_or_exploit": ("self", "trial", "tune_controller", "upper_quantile", "lower_quantile"),
    "_exploit": ("self", "tune_controller", "trial", "trial_to_clone"),
}


def member_state(pbt: PopulationBasedTraining, trial: Trial) -> Any:
    """PBT's record of one member: its ``last_checkpoint`` (what a clone starts from) and ``last_result``."""
    return pbt._trial_state[trial]


class WithoutSearcher:
    """The Tune controller as PBT's ``on_trial_add`` sees it: without a search algorithm."""

    search_alg = None

    def __init__(self, controller: Any) -> None:
        self._controller = controller

    def __getattr__(self, name: str) -> Any:
        return getattr(self._controller, name)


def has_local_token() -> bool:
    """Whether a Ray auth token is where Ray looks for one (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``,
    ``~/.ray/auth_token``), whatever the auth mode says."""
    from ray._raylet import AuthenticationTokenLoader  # type: ignore[attr-defined]  # not in its stub

    return bool(AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True))


def reload_config() -> None:
    """Make Ray read its config (``RAY_AUTH_MODE``…) again: it reads it once, at import."""
    from ray._raylet import Config  # type: ignore[attr-defined]  # not in its stub

    Config.initialize("")
