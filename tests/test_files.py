"""What a full disk or a read-only folder does to gantune's writes: no partial file, no temporary one, one line."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import modules_after

from gantune import rundir
from gantune.cli import main
from gantune.errors import GantuneError


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


@pytest.mark.parametrize("name", ["y" * 250, "\u00e9" * 127, os.fsdecode(b"caf\xe9.yaml")])
def test_a_name_near_the_systems_limit_can_be_written(tmp_path: Path, name: str) -> None:
    """A 250-byte name is legal (255 is the limit), but the temporary file its write went through, ``.<name>.tmpPID``,
    was not: such a file could never be written (``init --out``, ``report --out``, a folder of samples)."""
    from gantune.rundir import atomic_folder, atomic_write

    atomic_write(tmp_path / name, b"x")
    atomic_folder(tmp_path / f"d{name[1:]}", {"a": b"y"}, stale=lambda _: False)
    assert (tmp_path / name).read_bytes() == b"x" and (tmp_path / f"d{name[1:]}" / "a").read_bytes() == b"y"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, f"d{name[1:]}"])


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


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full (a device whose every write is refused)")
def test_torch_save_on_a_full_device_raises_the_refused_writes_oserror() -> None:
    """torch.save says "[enforce fail at inline_container.cc:672] . unexpected pos" where the disk is full; the
    weights' and checkpoints' writer raises the write's own error, as every other write does."""
    import torch

    with pytest.raises(RuntimeError, match="enforce fail"):  # torch's own words, which a user cannot act on
        torch.save({"w": torch.zeros(100_000)}, "/dev/full")
    with pytest.raises(OSError) as caught:
        rundir._torch_save({"w": torch.zeros(100_000)}, Path("/dev/full"))
    assert caught.value.errno == errno.ENOSPC


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full (a device whose every write is refused)")
def test_a_refused_metrics_line_names_its_file(tmp_path: Path) -> None:
    """A refused write() names no file: "gantune train: error: : No space left on device" was the whole line when
    the metrics log (the most frequent write) was the one the full disk refused."""
    run = rundir.RunDir(tmp_path / "run")
    (run.path / rundir.METRICS).symlink_to("/dev/full")
    with pytest.raises(OSError) as caught:
        run.append_metrics({"step": 1, "loss_d": 0.5})
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(run.path / rundir.METRICS)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full (a device whose every write is refused)")
def test_a_json_summary_stdout_refuses_is_one_line_exit_2(tmp_path: Path) -> None:
    """Found in review: ``--json`` printed its line after the command's error handling, so a stdout on a full disk
    was a traceback and exit 1 (without --json: one line, exit 2)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # a shell's buffered stdout: the line
    for json_flag in (["--json"], []):  # failed at the exit's flush, after the error handling, "Exception ignored"
        with open("/dev/full", "w") as full:
            done = subprocess.run([sys.executable, "-m", "gantune.cli", "init", "grid25", "--force", *json_flag],
                                  cwd=tmp_path, stdout=full, stderr=subprocess.PIPE, text=True, timeout=120, env=env)
        assert (done.returncode, done.stderr) == (2, "gantune init: error: stdout: No space left on device\n"), \
            json_flag


def test_a_damaged_optuna_database_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A sqlite file whose header is fine but whose pages are overwritten opened, then export, report, review and
    search --resume raised Optuna's StorageInternalError with SQLAlchemy's traceback."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # as gantune has it: no "new study" line
    db = tmp_path / "optuna.db"
    from gantune.sampling.settings import SearchSettings

    study = optuna.create_study(study_name="s", storage=f"sqlite:///{db}")
    study.set_user_attr("settings", SearchSettings().model_dump())  # what every gantune search records
    for _ in range(300):
        trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        trial.set_user_attr("config", {"a": "x" * 200})
        study.tell(trial, 1.0)
    with db.open("r+b") as f:
        f.seek(40_000)
        f.write(b"\xab" * 30_000)
    for command in (["export", "s", "--out", str(tmp_path / "b.yaml")], ["report", "s", "--out", str(tmp_path / "r")]):
        assert main([*command, "--storage", f"sqlite:///{db}"]) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"gantune {command[0]}: error: the database failed on reading (database disk image is " \
                      "malformed): a damaged file? Restore it from a copy"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["optuna.db"]


def test_a_full_database_disk_is_not_called_a_damaged_file() -> None:
    """sqlite's "database or disk is full" was reported as "the database failed on reading ...: a damaged file?
    Restore it from a copy": the advice would have a user replace a sound database."""
    import sqlite3

    import sqlalchemy.exc

    from gantune.cli import database_failure

    err = sqlalchemy.exc.OperationalError("INSERT INTO trials ...", {}, sqlite3.OperationalError("database or disk is "
                                                                                                  "full"))
    assert database_failure(err) == ("the database could not be written (database or disk is full): free space on "
                                     "its disk, then run the command again")


