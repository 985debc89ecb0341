"""Extending gantune from outside the package: a loss, a metric family, a dataset and an Optuna sampler are one
registration each (what README's "Contributing" shows), and config, search spaces, training and health pick them
up."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
import yaml

from gantune.catalogue import config_from_dict
from gantune.data import DATASETS, Mixture, dataset, is_points, load_data
from gantune.errors import ConfigError, DataError
from gantune.gan.losses import LOSSES, GANLoss
from gantune.gan.nets import resolve_arch
from gantune.health import HealthMonitor
from gantune.metrics import FAMILIES, CollapseSignal, Evaluator, Reference, Samples, Scorer, family
from gantune.sampling.settings import SAMPLERS, SamplerKind
from gantune.sampling.space import load_space
from gantune.sampling.study import open_study
from gantune.trial import train
from tests.conftest import tiny


@pytest.fixture
def relativistic() -> Iterator[str]:
    # relativistic average least-squares GAN (Jolicoeur-Martineau 2019): not in gantune, added here as a user would
    LOSSES.add("ralsgan", GANLoss(
        d=lambda r, f: ((r - f.mean() - 1) ** 2).mean() + ((f - r.mean() + 1) ** 2).mean(),
        g_paired=lambda r, f: ((f - r.mean() - 1) ** 2).mean() + ((r - f.mean() + 1) ** 2).mean(),
    ))
    yield "ralsgan"
    LOSSES.remove("ralsgan")


def test_a_loss_registered_outside_trains(relativistic: str) -> None:
    result = train(tiny(loss={"name": relativistic}, train={"steps": 20}))
    assert result.status == "completed" and result.last["loss_d"] == result.last["loss_d"]


@pytest.fixture
def spread() -> Iterator[str]:
    def build(ref: Reference) -> Scorer:
        real = ref.feats.std(dim=0).mean()

        def score(fake: Samples) -> dict[str, float]:
            return {"spread": float(fake.feats.std(dim=0).mean() / real)}

        return score

    family("spread", keys=("spread",), cheap=True, collapse=(CollapseSignal("spread", 0.2, "spread ratio"),))(build)
    yield "spread"
    FAMILIES.remove("spread")


def test_a_metric_family_registered_outside_is_an_objective_and_a_collapse_signal(spread: str, tmp_path: Path
                                                                                  ) -> None:
    space = tmp_path / "space.yaml"
    space.write_text("search: {objective: spread, direction: maximize}\n"
                     "eval: {metrics: [fid, spread]}\n")
    assert load_space(space).settings.objectives == ["spread"]  # the objective check knows its keys
    result = train(tiny(eval={"metrics": [spread], "every": 10}))
    assert 0 < result.last_eval["spread"] < 10
    monitor = HealthMonitor(tiny().health)
    for step in (100, 200, 300):  # a generator whose samples do not spread: collapsed, by the declared floor
        verdict = monitor({"step": float(step), "spread": 0.01})
    assert verdict is not None and verdict.kind == "collapsed" and verdict.rule == "spread"


@pytest.fixture
def square4() -> Iterator[str]:
    @dataset("square4", points=True)
    def build(cfg: object) -> tuple[Mixture, None, None]:
        return Mixture(torch.tensor([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]]), 0.02), None, None

    yield "square4"
    DATASETS.remove("square4")


def test_a_dataset_registered_outside_trains_with_the_mode_metrics(square4: str) -> None:
    cfg = config_from_dict({"data": {"name": square4}, "model": {"z_dim": 4, "g_width": 16, "d_width": 16,
                                                                  "g_norm": "none"},
                            "train": {"steps": 20, "batch_size": 32, "log_every": 10, "device": "cpu"},
                            "eval": {"every": 20, "n_samples": 200, "metrics": ["modes"]}})
    assert is_points(cfg.data) and resolve_arch(cfg) == "mlp"
    result = train(cfg)
    assert result.status == "completed" and 0 <= result.last_eval["modes"] <= 4
    # the mode metrics read the plugin's means and spread: its own samples cover all 4 modes, a point between none
    data = load_data(cfg.data, torch.device("cpu"), 0)
    evaluate = Evaluator(cfg, data, torch.device("cpu"))
    assert evaluate(lambda n: data.sample(n))["modes"] == 4
    assert evaluate(lambda n: torch.zeros(n, 2))["modes"] == 0


def test_a_dataset_says_its_own_channel_count() -> None:
    """``channels_of`` asks the dataset: a greyscale set registered outside needs no name in gantune's code."""
    from gantune.config import DataConfig
    from gantune.data import channels_of

    @dataset("grey_plugin", channels=1)
    def grey(cfg: DataConfig) -> tuple[None, torch.Tensor, None]:
        return None, torch.zeros(4, 1, cfg.resolution, cfg.resolution), None

    try:
        assert channels_of(DataConfig(name="grey_plugin")) == 1
        assert channels_of(DataConfig(name="grey_plugin", channels=3)) == 3  # the config still overrides it
        assert channels_of(DataConfig(name="torchvision", dataset="MNIST", path="x")) == 1
        assert channels_of(DataConfig(name="torchvision", dataset="CIFAR10", path="x")) == 3
    finally:
        DATASETS.remove("grey_plugin")


def test_a_name_a_config_cannot_give_is_refused_as_it_registers() -> None:
    """Found in review: ``LOSSES.add(5, ...)`` registered, then every error listing the losses was a traceback
    (``', '.join`` of an int); ``"my loss"`` and ``""`` made the lists unreadable."""
    for name in (5, "my loss", "", "a,b"):
        with pytest.raises(ValueError, match=r"a name is a non-empty text without spaces or commas"):
            LOSSES.add(name, GANLoss(d=lambda r, f: r.mean(), g=lambda f: f.mean()))  # type: ignore[arg-type]
    assert all(isinstance(n, str) and n for n in LOSSES.names())


