"""gantune's Ray Tune ``Searcher`` over an Optuna study (ask/tell).

Unlike Ray's ``OptunaSearch``, trials stopped by gantune are told to Optuna as PRUNED with their last step
(not COMPLETE with a truncated value), failures as FAIL; the telling happens in ``SearchBook`` once the trial's
ending is known. Interrupted trials of a resumed search are handed out first, under their old numbers, with
the intermediate values of the dead attempt forgotten (they run again from step 0 in a clean directory).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from ray.tune.search import Searcher

from gantune.catalogue import config_from_dict
from gantune.errors import ConfigError
from gantune.rundir import trial_dirname
from gantune.sampling.optuna_private import stored_user_attrs
from gantune.sampling.space import SearchSpace
from gantune.sampling.study import grid_params, report_intermediate, restart_trial
from gantune.sampling.warm import OVERRIDES_KEY, RECIPE_KEY


class OptunaStudySearcher(Searcher):
    def __init__(self, space: SearchSpace, study: optuna.Study, to_create: int, resumed: list[optuna.Trial],
                 run_root: Path, ship_files: bool = False, gpu_share: float = 0.0) -> None:
        super().__init__()
        self.ship_files = ship_files
        self.gpu_share = gpu_share
        self.space = space
        self.study = study
        self.to_create = to_create
        self.resumed = list(resumed)
        self.run_root = run_root
        self.trials: dict[str, optuna.Trial] = {}  # ray trial id -> optuna trial
        self.reported: dict[str, int] = {}  # ray trial id -> last step told to Optuna

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self.resumed:
            trial = restart_trial(self.resumed.pop(0))  # it runs again from step 0, in a clean run directory
            # a driver killed between ask() and storing the config left none: sample it again (Optuna hands
            # back the values it already recorded for this trial, so the point is the same)
            # A PBT member starts again from its first sample, not from the config its dead attempt was cloned to.
            stored = stored_user_attrs(trial).get("config")
            pbt = self.space.settings.pruning.scheduler == "pbt"
            raw = stored if stored and not pbt else self._sample(trial)
            if pbt:
                trial.set_user_attr("pbt_lineage", [])
        elif self.to_create > 0:
            self.to_create -= 1
            trial = self.study.ask()
            raw = self._sample(trial)
        else:
            return Searcher.FINISHED  # type: ignore[return-value]  # Tune's sentinel string
        attrs = stored_user_attrs(trial)
        run_dir = str(self.run_root / trial_dirname(trial.number))
        trial.set_user_attr("ray_trial_id", trial_id)
        trial.set_user_attr("run_dir", run_dir)
        self.trials[trial_id] = trial
        s = self.space.settings
        return {"trial": raw, "number": trial.number, "objectives": s.objectives, "health": s.pruning.health,
                "cpus": s.resources.cpu, "gpu": self.gpu_share, "run_dir": run_dir, "ship_files": self.ship_files,
                "pbt": s.pruning.scheduler == "pbt", "params": grid_params(trial),
                RECIPE_KEY: attrs.get(RECIPE_KEY), OVERRIDES_KEY: attrs.get(OVERRIDES_KEY) or {}}

    def _sample(self, trial: optuna.Trial) -> dict[str, Any]:
        """The trial's config, stored on the trial; a space that cannot be sampled fails this trial only.

        Tune does not catch a searcher's exceptions (one would end the whole search), so every error while
        sampling becomes the trial's ``error`` and ``SearchBook`` tells it FAIL with that reason.
        """
        try:
            raw = self._with_recipe(trial)
        except ConfigError as err:  # e.g. a circular expression
            raw = {"error": str(err)}
        except Exception as err:
            raw = {"error": f"{self.space.source}: sampling failed: {type(err).__name__}: {err}"}
        try:  # the study stores it as JSON
            trial.set_user_attr("config", raw)
        except (TypeError, ValueError) as err:
            raw = {"error": f"{self.space.source}: sampling gave a config the study cannot store: {err}"}
            trial.set_user_attr("config", raw)
        return raw

    def _with_recipe(self, trial: optuna.Trial) -> dict[str, Any]:
        """The trial's config with its recipe's overrides (``gantune.sampling.warm``). Overrides that make an
        invalid config with the values the sampler drew (R1 with a batch-norm D …) are dropped, and the trial
        says so (``recipe_note``): the recipe's searched values still stand."""
        overrides = stored_user_attrs(trial).get(OVERRIDES_KEY) or {}
        raw = self.space.sample(trial, overrides)
        if overrides:
            try:
                config_from_dict(raw, f"trial {trial.number}")
            except ConfigError as err:
                trial.set_user_attr(OVERRIDES_KEY, {})
                trial.set_user_attr("recipe_note", f"recipe overrides dropped: {err}")
                raw = self.space.sample(trial)
        return raw

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if "objective" in result and trial_id in self.trials:
            step = int(result["step"])
            if step > self.reported.get(trial_id, -1):  # a PBT member may go back to a donor's earlier step
                self.reported[trial_id] = step
                report_intermediate(self.trials[trial_id], float(result["objective"]), step)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        """Telling Optuna is left to ``SearchBook``, which also sees the error text of failed trials."""

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles its searcher with the experiment state; the study stays behind (a sampler may hold a
        lock: Optuna's NSGA-II does, and the search ended in a traceback). gantune resumes from the Optuna study,
        never from Tune's state."""
        return {**self.__dict__, "study": None, "trials": {}, "resumed": []}

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the Optuna study in sqlite is the search's state (resume reads it)."""

    def restore(self, checkpoint_path: str) -> None:
        """See ``save``."""
