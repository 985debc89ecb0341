"""Database URLs, shared by the Optuna study and MLflow's tracking store (both sqlite by default).

Here rather than beside either, so the tracking side does not import Optuna to read a path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit


def redacted(uri: str) -> str:
    """``uri`` with the password of its user part shown as ``***`` (``postgresql://alice:***@db/optuna``): what a
    search's summary, its MLflow ``summary.json`` and the commands it prints show of a storage or tracking URI,
    which every reader of the tracking server sees. A URI without one is returned as it is."""
    try:
        parts = urlsplit(uri)
        secret = parts.password
    except ValueError:  # not a URL (a port that is no number): nothing to hide that urlsplit can find
        return uri
    if not secret:
        return uri
    userinfo, host = parts.netloc.rsplit("@", 1)
    return parts._replace(netloc=f"{userinfo.split(':', 1)[0]}:***@{host}").geturl()


#: how long a command waits for a sqlite store that another process holds locked (sqlite's own default: 5 s)
BUSY_TIMEOUT_S = 60


def patient_sqlite() -> None:
    """Make every sqlite connection SQLAlchemy opens in this process (the study's, MLflow's store) wait up to
    ``BUSY_TIMEOUT_S`` for a lock another process holds: after sqlite's 5 s a write failed with "database is
    locked", and a backup or an sqlite shell holding the study for longer ended a search in a traceback."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    if not event.contains(Engine, "connect", _busy_timeout):
        event.listen(Engine, "connect", _busy_timeout)


def _busy_timeout(dbapi_connection: Any, record: Any) -> None:
    """At least ``BUSY_TIMEOUT_S``: a longer wait the URL asks for (``?timeout=300``) stands."""
    import sqlite3

    if isinstance(dbapi_connection, sqlite3.Connection):
        (ms,) = dbapi_connection.execute("PRAGMA busy_timeout").fetchone()
        if ms < BUSY_TIMEOUT_S * 1000:
            dbapi_connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_S * 1000}")


