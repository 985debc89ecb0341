"""Extending gantune from outside the package: a loss, a metric family, a dataset and an Optuna sampler are one
registration each (what README's "Contributing" shows), and config, search spaces, training and health pick them
up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import torch
import torch.nn.functional as F

from gantune.catalogue import config_from_dict
from gantune.data import DATASETS, Mixture, dataset, is_points
from gantune.errors import ConfigError
from gantune.gan.losses import LOSSES, GANLoss
from gantune.gan.nets import resolve_arch
from gantune.health import HealthMonitor
from gantune.metrics import FAMILIES, CollapseSignal, Reference, Samples, Scorer, family
from gantune.sampling.settings import SAMPLERS, SamplerKind
from gantune.sampling.space import load_space
from gantune.sampling.study import open_study
from gantune.trial import train
from tests.conftest import tiny


@pytest.fixture
def relativistic() -> Iterator[str]:
    # relativistic average GAN (Jolicoeur-Martineau 2018): not in gantune, added here as a user would
    LOSSES.add("ragan", GANLoss(
        d=lambda r, f: F.softplus(-(r - f.mean())).mean() + F.softplus(f - r.mean()).mean(),
        g=lambda f: F.softplus(-f).mean(),
    ))
    yield "ragan"
    LOSSES.remove("ragan")


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
