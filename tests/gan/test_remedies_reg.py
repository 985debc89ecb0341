"""The regularisers of issue 23 (dropout in D, decoupled weight decay, one-sided label smoothing, instance noise)
and differentiable augmentation (DiffAugment): each trains, does what its paper says, and is a searchable knob."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gantune.catalogue import config_from_dict
from gantune.data import load_data
from gantune.errors import ConfigError
from gantune.gan import LOSSES, GANTrainer
from gantune.gan.augment import AUGMENTS, AdaptiveP, cutout, diff_augment, translation
from gantune.gan.step import instance_noise_std
from gantune.sampling.space import load_space
from tests.conftest import tiny, tiny_images

CPU = torch.device("cpu")


def _trainer(cfg: Any) -> GANTrainer:
    data = load_data(cfg.data, CPU, 0)
    return GANTrainer(cfg, CPU, data.sample)


def _train(cfg: Any, steps: int = 4) -> dict[str, float]:
    trainer = _trainer(cfg)
    for i in range(steps):
        trainer.schedule(i)
        trainer.step(measure=i == steps - 1)
    return trainer.read_stats()


KNOBS: list[dict[str, Any]] = [
    {"model": {"d_dropout": 0.3}},
    {"optim": {"weight_decay": 0.01}},
    {"loss": {"label_smoothing": 0.1}},
    {"loss": {"name": "lsgan", "label_smoothing": 0.2}},
    {"loss": {"instance_noise": 0.1, "instance_noise_steps": 0.5}},
    {"model": {"d_dropout": 0.2}, "optim": {"weight_decay": 0.01},
     "loss": {"label_smoothing": 0.1, "instance_noise": 0.05}},
]


@pytest.mark.parametrize("extra", KNOBS, ids=lambda e: ",".join(f"{k}" for s in e.values() for k in s))
@pytest.mark.parametrize("images", [False, True], ids=["mlp-grid25", "dcgan-digits8"])
def test_each_regulariser_trains_finite(extra: dict[str, Any], images: bool) -> None:
    cfg = tiny_images(**extra) if images else tiny(extra)
    stats = _train(cfg)
    assert all(math.isfinite(v) for v in stats.values()), stats
    assert stats["grad_norm_d"] > 0 and stats["grad_norm_g"] > 0


@pytest.mark.parametrize("policies", [["translation"], ["cutout"], ["color"], ["translation", "cutout", "color"]])
@pytest.mark.parametrize("loss", [{}, {"name": "wgan-gp"}, {"r1_weight": 1.0}], ids=["ns", "wgan-gp", "r1"])
def test_diffaugment_trains_and_g_learns_through_it(policies: list[str], loss: dict[str, Any]) -> None:
    cfg = tiny_images(data={"augment": policies, "augment_p": 0.8}, loss=loss)
    stats = _train(cfg)
    assert all(math.isfinite(v) for v in stats.values()), stats
    assert stats["grad_norm_g"] > 0  # G's gradient passes through the augmentation of its samples


# --- dropout ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("images", [False, True], ids=["mlp", "dcgan"])
def test_dropout_in_d_acts_in_train_mode_only_and_never_in_g(images: bool) -> None:
    cfg = tiny_images(model={"d_dropout": 0.5}) if images else tiny({"model": {"d_dropout": 0.5}})
    trainer = _trainer(cfg)
    D, G = trainer.D, trainer.G
    acts = [m for m in D.modules() if isinstance(m, nn.Sequential) and len(m) == 2
            and isinstance(m[0], nn.LeakyReLU) and isinstance(m[1], nn.Dropout)]
    assert acts and len(acts) == sum(isinstance(m, nn.LeakyReLU) for m in D.modules())  # after each activation
    assert not any(isinstance(m, nn.Dropout) for m in G.modules())
    x = trainer.sample_real(16)
    D.train()
    assert not torch.equal(D(x)[0], D(x)[0])  # a fresh mask each forward
    D.eval()
    assert torch.equal(D(x)[0], D(x)[0])
    # activations hold no weights: the state-dict keys are those of D without dropout
    plain = _trainer(tiny_images() if images else tiny())
    assert list(D.state_dict()) == list(plain.D.state_dict())


# --- decoupled weight decay --------------------------------------------------------------------------------------


def test_weight_decay_makes_adam_adamw_and_is_decoupled() -> None:
    lr, wd = 1e-2, 0.5
    trainer = _trainer(tiny({"optim": {"weight_decay": wd, "lr_d": lr}}))
    assert isinstance(trainer.opt_d, torch.optim.AdamW) and isinstance(trainer.opt_g, torch.optim.AdamW)
    trainer.schedule(0)
    before = [p.detach().clone() for p in trainer.D.parameters()]
    for p in trainer.D.parameters():
        p.grad = torch.zeros_like(p)  # no gradient at all: an L2 term would still move the weights by ~lr each
    trainer.opt_d.step()
    for b, p in zip(before, trainer.D.parameters(), strict=True):
        torch.testing.assert_close(p.detach(), b * (1 - lr * wd))
    assert isinstance(_trainer(tiny()).opt_d, torch.optim.Adam)
    assert not isinstance(_trainer(tiny()).opt_d, torch.optim.AdamW)  # off: Adam as before


def test_weight_decay_survives_a_loaded_adam_state() -> None:
    """A checkpoint saved without weight decay (Adam) loaded into an AdamW trainer: schedule restores the decay."""
    plain = _trainer(tiny())
    decayed = _trainer(tiny({"optim": {"weight_decay": 0.1}}))
    decayed.load_state_dict(plain.state_dict())
    decayed.schedule(0)
    for opt in (decayed.opt_d, decayed.opt_g):
        assert all(g["weight_decay"] == 0.1 for g in opt.param_groups)
        assert all(g.get("decoupled_weight_decay", True) for g in opt.param_groups)


def test_no_weight_decay_survives_a_loaded_adamw_state() -> None:
    """The other way (a PBT member whose ``optim.weight_decay`` mutated to 0 cloned from an AdamW member): Adam
    without decay, before and after ``schedule``; torch's load had brought the checkpoint's decay of 0.5 along. Its
    moments are the checkpoint's."""
    decayed = _trainer(tiny({"optim": {"weight_decay": 0.5}}))
    decayed.schedule(1)
    decayed.step()
    plain = _trainer(tiny())
    plain.load_state_dict(decayed.state_dict())
    for step in (None, 2):
        if step is not None:
            plain.schedule(step)
        for opt, donor in ((plain.opt_d, decayed.opt_d), (plain.opt_g, decayed.opt_g)):
            assert not isinstance(opt, torch.optim.AdamW)
            assert all(g["weight_decay"] == 0 for g in opt.param_groups)
            assert not any(g.get("decoupled_weight_decay", False) for g in opt.param_groups)
            moments = [opt.state[p]["exp_avg"] for p in opt.param_groups[0]["params"]]
            assert all(torch.equal(m, donor.state[p]["exp_avg"])
                       for m, p in zip(moments, donor.param_groups[0]["params"], strict=True))


