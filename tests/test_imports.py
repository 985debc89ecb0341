"""A process imports the heavy libraries it uses, not those it might: every trial and every search is a fresh
process (a Ray worker, the command line), so an import it did not need was seconds of every start."""

from __future__ import annotations

from pathlib import Path

from conftest import modules_after, tiny_space


def test_a_trial_whose_metrics_need_no_torchmetrics_does_not_import_it(tmp_path: Path) -> None:
    """torchmetrics (with the scipy.signal it imports) took about 3 s of a trial process's start; only KID uses
    it, and a grid25 trial's metrics have no KID."""
    modules, _ = modules_after(f"""
from gantune.catalogue import config_from_dict
from gantune.trial import train
cfg = config_from_dict({{"name": "t", "data": {{"name": "grid25"}}, "train": {{"steps": 20, "log_every": 10}},
                        "eval": {{"every": 20, "n_samples": 100}}}}, "test")
result = train(cfg, run_dir={str(tmp_path / "run")!r})
assert result.last_eval["fid"] > 0 and "kid" not in result.last_eval
""", tmp_path)
    assert "torch" in modules and "torchmetrics" not in modules


def test_a_search_without_tracking_does_not_import_gantunes_tracking(tmp_path: Path) -> None:
    """``--no-tracking`` imported MLflow all the same (through ``gantune.tracking``), seconds of its start."""
    space = tmp_path / "space.yaml"
    space.write_text(tiny_space("t", 1, 20, 10, [0.001], log_every=10, n_samples=100))
    modules, _ = modules_after(f"""
from gantune.cli import main
assert main(["search", {str(space)!r}, "--no-tracking", "--resume", "--storage",
             "sqlite:///{tmp_path / 'optuna.db'}"]) == 2  # no such search to resume: it ends before Ray starts
""", tmp_path)
    assert "gantune.cli" in modules and "gantune.tracking" not in modules


def test_nothing_is_sent_to_mlflows_or_rays_makers() -> None:
    """Found in review: MLflow 3 turns its telemetry on at import unless told otherwise (or it sees a CI), so a
    tracked train, a search and ``gantune ui`` looked up and posted to its makers' server; Ray's usage statistics
    likewise. A process gantune sets up has both off: asked of the libraries themselves, in a process that looks
    like a user's (no CI variables)."""
    import os
    import subprocess
    import sys

    markers = ("PYTEST_CURRENT_TEST", "GITHUB_ACTIONS", "CI", "CIRCLECI", "GITLAB_CI", "JENKINS_URL", "TRAVIS",
               "TF_BUILD", "BITBUCKET_BUILD_NUMBER", "CODEBUILD_BUILD_ARN", "BUILDKITE", "TEAMCITY_VERSION",
               "CLOUD_RUN_EXECUTION", "RUNBOT_HOST_URL", "RUNBOT_BUILD_NAME", "RUNBOT_WORKER_ID", "DO_NOT_TRACK",
               "MLFLOW_DISABLE_TELEMETRY", "RAY_USAGE_STATS_ENABLED")
    user = {k: v for k, v in os.environ.items() if k not in markers}
    code = ("from gantune import env; env.configure()\n"
            "import mlflow\n"
            "from mlflow.telemetry.client import get_telemetry_client\n"
            "from mlflow.telemetry.utils import is_telemetry_disabled\n"
            "from ray._common.usage.usage_lib import usage_stats_enabled\n"
            "print(is_telemetry_disabled(), get_telemetry_client() is None, usage_stats_enabled())\n")
    out = subprocess.run([sys.executable, "-c", code], env=user, capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["True", "True", "False"], out.stderr[-2000:]


def test_python_m_gantune_imports_no_module_of_the_users_working_folder(tmp_path: Path) -> None:
    """Found in review: ``python -m gantune`` (README: the same command as ``gantune``) put the working folder first
    on the path, so a ``yaml.py`` or ``mlflow.py`` of the user's there was imported in place of the library: a
    traceback, where the console script ran."""
    import os
    import subprocess
    import sys

    for name in ("yaml", "mlflow"):
        (tmp_path / f"{name}.py").write_text('raise ImportError("the user\'s own module")\n')
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    made = subprocess.run([sys.executable, "-m", "gantune", "init", "ring8", "--out", "r.yaml"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert made.returncode == 0 and (tmp_path / "r.yaml").is_file(), made.stderr[-2000:]
    # found in review: in a working folder deleted under the shell, Path.cwd() raised before the command ran
    (tmp_path / "gone").mkdir()
    done = subprocess.run(["bash", "-c", f"cd gone && rmdir ../gone && {sys.executable} -m gantune --help"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "usage: gantune" in done.stdout, done.stderr[-2000:]