def test_a_plugins_dataset_is_not_blamed_for_a_conditional_run_on_unlabelled_data() -> None:
    """Found in review: the refusal listing the labelled datasets asked each one of a bare config; a plugin's that
    reads its ``path`` raised, and the user's ``model.conditional`` on ring8 read "a plugin raised TypeError"."""
    from gantune.config import DataConfig

    @dataset("labels_plugin", needs=("path",), labelled=lambda cfg: Path(cfg.path, "labels.txt").exists())
    def labelled(cfg: DataConfig) -> tuple[None, torch.Tensor, None]:
        return None, torch.zeros(4, 3, cfg.resolution, cfg.resolution), None

    @dataset("unlabelled_plugin", needs=("path",))  # never labelled: not offered (a first fix listed it)
    def unlabelled(cfg: DataConfig) -> tuple[None, torch.Tensor, None]:
        return None, torch.zeros(4, 3, cfg.resolution, cfg.resolution), None

    try:
        with pytest.raises(ConfigError, match=r"model.conditional: dataset 'ring8' has no class labels to condition "
                                              r"on \(use .*labels_plugin\)$"):
            config_from_dict({"name": "c", "data": {"name": "ring8"}, "model": {"conditional": True}}, "c.yaml")
    finally:
        DATASETS.remove("labels_plugin")
        DATASETS.remove("unlabelled_plugin")


def test_collapse_checks_keep_their_order_whatever_registers_first() -> None:
    """The verdict names the first signal that fires: an explicit order, not the order modules were imported."""
    from gantune.metrics import collapse_signals

    before = [s.key for s in collapse_signals()]
    entries = {name: FAMILIES.get(name) for name in FAMILIES.names()}
    try:
        for name in ("modes", "classes", "stacked_modes"):  # re-registered last, as a replacing plugin would be
            FAMILIES.remove(name)
            FAMILIES.add(name, entries[name])
        assert [s.key for s in collapse_signals()] == before == ["mode_coverage", "class_coverage",
                                                                   "stacked_coverage", "diversity", "recall"]
    finally:
        for name in list(FAMILIES.names()):
            FAMILIES.remove(name)
        for name, entry in entries.items():
            FAMILIES.add(name, entry)
            FAMILIES._outside.pop(name)  # built-ins again, not this module's registrations


@pytest.fixture
def nsga2() -> Iterator[str]:
    SAMPLERS.add("nsga2", SamplerKind(optuna.samplers.NSGAIISampler, lambda s: {"seed": s.seed}))
    yield "nsga2"
    SAMPLERS.remove("nsga2")