# --- label smoothing ---------------------------------------------------------------------------------------------


def test_label_smoothing_gives_the_expected_d_loss_on_known_logits() -> None:
    r, f, s = torch.tensor([2.0, -0.5]), torch.tensor([-1.0, 0.3]), 0.1

    def sp(x: float) -> float:
        return math.log1p(math.exp(x))

    bce = (sum((1 - s) * sp(-v) + s * sp(v) for v in r.tolist()) / 2 + sum(sp(v) for v in f.tolist()) / 2)
    for name in ("nonsaturating", "minimax"):
        assert LOSSES.get(name).d_loss(s)(r, f).item() == pytest.approx(bce, rel=1e-6)
        assert LOSSES.get(name).d_loss(0.0)(r, f).item() == pytest.approx(
            (F.softplus(-r).mean() + F.softplus(f).mean()).item())
    ls = 0.5 * sum((v - (1 - s)) ** 2 for v in r.tolist()) / 2 + 0.5 * sum(v**2 for v in f.tolist()) / 2
    assert LOSSES.get("lsgan").d_loss(s)(r, f).item() == pytest.approx(ls, rel=1e-6)


def test_the_trainer_uses_the_smoothed_loss() -> None:
    trainer = _trainer(tiny({"loss": {"label_smoothing": 0.2}}))
    r, f = torch.tensor([3.0]), torch.tensor([-3.0])
    assert trainer._loss_d(r, f).item() == pytest.approx(LOSSES.get("nonsaturating").d_loss(0.2)(r, f).item())
    assert trainer._loss_d(r, f).item() > LOSSES.get("nonsaturating").d(r, f).item()  # a confident D pays


# --- instance noise ----------------------------------------------------------------------------------------------


