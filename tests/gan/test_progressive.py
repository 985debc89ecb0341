"""Progressive growing (``model.progressive``, Karras et al. 2018): the schedule, the nets at every stage and
through the fades, which weights a stage trains, a real short run on digits that checkpoints and resumes (the
stage restored), the look-ahead of ``loss.unroll`` through a growing D, refusals at load, and search spaces."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
import torch.nn.functional as F

from gantune.catalogue import config_from_dict
from gantune.config import TrialConfig
from gantune.data import load_data
from gantune.errors import ConfigError
from gantune.gan import GANTrainer, GrowthSchedule
from gantune.gan.nets import DCGANDiscriminator, DCGANGenerator
from gantune.gan.progressive import Growing, ProgressiveDiscriminator, ProgressiveGenerator
from gantune.generate import load_generator
from gantune.health import Verdict
from gantune.rundir import RunDir
from gantune.sampling.space import load_space
from gantune.trial import train
from tests.conftest import tiny_images

CPU = torch.device("cpu")


def _cfg(**sections: dict[str, Any]) -> TrialConfig:
    """Digits at 16 px grown from 8 px: 12 steps at 8 px, an 8-step fade, then 16 px to step 40."""
    base: dict[str, dict[str, Any]] = {
        "data": {"resolution": 16},
        "model": {"progressive": {"start": 8, "fade_steps": 8, "stage_steps": 12}, "g_depth": 2, "d_depth": 2},
        "train": {"steps": 40, "batch_size": 16, "checkpoint_every": 20},
        "eval": {"every": 20, "n_samples": 64},
    }
    for key, val in sections.items():
        base.setdefault(key, {}).update(val)
    return tiny_images(**base)


def _trainer(cfg: TrialConfig, seed: int = 0) -> GANTrainer:
    torch.manual_seed(seed)
    return GANTrainer(cfg, CPU, load_data(cfg.data, CPU, seed).sample)


# --- the schedule


def test_the_schedule_stages_and_fades() -> None:
    s = GrowthSchedule(levels=2, fade_steps=10, stage_steps=5)
    assert [s.at(d) for d in (0, 4)] == [(0, 1.0), (0, 1.0)]  # the start resolution
    assert [s.at(d) for d in (5, 10, 14)] == [(1, 0.0), (1, 0.5), (1, 0.9)]  # the first fade
    assert [s.at(d) for d in (15, 19)] == [(1, 1.0), (1, 1.0)]  # after it
    assert [s.at(d) for d in (20, 25)] == [(2, 0.0), (2, 0.5)]  # the second
    assert [s.at(d) for d in (30, 10_000)] == [(2, 1.0), (2, 1.0)] and s.end == 30  # the full resolution


def test_the_schedule_from_a_config_shares_the_steps_the_fades_leave() -> None:
    cfg = _cfg(data={"resolution": 32}, model={"progressive": {"start": 8, "fade_steps": 10}},
               train={"steps": 100})
    s = GrowthSchedule.of_config(cfg)
    assert s == GrowthSchedule(levels=2, fade_steps=10, stage_steps=(100 - 20) // 3) and s.end < 100
    # the trainer's step k runs after k - 1 steps: the last step is at the full resolution, alpha 1
    trainer = _trainer(cfg)
    for step, stage in [(1, (0, 1.0)), (26, (0, 1.0)), (27, (1, 0.0)), (32, (1, 0.5)), (100, (2, 1.0))]:
        trainer.schedule(step)
        for net in (trainer.G, trainer.D):
            assert isinstance(net, Growing)
            assert (net.level, float(net.grow_alpha)) == stage, step
    # start at the data's resolution, or no section: nothing grows, the plain DCGAN nets
    for off in (_cfg(model={"progressive": {"start": 16}}), tiny_images(data={"resolution": 16})):
        assert GrowthSchedule.of_config(off) is None
        trainer = _trainer(off)
        assert isinstance(trainer.G, DCGANGenerator) and isinstance(trainer.D, DCGANDiscriminator)


# --- the nets


def _nets(start: int = 8, resolution: int = 32, norm: str = "batch") -> tuple[ProgressiveGenerator,
                                                                              ProgressiveDiscriminator]:
    cfg = _cfg(data={"resolution": resolution}, train={"steps": 1000},
               model={"progressive": {"start": start}, "g_norm": norm, "d_norm": "spectral+layer",
                      "minibatch_std": True})
    trainer = _trainer(cfg)
    G, D = trainer.G, trainer.D
    assert isinstance(G, ProgressiveGenerator) and isinstance(D, ProgressiveDiscriminator)
    return G.eval(), D.eval()


@pytest.mark.parametrize("start", [4, 8, 16])
def test_every_stage_makes_full_size_images_at_its_own_resolution(start: int) -> None:
    G, D = _nets(start)
    z, x = torch.randn(6, 8), torch.rand(6, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        widths = set()
        for level in range(G.top - G.first + 1):
            for alpha in (0.0, 0.5, 1.0):
                G.set_progress(level, alpha)
                D.set_progress(level, alpha)
                img = G(z)
                score, feat = D(x)
                assert img.shape == (6, 1, 32, 32) and score.shape == (6,) and img.abs().max() <= 1
                widths.add(feat.shape[1])
                if alpha == 1.0:  # made at start * 2^level px and nearest-upsampled: constant in each block
                    res = start * 2**level
                    small = F.avg_pool2d(img, 32 // res)
                    torch.testing.assert_close(img, F.interpolate(small, scale_factor=32 // res))
                    # D sees its input at the same resolution: the detail above it changes nothing
                    coarse = F.interpolate(F.avg_pool2d(x, 32 // res), scale_factor=32 // res)
                    torch.testing.assert_close(D(coarse)[0], score)
        assert len(widths) == 1  # the features (feature matching) are the 4x4 maps at every stage


def test_the_fade_blends_the_previous_resolution_into_the_new_one() -> None:
    """G: alpha 0 is the previous stage's image, alpha 1 the new stage's, and in between their linear blend.
    D: alpha 0 is the previous stage's D; alpha 1 does not read the previous fromRGB at all."""
    G, D = _nets()
    G.train()  # batch statistics: activations of unit scale at the DCGAN initialisation (running ones are not yet)
    z, x = torch.randn(6, 8), torch.rand(6, 1, 32, 32) * 2 - 1

    def g_at(level: int, alpha: float) -> torch.Tensor:
        G.set_progress(level, alpha)
        return G(z)

    def d_at(level: int, alpha: float) -> torch.Tensor:
        D.set_progress(level, alpha)
        return D(x)[0]

    with torch.no_grad():
        for level in (1, 2):
            old, new = g_at(level - 1, 1.0), g_at(level, 1.0)
            assert (old - new).abs().max() > 1e-3
            torch.testing.assert_close(g_at(level, 0.0), old)
            torch.testing.assert_close(g_at(level, 0.25), 0.75 * old + 0.25 * new)
            d_old, d_new = d_at(level - 1, 1.0), d_at(level, 1.0)
            torch.testing.assert_close(d_at(level, 0.0), d_old)
            mid = d_at(level, 0.5)
            assert (mid - d_old).abs().max() > 1e-4 and (mid - d_new).abs().max() > 1e-4
        # a stage complete: what the last block and toRGB make of the blocks below; the lower toRGB / fromRGB
        # (the fades' other ends) are not read
        G.set_progress(2, 1.0)
        D.set_progress(2, 1.0)
        h = G.base(z.view(6, -1, 1, 1))
        for block in G.blocks:
            h = block(h)
        torch.testing.assert_close(G(z), G.to_rgb[-1](h))
        g_full, d_full = G(z), D(x)[0]
        for rgb in (*G.to_rgb[:-1], *D.from_rgb[:-1]):
            for p in rgb.parameters():
                p.add_(1.0)
        torch.testing.assert_close(G(z), g_full)
        torch.testing.assert_close(D(x)[0], d_full)


