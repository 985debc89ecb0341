"""Shared fixtures: tiny configs that train in well under a second on CPU."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from gantune import env
from gantune.catalogue import config_from_dict
from gantune.config import TrialConfig

env.configure()  # what cli.main does: tests call run_search and train directly too

ROOT = Path(__file__).resolve().parents[1]
# The suite runs the same whatever the shell around it holds, and writes nothing outside its temporary folders:
# a user's MLflow store, plugins, Inception weights or Ray cluster are not the tests' (a train test logged into
# $MLFLOW_TRACKING_URI's store; GANTUNE_PLUGINS=missing.py failed it), the cache of real statistics is the run's own
# (not ~/.cache/gantune, whose leftovers could decide a test), the commands a test starts import this checkout (not
# whatever gantune is installed), and a search a command starts finds 2 CPUs (its local Ray takes what the process
# may run on), as the test machine has, wherever the suite runs.
for _name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID", "GANTUNE_PLUGINS",
              "GANTUNE_INCEPTION_WEIGHTS", "GANTUNE_DASHBOARDS", "RAY_ADDRESS"):
    os.environ.pop(_name, None)
os.environ["GANTUNE_CACHE_DIR"] = tempfile.mkdtemp(prefix="gantune-test-cache-")
atexit.register(shutil.rmtree, os.environ["GANTUNE_CACHE_DIR"], ignore_errors=True)
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
if hasattr(os, "sched_setaffinity") and len(_cpus := sorted(os.sched_getaffinity(0))) > 2:
    os.sched_setaffinity(0, _cpus[:2])
# GANTUNE_TEST_THREADS=1 runs the suite single-threaded (another machine's thread count changes trajectories);
# pytest-xdist's workers (`-n 2`, the test command's) share the two threads rather than each taking both
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
torch.set_num_threads(int(os.environ.get("GANTUNE_TEST_THREADS")
                          or max(1, min(2, torch.get_num_threads()) // _WORKERS)))


@pytest.fixture(autouse=True)
def _torch_seeded() -> None:
    """Every test starts from the same torch generator: with ``--dist loadfile`` a worker runs the files it is
    handed in no fixed order, so a test that draws without seeding (nets built outside ``train``) drew whatever
    the files before it had left, and a fresh clone failed a test the working copy passed."""
    torch.manual_seed(0)


def tiny(overrides: dict[str, Any] | None = None, **sections: dict[str, Any]) -> TrialConfig:
    """A small grid25 config; ``sections`` update individual sections (e.g. ``loss={"name": "hinge"}``)."""
    raw: dict[str, Any] = {
        "data": {"name": "grid25"},
        "model": {"z_dim": 8, "g_width": 16, "d_width": 16, "g_depth": 2, "d_depth": 2, "g_norm": "none"},
        "train": {"steps": 20, "batch_size": 32, "log_every": 10, "checkpoint_every": 10, "device": "cpu"},
        "eval": {"every": 10, "n_samples": 200, "metrics": []},
    }
    for key, val in {**(overrides or {}), **sections}.items():
        raw.setdefault(key, {}).update(val)
    return config_from_dict(raw)


def tiny_images(**sections: dict[str, Any]) -> TrialConfig:
    base = {"data": {"name": "digits", "resolution": 8},
            "model": {"z_dim": 8, "g_width": 8, "d_width": 8, "g_depth": 1, "d_depth": 1, "g_norm": "batch"}}
    for key, val in sections.items():
        base.setdefault(key, {}).update(val)
    return tiny(base)


@pytest.fixture
def tiny_cfg() -> TrialConfig:
    return tiny()


def tiny_space(name: str, trials: int, max_steps: int, eval_every: int, lrs: list[float], *, log_every: int,
               n_samples: int, beta1: bool = False, metrics: list[str] | None = None) -> str:
    """A grid25 search space of tiny MLPs whose lr_g choices decide each trial's fate (1e6 goes NaN)."""
    optim = f"  lr_g: {{categorical: {lrs}}}\n" + ("  beta1: {float: [0.0, 0.9]}\n" if beta1 else "")
    return f"""
name: {name}
search:
  trials: {trials}
  max_steps: {max_steps}
  eval_every: {eval_every}
  sampler: random
  concurrency: 2
  pruning: {{asha: false, health: true}}
data: {{name: grid25}}
model: {{z_dim: 4, g_width: 16, d_width: 16, g_depth: 1, d_depth: 1, g_norm: none}}
optim:
{optim}train: {{batch_size: 32, log_every: {log_every}}}
eval: {{n_samples: {n_samples}{f", metrics: {metrics}" if metrics else ""}}}
"""


