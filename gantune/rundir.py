"""The files of one training run: resolved config, metrics.jsonl, sample grids, checkpoint, weights.

Every file is written to a temporary name and renamed, so an interrupted run never leaves a half-written
checkpoint or weights file behind.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

import torch

from gantune.config import TrialConfig, dump_config
from gantune.dburl import sqlite_owner
from gantune.errors import GantuneError
from gantune.events import warn

CHECKPOINT = "checkpoint.pt"
GENERATOR = "generator.pt"
BEST_GENERATOR = "generator_best.pt"
METRICS = "metrics.jsonl"
CONFIG = "config.yaml"
#: the files a run folder holds (``samples/`` beside them)
RUN_FILES = (CONFIG, METRICS, CHECKPOINT, GENERATOR, BEST_GENERATOR)


def trial_run_dir(attrs: dict[str, Any]) -> Path | None:
    """The run folder a trial's user attributes record (``run_dir``); ``None`` when they record none (a study made
    elsewhere): ``Path("")`` was the working folder, whose ``generator.pt`` was taken for the trial's."""
    run_dir = attrs.get("run_dir")
    return Path(run_dir) if isinstance(run_dir, str) and run_dir else None


def trial_dirname(number: int) -> str:
    """``trial-0007``: a trial's run folder under ``runs/<search>/`` and its MLflow run name."""
    return f"trial-{number:04d}"


def check_writable(path: Path, flag: str, is_dir: bool) -> None:
    """Fail before any work if ``path`` could not be created: its nearest existing ancestor must be a writable
    directory (and ``path`` itself not the wrong kind of thing). Leaves nothing behind."""
    if path.exists() and path.is_dir() != is_dir:
        raise GantuneError(f"{flag}: cannot write {path} (it is {'not ' if is_dir else ''}a directory)")
    try:
        # a symlink: the folder its target is in is the one written (a folder's link: its target, made there)
        target = write_target(path) if not is_dir else path.resolve() if path.is_symlink() else path
    except (OSError, RuntimeError) as err:  # RuntimeError: a symlink loop (Python 3.11-3.12)
        raise GantuneError(f"{flag}: cannot write {path} ({getattr(err, 'strerror', None) or err})") from None
    existing = target.absolute()
    if not is_dir and existing.is_file():  # replaced by atomic_write: a new file in its directory
        existing = existing.parent
    while not existing.exists():
        existing = existing.parent
    if not (existing.is_dir() and os.access(existing, os.W_OK)):
        raise GantuneError(f"{flag}: cannot write {path} ({existing} is not a writable directory)")
    try:  # os.access says yes to root in /proc or /sys: a folder made and removed at once tells the truth
        tempfile.TemporaryDirectory(dir=existing, prefix=".gantune-probe-").cleanup()
    except OSError as err:
        raise GantuneError(f"{flag}: cannot write {path} (making a folder in {existing} fails: "
                           f"{err.strerror or err})") from None


def check_replaceable(path: Path, flag: str, earlier: tuple[str, Callable[[bytes], bool]] | None = None,
                      in_run: bool = False) -> None:
    """Refuse an output file (``export --out``, ``report --out``) at a study or MLflow database: written there,
    it replaced the database, and every search in it was lost (exit 0). With ``earlier`` (what the output is, and
    whether a file's first KiB is one), an existing file is replaced only when it is empty or an earlier such
    output, outside a run's folder: ``export --out toy.yaml`` replaced the search space it was run from, ``report
    --out`` a trial's generator.pt, both without a word. ``in_run``: an earlier output may be in a run's folder
    (``generate``'s samples beside the weights they came from)."""
    with contextlib.suppress(OSError, RuntimeError):  # what cannot be read is check_writable's to say
        target = write_target(path)
        if owner := sqlite_owner(target):
            raise GantuneError(f"{flag}: {path} is {owner}, which this would replace; choose another {flag}")
        if earlier is None or not target.is_file():
            return
        if not in_run and any((target.parent / name).exists() for name in (CHECKPOINT, METRICS)):
            raise GantuneError(f"{flag}: {path} is in a run's folder ({target.parent} holds its "
                               f"{CHECKPOINT if (target.parent / CHECKPOINT).exists() else METRICS}); choose "
                               f"another {flag}")
        what, made = earlier
        with target.open("rb") as f:
            head = f.read(1024)
        if head and not made(head):  # an empty file: one made for it (mktemp)
            raise GantuneError(f"{flag}: {path} exists and is not an earlier {what}, which alone this replaces; "
                               f"delete it or choose another {flag}")