def test_a_sampler_registered_outside_takes_its_own_options(nsga2: str, tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(f"search: {{sampler: {nsga2}, sampler_options: {{population_size: 8, crossover_prob: 1}}}}\n")
    settings = load_space(space).settings
    study = open_study("s", f"sqlite:///{tmp_path / 'o.db'}", settings)
    assert isinstance(study.sampler, optuna.samplers.NSGAIISampler)
    assert study.sampler._population_size == 8  # the option reached the sampler
    space.write_text(f"search: {{sampler: {nsga2}, sampler_options: {{population: 8}}}}\n")
    with pytest.raises(ConfigError, match="NSGAIISampler has no option 'population' a space can set; choose from: "
                                          "population_size"):
        load_space(space)


def test_a_search_carries_what_was_registered_outside_to_the_trials_processes(
        relativistic: str, spread: str, square4: str, nsga2: str, tmp_path: Path, ray_session: object,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray runs each trial in a worker process that imports gantune afresh: a search of a loss, a metric and a
    dataset registered here failed every trial on "unknown loss 'ralsgan'" (and exited 0), and Optuna's NSGA-II,
    whose sampler holds a lock, ended the search in a traceback when Tune pickled its state."""
    from gantune.search import SearchOptions, run_search

    monkeypatch.setenv("GANTUNE_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "plugged.yaml"
    path.write_text(f"""
name: plugged
search: {{trials: 2, max_steps: 20, eval_every: 10, sampler: {nsga2}, objective: {spread}, direction: maximize,
         warm_start: false, pruning: {{asha: false}}}}
data: {{name: {square4}}}
loss: {{name: {relativistic}}}
model: {{z_dim: 4, g_width: 16, d_width: 16, g_depth: 1, d_depth: 1, g_norm: none}}
optim: {{lr_g: {{float: [1.0e-4, 1.0e-3], log: true}}}}
train: {{batch_size: 32, log_every: 10}}
eval: {{n_samples: 200, metrics: [modes, {spread}]}}
""")
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    summary = run_search(load_space(path), SearchOptions(storage=storage, runs_dir=str(tmp_path / "runs"),
                                                         quiet=True))
    trials = optuna.load_study(study_name="plugged", storage=storage).trials
    assert summary["counts"]["completed"] == 2, [t.user_attrs.get("reason") for t in trials]
    assert all(t.user_attrs["config"]["loss"]["name"] == relativistic and t.values[0] > 0 for t in trials)


PLUGIN = '''
import torch.nn.functional as F
from gantune.gan.losses import LOSSES, GANLoss

LOSSES.add("ragan_cli", GANLoss(d=lambda r, f: F.softplus(-(r - f.mean())).mean() + F.softplus(f - r.mean()).mean(),
                                g=lambda f: F.softplus(-f).mean()))
'''


def test_the_command_line_imports_a_plugin_file_or_module_first(tmp_path: Path) -> None:
    """The gantune command had no way to import a user's module before it ran: what README's Contributing section
    registers was "unknown" to it. ``--plugin`` (a file or a module) and ``$GANTUNE_PLUGINS`` import it first; one
    that fails to import, or registers a signal on a health setting that does not exist, is one line, exit 2."""
    import os

    (tmp_path / "myplug.py").write_text(PLUGIN)
    (tmp_path / "t.yaml").write_text("data: {name: ring8}\nloss: {name: ragan_cli}\nmodel: {z_dim: 4, g_width: 16, "
                                     "d_width: 16, g_norm: none}\ntrain: {steps: 10, batch_size: 32, log_every: 10}\n"
                                     "eval: {every: 10, n_samples: 200, metrics: [modes]}\n"
                                     "health: {objective: mode_coverage, mode: max}\n")

    def run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gantune.cli", *argv], capture_output=True, text=True,
                              cwd=tmp_path, env={**os.environ, **(env or {})}, timeout=300)

    done = run("--plugin", "myplug.py", "train", "t.yaml", "--no-tracking", "--out", "a")
    assert done.returncode == 0, done.stderr
    done = run("train", "t.yaml", "--no-tracking", "--out", "b", env={"GANTUNE_PLUGINS": "myplug"})  # a module
    assert done.returncode == 0, done.stderr
    done = run("train", "t.yaml", "--no-tracking", "--out", "b2", "--plugin", "myplug.py")  # after the command
    assert done.returncode == 0, done.stderr  # (it was "unrecognized arguments")
    done = run("train", "t.yaml", "--no-tracking", "--out", "c")
    assert done.returncode == 2 and "unknown loss 'ragan_cli'" in done.stderr and not (tmp_path / "c").exists()
    (tmp_path / "bad.py").write_text("from gantune.metrics import CollapseSignal\n"
                                     "CollapseSignal('spread2', 'min_diversty', 'spread ratio')\n")
    done = run("--plugin", "bad.py", "train", "t.yaml", "--no-tracking", "--out", "d")
    assert done.returncode == 2 and done.stderr.splitlines() == [
        "gantune train: error: --plugin bad.py: ValueError: CollapseSignal 'spread2': floor 'min_diversty' is not a "
        "health setting (did you mean 'min_diversity'?) (a number, or one of gantune.config.HealthConfig's fields)"]
    done = run("--plugin", "nope.py", "train", "t.yaml", "--no-tracking", "--out", "d")
    assert done.returncode == 2 and "--plugin nope.py: FileNotFoundError: no file" in done.stderr
    assert not (tmp_path / "d").exists()
    (tmp_path / "quits.py").write_text("import sys\nsys.exit(0)\n")  # exit 0 with no word, and nothing trained
    done = run("--plugin", "quits.py", "train", "t.yaml", "--no-tracking", "--out", "d")
    assert done.returncode == 2 and done.stderr.splitlines() == [
        "gantune train: error: --plugin quits.py: it called sys.exit(0) while imported; a plugin only registers "
        "(nothing ran)"]
    assert not (tmp_path / "d").exists()
    (tmp_path / "plugs").mkdir()  # a folder without __init__.py: an empty namespace package, exit 0, no word
    (tmp_path / "plugs" / "myloss.py").write_text(PLUGIN)
    done = run("--plugin", "plugs", "train", "t.yaml", "--no-tracking", "--out", "d")
    assert done.returncode == 2 and done.stderr.splitlines() == [
        "gantune train: error: --plugin plugs: ImportError: plugs is a folder without an __init__.py (a namespace "
        "package): no code of it runs; name its module (--plugin plugs.NAME) or add plugs/__init__.py"]
    done = run("--plugin", "plugs.myloss", "train", "t.yaml", "--no-tracking", "--out", "d")
    assert done.returncode == 0, done.stderr


def test_a_plugin_file_given_through_a_link_loads_under_the_links_name(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Found in review: ``--plugin plug.py``, a link to a file without the .py suffix, was "AssertionError: " (the
    link resolved, no loader found for the target's name)."""
    from gantune import plugins

    (tmp_path / "plug_impl").write_text(PLUGIN.replace("ragan_cli", "ragan_link"))
    (tmp_path / "linked_plug.py").symlink_to(tmp_path / "plug_impl")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(plugins.ENV, raising=False)
    try:
        plugins.load(["linked_plug.py"])
        assert "ragan_link" in LOSSES and LOSSES.outside()["ragan_link"][0] == "linked_plug"
        plugins.load(["linked_plug.py"])  # given twice: the same module, loaded once
    finally:
        if "ragan_link" in LOSSES:
            LOSSES.remove("ragan_link")
        sys.modules.pop("linked_plug", None)


def test_a_plugin_path_through_a_linked_folder_and_dotdot_is_the_file_systems(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """``--plugin sub/../p.py`` with ``sub`` a link to a folder elsewhere names the ``p.py`` beside that folder (as
    ``cat`` reads it); it was folded as text to ``./p.py``: "no file"."""
    from gantune import plugins

    (tmp_path / "work").mkdir()
    (tmp_path / "kept" / "inner").mkdir(parents=True)
    (tmp_path / "kept" / "dotdot_plug.py").write_text(PLUGIN.replace("ragan_cli", "ragan_dotdot"))
    (tmp_path / "work" / "sub").symlink_to(tmp_path / "kept" / "inner")
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.delenv(plugins.ENV, raising=False)
    try:
        plugins.load(["sub/../dotdot_plug.py"])
        assert "ragan_dotdot" in LOSSES
    finally:
        if "ragan_dotdot" in LOSSES:
            LOSSES.remove("ragan_dotdot")
        sys.modules.pop("dotdot_plug", None)


def test_an_installed_packages_entry_point_is_imported_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plugin package names its registering module in the ``gantune.plugins`` entry-point group; each command
    imports it before it runs, as pytest and MLflow load theirs."""
    from gantune import plugins

    dist = tmp_path / "gantune_fake_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: gantune-fake-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[gantune.plugins]\nfake = fake_plugin_mod\n")
    (tmp_path / "fake_plugin_mod.py").write_text(PLUGIN.replace("ragan_cli", "ragan_entry"))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(plugins.ENV, raising=False)
    try:
        plugins.load([])
        assert "ragan_entry" in LOSSES
        assert LOSSES.outside()["ragan_entry"][0] == "fake_plugin_mod"  # what a search carries to its trials
    finally:
        if "ragan_entry" in LOSSES:
            LOSSES.remove("ragan_entry")
    (dist / "entry_points.txt").write_text("[gantune.plugins]\nfake = no_such_plugin_mod\n")
    with pytest.raises(ConfigError, match=r"^entry point fake \(no_such_plugin_mod\): ModuleNotFoundError"):
        plugins.load([])


def test_what_is_carried_replaces_a_built_in_and_loads_where_the_module_is_not(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A trial's process registered only the names it lacked: a plugin replacing the built-in ``hinge`` trained the
    built-in in every search trial. And a plugin in another folder must load in a process that has neither that
    folder on its path nor the working directory it was given from (a cluster's worker): the module is carried by
    value, its folder (for what it imports beside it) where it exists."""
    import subprocess
    import sys

    from gantune import plugins
    from gantune.search.carry import pack, unpack

    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "helper_of_plug.py").write_text("SCALE = 3.0\n")
    (folder / "far_plug.py").write_text(
        "from gantune.gan.losses import LOSSES, GANLoss\nimport helper_of_plug\n"
        "mine = GANLoss(d=lambda r, f: helper_of_plug.SCALE * (f - r).mean(), g=lambda f: -f.mean())\n"
        "LOSSES.remove('hinge')\nLOSSES.add('hinge', mine)\nLOSSES.add('far_loss', mine)\n")
    built_in = LOSSES.get("hinge")
    monkeypatch.chdir(tmp_path)
    try:
        plugins.load([str(folder / "far_plug.py")])
        blob, _ = pack()
        assert blob is not None and set(LOSSES.outside()) == {"hinge", "far_loss"}
        LOSSES.remove("hinge")  # a fresh worker: the built-in
        LOSSES.add("hinge", built_in)
        unpack(blob)
        assert LOSSES.get("hinge").d is not built_in.d
        (tmp_path / "blob").write_bytes(blob)
        check = ("import sys, torch\nfrom gantune.search.carry import unpack\nfrom gantune.gan.losses import LOSSES\n"
                 f"unpack(open({str(tmp_path / 'blob')!r}, 'rb').read())\n"
                 "print(float(LOSSES.get('far_loss').d(torch.zeros(2), torch.ones(2))), 'far_plug' in sys.modules)\n")
        away = tmp_path / "away"
        away.mkdir()
        done = subprocess.run([sys.executable, "-c", check], cwd=away, capture_output=True, text=True, timeout=120,
                              env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                                   "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.split() == ["3.0", "False"]  # the loss, by value: the module itself was never imported
    finally:
        for name in ("far_loss", "hinge"):
            if name in LOSSES:
                LOSSES.remove(name)
        LOSSES.add("hinge", built_in)
        LOSSES._outside.pop("hinge")  # the built-in again, not a plugin's (which the next search would carry)
        sys.modules.pop("far_plug", None)
        sys.path[:] = [p for p in sys.path if p != str(folder)]


def test_a_plugin_file_is_loaded_once_and_never_under_another_modules_name(tmp_path: Path) -> None:
    """Two files of one name (or one named like a module already imported: ``json.py``) loaded the first only,
    without a word, and the user met "unknown loss" later."""
    from gantune import plugins

    (tmp_path / "json.py").write_text("X = 1\n")
    with pytest.raises(ConfigError, match=r"--plugin .*json.py: ImportError: a module named 'json' is imported "
                                          r"already \(from .*\): rename the file"):
        plugins.load([str(tmp_path / "json.py")])
    (tmp_path / "once_plug.py").write_text("import builtins\nbuiltins.gantune_loaded = getattr(builtins, "
                                           "'gantune_loaded', 0) + 1\n")
    import builtins
    import sys

    try:
        plugins.load([str(tmp_path / "once_plug.py"), str(tmp_path / "once_plug.py")])
        assert builtins.gantune_loaded == 1  # type: ignore[attr-defined]
    finally:
        sys.modules.pop("once_plug", None)
        if hasattr(builtins, "gantune_loaded"):
            del builtins.gantune_loaded


def test_a_plugin_file_named_like_an_installed_module_is_refused(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """``--plugin mlflow.py`` (a copy of a plugin under that name) took MLflow's place: a traceback at the first
    MLflow import. A module of that name on the path that is not imported yet is refused the same way."""
    from gantune import plugins

    installed = tmp_path / "site"
    installed.mkdir()
    (installed / "shadowed_mod.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(installed))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "shadowed_mod.py").write_text(PLUGIN)
    with pytest.raises(ConfigError, match=r"--plugin .*shadowed_mod.py: ImportError: a module named 'shadowed_mod' "
                                          r"exists already \(.*site/shadowed_mod.py\): rename the file"):
        plugins.load([str(tmp_path / "mine" / "shadowed_mod.py")])
    assert "ragan_cli" not in LOSSES


def test_a_search_of_a_plugins_sampler_or_loss_read_without_it_is_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Without its ``--plugin``, ``report``/``export``/``review`` of a search whose sampler a plugin registered were
    a traceback (the stored settings no longer validated), and ``export --seeds`` of a plugin loss's trial ran
    failing re-runs through Ray, leaving a re-runs study and run folders, before its one line."""
    from gantune.cli import main

    monkeypatch.chdir(tmp_path)  # where the re-runs' runs/ would go
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    study = optuna.create_study(study_name="plugged", storage=storage)
    study.set_user_attr("settings", {"objective": "fid", "direction": "minimize", "trials": 2, "max_steps": 10,
                                     "eval_every": 10, "sampler": "nsga2_gone"})
    study.add_trial(optuna.trial.create_trial(value=1.0, user_attrs={"config": tiny().to_dict(),
                                                                     "gantune_status": "completed"}))
    for argv in (["report", "plugged", "--out", str(tmp_path / "r.html")], ["export", "plugged", "--out",
                                                                             str(tmp_path / "b.yaml")]):
        assert main([*argv, "--storage", storage]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "unknown sampler 'nsga2_gone'" in err[0] and "gantune --plugin" in err[0], err
    other = optuna.create_study(study_name="lossy", storage=storage)
    other.set_user_attr("settings", {"objective": "fid", "direction": "minimize", "trials": 2, "max_steps": 10,
                                     "eval_every": 10})
    other.add_trial(optuna.trial.create_trial(value=1.0, user_attrs={
        "config": {**tiny().to_dict(), "loss": {"name": "ragan_gone"}}, "gantune_status": "completed"}))
    assert main(["export", "lossy", "--storage", storage, "--seeds", "1", "--out", str(tmp_path / "b.yaml"),
                 "--tracking-uri", f"sqlite:///{tmp_path / 'ml.db'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    # found in review: export, search --resume and train named the loss without the hint report gave
    assert len(err) == 1 and err[0].endswith("unknown loss 'ragan_gone'; choose one of: " + ", ".join(LOSSES.names())
                                             + " (registered by a plugin? give it: gantune --plugin FILE_OR_MODULE "
                                             "...)"), err
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({**tiny().to_dict(), "loss": {"name": "ragan_gone"}}))
    assert main(["train", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "c"), "--no-tracking"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith("(registered by a plugin? give it: gantune --plugin FILE_OR_MODULE ...)")
    (tmp_path / "c.yaml").unlink()
    assert main(["train", str(tmp_path / "c.yaml")]) == 2  # another error: no hint
    assert "registered by a plugin" not in capsys.readouterr().err
    assert [s.study_name for s in optuna.get_all_study_summaries(storage)] == ["plugged", "lossy"]  # no re-runs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.db"]  # no runs/, ml.db, b.yaml, r.html or c/


def test_a_registration_that_does_not_pickle_is_named_in_one_line() -> None:
    """What plugins registered is pickled once for the trials' processes; when it fails, the entry is named
    (found by pickling each alone, only then)."""
    import threading

    from gantune.search.carry import pack

    lock = threading.Lock()
    locked = GANLoss(d=lambda r, f: (f - r).mean() if lock else r, g=lambda f: -f.mean())
    LOSSES.add("locked_loss", locked)
    try:
        with pytest.raises(ConfigError) as exc:
            pack()
        assert str(exc.value).startswith(f"loss 'locked_loss' (registered by {__name__}) cannot be sent to the "
                                          "processes that run trials: TypeError: cannot pickle '_thread.lock'"), exc
    finally:
        LOSSES.remove("locked_loss")


def test_a_registration_no_trial_can_use_is_left_out_when_it_does_not_pickle(
        relativistic: str, tmp_path: Path, ray_session: object, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A plugin loaded for every command (``$GANTUNE_PLUGINS``, an entry point) that registered something that does
    not pickle stopped every search (exit 2), the ones that never use it too. It is left out with a warning; a space
    that names it, or a plugin's entry in place of a built-in (used without being named), still stops the search."""
    import threading

    from gantune.search import SearchOptions, run_search
    from gantune.search.carry import pack

    lock = threading.Lock()
    locked = GANLoss(d=lambda r, f: (f - r).mean() if lock else r, g=lambda f: -f.mean())
    built_in = LOSSES.get("hinge")
    LOSSES.add("locked_loss", locked)
    try:
        monkeypatch.setenv("GANTUNE_CACHE_DIR", str(tmp_path / "cache"))
        path = tmp_path / "unlocked.yaml"
        path.write_text(f"""
name: unlocked
search: {{trials: 2, max_steps: 20, eval_every: 10, objective: mode_coverage, direction: maximize,
         warm_start: false, pruning: {{asha: false}}}}
data: {{name: ring8}}
loss: {{name: {{categorical: [hinge, {relativistic}]}}}}
model: {{z_dim: 4, g_width: 16, d_width: 16, g_depth: 1, d_depth: 1, g_norm: none}}
optim: {{lr_g: {{float: [1.0e-4, 1.0e-3], log: true}}}}
train: {{batch_size: 32, log_every: 10}}
eval: {{n_samples: 200, metrics: [modes]}}
""")
        storage = f"sqlite:///{tmp_path / 'optuna.db'}"
        summary = run_search(load_space(path), SearchOptions(storage=storage, runs_dir=str(tmp_path / "runs"),
                                                             quiet=True))
        assert summary["counts"]["completed"] == 2
        left = [line for line in capsys.readouterr().err.splitlines() if "locked_loss" in line]
        assert left == [f"warning: loss 'locked_loss' (registered by {__name__}) is left out of the trials: the "
                        "space does not name it and it cannot be sent to the processes that run them (TypeError: "
                        "cannot pickle '_thread.lock' object)"], left

        with pytest.raises(ConfigError, match=r"^loss 'locked_loss' \(registered by .*\) cannot be sent"):
            pack("loss: {name: {categorical: [hinge, locked_loss]}}\n")  # a trial may draw it
    finally:
        LOSSES.remove("locked_loss")
    LOSSES.remove("hinge")  # a plugin's hinge that does not pickle: a space never naming a loss trains hinge
    LOSSES.add("hinge", locked)
    try:
        assert LOSSES.replaces("hinge") and not LOSSES.replaces(relativistic)
        with pytest.raises(ConfigError, match=r"^loss 'hinge' \(registered by .*\) cannot be sent"):
            pack("data: {name: ring8}\n")
    finally:
        LOSSES.remove("hinge")
        LOSSES.add("hinge", built_in)
        LOSSES._outside.pop("hinge")  # the built-in again, not a plugin's


def test_a_generator_samples_without_the_plugins_of_its_loss_and_metric(
        relativistic: str, spread: str, square4: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``generate`` rebuilt the generator from its whole embedded config, so one trained with a plugin's loss or
    metric was refused without the plugin ("unknown loss 'ralsgan'", exit 2), though sampling reads neither; a
    plugin's 2-D points were plotted without their true means (a table of grid25's and ring8's)."""
    from gantune import generate
    from gantune.cli import main

    monkeypatch.setenv("GANTUNE_CACHE_DIR", str(tmp_path / "cache"))
    cfg = tiny(data={"name": square4}, loss={"name": relativistic}, train={"steps": 10},
               eval={"metrics": [spread], "every": 10})
    assert train(cfg, run_dir=tmp_path / "run").status == "completed"
    drawn: list[object] = []
    plot = generate.samples_png
    monkeypatch.setattr(generate, "samples_png", lambda x, means, *a: drawn.append(means) or plot(x, means, *a))
    assert main(["generate", str(tmp_path / "run" / "generator.pt"), "--n", "20", "--out",
                 str(tmp_path / "g.png")]) == 0
    assert len(drawn) == 1 and isinstance(drawn[0], torch.Tensor) and drawn[0].tolist() == [
        [-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]]
    LOSSES.remove(relativistic)
    FAMILIES.remove(spread)
    try:
        assert main(["generate", str(tmp_path / "run" / "generator.pt"), "--n", "20", "--out",
                     str(tmp_path / "g.csv")]) == 0
        assert len((tmp_path / "g.csv").read_text().splitlines()) == 21
    finally:  # the fixtures remove them again
        LOSSES.add(relativistic, GANLoss(d=lambda r, f: (f - r).mean(), g=lambda f: -f.mean()))
        family(spread, keys=(spread,))(lambda ref: lambda fake: {})


def test_a_metric_key_mlflow_would_refuse_is_refused_as_it_registers() -> None:
    """A plugin family reporting ``spread@1k``: MLflow refused the key at the first trial's log, the tracker was
    switched off for the rest of the search, and its parent and first child runs stayed RUNNING (exit 0)."""
    from gantune.metrics import FAMILIES, family

    for key in ("spread@1k", "a//b", "/x", "./x", "a/../b", "x/"):  # MLflow 3 refuses each (its regex, its paths)
        with pytest.raises(ValueError, match=rf"^metric key {re.escape(repr(key))}: MLflow takes letters, digits, _ "):
            family("spread_at", keys=("spread", key))(lambda ref: lambda fake: {})
        assert "spread_at" not in FAMILIES
    family("spread_at", keys=("spread/1k", "spread: 1k"))(lambda ref: lambda fake: {})  # what it takes passes
    FAMILIES.remove("spread_at")


def test_a_datasets_images_are_fitted_to_the_resolution_and_a_wrong_shape_is_one_line() -> None:
    """A plugin's builder gets no resizing of its own: 16-px images under ``resolution: 8`` were read by the 8-px
    critic as 25 samples each (the run ended "completed"), and under 32 failed in a convolution, a traceback; a
    builder returning ``(N, H, W)`` images failed deep in torch too."""
    from gantune.config import DataConfig
    from gantune.data import load_data
    from gantune.errors import DataError

    @dataset("blobs_plugin", channels=1)
    def blobs(cfg: DataConfig) -> tuple[None, torch.Tensor, None]:
        return None, torch.rand(8, 1, 16, 16) * 2 - 1, None

    @dataset("flat_plugin", channels=1)
    def flat(cfg: DataConfig) -> tuple[None, torch.Tensor, None]:
        return None, torch.rand(8, 16, 16) * 2 - 1, None

    @dataset("cloud_plugin", points=True)
    def cloud(cfg: DataConfig) -> tuple[torch.Tensor, None, None]:
        return torch.randn(100, 2), None, None

    @dataset("shifted_plugin", channels=1, labelled=True)
    def shifted(cfg: DataConfig) -> tuple[None, torch.Tensor, torch.Tensor]:  # classes -1 to 2: one off
        return None, torch.rand(8, 1, 8, 8) * 2 - 1, torch.arange(8) % 4 - 1

    try:
        for res in (8, 32):
            real = load_data(DataConfig(name="blobs_plugin", resolution=res), torch.device("cpu"), 0)
            assert real.images is not None and tuple(real.images.shape) == (8, 1, res, res)
        with pytest.raises(DataError, match=r"dataset 'flat_plugin' returned images of shape \(8, 16, 16\): "
                                            r"expected a tensor \(N, C, H, W\)"):
            load_data(DataConfig(name="flat_plugin"), torch.device("cpu"), 0)
        with pytest.raises(DataError, match="dataset 'cloud_plugin' is 2-D points, and its builder returned Tensor "
                                            "for the mixture"):
            load_data(DataConfig(name="cloud_plugin"), torch.device("cpu"), 0)
        # found in review: one negative label read the whole set as unlabelled ("has no class labels")
        with pytest.raises(DataError, match=r"dataset 'shifted_plugin' returned labels from -1 to 2: expected "
                                            r"classes 0 to K - 1 \(or -1 for every image: labels unknown\)"):
            load_data(DataConfig(name="shifted_plugin", resolution=8), torch.device("cpu"), 0)
    finally:
        for name in ("blobs_plugin", "flat_plugin", "cloud_plugin", "shifted_plugin"):
            DATASETS.remove(name)


@pytest.mark.parametrize(("keys", "collapse", "needle"), [
    (("step",), (), "metric key 'step': a trial's record has its own 'step'"),
    (("loss_d",), (), "metric key 'loss_d': a trial's record has its own"),
    (("fid",), (), "metric 'mine': key 'fid' is metric 'fid''s already"),
    (("spreadx",), (CollapseSignal("sprd", 0.2, "spread"),), "CollapseSignal 'sprd': not one of the family's keys"),
])
def test_a_family_whose_keys_cannot_work_is_refused_as_it_registers(keys: tuple[str, ...], collapse: tuple,
                                                                   needle: str) -> None:
    """Found by a review of the extension path: ``keys=("step", "loss_d")`` overwrote the record (a run printed
    step -1 of 20, exit 0), a plugin ``fid`` replaced the real FID, and a collapse signal on a key the family does
    not report never fired."""
    with pytest.raises(ValueError, match=re.escape(needle)):
        family("mine", keys=keys, collapse=collapse)(lambda ref: lambda fake: {})
    assert "mine" not in FAMILIES


def test_what_a_metric_returns_is_checked_against_what_it_declares(tmp_path: Path) -> None:
    """An undeclared key got past the registration's MLflow check and stopped tracking mid-run; a 0-d tensor
    (the README's example without ``float``) ended the run in a traceback when the record was written."""
    @family("tens_plugin", keys=("tens",))
    def tens(ref: Reference) -> Scorer:
        return lambda fake: {"tens": fake.feats.std(0).mean()}  # a tensor: read as its number

    @family("undeclared_plugin", keys=("undeclared",))
    def undeclared(ref: Reference) -> Scorer:
        return lambda fake: {"bad key!": 1.0}

    try:
        result = train(tiny(eval={"metrics": ["tens_plugin"]}), run_dir=tmp_path / "t")
        assert isinstance(result.last_eval["tens"], float)
        with pytest.raises(ConfigError, match=re.escape("eval.metrics: metric 'undeclared_plugin' reported 'bad "
                                                        "key!', which it does not declare")):
            train(tiny(eval={"metrics": ["undeclared_plugin"]}), run_dir=tmp_path / "u")
    finally:
        FAMILIES.remove("tens_plugin")
        FAMILIES.remove("undeclared_plugin")


def test_what_a_plugin_metric_computes_from_the_real_data_is_not_kept_on_disk(tmp_path: Path) -> None:
    """The real-vs-real floor and a family's real statistics were cached on disk by the family's name, across
    searches: a plugin metric edited to return twice its value read its first version's floor (0.97 where it was
    1.94). Gantune's own are kept; a plugin's are computed once per process."""
    ref = Reference(x=torch.zeros(4, 2), feats=torch.zeros(4, 2), cache=tmp_path / "reference-x.pt")
    calls: list[int] = []
    for _ in range(2):
        ref.derived("mine", lambda: calls.append(1) or {"a": torch.ones(1)})
    assert calls == [1] and not list(tmp_path.iterdir())  # memory only
    again = Reference(x=torch.zeros(4, 2), feats=torch.randn(4, 2), cache=tmp_path / "reference-x.pt")
    FAMILIES.get("diversity")(again)
    assert [p.name for p in tmp_path.iterdir()] == ["reference-x-diversity.pt"]  # gantune's own: on disk


def test_a_plugin_module_does_not_put_the_working_folder_before_installed_modules(tmp_path: Path) -> None:
    """``--plugin mymodule`` put the working folder first on ``sys.path`` for the whole command: a local
    ``mlflow.py`` there then hid MLflow (a traceback). The file form appends its folder; so does the module form."""
    import os
    import shutil
    import subprocess

    exe = shutil.which("gantune")
    if exe is None:
        pytest.skip("the gantune console script is not on PATH")
    (tmp_path / "myplug.py").write_text(PLUGIN)
    (tmp_path / "mlflow.py").write_text("raise ImportError('the local mlflow.py was imported')\n")
    (tmp_path / "t.yaml").write_text("data: {name: ring8}\nloss: {name: ragan_cli}\nmodel: {z_dim: 4, g_width: 16, "
                                     "d_width: 16, g_norm: none}\ntrain: {steps: 10, batch_size: 32, log_every: 10}\n"
                                     "eval: {every: 10, n_samples: 200, metrics: [modes]}\n"
                                     "health: {objective: mode_coverage, mode: max}\n")
    done = subprocess.run([exe, "--plugin", "myplug", "train", "t.yaml", "--out", "a", "--tracking-uri",
                           f"sqlite:///{tmp_path / 'm.db'}"], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": ""}, timeout=300)
    assert done.returncode == 0, done.stderr


def test_a_plugin_module_an_installed_one_would_hide_is_refused(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Searched after the installed modules (so that a local mlflow.py no longer hides MLflow), a local ``six.py``
    given as ``--plugin six`` imported the installed six and never ran; refused as the file form refuses it."""
    from gantune import plugins

    monkeypatch.chdir(tmp_path)
    (tmp_path / "optuna.py").write_text("raise RuntimeError('never imported')\n")
    with pytest.raises(ConfigError, match=r"optuna.py is hidden by an installed module 'optuna' .*: rename it, or "
                                          r"give the file: --plugin optuna.py"):
        plugins.load(["optuna"])


def test_a_plugin_that_fails_at_run_time_is_one_line_naming_its_code(tmp_path: Path) -> None:
    """Found by a review: a plugin dataset whose builder raised ended ``gantune train`` with a traceback through
    gantune's own code; the error is the user's code, said as one line where it was raised, exit code 2. An error
    in gantune's own code stays a traceback."""
    (tmp_path / "failing_plug.py").write_text(
        "from gantune.data import Mixture, dataset\n\n"
        "@dataset('failing4', points=True)\n"
        "def build(cfg):\n"
        "    raise ValueError('the means file is empty')\n\n"
        "@dataset('missing4', points=True)\n"
        "def missing(cfg):\n"
        "    return open('/nonexistent/means.txt')\n")
    (tmp_path / "cfg.yaml").write_text("data: {name: failing4}\ntrain: {steps: 10, device: cpu}\n")
    done = subprocess.run([sys.executable, "-m", "gantune.cli", "--plugin", "failing_plug.py", "train", "cfg.yaml",
                           "--out", "run", "--no-tracking"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stderr.strip().splitlines() == [
        "gantune train: error: a plugin raised ValueError: the means file is empty (failing_plug.py, line 5, in "
        "build)"]
    (tmp_path / "cfg.yaml").write_text("data: {name: missing4}\ntrain: {steps: 10, device: cpu}\n")
    done = subprocess.run([sys.executable, "-m", "gantune.cli", "--plugin", "failing_plug.py", "train", "cfg.yaml",
                           "--out", "run2", "--no-tracking"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "a plugin raised FileNotFoundError" in done.stderr and "failing_plug.py, line 9, in missing" in done.stderr


@pytest.mark.parametrize(("images", "labels", "says"), [
    (lambda: torch.rand(64, 1, 8, 8) * 255, None, "values from"),
    (lambda: torch.randint(0, 255, (64, 1, 8, 8)), None, "dtype torch.int64"),
    (lambda: torch.rand(64, 1, 8, 8) * 2 - 1, lambda: torch.arange(10), "labels torch.int64 of shape (10,)"),
    (lambda: torch.rand(64, 1, 8, 8) * 2 - 1, lambda: torch.ones(64, dtype=torch.bool), "labels torch.bool"),
], ids=["pixels-0-255", "int64", "short-labels", "bool-labels"])
def test_a_plugin_image_dataset_is_refused_in_one_line_for_what_would_train_wrong(images: Any, labels: Any,
                                                                                 says: str) -> None:
    """Found by a review: only the shape was checked. Floats in [0, 255] trained as they were, integer pixels
    other than uint8 and float64 images failed the first layer (a traceback), labels of the wrong length failed
    mid-training. A float64 image in [-1, 1] is converted and trains."""
    name = f"plug_{says.split()[0]}"

    @dataset(name)
    def build(cfg: object) -> tuple[None, torch.Tensor, torch.Tensor | None]:
        return None, images(), labels() if labels else None

    try:
        cfg = config_from_dict({"data": {"name": name, "resolution": 8}})
        with pytest.raises(DataError, match=re.escape(says)):
            load_data(cfg.data, torch.device("cpu"), 0)
    finally:
        DATASETS.remove(name)

    @dataset("plug_double")
    def double(cfg: object) -> tuple[None, torch.Tensor, torch.Tensor]:
        return None, torch.rand(64, 1, 8, 8, dtype=torch.float64) * 2 - 1, torch.arange(64, dtype=torch.uint8) % 4

    try:
        data = load_data(config_from_dict({"data": {"name": "plug_double", "resolution": 8}}).data,
                         torch.device("cpu"), 0)
        images, classes = data.sample_labelled(4)
        assert images.dtype == torch.float32 and classes.dtype == torch.int64  # uint8 classes failed D's embedding
    finally:
        DATASETS.remove("plug_double")


def test_gantune_named_as_a_plugin_is_not_counted_as_the_users_code(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found reading the change: ``--plugin gantune.metrics`` made every error raised in gantune's own code read
    as a plugin's (one line, exit 2) instead of the traceback a bug in gantune needs."""
    from gantune import plugins

    monkeypatch.setattr(plugins, "_OWN", set())
    plugins.load(["gantune.metrics"])
    try:
        config_from_dict({"data": {"name": "grid25"}, "train": {"steps": "x"}})
    except Exception as err:
        assert plugins.raised_in(err) is None
    else:
        raise AssertionError("the bad config was accepted")