def test_mid_fade_d_sees_reals_blended_between_the_two_resolutions_as_g_blends_its_output() -> None:
    """Found by a review: reals reached D sharp at the new resolution while G's output was blended with the
    previous one (Karras et al. 2018, appendix A.1, blend both). Before and after the fade they pass unchanged."""
    trainer = _trainer(_cfg())  # 16 px from 8 px: 12 steps at 8 px, then an 8-step fade
    drawn: list[torch.Tensor] = []
    sample = trainer.sample_real
    trainer.sample_real = lambda n: drawn.append(sample(n)) or drawn[-1]
    seen: list[torch.Tensor] = []
    trainer.D.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    for step, alpha in ((12, None), (17, 0.5), (21, None)):  # at 8 px, mid-fade (4 of 8 steps done), at 16 px
        drawn.clear(), seen.clear()
        trainer.schedule(step)
        trainer.step()
        x, d_in = drawn[0], seen[0]  # the critic step's reals, then what D saw of them
        if alpha is None:
            torch.testing.assert_close(d_in, x, rtol=0, atol=0)
            continue
        assert float(trainer.D.grow_alpha) == alpha
        low = F.interpolate(F.avg_pool2d(x, 2), scale_factor=2, mode="nearest")  # the 8 px stage, at 16 px
        torch.testing.assert_close(d_in, low + alpha * (x - low))