def make_dir(path: Path) -> None:
    """``path.mkdir(parents=True, exist_ok=True)``, through a symlink to a folder not made yet: mkdir refuses the
    link itself ("File exists"), so a dangling ``--out`` link was a traceback where ``--runs-dir`` made its target.
    A failure leaves none of the folders it made (a name too long at the end left those above it)."""
    _made(path.resolve() if path.is_symlink() else path)


@contextlib.contextmanager
def parents_made(path: Path) -> Iterator[None]:
    """Make ``path``'s missing parent folders for a write inside, and remove them again when it fails (a file
    name too long for the system left the folders made for it)."""
    parent = path.parent
    made = _made(parent.resolve() if parent.is_symlink() else parent)
    try:
        yield
    except BaseException:
        _unmade(made)
        raise


def _made(target: Path) -> list[Path]:
    """Make ``target`` and its missing parents one level at a time; the folders this call made, top first. Only
    those are ever removed: which folders were missing, read before (``N/../E`` is missing until ``N`` is made),
    named the user's own ``E``."""
    made: list[Path] = []
    try:
        for folder in reversed((target, *target.parents)):
            if folder.is_dir():
                continue
            try:
                folder.mkdir()
            except FileExistsError:
                if folder.is_dir():  # another process made it
                    continue
                raise
            made.append(folder)
    except BaseException:
        _unmade(made)
        raise
    return made


def _unmade(made: list[Path]) -> None:
    for folder in reversed(made):  # deepest first; one another process has written into stays
        with contextlib.suppress(OSError):
            folder.rmdir()


def atomic_write(path: Path, data: bytes) -> None:
    atomically(path, lambda tmp: tmp.write_bytes(data))


def atomic_save(obj: Any, path: Path) -> None:
    atomically(path, lambda tmp: _torch_save(obj, tmp))


class _KeepWriteError:
    """The file ``torch.save`` writes to, keeping the ``OSError`` its write raised: torch's writer replaces it with
    its own "RuntimeError: [enforce fail at inline_container.cc:672] . unexpected pos", which names no cause."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.f.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.f.flush()


def _torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` whose refused write (a full disk) is raised as the ``OSError`` (``errno.ENOSPC``) every other
    write raises, not as torch's sentence. The file is buffered, so every byte is written (a raw file may take
    fewer and torch would not notice); the bytes the buffer still holds raise their own ``OSError`` on close."""
    with path.open("wb") as f:
        out = _KeepWriteError(f)
        try:
            torch.save(obj, cast(IO[bytes], out))
        except RuntimeError:
            if out.error is None:
                raise
            raise out.error from None


