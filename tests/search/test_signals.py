"""SIGTERM after Ray stops: ``ray.shutdown()`` resets the signal's C-level handler to the default, while Python's
``signal.getsignal`` still names gantune's, so a SIGTERM as a search closed (its summary, wall time and MLflow
parent run) killed it silently with exit 143, the parent run left RUNNING."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import os, signal, sys, time
    import ray
    from gantune import env
    from gantune.search.runner import stop_ray
    env.configure()
    env.terminate_as_interrupt()
    ray.init(address="local", num_cpus=1, include_dashboard=False, configure_logging=False)
    env.terminate_as_interrupt()  # as the search sets it after ray.init
    stop_ray()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)
        print("not signalled")
    except KeyboardInterrupt:
        print("interrupted")
""")


@pytest.mark.timeout(180)
def test_sigterm_after_ray_stopped_is_still_an_interrupt() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=150)
    assert (done.returncode, done.stdout.strip()) == (0, "interrupted"), (done.returncode, done.stderr[-2000:])
