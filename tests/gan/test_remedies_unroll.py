"""Two remedies for mode collapse: unrolled GANs (``loss.unroll``) and minibatch discrimination
(``model.minibatch_disc``): real short runs, the look-ahead's promises (D and its optimiser untouched, G's gradient
changed, the optimisers' maths replayed exactly), the layer's collapse signal, spaces and refusals."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
import yaml

from gantune.catalogue import config_from_dict
from gantune.config import TrialConfig
from gantune.data import load_data
from gantune.errors import ConfigError
from gantune.gan import GANTrainer
from gantune.gan.nets import MinibatchDiscrimination
from gantune.gan.step import OPTIMIZERS
from gantune.gan.unroll import functional_update, lookahead
from gantune.sampling.space import load_space
from tests.conftest import tiny, tiny_images

CPU = torch.device("cpu")


def _trainer(cfg: TrialConfig, seed: int = 0) -> GANTrainer:
    torch.manual_seed(seed)
    return GANTrainer(cfg, CPU, load_data(cfg.data, CPU, seed).sample)


@pytest.mark.parametrize(("make", "sections"), [
    (tiny, {"loss": {"unroll": 3}}),
    (tiny, {"data": {"name": "ring8"}, "loss": {"unroll": 2, "name": "wgan-gp"}}),
    (tiny, {"loss": {"unroll": 2, "r1_weight": 1.0, "feature_matching": 1.0}, "model": {"d_norm": "spectral+layer"}}),
    (tiny, {"loss": {"unroll": 2}, "model": {"d_norm": "spectral+batch", "g_norm": "batch"}}),
    (tiny, {"loss": {"unroll": 2, "name": "wgan"}, "optim": {"name": "rmsprop", "n_critic": 2}}),
    (tiny, {"model": {"minibatch_disc": 8, "minibatch_disc_dim": 4}}),
    (tiny, {"data": {"name": "ring8"}, "model": {"minibatch_disc": 8, "minibatch_std": True},
            "loss": {"unroll": 2, "name": "wgan-gp"}}),
    (tiny_images, {"loss": {"unroll": 2}}),
    (tiny_images, {"model": {"minibatch_disc": 8, "minibatch_std": True}}),
    (tiny_images, {"model": {"minibatch_disc": 4, "d_norm": "batch"}, "loss": {"unroll": 1, "feature_matching": 1}}),
], ids=["mlp-unroll", "ring8-unroll-gp", "unroll-r1-fm-spectral", "unroll-batchnorm", "unroll-wgan-rmsprop",
        "mlp-mbdisc", "ring8-mbdisc-mbstd-unroll-gp", "dcgan-unroll", "dcgan-mbdisc-mbstd", "dcgan-both-bn-fm"])
def test_the_knobs_train(make: Any, sections: dict[str, dict[str, Any]]) -> None:
    trainer = _trainer(make(**sections))
    for i in range(3):
        trainer.step(measure=i == 2)
    stats = trainer.read_stats()
    assert all(math.isfinite(v) for v in stats.values()), stats
    assert stats["grad_norm_d"] > 0 and stats["grad_norm_g"] > 0


def _d_state(trainer: GANTrainer) -> tuple[dict[str, torch.Tensor], dict[str, Any], list[torch.Tensor | None]]:
    grads = [None if p.grad is None else p.grad.clone() for p in trainer.D.parameters()]
    return ({k: v.clone() for k, v in trainer.D.state_dict().items()}, copy.deepcopy(trainer.opt_d.state_dict()),
            grads)


def _assert_same(a: Any, b: Any) -> None:
    """Exactly equal, tensors bit for bit, through dicts and lists."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same(x, y)
    else:
        assert a == b


