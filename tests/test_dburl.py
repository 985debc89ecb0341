"""sqlite URLs made from paths: the file a URL names is the file meant, whatever characters its folders hold."""

from __future__ import annotations

from pathlib import Path

import pytest

from gantune.dburl import absolute_sqlite, no_stray_folders, sqlite_file
from gantune.tracking import open_client


@pytest.mark.parametrize("folder", ["exp?1", "a%41", "a%20b", "sp ace", "hash#1", "plain"])
def test_a_relative_url_names_the_file_in_the_working_directory_whatever_its_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, folder: str) -> None:
    """The working directory was pasted raw: ``exp?1/optuna.db`` read ``?1/optuna.db`` as options, ``a%41`` as
    ``aA``."""
    cwd = tmp_path / folder
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    assert sqlite_file(absolute_sqlite("sqlite:///optuna.db")) == cwd / "optuna.db"
    # the user's own part stays URL text: decoded once, options kept
    url = absolute_sqlite("sqlite:///sub/../o%3Fx.db?timeout=5")
    assert url.endswith("?timeout=5") and sqlite_file(url) == cwd / "o?x.db"


def test_mlflow_leaves_no_folder_named_as_the_url_is_written(tmp_path: Path) -> None:
    """MLflow made ``a%20b/`` beside ``a b/``, where the store went (it makes a sqlite path's folders undecoded)."""
    (tmp_path / "a b").mkdir()
    uri = f"sqlite:///{tmp_path}/a%20b/m.db"
    open_client(uri).search_experiments()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a b"]
    assert (tmp_path / "a b" / "m.db").is_file()
    with no_stray_folders(uri):  # a folder it did not make is left alone
        (tmp_path / "a%20b").mkdir()
        (tmp_path / "a%20b" / "keep").touch()
    assert (tmp_path / "a%20b" / "keep").is_file()


@pytest.mark.parametrize("uri", ["sqlite:///", "sqlite:///?timeout=5", "sqlite:///:memory:", "sqlite:///%3Amemory%3A",
                                 "sqlite:///file:x.db?mode=ro&uri=true", "sqlite:////abs/o.db", "postgresql://h/db"])
def test_in_memory_and_sqlite_own_uris_and_absolute_ones_are_left_as_given(uri: str) -> None:
    """An empty path became the working directory itself (a folder, not a database), ``%3Amemory%3A`` a file named
    ``:memory:`` (a whole search was written to it) and sqlite's own ``file:`` URI a path under the directory."""
    assert absolute_sqlite(uri) == uri


@pytest.mark.parametrize(("uri", "shown"), [
    ("postgresql://alice:s3cret@db/optuna", "postgresql://alice:***@db/optuna"),
    ("postgresql+psycopg2://alice:s%40c@db:5432/o", "postgresql+psycopg2://alice:***@db:5432/o"),
    ("https://bob:t0ken@mlflow.example.com", "https://bob:***@mlflow.example.com"),
    ("mysql://u@h/d", "mysql://u@h/d"), ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
    ("http://host:5000", "http://host:5000"), ("http://[::1:bad", "http://[::1:bad"),
])
def test_a_password_in_a_uri_is_not_shown(uri: str, shown: str) -> None:
    """A search's summary (printed, and logged to MLflow as summary.json for every reader of the server) held the
    storage and tracking URIs verbatim, passwords too."""
    from gantune.dburl import redacted

    assert redacted(uri) == shown


def test_a_sqlite_url_naming_a_folder_is_refused_at_once(tmp_path: Path) -> None:
    """``--tracking-uri sqlite:///<folder>`` passed the check (its parent exists) and MLflow retried opening it for
    about 100 s; ``--storage sqlite:///<folder>`` was said not to exist."""
    from gantune.errors import GantuneError
    from gantune.sampling.study import check_storage, load_search
    from gantune.tracking import check_uri

    url = f"sqlite:///{tmp_path}"
    with pytest.raises(GantuneError, match=f"--tracking-uri {url}: {tmp_path} is a folder, not a database file"):
        check_uri(url)
    with pytest.raises(GantuneError, match=f"--storage {url}: {tmp_path} is a folder, not a database file"):
        check_storage(url)
    with pytest.raises(GantuneError, match="is a folder"):
        load_search("s", url)