def test_instance_noise_anneals_linearly_to_zero() -> None:
    assert instance_noise_std(0.2, 0, 100) == pytest.approx(0.2)
    assert instance_noise_std(0.2, 25, 100) == pytest.approx(0.15)
    assert instance_noise_std(0.2, 50, 100) == pytest.approx(0.1)
    assert instance_noise_std(0.2, 100, 100) == 0.0
    assert instance_noise_std(0.2, 25, 100, fraction=0.5) == pytest.approx(0.1)
    assert instance_noise_std(0.2, 50, 100, fraction=0.5) == 0.0
    assert instance_noise_std(0.2, 80, 100, fraction=0.5) == 0.0
    assert instance_noise_std(0.0, 0, 100) == 0.0


def test_the_trainer_adds_the_scheduled_noise_to_d_inputs() -> None:
    cfg = tiny({"loss": {"instance_noise": 0.5}, "train": {"steps": 10}})
    trainer = _trainer(cfg)
    x = torch.zeros(4000, 2)
    trainer.schedule(1)  # generator steps count from 1: the schedule is of the steps done before
    assert trainer.d_input(x).std().item() == pytest.approx(0.5, rel=0.05)
    trainer.schedule(6)
    assert trainer.d_input(x).std().item() == pytest.approx(0.25, rel=0.05)
    trainer.schedule(11)
    assert torch.equal(trainer.d_input(x), x)  # zero at the end
    assert torch.equal(_trainer(tiny()).d_input(x), x)  # off by default


# --- DiffAugment -------------------------------------------------------------------------------------------------


def _images(n: int = 6, side: int = 8) -> torch.Tensor:
    # no zero pixel anywhere, so a zero in the output is padding or cut-out
    return torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(1)) + 0.5


@pytest.mark.parametrize("name", AUGMENTS.names())
def test_each_policy_keeps_shape_and_is_differentiable(name: str) -> None:
    x = _images().requires_grad_(True)
    out = diff_augment(x, [name], generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert grad.abs().sum() > 0


def test_translation_shifts_by_at_most_an_eighth_with_zero_padding() -> None:
    x = _images(n=16, side=16)  # shifts up to int(16 / 8 + 0.5) = 2 pixels each way
    out = translation(x, torch.Generator().manual_seed(0))
    shifts = set()
    for i in range(x.shape[0]):
        found = []
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                expect = torch.zeros_like(x[i])
                ys, xs = slice(max(0, -dy), min(16, 16 - dy)), slice(max(0, -dx), min(16, 16 - dx))
                src_y, src_x = slice(ys.start + dy, ys.stop + dy), slice(xs.start + dx, xs.stop + dx)
                expect[:, ys, xs] = x[i][:, src_y, src_x]
                if torch.equal(out[i], expect):
                    found.append((dy, dx))
        assert len(found) == 1, (i, found)
        shifts.add(found[0])
    assert len(shifts) > 1  # per-sample shifts
    again = translation(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)  # a seeded generator reproduces them


def test_cutout_zeros_one_square_of_half_the_side() -> None:
    x = _images(n=32, side=8)  # a 4x4 square, clipped at the edges to no less than 2x2
    out = cutout(x, torch.Generator().manual_seed(0))
    for i in range(x.shape[0]):
        zero = out[i] == 0
        assert torch.equal(zero[0], zero[1]) and torch.equal(zero[0], zero[2])  # the same pixels in every channel
        rows = zero[0].any(dim=1).nonzero().flatten()
        cols = zero[0].any(dim=0).nonzero().flatten()
        h, w = len(rows), len(cols)
        assert 2 <= h <= 4 and 2 <= w <= 4
        assert rows.max() - rows.min() + 1 == h and cols.max() - cols.min() + 1 == w  # contiguous
        assert zero[0].sum() == h * w  # a full rectangle
        torch.testing.assert_close(out[i][~zero], x[i][~zero], rtol=0, atol=0)  # the rest untouched


def test_probability_zero_is_identity_and_one_always_augments() -> None:
    x = _images()
    assert diff_augment(x, ["translation", "cutout", "color"], p=0.0) is x
    assert diff_augment(x, [], p=1.0) is x
    gen = torch.Generator().manual_seed(0)
    assert all(not torch.equal(diff_augment(x, ["cutout"], p=1.0, generator=gen), x) for _ in range(10))
    # each image on its own coin (found by a review: one coin for the batch augmented all of it or none)
    batch = torch.rand(400, 1, 8, 8, generator=gen) + 0.5  # no zero pixel: cutout's zeros show where it acted
    out = diff_augment(batch, ["cutout"], p=0.5, generator=gen)
    cut = (out == 0).flatten(1).any(1)
    assert 140 < int(cut.sum()) < 260  # about half the images
    torch.testing.assert_close(out[~cut], batch[~cut], rtol=0, atol=0)  # the others pass untouched
    # and on each policy's own coin: cutout and translation each reach about half, together about a quarter
    moved = diff_augment(batch, ["translation", "cutout"], p=0.5, generator=torch.Generator().manual_seed(1))
    changed = (moved != batch).flatten(1).any(1)
    assert 220 < int(changed.sum()) < 380  # 1 - 0.5 * 0.5 (a zero shift leaves some translated images as they were)


def test_the_trainer_augments_real_and_fake_inputs_of_d() -> None:
    trainer = _trainer(tiny_images(data={"augment": ["cutout"]}))
    x = _images(side=8)[:, :1]
    assert (trainer.d_input(x) == 0).any()
    assert torch.equal(_trainer(tiny_images()).d_input(x), x)


# --- the catalogue and the search space --------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "needle"), [
    ({"loss": {"name": "hinge", "label_smoothing": 0.1}}, "x.yaml: loss.label_smoothing: hinge has no real target"),
    ({"loss": {"name": "wgan-gp", "label_smoothing": 0.1}}, "loss.label_smoothing: wgan-gp has no real target"),
    ({"optim": {"name": "rmsprop", "weight_decay": 0.1}}, "x.yaml: optim.weight_decay: decoupled weight decay "
                                                          "needs adam, not rmsprop"),
    ({"data": {"augment": ["translation"]}}, "x.yaml: data.augment: DiffAugment transforms images, not 2-D points"),
    ({"data": {"name": "digits", "augment": ["flip"]}}, "x.yaml: data.augment: unknown augmentation 'flip'"),
    ({"data": {"name": "digits", "augment": "translation,flip"}}, "data.augment: unknown augmentation 'flip'"),
])
def test_combinations_refused_in_one_line(raw: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError) as exc:
        config_from_dict(raw, "x.yaml")
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_augment_accepts_the_authors_comma_form() -> None:
    cfg = config_from_dict({"data": {"name": "digits", "augment": "translation, cutout"}})
    assert cfg.data.augment == ["translation", "cutout"]
    assert config_from_dict({"data": {"name": "digits", "augment": ""}}).data.augment == []


