import math

import pytest
import torch

from gantune.config import config_from_dict
from gantune.data import load_data
from gantune.errors import ConfigError
from gantune.gan import LOSSES, NORMS, GANTrainer
from gantune.gan.nets import MinibatchStdDev
from tests.conftest import tiny, tiny_images

LOSS_NAMES = LOSSES.names()
NORM_NAMES = [*NORMS.names(), "spectral", "spectral+layer"]


def test_the_config_takes_its_names_from_the_registries() -> None:
    import re

    import pytest

    from gantune.errors import ConfigError

    for name in LOSSES.names():
        assert config_from_dict({"loss": {"name": name}}).loss.name == name
    listed = re.escape("loss.name: unknown loss 'nope'; choose one of: " + ", ".join(LOSSES.names()))
    with pytest.raises(ConfigError, match=listed):
        config_from_dict({"loss": {"name": "nope"}})
    with pytest.raises(ConfigError, match=r"model\.g_norm: 'group' is not a normalisation: use one of none, batch"):
        config_from_dict({"model": {"g_norm": "group"}})


def _train_steps(cfg, steps: int = 3) -> dict[str, float]:
    data = load_data(cfg.data, torch.device("cpu"), 0)
    trainer = GANTrainer(cfg, torch.device("cpu"), data.sample)
    for i in range(steps):
        trainer.step(measure=i == steps - 1)
    return trainer.read_stats()


@pytest.mark.parametrize("loss", LOSS_NAMES)
@pytest.mark.parametrize("norm", NORM_NAMES)
@pytest.mark.parametrize("images", [False, True], ids=["mlp", "dcgan"])
def test_every_loss_and_norm_trains(loss: str, norm: str, images: bool) -> None:
    sections = {"loss": {"name": loss}, "model": {"g_norm": norm, "d_norm": norm}}
    make = tiny_images if images else tiny
    try:
        cfg = make(**sections)
    except ConfigError:  # impossible combinations are rejected by the schema, never trained
        assert ("batch" in norm and loss == "wgan-gp") or (norm == "instance" and not images)
        return
    stats = _train_steps(cfg)
    assert all(math.isfinite(v) for v in stats.values()), stats
    assert stats["grad_norm_d"] > 0 and stats["grad_norm_g"] > 0


@pytest.mark.parametrize("extra", [
    {"loss": {"r1_weight": 1.0}},
    {"loss": {"feature_matching": 1.0}},
    {"optim": {"name": "rmsprop", "n_critic": 3, "grad_clip": 0.5, "ema": 0.99}},
    {"model": {"minibatch_std": True, "g_depth": 2, "d_depth": 2}},
])
@pytest.mark.parametrize("images", [False, True], ids=["mlp", "dcgan"])
def test_options_train(extra: dict, images: bool) -> None:
    cfg = tiny_images(**extra) if images else tiny(extra)
    stats = _train_steps(cfg)
    assert all(math.isfinite(v) for v in stats.values())


def test_grad_clip_bounds_norm() -> None:
    cfg = tiny({"optim": {"grad_clip": 1e-3, "lr_g": 1.0, "lr_d": 1.0}})
    stats = _train_steps(cfg)
    assert stats["grad_norm_d"] > 1e-3  # the reported norm is the one before clipping


def test_wgan_weight_clipping() -> None:
    cfg = tiny(loss={"name": "wgan", "clip": 0.01})
    data = load_data(cfg.data, torch.device("cpu"), 0)
    trainer = GANTrainer(cfg, torch.device("cpu"), data.sample)
    trainer.step()
    assert max(p.abs().max().item() for p in trainer.D.parameters()) <= 0.01 + 1e-7


def test_ema_tracks_generator() -> None:
    cfg = tiny(optim={"ema": 0.5})
    data = load_data(cfg.data, torch.device("cpu"), 0)
    trainer = GANTrainer(cfg, torch.device("cpu"), data.sample)
    assert trainer.G_ema is not None
    before = [p.clone() for p in trainer.G_ema.parameters()]
    trainer.schedule(100)  # past the warm-up: min(0.5, 101 / 110)
    trainer.step()
    after = list(trainer.G_ema.parameters())
    g = list(trainer.G.parameters())
    for b, a, p in zip(before, after, g, strict=True):
        assert torch.allclose(a, 0.5 * b + 0.5 * p)