#: errors of a write the destination's disk refused: the file written is the one at fault, not the one read
_REFUSED = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def copy_file(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` as every file here is written (through a temporary file, renamed). A full disk names
    ``dst``: the kernel's fast copy raises it with ``src`` named first, which reads as if the source were at fault
    (a PBT member's reason said "No space left on device: 'RUN/checkpoint.pt' -> ..." of a copy to another disk)."""
    def write(tmp: Path) -> None:
        try:
            shutil.copyfile(src, tmp)
        except OSError as err:
            if err.errno not in _REFUSED:
                raise
            raise OSError(err.errno, err.strerror) from None  # ``naming`` gives it ``dst``

    atomically(dst, write)


def write_target(path: Path) -> Path:
    """The file a write to ``path`` replaces: a symlink's target (the rename would replace the link and leave the
    file it names as it was), an ``OSError`` for a path that is there and not a regular file (the rename would
    put a file where a device, a pipe or a folder was: ``--out /dev/null`` run as root replaced the device)."""
    real = Path(os.path.realpath(path))
    if real.exists() and not real.is_file():
        raise OSError(errno.EINVAL, "not a regular file: " + ("a folder" if real.is_dir() else "a device, pipe or "
                                                             "socket"), str(path))
    return real


def _temporary(name: str) -> str:
    """The temporary name a write of ``name`` goes through, ``.<name>.tmp<pid>``, the name cut to 200 bytes: a
    name near the system's 255-byte limit made a temporary one past it, and could never be written."""
    return f".{os.fsdecode(os.fsencode(name)[:200])}.tmp{os.getpid()}"  # bytes as the file system has them


def atomically(path: Path, write: Callable[[Path], object]) -> None:
    """Write through a temporary file beside ``path`` (``write_target``), then rename it over ``path``: a reader
    sees the old file or the whole new one, and a write that fails (a full disk, Ctrl-C, a check of the written
    file inside ``write`` that raises) leaves neither a partial file nor the temporary one."""
    with naming(path):
        path = write_target(path)
    tmp = path.with_name(_temporary(path.name))
    try:
        with naming(path):
            write(tmp)
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


def atomic_folder(out: Path, files: dict[str, bytes], stale: Callable[[str], bool]) -> None:
    """Write ``files`` (name -> bytes) as the folder ``out``: all of them into a temporary folder first, so a write
    that fails part-way (a full disk, Ctrl-C) leaves ``out`` as it was. A new ``out`` is that folder (made beside
    it) renamed; into an existing one (the temporary folder made inside it: a mount point, or a folder whose
    parent is not writable, takes it too) the files are moved, then the ones ``stale`` names that this write did
    not replace are removed (the numbered samples of an earlier, larger ``--n`` read as part of this set)."""
    with naming(out):
        target = Path(os.path.realpath(out))
        if target.exists() and not target.is_dir():
            raise OSError(errno.ENOTDIR, "not a folder", str(out))
        if blocked := [name for name in files if (target / name).exists() and not (target / name).is_file()]:
            raise OSError(errno.EISDIR, f"{blocked[0]} there is not a regular file", str(out))
        new = not target.exists()
    with naming(out), parents_made(target):  # the folders made for it go when it fails (a name too long)
        # mkdir's mode (the umask's, not mkdtemp's 0700), and a name no other process picks
        tmp = (target.parent if new else target) / f"{_temporary(target.name)}-{os.urandom(4).hex()}"
        tmp.mkdir()
        try:
            for name, data in files.items():
                (tmp / name).write_bytes(data)
            if new:
                os.replace(tmp, target)
                return
            for name in files:
                os.replace(tmp / name, target / name)
            for old in target.iterdir():
                if stale(old.name) and old.name not in files and old.is_file():
                    old.unlink()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def naming(path: Path) -> Iterator[None]:
    """Give an ``OSError`` raised inside that names no file ``path``: a refused ``write()`` (a full disk) names none,
    and the command's one line should say which file it could not write."""
    try:
        yield
    except OSError as err:
        if err.filename is None and err.errno is not None:
            err.filename = str(path)
        raise


#: the file in ``<runs-dir>/<name>/`` naming the storage whose search's trials it holds
#: (``gantune.search.runner.claim_runs``)
OWNER = ".gantune-study.json"

#: the file whose lock a command holds while it writes in a search's or a run's folder (``exclusive``)
LOCK = ".gantune.lock"

#: the list ``generate`` leaves in a folder of the sample files it wrote there: only those are its own to replace or
#: remove (any ``000000.png`` counted as its own, and a folder of a user's images lost all but the first --n); an
#: image folder does not read them as data (samples written inside the data were read back as a class of it)
SAMPLES_LIST = ".gantune-samples.json"


@dataclass(frozen=True)
class SamplesList:
    """What an earlier ``generate`` wrote in a folder, by its list: its numbered PNGs below ``numbered`` and the other
    ``files`` it names; ``name in listing`` says whether a file is one of them."""

    numbered: int = 0
    files: frozenset[str] = frozenset()

    @classmethod
    def read(cls, folder: Path) -> SamplesList:
        """The list in ``folder``; empty without a readable one."""
        try:
            listed = json.loads((folder / SAMPLES_LIST).read_text())
            return cls(int(listed.get("numbered", 0)),
                       frozenset(name for name in listed.get("files", []) if isinstance(name, str)))
        except (OSError, ValueError, TypeError, AttributeError):  # none, or not one of ours
            return cls()

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        stem = name.removesuffix(".png")
        numbered_file = stem != name and stem.isdigit() and stem == f"{int(stem):06d}"  # 7 digits past 999,999
        return name in self.files or (numbered_file and int(stem) < self.numbered)


@contextlib.contextmanager
def exclusive(folder: Path, what: str, kind: str) -> Iterator[None]:
    """Hold ``folder``'s lock while this process writes in it: a second gantune process on the same search or run
    folder is refused with one line (two at once mixed their trials into one study, or their steps into one
    log). An operating-system lock (``flock``): a process that dies, however, holds none. The lock file says
    which process holds it and as what (``kind``: search, train; read by ``holder``). A lock taken for an instant
    (``holder`` looking) is waited for up to ``_LOCK_WAIT_S``. Where there is no ``fcntl`` (Windows) nothing is
    locked. A command that fails with nothing written but the lock leaves no folder behind (nor the folders it
    made above it): a refused run left an empty run folder the next ``train`` read as a run."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    # a link to a folder not made yet: made there; only the folders made here are removed on failure (read as
    # missing beforehand, ``N/../E`` named the user's own empty ``E``)
    made = _made(folder.resolve() if folder.is_symlink() else folder)
    lock_made = not (folder / LOCK).exists()
    before = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    with _taken(folder, what, fcntl) as handle:
        with naming(folder / LOCK):
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()} {kind}\n")
            handle.flush()
        try:
            yield  # closing the file releases the lock
        except BaseException:
            if lock_made:  # removed while the lock is still held, so no other process is writing there
                _unmake(folder, made, before)
            raise


def _taken(folder: Path, what: str, fcntl: Any) -> IO[str]:
    """``folder``'s lock file, opened and locked (``exclusive``). A lock taken on a file a failed holder has
    just removed (``_unmake``) locks nothing a later process can see: it is let go and taken again on the file
    that is there now."""
    deadline = time.monotonic() + _LOCK_WAIT_S
    while True:
        make_dir(folder)
        handle = (folder / LOCK).open("a+")
        try:
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() < deadline:
                        time.sleep(0.05)
                        continue
                    handle.seek(0)
                    pid = handle.read().split(maxsplit=1)[:1]
                    raise _in_use(what, pid[0] if pid else None) from None
            mine = os.fstat(handle.fileno())
            try:
                there = os.stat(folder / LOCK)
            except FileNotFoundError:
                there = None
        except BaseException:
            handle.close()
            raise
        if there is not None and (there.st_dev, there.st_ino) == (mine.st_dev, mine.st_ino):
            return handle
        handle.close()


def _in_use(what: str, pid: str | None) -> GantuneError:
    return GantuneError(f"{what} is in use by another gantune process{f' (pid {pid})' if pid else ''}: wait for "
                        "it to end, or stop it")


def check_free(folder: Path, what: str) -> None:
    """Refuse now when another gantune process holds ``folder`` (``exclusive``): the checks before the lock is taken
    gave advice the lock then refused ("already exists; pass --resume" beside a running search)."""
    if (held := holder(folder)) is not None:
        raise _in_use(what, held[0] if held[0] != "?" else None)


def _unmake(folder: Path, made: list[Path], before: set[str]) -> None:
    """Remove ``folder``'s lock where it is all the command added to what was there ``before`` (a lock left in a
    folder of the user's marks it as gantune's: an image folder's walk skips it), and the ``made`` folders
    (``_made``'s) that are then empty."""
    with contextlib.suppress(OSError):
        if {p.name for p in folder.iterdir()} - before != {LOCK}:
            return
        (folder / LOCK).unlink()
    _unmade(made)


#: how long ``exclusive`` waits for a lock another process holds before it refuses (``holder`` holds one briefly)
_LOCK_WAIT_S = 1.0


def holder(folder: Path) -> tuple[str, str] | None:
    """``(pid, kind)`` of the gantune process that holds ``folder``'s lock (``exclusive``) now (``"?"`` for what it
    did not write); ``None`` when no process does, or when the lock cannot be read. Creates nothing; it takes a
    shared lock for an instant, which ``exclusive`` waits out."""
    try:
        import fcntl
    except ImportError:
        return None
    try:
        handle = (folder / LOCK).open()
    except OSError:  # no lock file (no search or run has held it) or an unreadable one
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)  # released when the file closes
        except BlockingIOError:
            pid, _, kind = handle.read().strip().partition(" ")
            return pid or "?", kind or "?"
        except OSError:  # a file system without locks (some network mounts): nothing to tell
            return None
    return None


def is_generator_file(path: Path) -> bool:
    """Whether ``path`` is a generator file gantune wrote, one an export's ``--weights`` may replace: a
    ``generator.pt`` of the user's in the folder was replaced without a word."""
    try:  # a zip file mapped, not read: only the format is looked at, the tensors may be hundreds of MB
        return is_generator_payload(load_saved(path, mmap=_head(path) == b"PK"))
    except (GantuneError, OSError):
        return False


def is_generator_payload(payload: Any) -> bool:
    """Whether what torch loaded is a generator file's (``generator_payload``: its format, weights and config)."""
    return isinstance(payload, dict) and payload.get("format") == GENERATOR_FORMAT and \
        isinstance(payload.get("state_dict"), dict) and "config" in payload


def load_saved(path: Path, mmap: bool = False) -> dict[str, Any]:
    """A file gantune saved with torch (weights, a checkpoint), or a ``GantuneError`` "PATH is unreadable (why)"
    for a truncated or overwritten one (torch's reader raises OSError, RuntimeError, EOFError or a pickle error).
    Torch warns about odd pickle headers before it refuses them: silenced, so the refusal stays one line.
    ``mmap``: tensors mapped from the file rather than read (a zip file only: the legacy format is unreadable)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        try:
            head: bytes | None = _head(path)
        except OSError:  # unreadable itself: torch's line says why
            head = None
        if head is not None and head not in _TORCH_HEADS:  # text: torch said "(105)" or "(pop from empty list)"
            first = "not a file torch saved" if head else "an empty file"
        elif first.startswith("Weights only load failed"):  # torch's advice (weights_only=False) is not for a user
            first = "it holds more than tensors, which gantune does not load"
        first = first.split(". ", 1)[0]  # its first sentence: a truncated zip's came with five more of advice
        raise GantuneError(f"{path} is unreadable ({first})") from None
    return state


#: how a file ``torch.save`` wrote begins: a zip archive (torch 1.6 on), or a pickle (the legacy format)
_TORCH_HEADS = (b"PK", b"\x80")


def _head(path: Path) -> bytes:
    with path.open("rb") as f:
        head = f.read(2)
    return head if head == b"PK" else head[:1]


def cache_dir() -> Path:
    """Where work shared by every trial of every search is kept (real features and statistics, decoded data)."""
    return Path(os.environ.get("GANTUNE_CACHE_DIR") or Path.home() / ".cache" / "gantune")


def cached(path: Path, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``compute()``'s tensors, kept at ``path``: loaded when there, else computed and saved (atomically).

    A corrupt entry is recomputed and an unwritable cache only costs recomputation, so the cache can never
    fail a trial.
    """
    if path.is_file():
        try:
            stored: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
            return stored
        except Exception:  # damaged in any way (torch.load raised 7 kinds on flipped bytes): computed again
            pass
    value = compute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_save({k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in value.items()}, path)
    except OSError:
        pass
    return value


#: how metrics.jsonl spells a non-finite value: Python's bare ``NaN``/``Infinity`` is not JSON, and ``jq`` or
#: JavaScript's ``JSON.parse`` refused the whole line of a diverged run's record
NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _leaves(value: Any, leaf: Callable[[Any], Any]) -> Any:
    """``value`` with ``leaf`` applied to each value that is no dict or list, inside its dicts and lists too."""
    if isinstance(value, dict):
        return {k: _leaves(v, leaf) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_leaves(v, leaf) for v in value]
    return leaf(value)


def strict_json(value: Any, spell: Callable[[float], Any]) -> Any:
    """``value`` with each non-finite float (in its dicts and lists too) replaced by ``spell(x)``, so that
    ``json.dumps`` writes JSON: Python writes ``NaN``/``Infinity``, which most readers refuse."""
    return _leaves(value, lambda v: spell(v) if isinstance(v, float) and not math.isfinite(v) else v)


def _line(record: dict[str, Any]) -> str:
    """One metrics.jsonl line: strict JSON, a non-finite number as the string ``NONFINITE`` reads back."""
    return json.dumps(strict_json(record, json.dumps), allow_nan=False) + "\n"


def _numbers(value: Any) -> Any:
    """``value`` with each ``NONFINITE`` string (in its dicts and lists too: a provenance's floor) as its number."""
    return _leaves(value, lambda v: NONFINITE.get(v, v) if isinstance(v, str) else v)


def _parsed(line: str) -> dict[str, Any] | None:
    try:
        rec = json.loads(line)  # a line written before NONFINITE holds the bare words, which Python reads alike
    except json.JSONDecodeError:
        return None
    rec = _numbers(rec)
    # a step that is no number (a hand-edited line) is no record: comparing it with the checkpoint's was a TypeError
    step = rec.get("step") if isinstance(rec, dict) else None
    return rec if isinstance(step, (int, float)) and not isinstance(step, bool) else None


def read_metrics(folder: Path) -> list[dict[str, Any]]:
    """The records of a run folder's metrics.jsonl in order, without a last line a killed run left half-written."""
    return [rec for rec, _ in _metric_lines(folder) if rec is not None]


def _metric_lines(folder: Path) -> list[tuple[dict[str, Any] | None, str]]:
    """Each line of a run folder's metrics.jsonl with its record, ``None`` for one that is none."""
    p = folder / METRICS
    # bytes that are not UTF-8 (a disk error, an editor) spoil their line only, as any unreadable line
    return [(_parsed(ln), ln) for ln in p.read_text(errors="replace").splitlines()] if p.exists() else []


def load_checkpoint(folder: Path) -> dict[str, Any] | None:
    """A run folder's checkpoint (``None`` when it has none); one line for an unreadable one."""
    p = folder / CHECKPOINT
    if not p.exists():
        return None
    try:
        return load_saved(p)
    except GantuneError as err:
        raise _refused(folder, str(err)) from None


def unfit_checkpoint(folder: Path, err: Exception) -> GantuneError:
    """The refusal of a checkpoint torch reads that is not this run's (another run's, copied in; one saved by
    hand): its nets' shapes or keys do not fit the config, which loading them said in a traceback."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    why = f"it holds no {err}" if isinstance(err, KeyError) else " ".join(lines[:2])[:240]
    return _refused(folder, f"{folder / CHECKPOINT} does not fit this run's config ({why})")


def _refused(folder: Path, why: str) -> GantuneError:
    # the whole folder: without its checkpoint it holds a run stopped before one, which a new run is refused
    return GantuneError(f"--resume: {why}; delete {folder} to train again from step 0, or train into another --out")


class RunDir:
    """A run's output directory; ``resume`` trims metrics logged after the checkpoint it resumes from."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        (self.path / "samples").mkdir(parents=True, exist_ok=True)

    def write_config(self, cfg: TrialConfig) -> None:
        atomic_write(self.path / CONFIG, dump_config(cfg).encode())

    def append_metrics(self, record: dict[str, Any]) -> None:
        with naming(self.path / METRICS), open(self.path / METRICS, "a") as f:
            f.write(_line(record))

    def read_metrics(self) -> list[dict[str, Any]]:
        return read_metrics(self.path)

    def trim_metrics(self, last_step: int) -> list[dict[str, Any]]:
        """Drop records past ``last_step`` (logged after the checkpoint a resumed run continues from), and a last
        line the killed run left half-written; the records kept. An unreadable line before the last (an editor, a
        disk error) is no killed run's: dropped too, as it was, but said."""
        lines = _metric_lines(self.path)
        if last_step > 0 and (spoiled := [n for n, (rec, text) in enumerate(lines[:-1], 1)
                                          if rec is None and text.strip()]):
            shown = ", ".join(map(str, spoiled[:6])) + (", …" if len(spoiled) > 6 else "")
            warn(f"{self.path / METRICS}: line{'s' if len(spoiled) > 1 else ''} {shown} not a record this run "
                 "wrote (damaged or edited?): left out of the resumed run's history")
        keep = [rec for rec, _ in lines if rec is not None and rec["step"] <= last_step]
        if (self.path / METRICS).exists():
            atomic_write(self.path / METRICS, "".join(map(_line, keep)).encode())
        return keep

    def save_samples(self, step: int, png: bytes) -> Path:
        p = self.path / "samples" / f"step_{step:07d}.png"
        atomic_write(p, png)
        return p

    def grids(self) -> list[tuple[int, Path]]:
        """The sample grids saved so far, by step."""
        found = ((int(p.stem.removeprefix("step_")), p) for p in (self.path / "samples").glob("step_*.png")
                 if p.stem.removeprefix("step_").isdigit())
        return sorted(found)

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        atomic_save(state, self.path / CHECKPOINT)

    def load_checkpoint(self) -> dict[str, Any] | None:
        return load_checkpoint(self.path)

    def save_generator(self, state_dict: dict[str, torch.Tensor], cfg: TrialConfig, step: int,
                       name: str = GENERATOR) -> Path:
        p = self.path / name
        atomic_save(generator_payload(state_dict, cfg, step), p)
        return p


def finite_weights(state_dict: dict[str, torch.Tensor]) -> bool:
    """Whether every floating-point tensor of ``state_dict`` is finite: weights with a NaN or an infinity generate
    nothing (``generate`` refuses them), so a run whose weights went non-finite keeps none."""
    return all(bool(torch.isfinite(t).all()) for t in state_dict.values() if t.is_floating_point())


#: the ``format`` of a generator file (``generator_payload``): what ``generate``, ``model.init_from`` and an
#: export's ``--weights`` know gantune's own by
GENERATOR_FORMAT = "gantune.generator/1"


def generator_payload(state_dict: dict[str, torch.Tensor], cfg: TrialConfig, step: int) -> dict[str, Any]:
    """Generator weights with the config that built them: plain types, loadable with ``weights_only=True``."""
    return {
        "format": GENERATOR_FORMAT,
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        "config": cfg.to_dict(),
        "step": step,
    }