def test_a_stage_trains_only_the_layers_it_uses() -> None:
    cfg = _cfg()
    trainer = _trainer(cfg)
    G = trainer.G
    assert isinstance(G, ProgressiveGenerator)
    top = [*G.blocks[-1].parameters(), *G.to_rgb[-1].parameters()]
    low_rgb = list(G.to_rgb[0].parameters())

    def snap(ps: list[torch.nn.Parameter]) -> list[torch.Tensor]:
        return [p.detach().clone() for p in ps]

    init_top, init_low = snap(top), snap(low_rgb)
    for step in range(1, 13):  # 12 steps at 8 px
        trainer.schedule(step)
        trainer.step()
    assert all(torch.equal(a, b) for a, b in zip(init_top, snap(top), strict=True))  # the 16 px layers wait
    assert any(not torch.equal(a, b) for a, b in zip(init_low, snap(low_rgb), strict=True))
    for step in range(13, 15):  # into the fade
        trainer.schedule(step)
        trainer.step()
    assert all(not torch.equal(a, b) for a, b in zip(init_top, snap(top), strict=True))


def test_unrolling_looks_ahead_through_a_growing_d_mid_fade() -> None:
    """``loss.unroll`` calls D through ``torch.func.functional_call`` with copies of its buffers: the fade's alpha
    is one of them, so the look-ahead D is at the same stage; a lookahead of 0 steps is D itself."""
    from gantune.gan.unroll import lookahead

    cfg = _cfg(loss={"unroll": 1}, model={"d_norm": "spectral", "minibatch_std": True, "d_dropout": 0.1})
    trainer = _trainer(cfg)
    for step in range(1, 17):  # to the middle of the fade
        trainer.schedule(step)
        trainer.step()
    D = trainer.D
    assert isinstance(D, ProgressiveDiscriminator) and D.fading and float(D.grow_alpha) == 0.375
    D.eval()  # no dropout, no power iteration: comparable forwards
    x = trainer.sample_real(8)
    still = lookahead(D, trainer.opt_d, 0, trainer._lookahead_loss)
    with torch.no_grad():
        torch.testing.assert_close(still(x)[0], D(x)[0], rtol=0, atol=0)


# --- a real run