@pytest.mark.parametrize("res", [8, 16, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_dcgan_shapes(res: int, channels: int) -> None:
    cfg = config_from_dict({"data": {"name": "digits", "resolution": res, "channels": channels},
                            "model": {"g_width": 4, "d_width": 4, "g_depth": 1, "d_depth": 1}})
    data = load_data(cfg.data, torch.device("cpu"), 0)
    trainer = GANTrainer(cfg, torch.device("cpu"), data.sample)
    x = trainer.generate(torch.randn(2, cfg.model.z_dim))
    assert x.shape == (2, channels, res, res)
    logits, _ = trainer.D(x)
    assert logits.shape == (2,)


def test_minibatch_stddev_sees_collapse() -> None:
    layer = MinibatchStdDev()
    same = layer(torch.ones(8, 3))
    varied = layer(torch.randn(8, 3))
    assert same[:, -1].abs().max() < 1e-3 < varied[:, -1].min()


@pytest.mark.parametrize(("decay", "start", "expected"), [
    ("none", 0.0, [1.0, 1.0, 1.0]), ("linear", 0.0, [1.0, 0.5, 0.0]), ("cosine", 0.0, [1.0, 0.5, 0.0]),
    ("linear", 0.5, [1.0, 1.0, 0.0]),
])
def test_learning_rates_decay_over_the_run(decay: str, start: float, expected: list[float]) -> None:
    cfg = tiny(optim={"lr_g": 1e-3, "lr_d": 4e-3, "decay": decay, "decay_start": start}, train={"steps": 100})
    data = load_data(cfg.data, torch.device("cpu"), 0)
    trainer = GANTrainer(cfg, torch.device("cpu"), data.sample)
    for step, factor in zip((0, 50, 100), expected, strict=True):
        trainer.schedule(step)
        assert trainer.opt_g.param_groups[0]["lr"] == pytest.approx(1e-3 * factor, abs=1e-12)
        assert trainer.opt_d.param_groups[0]["lr"] == pytest.approx(4e-3 * factor, abs=1e-12)


def test_a_loaded_state_trains_with_its_configs_hyperparameters_not_the_saved_ones() -> None:
    """What a PBT member cloned from another relies on: the optimiser state comes from the checkpoint, the
    learning rates and betas from the (explored) config."""
    a = tiny(optim={"lr_g": 1e-3, "lr_d": 1e-3, "beta1": 0.5})
    data = load_data(a.data, torch.device("cpu"), 0)
    donor = GANTrainer(a, torch.device("cpu"), data.sample)
    donor.step()
    b = tiny(optim={"lr_g": 3e-4, "lr_d": 6e-4, "beta1": 0.0, "beta2": 0.9})
    member = GANTrainer(b, torch.device("cpu"), data.sample)
    member.load_state_dict(donor.state_dict())
    assert member.opt_g.param_groups[0]["lr"] == 1e-3  # what load_state_dict alone leaves
    member.schedule(1)
    assert member.opt_g.param_groups[0]["lr"] == 3e-4 and member.opt_d.param_groups[0]["lr"] == 6e-4
    assert member.opt_g.param_groups[0]["betas"] == (0.0, 0.9)
    assert member.opt_g.state_dict()["state"][0]["step"] == 1  # Adam's moments came along


def test_the_ema_generator_forgets_the_random_initial_weights() -> None:
    """A 0.999 EMA without warm-up still holds 0.999**200 = 82% of G's initial weights after 200 steps;
    with the warm-up it follows G's recent weights."""
    cfg = tiny(optim={"lr_g": 1e-3, "lr_d": 1e-3, "ema": 0.999})
    data = load_data(cfg.data, torch.device("cpu"), 0)
    trainer = GANTrainer(cfg, torch.device("cpu"), data.sample)
    init = [p.detach().clone() for p in trainer.G.parameters()]
    for step in range(200):
        trainer.schedule(step)
        trainer.step()

    def dist(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
        return float(sum((x - y).pow(2).sum() for x, y in zip(a, b, strict=True)) ** 0.5)

    g, ema = list(trainer.G.parameters()), list(trainer.G_ema.parameters())
    assert dist(ema, init) > 0.6 * dist(g, init)  # 0.99 here; 0.11 without the warm-up
