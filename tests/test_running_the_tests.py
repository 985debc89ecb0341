"""How the suite itself is run: options every run gets, whatever the command line leaves out."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_two_workers_keep_each_files_tests_on_one(tmp_path: Path) -> None:
    """``pytest -n 2`` without ``--dist loadfile`` spread a file's tests over both workers, so a module's fixtures
    ran once in each (the benchmark smoke runs, which one module fixture starts for the whole file, ran twice):
    the suite took 631 s that way against 572 s grouped by file. The project's pytest options carry ``--dist
    loadfile``, so ``-n 2`` alone groups by file."""
    log = tmp_path / "ran"
    log.mkdir()
    tests = tmp_path / "suite"
    tests.mkdir()
    for name in ("a", "b"):
        body = "".join(f"def test_{i}() -> None:\n    with open({str(log / name)!r}, 'a') as f:\n"
                       f"        f.write(os.environ['PYTEST_XDIST_WORKER'] + '\\n')\n\n\n" for i in range(20))
        (tests / f"test_{name}.py").write_text("import os\n\n\n" + body)
    done = subprocess.run([sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "--rootdir",
                           str(tests), "-p", "no:cacheprovider", "-q", "-n", "2", str(tests)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": ""})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    for name in ("a", "b"):
        workers = (log / name).read_text().split()
        assert len(workers) == 20 and len(set(workers)) == 1, f"test_{name}.py ran on {sorted(set(workers))}"
