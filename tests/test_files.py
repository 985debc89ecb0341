"""What a full disk or a read-only folder does to gantune's writes: no partial file, no temporary one, one line."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from gantune import rundir
from gantune.cli import main


def _full_disk_after(n: int) -> object:
    """A ``write_bytes`` that writes ``n`` bytes and then finds the disk full."""
    def write(self: Path, data: bytes) -> int:
        with self.open("wb") as f:
            f.write(data[:n])
        raise OSError(errno.ENOSPC, "No space left on device", str(self))
    return write


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary_one(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """On a full disk the temporary files stayed: ``.report.html.tmpPID`` beside the old report, a run's
    ``samples/.step_*.png.tmpPID``, and so on after every later try."""
    target = tmp_path / "report.html"
    target.write_bytes(b"old")
    monkeypatch.setattr(Path, "write_bytes", _full_disk_after(3))
    with pytest.raises(OSError, match="No space left"):
        rundir.atomic_write(target, b"new and longer")
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"] and target.read_bytes() == b"old"


def test_a_full_disk_or_a_read_only_folder_is_one_line_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """``train --out`` on a full disk was a traceback (the sample grid's write); ``init --out`` into a read-only
    folder too (the clean-up's unlink of a temporary file it never made)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(Path, "write_bytes", _full_disk_after(10))
    assert main(["train", "grid25", "--steps", "2", "--out", "run", "--no-tracking"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("gantune train: error: ") and \
        err.endswith(": No space left on device"), err
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]
    monkeypatch.undo()

    def read_only(self: Path, *args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "write_text", read_only)
    monkeypatch.setattr(Path, "unlink", read_only)
    (tmp_path / "ro").mkdir()
    assert main(["init", "grid25", "--out", str(tmp_path / "ro" / "s.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"gantune init: error: --out {tmp_path / 'ro' / 's.yaml'}: cannot write it (Read-only file system)"
