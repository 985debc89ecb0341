import math
from collections.abc import Callable

import pytest
import torch

from gantune.catalogue import config_from_dict
from gantune.data import load_data
from gantune.errors import ConfigError
from gantune.gan import LOSSES, NORMS, GANTrainer
from gantune.gan.losses import GANLoss
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
    """The gradients each optimiser steps on have norm ``grad_clip``; the norm reported is the one before.

    The clip sits far below any first-step norm: over 300 initialisations of these nets G's was 0.0068 at least
    (a clip of 1e-3 failed on one draw in a fresh clone, where the unseeded nets took whatever the tests before
    had left in torch's generator; conftest now seeds it before every test)."""
    clip = 1e-4
    cfg = tiny({"optim": {"grad_clip": clip, "n_critic": 2}})
    data = load_data(cfg.data, torch.device("cpu"), 0)
    trainer = GANTrainer(cfg, torch.device("cpu"), data.sample)
    trainer.step(measure=True)  # the gradients stay in .grad until the next step's zero_grad
    stats = trainer.read_stats()
    for net, key in ((trainer.D, "grad_norm_d"), (trainer.G, "grad_norm_g")):
        grads = [p.grad for p in net.parameters() if p.grad is not None]
        stepped = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))
        assert stepped == pytest.approx(clip, rel=1e-3)
        assert stats[key] > 10 * clip


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


#: each built-in loss written out by hand: D's loss on (real, fake) logits, G's on (real, fake) logits (the reals
#: read by the relativistic ones only), its regulariser
ClosedForm = tuple[Callable[[list[float], list[float]], float], Callable[[list[float], list[float]], float],
                   str | None]


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


CLOSED_FORMS: dict[str, ClosedForm] = {
    "nonsaturating": (lambda r, f: _mean([-math.log(_sigmoid(x)) for x in r]) + _mean([-math.log(1 - _sigmoid(x))
                                                                                     for x in f]),
                      lambda r, f: _mean([-math.log(_sigmoid(x)) for x in f]), None),
    "minimax": (lambda r, f: _mean([-math.log(_sigmoid(x)) for x in r]) + _mean([-math.log(1 - _sigmoid(x))
                                                                               for x in f]),
                lambda r, f: _mean([math.log(1 - _sigmoid(x)) for x in f]), None),
    "hinge": (lambda r, f: _mean([max(0.0, 1 - x) for x in r]) + _mean([max(0.0, 1 + x) for x in f]),
              lambda r, f: -_mean(f), None),
    "wgan": (lambda r, f: _mean(f) - _mean(r), lambda r, f: -_mean(f), "weight_clipping"),
    "wgan-gp": (lambda r, f: _mean(f) - _mean(r), lambda r, f: -_mean(f), "gradient_penalty"),
    "lsgan": (lambda r, f: 0.5 * _mean([(x - 1) ** 2 for x in r]) + 0.5 * _mean([x**2 for x in f]),
              lambda r, f: 0.5 * _mean([(x - 1) ** 2 for x in f]), None),
    # RSGAN/RpGAN: -log sigmoid(D(x_i) - D(G(z_i))) for D, the pair the other way round for G
    "rpgan": (lambda r, f: _mean([-math.log(_sigmoid(a - b)) for a, b in zip(r, f, strict=True)]),
              lambda r, f: _mean([-math.log(_sigmoid(b - a)) for a, b in zip(r, f, strict=True)]), None),
    # RaGAN: each side against the other's mean logit, both terms for both players
    "ragan": (lambda r, f: _mean([_softplus(_mean(f) - x) for x in r]) + _mean([_softplus(x - _mean(r)) for x in f]),
              lambda r, f: _mean([_softplus(_mean(r) - x) for x in f]) + _mean([_softplus(x - _mean(f)) for x in r]),
              None),
}


def test_every_registered_loss_has_a_closed_form_check() -> None:
    assert set(LOSSES.names()) == set(CLOSED_FORMS)


@pytest.mark.parametrize("name", sorted(CLOSED_FORMS))
def test_losses_match_their_closed_forms(name: str) -> None:
    d, g, regulariser = CLOSED_FORMS[name]
    loss = LOSSES.get(name)
    real, fake = [2.0, -0.5, 0.3, 1.5], [-1.2, 0.7, -3.0, 0.1]
    r, f = torch.tensor(real, dtype=torch.float64), torch.tensor(fake, dtype=torch.float64)
    assert float(loss.d(r, f)) == pytest.approx(d(real, fake), rel=1e-12)
    assert float(loss.g_loss(r, f)) == pytest.approx(g(real, fake), rel=1e-12)
    assert loss.gradient_penalty == (regulariser == "gradient_penalty")
    assert loss.weight_clipping == (regulariser == "weight_clipping")


