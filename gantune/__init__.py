"""gantune: hyperparameter search for GANs.

Optuna samples the space, Ray Tune schedules the trials, health verdicts prune collapsed or diverging
runs early, and MLflow records everything. ``gantune.trial.train`` runs one configured GAN.

``load_config`` and ``config_from_dict`` check names against the registries of the layers (torch and all), so
they are imported on first use: ``import gantune.config`` stays the schema alone.
"""

from typing import Any

from gantune.errors import ConfigError, DataError, GantuneError

__version__ = "0.1.0"

__all__ = ["ConfigError", "DataError", "GantuneError", "TrialConfig", "__version__", "config_from_dict",
           "load_config"]


def __getattr__(name: str) -> Any:
    # the schema too on first use: ``python -m gantune`` imports this package before its ``__main__`` can take the
    # working folder off the path, where a yaml.py of the user's was imported in place of PyYAML
    if name == "TrialConfig":
        from gantune.config import TrialConfig

        return TrialConfig
    if name in ("config_from_dict", "load_config"):
        from gantune import catalogue

        return getattr(catalogue, name)
    raise AttributeError(f"module 'gantune' has no attribute {name!r}")