def enqueue_lrs(storage: str, name: str, lrs: list[float]) -> None:
    """Fix the first trials' lr_g, whatever the sampler would draw (e.g. one healthy, one NaN)."""
    import optuna

    study = optuna.create_study(study_name=name, storage=storage)
    for lr in lrs:
        study.enqueue_trial({"optim.lr_g": lr})


@contextlib.contextmanager
def searched_in(root: Path, name: str, space: str, lrs: list[float]) -> Iterator[Path]:
    """A finished search ``name`` of ``space`` in ``root`` (the working directory while in use), its first trials'
    lr_g fixed to ``lrs``; the Ray session must be up."""
    from gantune.cli import main

    old, old_cache = Path.cwd(), os.environ.get("GANTUNE_CACHE_DIR")
    os.chdir(root)
    os.environ["GANTUNE_CACHE_DIR"] = str(root / "cache")
    try:
        (root / "space.yaml").write_text(space)
        enqueue_lrs(f"sqlite:///{root / 'optuna.db'}", name, lrs)
        assert main(["search", "space.yaml", "--quiet"]) == 0
        yield root
    finally:
        os.chdir(old)
        if old_cache is None:
            os.environ.pop("GANTUNE_CACHE_DIR", None)
        else:
            os.environ["GANTUNE_CACHE_DIR"] = old_cache


def modules_after(code: str, cwd: Path | None = None) -> tuple[set[str], str]:
    """The modules (dotted names) a fresh interpreter holds after running ``code``, and what it wrote to stderr:
    what a command or a trial process imports on its own, with nothing the test process imported before."""
    done = subprocess.run([sys.executable, "-c", code + "\nimport sys\nprint(' '.join(sys.modules))"],
                          cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return set(done.stdout.split()), done.stderr


def last_json(capsys: pytest.CaptureFixture[str]) -> Any:
    """The JSON object a ``--json`` command printed last."""
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def free_port() -> int:
    """A free TCP port on the loopback interface (for servers the tests start)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _still_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def serve_on_free_port(start: Callable[[int], subprocess.Popen[Any]], ready: Callable[[int], object], what: str,
                       tries: int = 3, seconds: float = 120) -> tuple[subprocess.Popen[Any], int]:
    """Start a server the test needs on a free loopback port: ``start(port)`` starts it (in its own process group,
    ``start_new_session=True``: ``os.killpg`` ends it with its workers), ``ready(port)`` says it answers (an
    exception means not yet). ``free_port`` only says the port was free when asked (Ray's workers bind ports all the
    time): a port taken since is skipped, and a server that exits before answering (something bound the port while
    it started) is started again on a new port. Returns the server and its port."""
    for _ in range(tries):
        port = free_port()
        if not _still_free(port):  # taken since: a server could take long to find out (MLflow: 20 s)
            continue
        server = start(port)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and server.poll() is None:
            try:
                if ready(port):
                    return server, port
            except Exception:
                pass
            time.sleep(0.3)
        if server.poll() is None:  # running but not answering: no retry would do better
            os.killpg(server.pid, signal.SIGKILL)
            break
    pytest.fail(f"{what} did not start")


def answers(url: str) -> bool:
    """Whether an HTTP server answers ``url`` (any status but a connection error)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def mlflow_server(folder: Path, tries: int = 3) -> tuple[subprocess.Popen[bytes], str]:
    """A real MLflow tracking server (``serve_on_free_port``), its store in ``folder``; returns it and its URI."""
    from mlflow import MlflowClient

    def start(port: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
             "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
             "--artifacts-destination", str(folder / "server-artifacts"), "--workers", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def ready(port: int) -> bool:
        MlflowClient(f"http://127.0.0.1:{port}").search_experiments()
        return True

    server, port = serve_on_free_port(start, ready, "mlflow server", tries)
    return server, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def ray_session() -> Any:
    """One local Ray (2 CPUs) for every in-process search of the test run: run_search joins it, never stops it."""
    import logging

    import ray

    ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR)
    yield ray
    ray.shutdown()


@contextlib.contextmanager
def sigint_default_in_children() -> Iterator[None]:
    """Processes started inside get SIGINT's default action, as a terminal's foreground job does. A background
    job of a non-interactive shell (one way to start pytest) has SIGINT ignored, exec keeps an ignored signal, and
    Python then never raises KeyboardInterrupt: the search would rightly run on. A handled signal resets on exec."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def grey_folder(root: Path, n: int = 12) -> None:
    """A folder of ``n`` random 8x8 greyscale PNGs (seeded): image-folder data that trains and scores in a blink."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    root.mkdir()
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8), "L").save(root / f"{i:02d}.png")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs all but about 150 KB full (mounting needs root: skipped where it is refused)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if shutil.which("mount") is None or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2M", "tmpfs", str(mnt)],
                                                        capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root and mount)")
    try:
        (mnt / "fill").write_bytes(bytes(1900 * 1024))
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