def test_the_generator_step_leaves_d_its_buffers_and_its_optimiser_exactly_as_they_were() -> None:
    """Batch norm (running statistics) and spectral norm (power-iteration vectors) in D: buffers its forward
    writes; Adam's moments after a first step. The G step reads D 3 updates ahead and writes none of it."""
    cfg = tiny(loss={"unroll": 3}, model={"d_norm": "spectral+batch", "g_norm": "batch"})
    trainer = _trainer(cfg)
    trainer.step()  # D's optimiser has state now
    real = trainer.sample_real(cfg.train.batch_size)
    fake = trainer._generate(trainer.z(cfg.train.batch_size))
    d_before = _d_state(trainer)
    g_buffers = [b.clone() for b in trainer.G.buffers()]
    assert any("running_mean" in k for k in d_before[0]) and any("_u" in k for k in d_before[0])
    trainer.D.requires_grad_(False)  # as in step()
    score, _, _, _ = trainer._unrolled(fake, real)
    trainer.loss.g_loss(None, score).backward()
    trainer.D.requires_grad_(True)
    _assert_same(d_before, _d_state(trainer))
    _assert_same(g_buffers, list(trainer.G.buffers()))  # the look-ahead's extra fakes leave G's statistics alone
    with torch.no_grad():
        assert not torch.allclose(score, trainer._discriminate(fake)[0])  # the look-ahead D is another D
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trainer.G.parameters())


def test_a_step_with_unrolling_updates_d_exactly_as_one_without() -> None:
    """D's updates come first and the look-ahead writes nothing: after a whole step D and its optimiser are
    bit for bit those of the same step without unrolling; G is not."""
    plain, unrolled = _trainer(tiny()), _trainer(tiny(loss={"unroll": 2}))
    for trainer in (plain, unrolled):
        torch.manual_seed(1)
        trainer.step()
    _assert_same(_d_state(plain)[:2], _d_state(unrolled)[:2])
    assert any(not torch.equal(a, b) for a, b in zip(plain.G.parameters(), unrolled.G.parameters(), strict=True))


def _g_grads(trainer: GANTrainer, score: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.autograd.grad(trainer.loss.g_loss(None, score), list(trainer.G.parameters()), retain_graph=True))