def absolute_sqlite(uri: str) -> str:
    """``sqlite:///relative.db`` -> ``sqlite:////abs/path/relative.db`` (``sqlite_url``); other URIs unchanged, and so
    are an in-memory database (``sqlite:///``, ``:memory:``) and sqlite's own URI (``file:…``, ``uri=true``), which
    the working directory does not prefix. The relative part is the user's URL text: read decoded, options kept."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or uri.startswith(prefix + "/"):
        return uri
    relative, sep, options = uri.removeprefix(prefix).partition("?")
    name = unquote(relative)
    if name in ("", ":memory:") or name.startswith("file:") or "uri" in dict(parse_qsl(options)):
        return uri
    return sqlite_url((Path.cwd() / name).resolve()) + sep + options


def sqlite_url(path: Path) -> str:
    """The ``sqlite:///`` URL of the file ``path`` (absolute). A URL reads ``?`` as the start of its options and
    decodes ``%XX`` (SQLAlchemy 2.1 on), so a path pasted raw (``/tmp/exp?1/o.db``, ``/tmp/a%41/o.db``) named another
    file: those two are written encoded (``%3F``, ``%25``), the rest as they are (MLflow makes a sqlite path's
    folders from the URL as written: ``no_stray_folders``)."""
    return "sqlite:///" + str(path).replace("%", "%25").replace("?", "%3F")


@contextlib.contextmanager
def no_stray_folders(uri: str) -> Iterator[None]:
    """MLflow makes the folders of a sqlite URL's path as written (``/tmp/exp%3F1``) where sqlite opens the path
    decoded (``/tmp/exp?1``, which exists: ``tracking.check_uri``); the folders it made for nothing are removed."""
    written = Path(uri.removeprefix("sqlite:///")).parent if uri.startswith("sqlite:///") else None
    db = sqlite_file(uri) if written is not None else None
    made: list[Path] = []
    while (written is not None and db is not None and written != db.parent and written != written.parent
           and not written.exists()):
        made.append(written)  # deepest first
        written = written.parent
    try:
        yield
    finally:
        for folder in made:
            with contextlib.suppress(OSError):  # not empty (or already gone): not MLflow's stray folder
                folder.rmdir()


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


#: the options a ``sqlite://`` URL may carry (what SQLAlchemy's pysqlite dialect reads; it ignores any other)
SQLITE_OPTIONS = frozenset({"uri", "timeout", "isolation_level", "detect_types", "check_same_thread",
                            "cached_statements"})


def check_options(uri: str, flag: str) -> None:
    """A ``?`` starts a database URL's options (``?timeout=5``): ``sqlite:///q?x/o.db`` opened the file ``q``
    (SQLAlchemy drops an option it does not know), not ``q?x/o.db``. A sqlite URL's options must be ones sqlite
    reads (with ``uri=true`` the rest go to sqlite's own URI: ``mode=ro``); other databases' URLs are their drivers'
    business (a ``?`` in a postgres password is the driver's to read)."""
    from gantune.errors import GantuneError

    if not uri.lower().startswith("sqlite"):
        return
    _, sep, options = uri.partition("?")
    keys = [k for k, _ in parse_qsl(options, keep_blank_values=True)]
    unknown = [] if "uri" in keys else [k for k in keys if k not in SQLITE_OPTIONS]  # uri=true: sqlite's own URI
    if sep and (unknown or not options):
        raise GantuneError(f"{flag} {uri}: '?{options}' reads as the URL's options, not as part of the file name "
                           f"(sqlite's are {', '.join(sorted(SQLITE_OPTIONS))}); write a '?' in a file name as %3F")
    if not sep:
        return
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:  # the values as SQLAlchemy reads them: ?timeout=abc was its traceback when the store opened
        url = make_url(uri)
        args, kwargs = url.get_dialect()().create_connect_args(url)
    except (ValueError, TypeError, ArgumentError) as err:
        raise GantuneError(f"{flag} {uri}: an option's value is not one sqlite takes ({err})") from None
    target = str(args[0] if args else "").lower()
    if kwargs.get("uri") and ("mode=memory" in target or "vfs=memdb" in target):  # gone with its connection
        raise GantuneError(f"{flag} {uri}: an in-memory database (mode=memory, vfs=memdb) is gone when the "
                           "connection closes: nothing of the search would be kept; name a file")


def check_apart(storage: str, tracking_uri: str | None, storage_named: bool = False) -> None:
    """One sqlite file for the Optuna study and MLflow's store broke both: each migrates its own schema into it,
    and Optuna then refused the file as made by a newer Optuna (MLflow's alembic version). ``storage_named``: the
    user named the storage and left the tracking store to its default, so ``--storage`` is the flag to blame."""
    from gantune.errors import GantuneError

    study = sqlite_file(absolute_sqlite(storage))
    tracking = sqlite_file(absolute_sqlite(tracking_uri)) if tracking_uri else None
    if study is None or tracking is None or study.resolve() != tracking.resolve():
        return
    if storage_named:
        raise GantuneError(f"--storage {storage}: the file of MLflow's tracking store ({tracking}); give the Optuna "
                           "study a database of its own, e.g. sqlite:///optuna.db")
    raise GantuneError(f"--tracking-uri {tracking_uri}: the file of the Optuna storage ({study}); give MLflow a "
                       "database of its own, e.g. sqlite:///mlflow.db")


OPTUNA, MLFLOW = "an Optuna study database", "MLflow's tracking store"
#: tables that tell which program made a sqlite file (each makes more; these two are enough to tell them apart)
_SCHEMAS = {OPTUNA: {"studies", "version_info"}, MLFLOW: {"experiments", "runs"}}


def sqlite_owner(db: Path) -> str | None:
    """Whose schema the sqlite file ``db`` holds (``OPTUNA`` or ``MLFLOW``), ``""`` when it holds none (0 bytes, or no
    tables), ``None`` when it is missing, holds another program's tables or cannot be read (its opener says why).
    Opened read-only: looking creates and changes nothing, where opening it as a store would migrate a schema in."""
    tables = sqlite_tables(db)
    if tables is None:
        return None
    if not tables:
        return ""
    return next((owner for owner, marks in _SCHEMAS.items() if marks <= tables), None)


def foreign(db: Path) -> bool:
    """Whether ``db`` is a sqlite database Optuna has not made (empty, MLflow's, another program's): opened as a
    storage, Optuna writes its schema into it. A file that cannot be read as one (no sqlite database at all, or
    locked past sqlite's wait) is left to the opener, which says so or waits."""
    tables = sqlite_tables(db)
    return tables is not None and not _SCHEMAS[OPTUNA] <= tables


def sqlite_tables(db: Path) -> set[str] | None:
    """The tables of the sqlite file ``db`` (none for a 0-byte file), read-only; ``None`` when it is missing or
    cannot be read as a sqlite database (not one, or locked past sqlite's wait)."""
    import sqlite3

    if not db.is_file():
        return None
    if db.stat().st_size == 0:
        return set()
    try:
        with contextlib.closing(sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True)) as con:
            return {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error:
        return None


def check_not_other(db: Path | None, flag: str, value: str, own: str, example: str) -> None:
    """Refuse a sqlite file that holds the other store's schema before ``own``'s store migrates its tables in
    (MLflow added its tables to an Optuna file, then refused it; Optuna did the same the other way), and a folder."""
    from gantune.errors import GantuneError

    if db is not None and db.is_dir():  # sqlite opened it in a retry loop (MLflow: about 100 s), then failed
        raise GantuneError(f"{flag} {value}: {db} is a folder, not a database file; name a file, e.g. {example}")
    owner = sqlite_owner(db) if db is not None else None
    if owner and owner != own:
        raise GantuneError(f"{flag} {value}: {db} is {owner}; name a file of its own, e.g. {example}")
