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