def test_unrolling_changes_gs_gradient_and_a_lookahead_that_does_not_move_is_d_itself() -> None:
    cfg = tiny(loss={"unroll": 2})
    trainer = _trainer(cfg)
    trainer.step()
    real = trainer.sample_real(cfg.train.batch_size)
    fake = trainer._generate(trainer.z(cfg.train.batch_size))
    trainer.D.requires_grad_(False)
    plain = _g_grads(trainer, trainer._discriminate(fake)[0])

    torch.manual_seed(2)
    ahead = _g_grads(trainer, trainer._unrolled(fake, real)[0])
    gap = max(float((a - p).abs().max()) for a, p in zip(ahead, plain, strict=True))
    assert gap > 1e-3 * max(float(p.abs().max()) for p in plain)
    # the second-order term alone: with the scored fakes cut off from G, G's gradient still flows, through how
    # the unrolled updates of D depend on G's samples
    torch.manual_seed(2)
    through_updates = _g_grads(trainer, trainer._unrolled(fake.detach(), real)[0])
    assert all(torch.isfinite(g).all() for g in through_updates)
    assert max(float(g.abs().max()) for g in through_updates) > 1e-3 * max(float(p.abs().max()) for p in plain)

    # zero steps ahead: D itself, the plain gradient
    still = lookahead(trainer.D, trainer.opt_d, 0, trainer._lookahead_loss)
    for a, p in zip(_g_grads(trainer, still(fake)[0]), plain, strict=True):
        torch.testing.assert_close(a, p, rtol=0, atol=0)
    # steps with a zero learning rate: D's weights again, and the second-order term is multiplied by 0
    for group in trainer.opt_d.param_groups:
        group["lr"] = 0.0
    torch.manual_seed(2)
    for a, p in zip(_g_grads(trainer, trainer._unrolled(fake, real)[0]), plain, strict=True):
        torch.testing.assert_close(a, p, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("loss", [{}, {"name": "hinge"}, {"feature_matching": 1.0}, {"name": "rpgan"}])
def test_gs_unrolled_objective_holds_the_games_real_term(loss: dict[str, Any]) -> None:
    """Metz et al. 2017: G minimises the game's value at the look-ahead D, f(G, D_K(G)), whose real term moves
    with G through D's k updates. G's loss read D_K's score of the fakes only, so G's step never depended on the
    reals it was judged beside (a review measured that term at a third of all unrolling adds, on grid25). A
    relativistic G loss reads the reals already: nothing joins it. What the logs read stays G's own loss."""
    cfg = tiny(loss={"unroll": 2, **loss})
    trainer = _trainer(cfg)
    trainer.step()
    bs = cfg.train.batch_size
    fake = trainer._generate(trainer.z(bs))
    trainer.D.requires_grad_(False)
    params = list(trainer.G.parameters())
    reals = [trainer.sample_real(bs) for _ in range(2)]
    ahead = trainer.sample_real(bs)
    trainer.sample_real = lambda n: ahead[:n]  # the look-ahead's fresh batches, the same both times
    grads, logged = [], []
    for real in reals:
        torch.manual_seed(3)  # and their latents
        loss_g, objective = trainer._g_loss(fake, real, None)
        grads.append(torch.autograd.grad(objective, params, retain_graph=True))
        logged.append(float(loss_g))
        assert (objective is loss_g) == (loss.get("name") == "rpgan")
    gap = max(float((a - b).abs().max()) for a, b in zip(*grads, strict=True))
    assert gap > 1e-4 * max(float(g.abs().max()) for g in grads[0])  # the reals reach G's gradient
    if not loss:  # the non-saturating loss reads the fakes alone: its value is the same beside other reals
        assert logged[0] == logged[1]
    plain = _trainer(tiny())
    plain.step()
    loss_g, objective = plain._g_loss(plain._generate(plain.z(bs)), plain.sample_real(bs), None)
    assert objective is loss_g


@pytest.mark.parametrize(("make", "first_step"), [
    (lambda ps: torch.optim.Adam(ps, 1e-2, betas=(0.5, 0.999)), False),
    (lambda ps: torch.optim.Adam(ps, 1e-2, betas=(0.5, 0.999)), True),
    (lambda ps: torch.optim.Adam(ps, 1e-2, betas=(0.0, 0.9), weight_decay=0.1), False),
    (lambda ps: torch.optim.AdamW(ps, 1e-2, betas=(0.5, 0.99), weight_decay=0.1), False),
    (lambda ps: torch.optim.RMSprop(ps, 1e-2), False),
    (lambda ps: torch.optim.RMSprop(ps, 1e-2), True),
], ids=["adam", "adam-first-step", "adam-l2", "adamw", "rmsprop", "rmsprop-first-step"])
def test_the_functional_updates_replay_torchs_optimisers(make: Any, first_step: bool) -> None:
    """What the look-ahead applies to D's copy is what D's optimiser would do with the same gradient, from its
    current moments (or none, on a first step)."""
    gen = torch.Generator().manual_seed(0)
    p = torch.nn.Parameter(torch.randn(5, 3, generator=gen))
    opt = make([p])
    if not first_step:
        for _ in range(3):
            p.grad = torch.randn(5, 3, generator=gen)
            opt.step()
    grad = torch.randn(5, 3, generator=gen)
    grad[0] = 0.0  # a parameter row the loss does not reach this step
    state = dict(opt.state.get(p, {}))
    new, _ = functional_update(opt)(p.detach().clone(), grad, state, opt.param_groups[0])
    p.grad = grad
    opt.step()
    torch.testing.assert_close(new, p.detach(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("sections", [
    {"optim": {"grad_clip": 0.05}, "model": {"d_norm": "spectral+batch"}},
    {"optim": {"name": "rmsprop"}, "loss": {"name": "wgan", "clip": 0.05}, "model": {"minibatch_disc": 4}},
], ids=["adam-gradclip-spectral-batchnorm", "rmsprop-weightclip-mbdisc"])
def test_lookahead_steps_are_ds_own_updates(sections: dict[str, dict[str, Any]]) -> None:
    """Two look-ahead steps on fixed batches give the D that two real updates (gradient clipping, optimiser step,
    weight clipping) of a copy of D give: the same scores, weights and buffers."""
    cfg = tiny(**sections)
    trainer = _trainer(cfg)
    trainer.step()
    real = trainer.sample_real(cfg.train.batch_size)
    fake = trainer._generate(trainer.z(cfg.train.batch_size)).detach()

    def d_loss(d: Any) -> torch.Tensor:
        return trainer.loss.d(d(real)[0], d(fake)[0])

    d_copy, clip = copy.deepcopy(trainer.D), cfg.loss.clip if trainer.loss.weight_clipping else None
    opt_copy = OPTIMIZERS.get(cfg.optim.name)(d_copy.parameters(), cfg.optim.lr_d, cfg.optim, False)
    opt_copy.load_state_dict(trainer.opt_d.state_dict())
    ahead = lookahead(trainer.D, trainer.opt_d, 2, d_loss, clip, cfg.optim.grad_clip)
    for _ in range(2):
        opt_copy.zero_grad()
        d_loss(d_copy).backward()
        if cfg.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(list(d_copy.parameters()), cfg.optim.grad_clip)
        opt_copy.step()
        if clip is not None:
            with torch.no_grad():
                for p in d_copy.parameters():
                    p.clamp_(-clip, clip)
    x = torch.randn(16, 2)
    torch.testing.assert_close(ahead(x)[0].detach(), d_copy(x)[0].detach(), rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        assert not torch.allclose(trainer.D(x)[0], d_copy(x)[0])  # and D itself did not move


def test_the_lookahead_is_differentiable_at_a_zero_gradient() -> None:
    """Adam's square root at a zero moment: the look-ahead's gradient stays finite (a first step, dead units)."""
    cfg = tiny(loss={"unroll": 1}, model={"d_depth": 1, "d_width": 4})
    trainer = _trainer(cfg)  # no D step yet: empty optimiser state
    with torch.no_grad():
        for p in trainer.D.parameters():
            p.zero_()  # every D gradient but the head's is exactly 0
    fake = trainer._generate(trainer.z(cfg.train.batch_size))
    trainer.D.requires_grad_(False)
    grads = _g_grads(trainer, trainer._unrolled(fake, trainer.sample_real(cfg.train.batch_size))[0])
    assert all(torch.isfinite(g).all() for g in grads)


def test_minibatch_discrimination_sees_collapse() -> None:
    layer = MinibatchDiscrimination(in_features=6, kernels=5, dim=3)
    collapsed = torch.randn(1, 6).expand(8, 6).clone().requires_grad_(True)
    same = layer(collapsed)
    assert same.shape == (8, 5)
    assert torch.equal(same, torch.full((8, 5), 8.0))  # exp(0) for each of the 8 samples, itself included
    same.sum().backward()  # L1 at distance 0: a finite gradient
    assert collapsed.grad is not None and torch.isfinite(collapsed.grad).all()
    varied = layer(torch.randn(8, 6) * 3)
    assert (varied >= 1.0).all() and (varied < 8.0).all() and varied.max() < same.min()


@pytest.mark.parametrize("images", [False, True], ids=["mlp", "dcgan"])
def test_minibatch_discrimination_feeds_ds_last_layer(images: bool) -> None:
    """B more inputs to D's last layer; the features D returns (for feature matching) are unchanged in shape."""
    base = {"model": {"minibatch_disc": 0}}
    with_disc = {"model": {"minibatch_disc": 6, "minibatch_disc_dim": 3}}
    make: Any = tiny_images if images else tiny
    off, on = _trainer(make(**base)).D, _trainer(make(**with_disc)).D
    shape = (5, 1, 8, 8) if images else (5, 2)
    x = torch.randn(*shape)
    (lo, fo), (ln, fn) = off(x), on(x)
    assert lo.shape == ln.shape == (5,) and fo.shape == fn.shape
    head_in = (lambda d: d.head.in_channels) if images else (lambda d: d.head.in_features)
    assert head_in(on) == head_in(off) + 6
    assert on.mbdisc is not None and on.mbdisc.T.shape == (fn.shape[1], 6 * 3)


SPACE = """
name: remedies
search: {trials: 4, max_steps: 20, eval_every: 10}
data: {name: ring8}
model: {g_width: 16, d_width: 16, minibatch_disc: {categorical: [0, 8]}, minibatch_disc_dim: {int: [2, 8]}}
loss:
  unroll: {categorical: [0, 2]}
"""


def test_a_space_searches_unroll_and_minibatch_discrimination(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(SPACE)
    space = load_space(path)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen: set[tuple[int, int]] = set()
    for _ in range(30):
        trial = study.ask()
        cfg = config_from_dict(space.sample(trial))
        seen.add((cfg.loss.unroll, cfg.model.minibatch_disc))
        assert 2 <= cfg.model.minibatch_disc_dim <= 8
        study.tell(trial, 0.0)
    assert seen == {(0, 0), (0, 8), (2, 0), (2, 8)}


@pytest.mark.parametrize(("sections", "needle"), [
    ({"loss": {"unroll": -1}}, "loss.unroll: Input should be greater than or equal to 0"),
    ({"loss": {"unroll": 1.5}}, "loss.unroll: Input should be a valid integer"),
    ({"model": {"minibatch_disc": -2}}, "model.minibatch_disc: Input should be greater than or equal to 0"),
    ({"model": {"minibatch_disc_dim": 0}}, "model.minibatch_disc_dim: Input should be greater than or equal to 1"),
])
def test_bad_values_are_refused_at_load_in_one_line(sections: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError) as exc:
        config_from_dict(sections)
    assert needle in str(exc.value) and "\n" not in str(exc.value), str(exc.value)


def test_unrolling_needs_an_optimiser_it_can_replay() -> None:
    """A plugin's optimiser with no functional update (plain SGD here) cannot be unrolled: refused at load."""
    OPTIMIZERS.add("sgd-plugin", lambda p, lr, c, cuda: torch.optim.SGD(p, lr))
    try:
        assert config_from_dict({"optim": {"name": "sgd-plugin"}}).loss.unroll == 0  # fine without unrolling
        with pytest.raises(ConfigError, match=r"^<config>: loss\.unroll: optim\.name 'sgd-plugin': optimiser SGD "
                                              r"has no functional update to unroll D with \(there is one for Adam"):
            config_from_dict({"optim": {"name": "sgd-plugin"}, "loss": {"unroll": 2}})
    finally:
        OPTIMIZERS.remove("sgd-plugin")


def test_gantune_train_refuses_a_bad_unroll_with_exit_code_2(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from gantune.cli import main

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"data": {"name": "grid25"}, "loss": {"unroll": -3}}))
    assert main(["train", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert "loss.unroll: Input should be greater than or equal to 0" in err and "\n" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("unroll", [0, 2])
def test_the_lookahead_d_sees_what_d_sees(unroll: int) -> None:
    """Augmentation, instance noise and label smoothing apply to the look-ahead D too: every batch it scores goes
    through ``d_input``, like D's own (2 per D step, 1 for G's fakes, and with unrolling 2 per unrolled update
    and 1 for the reals G's objective reads under the look-ahead D)."""
    trainer = _trainer(tiny_images(loss={"unroll": unroll, "label_smoothing": 0.1, "instance_noise": 0.1},
                                   data={"augment": ["translation", "cutout"]}))
    seen = trainer.d_input
    calls = []

    def counting(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        return seen(x)

    trainer.d_input = counting  # type: ignore[method-assign]
    trainer.step(measure=True)
    assert len(calls) == 2 + 1 + (2 * unroll + 1 if unroll else 0)
    assert all(math.isfinite(v) for v in trainer.read_stats().values())