def test_a_loss_has_one_g_loss() -> None:
    for given in ({}, {"g": lambda f: f.mean(), "g_paired": lambda r, f: f.mean()}):
        with pytest.raises(ValueError, match="needs one G loss"):
            GANLoss(d=lambda r, f: f.mean(), **given)
    # a plugin's relativistic loss has no real/fake boundary unless it says one (ADA took it on 0)
    assert GANLoss(d=lambda r, f: f.mean(), g_paired=lambda r, f: f.mean()).real_above is None
    assert GANLoss(d=lambda r, f: f.mean(), g=lambda f: f.mean()).real_above == 0.0


class _LinearD(torch.nn.Module):
    """D(x) = w . x: its gradient is w at every input, so GP = (||w|| - 1)^2 and R1's E||grad||^2 = ||w||^2."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(w.clone())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = x.flatten(1)
        return flat @ self.w, flat


class _HalfSquareD(torch.nn.Module):
    """D(x) = ||x||^2 / 2: its gradient is x itself, a different norm for every sample."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = x.flatten(1)
        return 0.5 * flat.pow(2).sum(1), flat


def test_gradient_penalty_and_r1_by_hand() -> None:
    from gantune.gan.losses import gradient_penalty, r1_penalty

    w = torch.tensor([1.2, -1.6, 0.0, 2.4], dtype=torch.float64)  # ||w|| = sqrt(1.44 + 2.56 + 5.76) = 3.124
    norm = math.sqrt(1.44 + 2.56 + 5.76)
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(5, 1, 2, 2, generator=gen, dtype=torch.float64)  # images: the norm is per sample
    fake = torch.randn(5, 1, 2, 2, generator=gen, dtype=torch.float64)
    assert float(gradient_penalty(_LinearD(w), real, fake).detach()) == pytest.approx((norm - 1) ** 2, rel=1e-12)
    x = real.clone().requires_grad_(True)
    assert float(r1_penalty(_LinearD(w)(x)[0], x).detach()) == pytest.approx(norm**2, rel=1e-12)

    # a gradient that depends on x: real == fake puts every interpolate at the real sample, whatever alpha
    norms = [math.sqrt(sum(v * v for v in sample.flatten().tolist())) for sample in real]
    expected_gp = _mean([(n - 1) ** 2 for n in norms])
    assert float(gradient_penalty(_HalfSquareD(), real, real.clone()).detach()) == pytest.approx(expected_gp, rel=1e-12)
    x = real.clone().requires_grad_(True)
    expected_r1 = _mean([n * n for n in norms])
    assert float(r1_penalty(_HalfSquareD()(x)[0], x).detach()) == pytest.approx(expected_r1, rel=1e-12)


@pytest.mark.parametrize(("loss", "expected"), [
    ({"name": "wgan-gp", "gp_weight": 10.0}, 10.0 * (5.0 - 1) ** 2),  # gp_weight * GP
    ({"name": "wgan", "r1_weight": 4.0}, 0.5 * 4.0 * 5.0**2),  # gamma / 2 * E||grad||^2 (Mescheder et al.)
    ({"name": "wgan-gp", "gp_weight": 2.0, "r1_weight": 1.0}, 2.0 * 4**2 + 0.5 * 25),
    ({"name": "wgan", "r2_weight": 4.0}, 0.5 * 4.0 * 5.0**2),  # R2: the same at the fakes
    ({"name": "wgan", "r1_weight": 2.0, "r2_weight": 4.0}, 0.5 * 6.0 * 5.0**2),
])
def test_the_step_adds_the_penalties_with_their_weights(loss: dict[str, float | str], expected: float) -> None:
    """With a fixed linear D (||w|| = 5) the WGAN loss is d_fake - d_real, so loss_d minus that is the penalty."""
    cfg = tiny(loss=loss)
    data = load_data(cfg.data, torch.device("cpu"), 0)
    trainer = GANTrainer(cfg, torch.device("cpu"), data.sample)
    trainer.D = _LinearD(torch.tensor([3.0, 4.0]))  # opt_d still holds the MLP's parameters: w stays put
    trainer._d_params = list(trainer.D.parameters())
    trainer.step()
    stats = trainer.read_stats()
    assert stats["loss_d"] - (stats["d_fake"] - stats["d_real"]) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("name", ["rpgan", "ragan"])