def test_a_short_run_grows_checkpoints_and_resumes_at_its_stage(tmp_path: Path) -> None:
    cfg = _cfg(optim={"ema": 0.9})
    straight = train(cfg, run_dir=tmp_path / "straight")
    assert straight.status == "completed" and straight.steps == 40

    # crash at step 30 (the last checkpoint is from step 20: mid-growth at 16 px), then resume
    crash = train(cfg, run_dir=tmp_path / "split",
                  should_stop=lambda r: Verdict("stalled", "crash") if r["step"] >= 30 else None)
    assert crash.steps == 30
    ckpt = RunDir(tmp_path / "split").load_checkpoint()
    assert ckpt is not None and ckpt["step"] == 20
    fresh = _trainer(cfg, seed=5)  # built at the start stage; the checkpoint's buffers bring the stage back
    fresh.load_state_dict(ckpt["trainer"])
    assert GrowthSchedule.of_config(cfg).at(19) == (1, 0.875)  # type: ignore[union-attr]
    for net in (fresh.G, fresh.D, fresh.G_ema):
        assert isinstance(net, Growing) and (net.level, net.fading, float(net.grow_alpha)) == (1, True, 0.875)
    resumed = train(cfg, run_dir=tmp_path / "split", resume=True)
    assert resumed.status == "completed" and resumed.steps == 40

    a = torch.load(tmp_path / "straight" / "generator.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "split" / "generator.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    lines = [json.loads(ln) for ln in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [10, 20, 30, 40]
    assert all(abs(r["loss_d"]) < 100 and abs(r["loss_g"]) < 100 for r in lines)

    # the saved generator loads at its stage (full resolution) and makes 16 px digits that use it
    G, _ = load_generator(tmp_path / "split" / "generator.pt", CPU)
    assert isinstance(G, ProgressiveGenerator) and (G.level, G.fading) == (1, False)
    with torch.no_grad():
        img = G(torch.randn(8, cfg.model.z_dim))
    assert img.shape == (8, 1, 16, 16)
    assert (img - F.interpolate(F.avg_pool2d(img, 2), scale_factor=2)).abs().max() > 1e-3  # not 8 px blown up


def test_a_run_resumed_with_other_steps_keeps_the_stage_length_it_grew_by(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Without ``stage_steps`` the stage length comes from ``train.steps``: a run mid-fade to 16 px at step 20,
    resumed to train until step 120, recomputed it (56 instead of 16) and set its nets back to 8 px. It keeps the
    checkpoint's; and a resume whose steps end before that schedule's last fade is refused."""
    from gantune.cli import main

    monkeypatch.chdir(tmp_path)
    sections = {"model": {"progressive": {"start": 8, "fade_steps": 8, "stage_steps": None}},
                "train": {"steps": 40, "checkpoint_every": 20, "batch_size": 8}, "eval": {"metrics": []}}
    assert GrowthSchedule.of_config(_cfg(**sections)).stage_steps == 16  # type: ignore[union-attr]
    assert train(_cfg(**sections), run_dir=tmp_path / "run",  # stopped at step 30: its checkpoint is step 20's
                 should_stop=lambda r: Verdict("stalled", "x") if r["step"] >= 30 else None).steps == 30
    ckpt = RunDir(tmp_path / "run").load_checkpoint()
    assert ckpt is not None and ckpt["step"] == 20 and ckpt["trainer"]["growth_stage"] == 16
    trainer = _trainer(_cfg(**{**sections, "train": {"steps": 120}}))
    trainer.load_state_dict(ckpt["trainer"])
    trainer.schedule(21)
    for net in (trainer.G, trainer.D):
        assert isinstance(net, Growing) and (net.level, net.fading, float(net.grow_alpha)) == (1, True, 0.5)

    (tmp_path / "cfg.yaml").write_text((tmp_path / "run" / "config.yaml").read_text())
    assert main(["train", "cfg.yaml", "--out", "run", "--resume", "--steps", "24", "--no-tracking"]) == 2
    err = capsys.readouterr().err
    assert "grows its nets 16 steps a stage, so its last fade ends at step 24: give --steps above 24" in err, err


def test_a_generator_saved_mid_growth_loads_at_its_stage(tmp_path: Path) -> None:
    trainer = _trainer(_cfg())
    trainer.schedule(17)
    G = copy.deepcopy(trainer.G)
    fresh = _trainer(_cfg(), seed=1).G
    fresh.load_state_dict(G.state_dict())
    assert isinstance(fresh, Growing) and (fresh.level, fresh.fading, fresh._alpha_now) == (1, True, 0.5)
    z = torch.randn(4, 8)
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(z), G.eval()(z))


# --- refusals


@pytest.mark.parametrize(("sections", "needle"), [
    ({"data": {"name": "grid25"}, "model": {"progressive": {"start": 8}}},
     "model.progressive: progressive growing needs the dcgan architecture (image data), not mlp"),
    ({"model": {"progressive": {"start": 32}}}, "model.progressive.start: 32 is above data.resolution 16"),
    ({"model": {"progressive": {"start": 12}}}, "model.progressive.start: must be a power of two"),
    ({"model": {"progressive": {"start": 2}}}, "model.progressive.start: Input should be greater than or equal to 4"),
    ({"model": {"progressive": {"fade_steps": 0}}},
     "model.progressive.fade_steps: Input should be greater than or equal to 1"),
    ({"model": {"progressive": {"fade": 10}}}, "model.progressive.fade: unknown key"),
    ({"model": {"progressive": {"start": 8, "fade_steps": 40}}}, "end at step 40: not before train.steps 40"),
    ({"model": {"progressive": {"start": 8}, "conditional": True}},
     "model.progressive: the growing nets have no conditional twin yet"),
    ({"model": {"progressive": {"start": 4, "fade_steps": 10, "stage_steps": 5}}},
     "2 fade(s) of 10 steps, each after 5 steps at the resolution before, end at step 30: not before"),
])
def test_bad_configs_are_refused_at_load_in_one_line(sections: dict[str, Any], needle: str) -> None:
    raw: dict[str, Any] = {"data": {"name": "digits", "resolution": 16}, "train": {"steps": 40}}
    if sections["model"]["progressive"].get("stage_steps") is not None:
        raw["train"]["steps"] = 30
    for key, val in sections.items():
        raw.setdefault(key, {}).update(val)
    with pytest.raises(ConfigError) as exc:
        config_from_dict(raw)
    assert needle in str(exc.value) and "\n" not in str(exc.value), str(exc.value)


# --- search spaces

SPACE = """
name: grow
search:
  trials: 3
  max_steps: 60
  eval_every: 30
  params:
    grow: {categorical: [true, false]}
data: {name: digits, resolution: 16}
model:
  arch: dcgan
  progressive:
    start: {categorical: [8, 16]}
    fade_steps: {int: [5, 20]}
    stage_steps: {int: [0, 10], when: "grow"}
"""


def test_a_space_samples_the_progressive_keys_and_switches_growing_on_and_off(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(SPACE)
    space = load_space(path)
    assert {"model.progressive.start", "model.progressive.fade_steps"} <= set(space.leaves)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen: set[tuple[int, bool]] = set()
    for _ in range(30):
        trial = study.ask()
        cfg = config_from_dict(space.sample(trial))
        p = cfg.model.progressive
        assert p is not None and 5 <= p.fade_steps <= 20
        assert (p.stage_steps is not None) == trial.params["grow"]
        grows = GrowthSchedule.of_config(cfg) is not None
        assert grows == (trial.params["model.progressive.start"] == 8)  # start = data.resolution: off
        seen.add((p.start, p.stage_steps is None))
        study.tell(trial, 0.0)
    assert seen == {(8, True), (8, False), (16, True), (16, False)}


def test_a_when_on_every_key_leaves_the_section_off(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(SPACE.replace('start: {categorical: [8, 16]}', 'start: {value: 8, when: "grow"}')
                    .replace('fade_steps: {int: [5, 20]}', 'fade_steps: {int: [5, 20], when: "grow"}'))
    space = load_space(path)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        cfg = config_from_dict(space.sample(trial))
        assert (cfg.model.progressive is not None) == trial.params["grow"]
        seen.add(trial.params["grow"])
        study.tell(trial, 0.0)
    assert seen == {True, False}


def test_an_empty_progressive_in_a_space_grows_as_in_a_trial_config(tmp_path: Path) -> None:
    """``progressive: {}`` turns growing on with its defaults in a trial config; walked in a space it gave no leaf,
    so every trial of the space trained without growing, and no word said so."""
    path = tmp_path / "s.yaml"
    path.write_text("search: {trials: 2, max_steps: 2000}\ndata: {name: digits, resolution: 16}\n"
                    "model: {arch: dcgan, progressive: {}}\n")
    cfg = config_from_dict(load_space(path).sample(optuna.create_study().ask()))
    assert cfg.model.progressive is not None and cfg.model.progressive == config_from_dict(
        {"data": {"name": "digits", "resolution": 16}, "model": {"arch": "dcgan", "progressive": {}}}).model.progressive


def test_an_expression_reads_the_progressive_section_its_leaves_make(tmp_path: Path) -> None:
    """``model.progressive`` read in a condition was the schema's null whatever the space's leaves under it set:
    ``when: "model.progressive == None"`` held in trials that grew."""
    path = tmp_path / "s.yaml"
    path.write_text(SPACE + 'loss: {r1_weight: {float: [0.1, 1.0], when: "model.progressive == None"}}\n'
                    'optim: {lr_g: {float: [1.0e-4, 1.0e-3], when: "model.progressive.start == 8"}}\n')
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(6):
        trial = study.ask()
        raw = load_space(path).sample(trial)
        assert "r1_weight" not in raw.get("loss", {})  # the section is on in every trial
        assert ("lr_g" in raw.get("optim", {})) == (raw["model"]["progressive"]["start"] == 8)
        study.tell(trial, 0.0)
    off = SPACE.replace('start: {categorical: [8, 16]}', 'start: {value: 8, when: "grow"}') \
        .replace('fade_steps: {int: [5, 20]}', 'fade_steps: {int: [5, 20], when: "grow"}')
    path.write_text(off + 'loss: {r1_weight: {value: 0.5, when: "model.progressive == None"}}\n')
    space = load_space(path)
    for _ in range(8):  # every leaf off: null, as the trial's section
        trial = study.ask()
        raw = space.sample(trial)
        assert ("r1_weight" in raw.get("loss", {})) == (not trial.params["grow"]) == ("progressive" not in raw["model"])
        study.tell(trial, 0.0)


@pytest.mark.parametrize(("edit", "needle"), [
    (("fade_steps: {int: [5, 20]}", "fade: {int: [5, 20]}"), "model.progressive.fade: unknown key"),
    (("start: {categorical: [8, 16]}", "start: {categorical: [8, 12]}"),
     "model.progressive.start: must be a power of two"),
    (("fade_steps: {int: [5, 20]}", "fade_steps: {int: [0, 20]}"),
     "model.progressive.fade_steps: Input should be greater than or equal to 1"),
    (('when: "grow"', 'when: "model.progressive.begin == 8"'), "unknown name 'model.progressive.begin'"),
])
def test_bad_spaces_name_the_progressive_key(tmp_path: Path, edit: tuple[str, str], needle: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(SPACE.replace(*edit))
    with pytest.raises(ConfigError) as exc:
        load_space(path)
    assert needle in str(exc.value) and "\n" not in str(exc.value), str(exc.value)