SPACE = """
name: reg
search: {trials: 4, max_steps: 20, eval_every: 10}
data:
  name: digits
  resolution: 8
  augment: {categorical: ["", "translation,cutout", "translation,cutout,color"]}
  augment_p: {float: [0.2, 1.0]}
model:
  d_dropout: {float: [0.0, 0.5]}
loss:
  name: {categorical: [nonsaturating, lsgan]}
  label_smoothing: {float: [0.0, 0.3]}
  instance_noise: {float: [0.0, 0.2]}
  instance_noise_steps: {float: [0.1, 1.0]}
optim:
  weight_decay: {float: [1.0e-5, 1.0e-1], log: true}
"""


def test_the_knobs_are_searchable(tmp_path: Path) -> None:
    p = tmp_path / "reg.yaml"
    p.write_text(SPACE)
    space = load_space(p)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    augments = set()
    for _ in range(30):
        trial = study.ask()
        cfg = config_from_dict(space.sample(trial))
        augments.add(tuple(cfg.data.augment))
        assert 0 <= cfg.model.d_dropout <= 0.5 and cfg.optim.weight_decay > 0
        study.tell(trial, 0.0)
    assert augments == {(), ("translation", "cutout"), ("translation", "cutout", "color")}


def test_a_space_refuses_a_bad_augment_choice(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(SPACE.replace('"translation,cutout",', '"translation,flip",'))
    with pytest.raises(ConfigError, match=r"data\.augment: unknown augmentation 'flip'"):
        load_space(p)


def test_max_images_takes_a_subset_of_the_digits_train_split() -> None:
    """What the DiffAugment measurement trains on (10% of the digits train split); the held-out split stays whole."""
    full = load_data(config_from_dict({"data": {"name": "digits", "resolution": 8}}).data, CPU, 0)
    few = load_data(config_from_dict({"data": {"name": "digits", "resolution": 8, "max_images": 144}}).data, CPU, 0)
    assert few.images is not None and full.images is not None and few.heldout is not None
    assert len(few.images) == 144 and len(full.images) == 1437
    assert torch.equal(few.images, full.images[:144])
    assert full.heldout is not None and torch.equal(few.heldout, full.heldout)


@pytest.mark.parametrize("n_critic", [1, 2])
def test_feature_matching_reads_real_and_fake_features_from_the_same_d(n_critic: int) -> None:
    """Found by a review: G matched the reals' features from D before its update against the fakes' from D after
    it (Salimans et al. 2016 match both under one D)."""
    cfg = tiny(loss={"feature_matching": 1.0}, optim={"n_critic": n_critic})
    trainer = _trainer(cfg)
    seen: list[torch.Tensor] = []
    trainer.D.register_forward_pre_hook(
        lambda module, args: seen.append(torch.cat([p.detach().flatten() for p in module.parameters()]).clone()))
    trainer.step()
    # D's calls: per critic step reals then fakes; then, for G's loss, fakes and reals under the updated D
    assert len(seen) == 2 * n_critic + 2
    assert not torch.equal(seen[-3], seen[-2])  # D was updated before G's step
    assert torch.equal(seen[-2], seen[-1])


# --- adaptive augmentation (ADA) ---------------------------------------------------------------------------------


def test_the_adaptive_probability_follows_the_sign_of_r_t_minus_the_target() -> None:
    """Every 4 D steps p moves by sign(r_t - target) x images seen / (kimg x 1000), clamped to [0, 1]: a D calling
    every real real (r_t = 1) raises it, one calling them fake (r_t = -1) lowers it, r_t at the target holds it."""
    ada = AdaptiveP(target=0.6, kimg=1.0, boundary=0.0, device=torch.device("cpu"))
    for _ in range(3):
        ada.observe(torch.full((10,), 2.0))
    assert float(ada.p) == 0  # no adjustment inside an interval
    ada.observe(torch.full((10,), 2.0))
    assert float(ada.p) == pytest.approx(0.04)  # 40 images of 1,000
    for _ in range(4):
        ada.observe(torch.tensor([1.0] * 8 + [-1.0] * 2))  # r_t = 0.6: held
    assert float(ada.p) == pytest.approx(0.04)
    for _ in range(8):
        ada.observe(torch.full((10,), -3.0))
    assert float(ada.p) == 0  # clamped at 0
    lsgan = AdaptiveP(target=0.6, kimg=1.0, boundary=0.5, device=torch.device("cpu"))
    for _ in range(4):
        lsgan.observe(torch.full((10,), 0.4))  # below LSGAN's boundary 0.5: called fake
    assert float(lsgan.p) == 0


def test_a_run_with_adaptive_augmentation_logs_p_and_resumes_it(tmp_path: Path) -> None:
    from gantune.trial import train

    cfg = tiny_images(data={"augment": ["translation"], "ada_target": 0.6, "ada_kimg": 0.5},
                      train={"steps": 40, "checkpoint_every": 20, "log_every": 10})
    straight = train(cfg, run_dir=tmp_path / "straight")
    logged = [r["augment_p"] for r in _records(tmp_path / "straight")]
    assert len(logged) == 4 and all(0 <= p <= 1 for p in logged) and max(logged) > 0
    half = tiny_images(data={"augment": ["translation"], "ada_target": 0.6, "ada_kimg": 0.5},
                       train={"steps": 20, "checkpoint_every": 20, "log_every": 10})
    train(half, run_dir=tmp_path / "split")
    resumed = train(cfg, run_dir=tmp_path / "split", resume=True)
    assert resumed.status == straight.status == "completed"
    assert [r["augment_p"] for r in _records(tmp_path / "split")] == logged  # p carried by the checkpoint


def _records(run: Path) -> list[dict[str, Any]]:
    import json

    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(("edit", "why"), [
    ({"data": {"ada_target": 0.6}}, "data.ada_target: adaptive augmentation tunes the probability of data.augment's "
                                    "policies, and there are none"),
    ({"data": {"augment": ["cutout"], "ada_target": 0.6}, "loss": {"name": "wgan-gp"}},
     "data.ada_target: wgan-gp's D has no real/fake boundary"),
    ({"data": {"augment": ["cutout"], "ada_target": 0.6}, "loss": {"name": "rpgan"}},
     "data.ada_target: rpgan's D has no real/fake boundary"),
])
def test_adaptive_augmentation_is_refused_where_it_has_nothing_to_tune(edit: dict[str, Any], why: str) -> None:
    raw = {"data": {"name": "digits", "resolution": 8}, "model": {"arch": "dcgan"}}
    for section, values in edit.items():
        raw.setdefault(section, {}).update(values)
    with pytest.raises(ConfigError, match=re.escape(why)):
        config_from_dict(raw)