def test_a_relativistic_g_compares_its_fakes_with_the_last_real_batch(name: str) -> None:
    """G's loss is the closed form on (D(real), D(fake)) of the D step's last real batch and the fakes G trains on."""
    cfg = tiny(loss={"name": name}, optim={"n_critic": 2})
    data = load_data(cfg.data, torch.device("cpu"), 0)
    seen: dict[str, torch.Tensor] = {}

    def sample(n: int) -> torch.Tensor:
        seen["real"] = data.sample(n)
        return seen["real"]

    trainer = GANTrainer(cfg, torch.device("cpu"), sample)
    generate = trainer._generate

    def recorded(z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        seen["fake"] = generate(z, y)
        return seen["fake"]

    trainer._generate = recorded  # type: ignore[method-assign]
    w = torch.tensor([3.0, 4.0])
    trainer.D = trainer._d_fast = _LinearD(w)  # opt_d holds the MLP's parameters: w stays put
    trainer._d_params = list(trainer.D.parameters())
    trainer.step()
    real, fake = (seen[k].detach().double() @ w.double() for k in ("real", "fake"))
    expected = CLOSED_FORMS[name][1](real.tolist(), fake.tolist())
    assert trainer.read_stats()["loss_g"] == pytest.approx(expected, rel=1e-5)


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


@pytest.mark.parametrize("n", [8, 6, 25, 33])
def test_minibatch_stddev_sees_collapse(n: int) -> None:
    """At any batch size: an odd one made groups of one sample, whose std is 0 whether G collapsed or not."""
    layer = MinibatchStdDev()
    same = layer(torch.ones(n, 3))
    varied = layer(torch.randn(n, 3, generator=torch.Generator().manual_seed(0)))
    assert same[:, -1].abs().max() < 1e-3 < 0.1 < varied[:, -1].min()


@pytest.mark.parametrize(("decay", "start", "expected"), [
    ("none", 0.0, [1.0, 1.0, 1.0]), ("linear", 0.0, [1.0, 0.5, 0.0]), ("cosine", 0.0, [1.0, 0.5, 0.0]),
    ("linear", 0.5, [1.0, 1.0, 0.0]),
])
def test_learning_rates_decay_over_the_run(decay: str, start: float, expected: list[float]) -> None:
    cfg = tiny(optim={"lr_g": 1e-3, "lr_d": 4e-3, "decay": decay, "decay_start": start}, train={"steps": 100})
    data = load_data(cfg.data, torch.device("cpu"), 0)
    trainer = GANTrainer(cfg, torch.device("cpu"), data.sample)
    for step, factor in zip((1, 51, 101), expected, strict=True):  # generator steps count from 1: 0, 50, 100 done
        trainer.schedule(step)
        assert trainer.opt_g.param_groups[0]["lr"] == pytest.approx(1e-3 * factor, abs=1e-12)
        assert trainer.opt_d.param_groups[0]["lr"] == pytest.approx(4e-3 * factor, abs=1e-12)


@pytest.mark.parametrize("decay", ["linear", "cosine"])
def test_the_first_step_trains_at_the_full_rate_and_the_last_still_trains(decay: str) -> None:
    """The schedule read the step being trained as done: step 1 trained at a decayed rate and the last at 0."""
    cfg = tiny(optim={"lr_g": 1e-3, "lr_d": 1e-3, "decay": decay}, train={"steps": 4})
    data = load_data(cfg.data, torch.device("cpu"), 0)
    trainer = GANTrainer(cfg, torch.device("cpu"), data.sample)
    trainer.schedule(1)
    assert trainer.opt_g.param_groups[0]["lr"] == pytest.approx(1e-3)
    trainer.schedule(4)
    assert trainer.opt_g.param_groups[0]["lr"] > 0
    before = [p.clone() for p in trainer.G.parameters()]
    trainer.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, trainer.G.parameters(), strict=True))


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
    assert member.opt_g.param_groups[0]["lr"] == 3e-4  # the config's already at load, not the donor's 1e-3
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
        return float(sum((x - y).detach().pow(2).sum() for x, y in zip(a, b, strict=True)) ** 0.5)

    g, ema = list(trainer.G.parameters()), list(trainer.G_ema.parameters())
    assert dist(ema, init) > 0.6 * dist(g, init)  # 0.99 here; 0.11 without the warm-up


@pytest.mark.parametrize("arch", ["dcgan", "progressive"])
def test_spectral_norm_holds_from_the_first_step(arch: str) -> None:
    """Found by a review: the DCGAN initialisation re-drew each spectrally normalised weight after torch had run
    its power iteration on the old one, so sigma was the old weight's: as built (eval mode) a layer read a spectral
    norm of 1,842, and the first D steps trained unnormalised."""
    model: dict = {"arch": "dcgan", "g_norm": "spectral+batch", "d_norm": "spectral", "g_width": 16, "d_width": 16}
    if arch == "progressive":
        model["progressive"] = {"start": 8, "fade_steps": 8, "stage_steps": 4}
    cfg = tiny_images(data={"resolution": 16}, model=model)
    trainer = GANTrainer(cfg, torch.device("cpu"), load_data(cfg.data, torch.device("cpu"), 0).sample)
    norms = []
    for net in (trainer.G, trainer.D):
        net.eval()
        for layer in net.modules():
            if hasattr(layer, "parametrizations"):
                w = layer.weight.detach()
                mat = (w.transpose(0, 1) if isinstance(layer, torch.nn.ConvTranspose2d) else w).flatten(1)
                norms.append(float(torch.linalg.matrix_norm(mat, 2)))
    assert len(norms) >= 4 and all(0.9 < n < 1.1 for n in norms), norms
