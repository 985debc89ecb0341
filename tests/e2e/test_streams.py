"""Standard streams nobody reads (``| head``, ``>&-``): the command goes on without them (found by a review: a
BrokenPipeError traceback ended a run mid-training, exit 1; a closed stderr turned exit 2 into 1)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

GANTUNE = [sys.executable, "-m", "gantune.cli"]


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "GANTUNE_CACHE_DIR": str(tmp_path / "cache")}


def test_a_reader_that_goes_away_leaves_the_run_to_finish(tmp_path: Path) -> None:
    run = subprocess.Popen([*GANTUNE, "train", "grid25", "--steps", "200", "--out", "run", "--no-tracking"],
                           cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert run.stdout is not None and run.stderr is not None
    run.stdout.readline()
    run.stdout.close()  # as `| head -1` does: every later write is EPIPE
    err = run.stderr.read().decode()
    assert run.wait(timeout=300) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert (tmp_path / "run" / "generator.pt").is_file() and (tmp_path / "run" / "checkpoint.pt").is_file()


@pytest.mark.parametrize(("closed", "args", "code"), [
    (1, ["train", "grid25", "--steps", "20", "--out", "run", "--no-tracking"], 0),
    (2, ["train", "grid25", "--steps", "0", "--json"], 2),  # bad input: its code, with nowhere to say why
])
def test_a_closed_stream_is_no_error(tmp_path: Path, closed: int, args: list[str], code: int) -> None:
    command = " ".join(shlex.quote(a) for a in [*GANTUNE, *args])
    done = subprocess.run(f"exec {command} {closed}>&-", shell=True, cwd=tmp_path, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=300)  # as a shell closes it
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    if code == 0:
        assert (tmp_path / "run" / "generator.pt").is_file()


def test_a_full_stdout_is_one_line_naming_it(tmp_path: Path) -> None:
    with open("/dev/full", "w") as full:
        done = subprocess.run([*GANTUNE, "train", "grid25", "--steps", "20", "--out", "run", "--no-tracking"],
                              cwd=tmp_path, env=_env(tmp_path), stdout=full, stderr=subprocess.PIPE, text=True,
                              timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip() == "gantune train: error: stdout: No space left on device"
    assert not (tmp_path / "run").exists()  # it failed before it logged anything: nothing left


def test_a_stream_closed_under_the_wrapper_is_no_terminal() -> None:
    """A progress line asking ``isatty`` of a stream closed under it (pytest's capture, at exit) raised
    "ValueError: I/O operation on closed file" where it is simply no terminal."""
    import io

    from gantune.streams import Outliving

    under = io.StringIO()
    wrapped = Outliving(under, "stdout")
    under.close()
    assert wrapped.isatty() is False
