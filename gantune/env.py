"""Process set-up, done once by ``cli.main`` (and by code that calls ``run_search`` itself): environment
variables that Ray Tune and MLflow read, the log levels that keep their notices off the user's stderr, and SIGTERM
read as Ctrl-C (``terminate_as_interrupt``; a search sets it again after ``ray.init``).

Nothing in gantune sets these on import.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from types import FrameType

#: set whatever the user has: a search depends on them
REQUIRED = {
    # only evaluation records carry the objective; ASHA skips the others by design
    "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
    # Ctrl-C raises KeyboardInterrupt in the driver: Tune's own handler would end the search as if it had finished
    "TUNE_DISABLE_SIGINT_HANDLER": "1",
}
#: defaults the user may override
DEFAULTS = {
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",  # no CSV/JSON/TensorBoard files per trial
    "RAY_AIR_NEW_OUTPUT": "0",
    "RAY_DEDUP_LOGS": "0",
    # importing mlflow sets its loggers to this level (INFO by default), undoing LOG_LEVELS below
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    # MLflow's REST client retries a dead server for minutes by default: no tracking call waits that long
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
    # nothing goes out at run time: MLflow's telemetry (on by default since 3.x; `gantune ui`'s server too) and
    # Ray's usage statistics each sent what the run did to their makers
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "RAY_USAGE_STATS_ENABLED": "0",
}
#: files and folders named by the environment, made absolute: a relative cache made one in each trial's folder
PATHS = ("GANTUNE_INCEPTION_WEIGHTS", "GANTUNE_CACHE_DIR")
#: MLflow's INFO lines (database creation, migrations) and Ray's notices would break the one-line-error contract;
#: a failed trial's traceback from Tune is replaced by SearchBook's one line
#: (MLflow's sqlite store logs a failed write at ERROR with two tracebacks, before the tracker's one warning line;
#: a ``databricks`` URI without credentials warns of the SDK before the error gantune says in one line;
#: matplotlib warns in two lines where $HOME cannot hold its cache, and uses a temporary one)
LOG_LEVELS = {"mlflow": logging.WARNING, "mlflow.store.db.utils": logging.CRITICAL, "alembic": logging.WARNING,
              "matplotlib": logging.ERROR,
              "mlflow.utils.databricks_utils": logging.ERROR,
              "ray": logging.ERROR,
              "ray.tune.analysis.experiment_analysis": logging.ERROR, "ray.tune": logging.CRITICAL,
              "ray.train": logging.CRITICAL}


def configure() -> None:
    """Set the environment and log levels a gantune process runs with (idempotent)."""
    os.environ.update(REQUIRED)
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
    for name, level in LOG_LEVELS.items():
        logging.getLogger(name).setLevel(level)
    for key in PATHS:  # read by trials, which Ray runs in folders of their own
        if (given := os.environ.get(key)) and not os.path.isabs(os.path.expanduser(given)):
            os.environ[key] = os.path.abspath(os.path.expanduser(given))


def configured() -> bool:
    return all(os.environ.get(k) == v for k, v in REQUIRED.items())


def terminate_as_interrupt() -> None:
    """SIGTERM (``kill``, a batch scheduler's time limit, a container stop) ends a gantune command as Ctrl-C does:
    MLflow runs marked KILLED, a search left resumable, one line. Without it Python dies at once and leaves the
    runs RUNNING, and in a search Ray's driver handler (set by ``ray.init``) dumps a native stack and aborts, so
    the search sets this again after starting Ray. The main thread only (where Python runs signal handlers)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def call_group(cmd: list[str], environ: dict[str, str] | None = None) -> int:
    """Run ``cmd`` as the leader of a process group of its own and wait for it; Ctrl-C or SIGTERM here (a
    ``KeyboardInterrupt``) stops the whole group, then re-raises. ``subprocess.call`` stops only its child: ``mlflow
    ui``'s server workers and job runners outlived ``gantune ui``, holding its port."""
    import subprocess

    proc = subprocess.Popen(cmd, start_new_session=True, env=environ)
    try:
        return proc.wait()
    except BaseException:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)  # every process of the group, the leader's children included
            except (ProcessLookupError, PermissionError):
                break
            try:
                proc.wait(timeout=10)
                time.sleep(0.2)  # the group's other processes get their signal too; the leader may go first
            except subprocess.TimeoutExpired:
                continue
        raise
