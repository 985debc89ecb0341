"""Database URLs, shared by the Optuna study and MLflow's tracking store (both sqlite by default).

Here rather than beside either, so the tracking side does not import Optuna to read a path.
"""

from __future__ import annotations

from pathlib import Path


def absolute_sqlite(uri: str) -> str:
    """``sqlite:///relative.db`` -> ``sqlite:////abs/path/relative.db``; other URIs unchanged."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/") and ":memory:" not in uri:
        return prefix + str((Path.cwd() / uri.removeprefix(prefix)).resolve())
    return uri


def sqlite_file(storage: str) -> Path | None:
    """The database file of a ``sqlite:///`` storage URL (``None`` for other storages and in-memory sqlite)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(storage)
    except ArgumentError:
        return None
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


def check_apart(storage: str, tracking_uri: str | None) -> None:
    """One sqlite file for the Optuna study and MLflow's store broke both: each migrates its own schema into it,
    and Optuna then refused the file as made by a newer Optuna (MLflow's alembic version)."""
    from gantune.errors import GantuneError

    study = sqlite_file(absolute_sqlite(storage))
    tracking = sqlite_file(absolute_sqlite(tracking_uri)) if tracking_uri else None
    if study is not None and tracking is not None and study.resolve() == tracking.resolve():
        raise GantuneError(f"--tracking-uri {tracking_uri}: the file of the Optuna storage ({study}); give MLflow a "
                           "database of its own, e.g. sqlite:///mlflow.db")