def test_a_lock_held_past_the_wait_is_one_line_also_inside_another_error() -> None:
    """Found by a probe: a study locked by another process while a search ran ended it in Ray Tune's traceback
    (its ``TuneError`` around Optuna's ``StorageInternalError``), exit 1."""
    import sqlite3

    import optuna
    import sqlalchemy.exc

    from gantune.cli import database_failure

    locked = sqlalchemy.exc.OperationalError("UPDATE trials ...", {}, sqlite3.OperationalError("database is locked"))
    try:
        try:
            raise optuna.exceptions.StorageInternalError("An exception is raised during the commit") from locked
        except optuna.exceptions.StorageInternalError as inner:
            raise RuntimeError("Tune failed in a callback") from inner
    except RuntimeError as outer:
        line = database_failure(outer)
    assert line == ("the database stayed locked by another process for 60 s (database is locked): let it finish, "
                    "then run the command again (a search: with --resume)")
    assert database_failure(RuntimeError("nothing of a database")) is None
    try:  # an error raised ``from None`` in a handler is not the database's (found by a review)
        try:
            raise locked
        except sqlalchemy.exc.OperationalError:
            raise KeyError("config") from None
    except KeyError as unrelated:
        assert database_failure(unrelated) is None


def test_a_study_another_process_holds_locked_past_sqlites_5_s_is_waited_for(tmp_path: Path,
                                                                             capsys: pytest.CaptureFixture[str]
                                                                             ) -> None:
    """A write waited sqlite's 5 s for a lock another process held (a backup, an sqlite shell), then failed; the
    CLI makes every sqlite connection wait ``BUSY_TIMEOUT_S``."""
    import subprocess
    import sys

    import optuna
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from gantune.dburl import _busy_timeout

    db = tmp_path / "study.db"
    optuna.create_study(study_name="s", storage=f"sqlite:///{db}")
    assert main(["report", "nope", "--storage", f"sqlite:///{db}", "--out", str(tmp_path / "r")]) == 2  # any command
    capsys.readouterr()
    assert event.contains(Engine, "connect", _busy_timeout)
    holder = subprocess.Popen([sys.executable, "-c", "import sqlite3, sys, time\n"
                               f"c = sqlite3.connect({str(db)!r}, isolation_level=None)\n"
                               "c.execute('BEGIN EXCLUSIVE'); print('held', flush=True); time.sleep(7)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        study = optuna.load_study(study_name="s", storage=f"sqlite:///{db}")  # waits for the lock, then writes
        study.set_user_attr("written", True)
    finally:
        holder.wait(timeout=60)
    assert optuna.load_study(study_name="s", storage=f"sqlite:///{db}").user_attrs == {"written": True}


def test_train_resume_of_a_damaged_checkpoint_is_one_line_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["train", "grid25", "--steps", "20", "--out", "run", "--no-tracking"]) == 0
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    whole = checkpoint.read_bytes()
    for cut in (10_000, len(whole) // 2):
        checkpoint.write_bytes(whole[:cut])
        capsys.readouterr()
        assert main(["train", "grid25", "--steps", "40", "--out", "run", "--no-tracking", "--resume"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("gantune train: error: --resume: run/checkpoint.pt is "
                                                             "unreadable ("), err
        assert err.endswith("delete run to train again from step 0, or train into another --out"), err
        assert "internal miniz error" not in err, err  # torch's reason, without its five sentences of advice after
        assert checkpoint.stat().st_size == cut  # left as it was


def test_train_resume_of_another_runs_checkpoint_is_one_line_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A checkpoint torch reads whose nets are not this config's (another run's, copied in with its log; one saved
    by hand): ``--resume`` loaded it into the config's nets, a RuntimeError (size mismatch) or KeyError traceback."""
    monkeypatch.chdir(tmp_path)
    Path("small.yaml").write_text("data: {name: grid25}\nmodel: {g_width: 16, d_width: 16}\ntrain: {steps: 20}\n")
    assert main(["train", "grid25", "--steps", "20", "--out", "run", "--no-tracking"]) == 0
    assert main(["train", "small.yaml", "--out", "small", "--no-tracking"]) == 0
    for name in ("checkpoint.pt", "metrics.jsonl"):
        shutil.copy(Path("small") / name, Path("run") / name)
    # killed before its final weights: it resumes at its own steps (grid25 decays its rate over them, and more
    # --steps would be refused for that before the checkpoint is read)
    Path("run/generator.pt").unlink()
    checkpoint = torch.load("run/checkpoint.pt", weights_only=False)
    for why, saved in (("Error(s) in loading state_dict for MLPGenerator: ", checkpoint),
                       ("it holds no 'trainer'", {k: v for k, v in checkpoint.items() if k != "trainer"})):
        torch.save(saved, "run/checkpoint.pt")
        capsys.readouterr()
        assert main(["train", "grid25", "--steps", "20", "--out", "run", "--no-tracking", "--resume"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("gantune train: error: --resume: run/checkpoint.pt does "
                                                             "not fit this run's config ("), err
        assert why in err and err.endswith("delete run to train again from step 0, or train into another --out")


@pytest.mark.parametrize("name", ["metrics.jsonl", "generator.pt", "config.yaml"])
def test_a_folder_where_a_run_file_goes_is_one_line_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str], name: str) -> None:
    """A folder at ``metrics.jsonl``: ``--resume`` died in an IsADirectoryError traceback; at ``generator.pt`` it
    trained to the last step, then failed writing it (found by a review). Said before any step, left as it was."""
    monkeypatch.chdir(tmp_path)
    assert main(["train", "grid25", "--steps", "20", "--out", "run", "--no-tracking"]) == 0
    (Path("run") / name).unlink()
    (Path("run") / name).mkdir()
    before = sorted(p.name for p in Path("run").iterdir())
    for resume in (["--resume"], []):
        capsys.readouterr()
        assert main(["train", "grid25", "--steps", "40", "--out", "run", "--no-tracking", *resume]) == 2
        err = capsys.readouterr().err.strip()
        assert err == (f"gantune train: error: --out: run/{name} is not a file, and a run writes its {name} there; "
                       "move it away, or choose another --out"), err
        assert sorted(p.name for p in Path("run").iterdir()) == before


@pytest.mark.parametrize("held", ["metrics.jsonl", "checkpoint.pt"])
def test_a_train_into_a_folder_a_run_holds_names_its_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str], held: str) -> None:
    """A second ``train`` into the folder a run trains in (found by a review) read its files: before the first
    checkpoint "holds a run stopped before its first checkpoint ... delete it", after it "pass --resume", and only
    then the lock's line. The lock's line comes first now, whatever the folder holds."""
    monkeypatch.chdir(tmp_path)
    Path("run").mkdir()
    (Path("run") / held).write_bytes(b"x")
    with rundir.exclusive(Path("run"), "run folder run", "train"):
        for resume in ([], ["--resume"]):
            capsys.readouterr()
            assert main(["train", "grid25", "--steps", "20", "--out", "run", "--no-tracking", *resume]) == 2
            assert capsys.readouterr().err.strip() == (f"gantune train: error: run folder run is in use by another "
                                                       f"gantune process (pid {os.getpid()}): wait for it to end, or "
                                                       "stop it")


def test_train_resume_with_damaged_best_weights_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """A truncated ``generator_best.pt`` survived ``train --resume`` (exit 0, "completed"): only a better
    evaluation writes it, so the run ended with broken best weights and said nothing."""
    monkeypatch.chdir(tmp_path)
    assert main(["train", "grid25", "--steps", "20", "--out", "run", "--no-tracking"]) == 0
    best = tmp_path / "run" / "generator_best.pt"
    best.write_bytes(best.read_bytes()[: best.stat().st_size // 2])
    capsys.readouterr()
    assert main(["train", "grid25", "--steps", "40", "--out", "run", "--no-tracking", "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("gantune train: error: --resume: run/generator_best.pt is "
                                                         "unreadable ("), err
    assert err.endswith("the best weights so far are lost; delete it to resume (the next better evaluation writes "
                        "it again)"), err


def test_train_resume_of_a_cut_config_says_it_is_damaged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """A config.yaml cut short still loads (what is missing takes the defaults), and was reported as "another
    config's run", sending the user to look for a config they never changed."""
    monkeypatch.chdir(tmp_path)
    assert main(["train", "grid25", "--steps", "20", "--out", "run", "--no-tracking"]) == 0
    config = tmp_path / "run" / "config.yaml"
    text = config.read_text()
    config.write_text(text[: text.index("\nloss:")] + "\n")  # the sections after model are gone
    capsys.readouterr()
    assert main(["train", "grid25", "--steps", "40", "--out", "run", "--no-tracking", "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gantune train: error: --resume: run/config.yaml lacks ") and \
        "of the keys a run writes (first: " in err and err.endswith("damaged? Restore it, or train into another --out")


@pytest.mark.parametrize("damage", ["empty", "cut", "missing"])
def test_train_resume_without_the_checkpoints_history_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], damage: str) -> None:
    """With metrics.jsonl emptied the resumed run went on without its history (exit 0) and took its next
    evaluation, worse or not, as the best so far (generator_best.pt overwritten)."""
    monkeypatch.chdir(tmp_path)
    assert main(["train", "grid25", "--steps", "20", "--out", "run", "--no-tracking"]) == 0
    metrics = tmp_path / "run" / "metrics.jsonl"
    lines = metrics.read_text().splitlines(keepends=True)
    {"empty": lambda: metrics.write_text(""), "cut": lambda: metrics.write_text("".join(lines[:-1])),
     "missing": metrics.unlink}[damage]()
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run").iterdir()}
    capsys.readouterr()
    assert main(["train", "grid25", "--steps", "40", "--out", "run", "--no-tracking", "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "gantune train: error: --resume: run/metrics.jsonl has no record of step 20, the last the " \
                  "checkpoint logged (emptied, cut short or replaced?): resumed, the run would lose its history and " \
                  "best so far; restore it, or delete run to train again from step 0", err
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run").iterdir()} == before
    metrics.write_text("".join(lines))  # restored, it resumes (killed before its final weights, at its own steps:
    (tmp_path / "run" / "generator.pt").unlink()  # grid25's decay refuses more)
    assert main(["train", "grid25", "--steps", "20", "--out", "run", "--no-tracking", "--resume"]) == 0


def test_a_command_that_fails_having_written_nothing_leaves_no_folder_behind(tmp_path: Path) -> None:
    """``exclusive`` removes the lock and the folders it made when the command fails before writing anything:
    a refused run left an empty run folder holding only the lock. What was there before, or written since,
    stays."""
    new = tmp_path / "runs" / "a"
    with pytest.raises(RuntimeError), rundir.exclusive(new, "run folder", "train"):
        assert (new / rundir.LOCK).exists()
        raise RuntimeError("the data has no classes")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(KeyboardInterrupt), rundir.exclusive(new, "run folder", "train"):
        (new / "metrics.jsonl").write_text("{}\n")
        raise KeyboardInterrupt
    assert sorted(p.name for p in new.iterdir()) == [rundir.LOCK, "metrics.jsonl"]
    kept = tmp_path / "mine"
    kept.mkdir()
    with pytest.raises(RuntimeError), rundir.exclusive(kept, "run folder", "train"):
        raise RuntimeError("refused")
    assert kept.is_dir() and list(kept.iterdir()) == []
    with rundir.exclusive(tmp_path / "ok", "run folder", "train"):
        pass
    assert (tmp_path / "ok" / rundir.LOCK).exists()  # a command that ended well keeps its folder


def test_a_process_waiting_on_a_lock_its_failed_holder_removes_takes_the_new_one(tmp_path: Path) -> None:
    """B waits on A's lock; A fails having written nothing and removes the lock file and its folder. B's lock was
    then on a file no one else could see: C made a new one and held it too, both writing in one folder."""
    import threading
    import time

    folder = tmp_path / "runs" / "x"
    events: list[str] = []
    a_holds, b_holds, c_done = threading.Event(), threading.Event(), threading.Event()

    def a() -> None:
        with contextlib.suppress(RuntimeError), rundir.exclusive(folder, "run folder", "train"):
            a_holds.set()
            time.sleep(0.5)  # B asks for the lock meanwhile, and waits
            raise RuntimeError("refused")

    def b() -> None:
        a_holds.wait(5)  # A first, whatever the order the threads start in on a loaded machine
        with rundir.exclusive(folder, "run folder", "train"):
            events.append(f"B: lock file there {(folder / rundir.LOCK).exists()}")
            b_holds.set()
            c_done.wait(5)

    def c() -> None:
        b_holds.wait(5)
        try:
            with rundir.exclusive(folder, "run folder", "train"):
                events.append("C holds it too")
        except GantuneError as err:
            events.append(f"C refused: {'in use by another gantune process' in str(err)}")
        c_done.set()

    threads = [threading.Thread(target=f) for f in (a, b, c)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert events == ["B: lock file there True", "C refused: True"], events


def test_a_longer_sqlite_wait_the_url_asks_for_stands(tmp_path: Path) -> None:
    """Found by a review: ``?timeout=300`` in a storage URL was cut to the 60 s every connection gets."""
    from sqlalchemy import create_engine, text

    from gantune.dburl import BUSY_TIMEOUT_S, patient_sqlite

    patient_sqlite()
    for url, ms in ((f"sqlite:///{tmp_path / 'a.db'}?timeout=300", 300_000),
                    (f"sqlite:///{tmp_path / 'b.db'}", BUSY_TIMEOUT_S * 1000)):
        with create_engine(url).connect() as conn:
            assert conn.execute(text("PRAGMA busy_timeout")).scalar() == ms


def test_commands_without_a_store_do_not_import_sqlalchemy(tmp_path: Path) -> None:
    """Found by a review: every command registered the sqlite wait, importing SQLAlchemy (0.14 s) also for
    ``generate`` and ``init``, which open neither the study nor MLflow's store."""
    modules, stderr = modules_after(
        "from gantune.cli import main\n"
        f"assert main(['generate', {str(tmp_path / 'none.pt')!r}, '--out', {str(tmp_path / 'out')!r}]) == 2")
    assert "sqlalchemy" not in modules and "no such weights file" in stderr


def test_a_logged_record_whose_step_is_no_number_is_no_record(tmp_path: Path) -> None:
    """A hand-edited ``{"step": "x"}`` line: ``--resume`` compared it with the checkpoint's step, a TypeError
    traceback; read as a garbled line, the run's history check says in one line that the step is missing."""
    (tmp_path / rundir.METRICS).write_text('{"step": 10, "loss_d": 1.0}\n{"step": "x"}\n{"step": true}\n'
                                           '{"loss_d": 2.0}\n{"step": 20.0}\n')
    assert [r["step"] for r in rundir.read_metrics(tmp_path)] == [10, 20.0]


def test_bytes_that_are_not_utf8_spoil_their_line_only(tmp_path: Path) -> None:
    """``\\xff\\xfe`` appended to a run's log (found by a review): ``--resume`` died in a UnicodeDecodeError
    traceback before reading any line; the other unreadable lines were already skipped one by one."""
    (tmp_path / rundir.METRICS).write_bytes(b'{"step": 10, "loss_d": 1.0}\n\xff\xfe\n{"step": 20, "fid": 3.5}\n'
                                            b'{"step": 30, "note": "caf\xe9"}\n')
    assert [r["step"] for r in rundir.read_metrics(tmp_path)] == [10, 20, 30]


@pytest.mark.parametrize(("content", "why"), [(b"hi\n", "not a file torch saved"), (b"abc", "not a file torch saved"),
                                              (b"", "an empty file")])
def test_a_file_torch_did_not_save_is_named_so(tmp_path: Path, content: bytes, why: str) -> None:
    """torch's own errors for short text files read "(105)" or "(pop from empty list)" (found by a review)."""
    path = tmp_path / "g.pt"
    path.write_bytes(content)
    with pytest.raises(GantuneError) as err:
        rundir.load_saved(path)
    assert str(err.value) == f"{path} is unreadable ({why})"


def test_a_relative_cache_dir_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``GANTUNE_CACHE_DIR=relcache``: each trial, run by Ray in a folder of its own, made and filled a cache there,
    computing the reference again per trial (found by a review)."""
    from gantune import env

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GANTUNE_CACHE_DIR", "relcache")
    env.configure()
    assert rundir.cache_dir() == tmp_path / "relcache"


def test_a_failed_make_dir_removes_only_the_folders_it_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--out N/../E/<300 characters>`` (found by a review): the cleanup of a name too long removed the user's own
    empty ``E``, read as missing before ``N`` was made; it removes ``N`` only now."""
    monkeypatch.chdir(tmp_path)
    Path("E").mkdir()
    with pytest.raises(OSError):
        rundir.make_dir(Path("N/../E/" + "a" * 300))
    assert Path("E").is_dir() and not Path("N").exists()
    long = Path("M/../E/x/" + "b" * 300)
    with pytest.raises(OSError), rundir.parents_made(long):
        long.write_bytes(b"")  # the write the folders were made for fails
    assert Path("E").is_dir() and not Path("M").exists() and not Path("E/x").exists()
    with pytest.raises(RuntimeError), rundir.exclusive(Path("L/../E"), "run folder", "train"):
        raise RuntimeError  # a run refused after its lock, nothing written: its twin removed E too
    assert Path("E").is_dir() and not Path("L").exists() and not (Path("E") / rundir.LOCK).exists()
