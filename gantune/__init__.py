"""gantune: hyperparameter search for GANs.

Optuna samples the space, Ray Tune schedules the trials, health verdicts prune collapsed or diverging
runs early, and MLflow records everything. ``gantune.trial.train`` runs one configured GAN.
"""

from gantune.config import TrialConfig, config_from_dict, load_config
from gantune.errors import ConfigError, DataError, GantuneError

__version__ = "0.1.0"

__all__ = ["ConfigError", "DataError", "GantuneError", "TrialConfig", "__version__", "config_from_dict",
           "load_config"]
