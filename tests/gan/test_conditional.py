"""Class-conditional GANs (``model.conditional``, issue 23): conditional norms in G, a projection discriminator,
labelled data, the conditional metrics and sample grid, and the load-time rules."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import torch
from PIL import Image
from torch import nn

from gantune.catalogue import config_from_dict
from gantune.data import load_data
from gantune.errors import ConfigError, GantuneError
from gantune.gan import GANTrainer
from gantune.gan.conditional import (
    ConditionalGenerator,
    ConditionalNorm,
    ProjectionDiscriminator,
    balanced_labels,
    conditional_generator,
    labelled_data,
    projection_discriminator,
    state_classes,
)
from gantune.gan.nets import build_discriminator, build_generator
from gantune.metrics.conditional import predicted_classes
from gantune.metrics.digits_net import load_digits_net
from gantune.metrics.features import build_extractor
from gantune.sampling.space import load_space
from gantune.trial import train
from tests.conftest import grey_folder

CPU = torch.device("cpu")
TINY: dict[str, Any] = {
    "data": {"name": "digits", "resolution": 8},
    "model": {"conditional": True, "z_dim": 8, "g_width": 8, "d_width": 8, "g_depth": 1, "d_depth": 1},
    "train": {"steps": 20, "batch_size": 16, "log_every": 10, "checkpoint_every": 10, "device": "cpu"},
    "eval": {"every": 10, "n_samples": 100, "metrics": []},
}


def _cfg(**sections: dict[str, Any]) -> Any:
    raw = copy.deepcopy(TINY)
    for key, val in sections.items():
        raw.setdefault(key, {}).update(val)
    return config_from_dict(raw)


def _trainer(cfg: Any) -> GANTrainer:
    data = load_data(cfg.data, CPU, 0)
    return GANTrainer(cfg, CPU, data.sample, labelled_data(cfg, data))


# --- the pieces -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", [nn.BatchNorm2d(4), nn.GroupNorm(1, 4), nn.InstanceNorm2d(4, affine=True)])
def test_conditional_norm_starts_as_the_plain_norm_and_then_depends_on_the_label(norm: nn.Module) -> None:
    net = nn.Sequential(nn.Conv2d(2, 4, 1), norm)
    g = ConditionalGenerator(copy.deepcopy(net), 3)
    x = torch.randn(5, 2, 4, 4)
    g.net[0].load_state_dict(net[0].state_dict())
    zero, one = torch.zeros(5, dtype=torch.long), torch.ones(5, dtype=torch.long)
    assert torch.allclose(g(x, zero), net(x), atol=1e-6)  # gain 1, bias 0 for every class: the unconditional net
    assert torch.allclose(g(x, zero), g(x, one), atol=1e-6)
    cn = g.net[1]
    assert isinstance(cn, ConditionalNorm)
    with torch.no_grad():
        cn.class_gain.weight[1] = torch.tensor([2.0, 1.0, 1.0, 1.0])
        cn.class_bias.weight[2] = 0.5
    a, b, c = g(x, zero), g(x, one), g(x, 2 * one)
    assert torch.allclose(b[:, 0], 2 * a[:, 0], atol=1e-5) and torch.allclose(b[:, 1:], a[:, 1:])
    assert torch.allclose(c, a + 0.5, atol=1e-6)
    assert cn.labels is None  # set for one forward pass only
    with pytest.raises(GantuneError, match="without class labels"):
        g.net(x)


def test_every_norm_of_g_is_conditioned_for_mlp_and_dcgan() -> None:
    mlp = _cfg(data={"name": "grid25"}, model={"conditional": False}).model  # MLP nets; conditioned by hand
    g = conditional_generator(build_generator(mlp, "mlp", (2,)), 4)
    assert sum(isinstance(m, ConditionalNorm) for m in g.modules()) == mlp.g_depth
    assert not any(isinstance(m, nn.BatchNorm1d) and m.affine for m in g.modules())
    z = torch.randn(6, mlp.z_dim)
    with torch.no_grad():
        for m in g.modules():
            if isinstance(m, ConditionalNorm):
                m.class_bias.weight[3] += 1.0
    g.eval()
    assert not torch.allclose(g(z, torch.full((6,), 3)), g(z, torch.zeros(6, dtype=torch.long)))
    cfg = _cfg(model={"g_depth": 2})
    gd = conditional_generator(build_generator(cfg.model, "dcgan", (1, 8, 8)), 10)
    assert sum(isinstance(m, ConditionalNorm) for m in gd.modules()) == 2  # 4x4 block and the extra 3x3 conv
    with pytest.raises(GantuneError, match="no normalisation layer"):
        conditional_generator(build_generator(_cfg(data={"name": "grid25"}, model={
            "conditional": False, "g_norm": "none"}).model, "mlp", (2,)), 4)


@pytest.mark.parametrize("d_norm", ["none", "spectral"])
def test_the_projection_term_is_the_inner_product_of_the_class_embedding_with_ds_features(d_norm: str) -> None:
    cfg = _cfg(model={"d_norm": d_norm, "minibatch_std": True})
    # float64: a random D's logits reach the thousands, where float32 rounding alone exceeds the tolerance
    d = projection_discriminator(build_discriminator(cfg.model, "dcgan", (1, 8, 8)), 10, (1, 8, 8),
                                 d_norm == "spectral").double().eval()
    x = torch.randn(7, 1, 8, 8, dtype=torch.float64)
    y0, y1 = torch.zeros(7, dtype=torch.long), torch.full((7,), 4)
    plain, feat = d.net(x)
    out0, feat0 = d(x, y0)
    out1, _ = d(x, y1)
    assert torch.equal(feat0, feat) and feat.shape[1] == 16 * 8  # the flattened 4x4 maps, width 8
    emb = d.class_embed.weight  # the spectrally normalised matrix under spectral norm
    assert torch.allclose(out0 - plain, feat @ emb[0], atol=1e-5)
    assert torch.allclose(out1 - out0, feat @ (emb[4] - emb[0]), atol=1e-5)
    assert not torch.allclose(out0, out1)
    if d_norm == "spectral":
        assert torch.linalg.matrix_norm(emb.detach(), ord=2) == pytest.approx(1.0, rel=0.05)


def test_a_conditional_trainer_round_trips_its_state_and_its_exported_weights() -> None:
    cfg = _cfg(optim={"ema": 0.9})
    trainer = _trainer(cfg)
    for i in range(3):
        trainer.schedule(i)
        trainer.step()
    assert isinstance(trainer.G, ConditionalGenerator) and isinstance(trainer.D, ProjectionDiscriminator)
    assert trainer.n_classes == 10
    other = _trainer(cfg)
    other.load_state_dict(trainer.state_dict())
    z, y = torch.randn(20, cfg.model.z_dim), balanced_labels(20, 10, torch.Generator().manual_seed(0))
    assert torch.equal(trainer.generate(z, y), other.generate(z, y))
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(trainer.D.eval()(x, y[:4])[0], other.D.eval()(x, y[:4])[0])
    state = trainer.eval_generator().state_dict()
    assert state_classes(state) == 10 and state_classes(build_generator(cfg.model, "dcgan", (1, 8, 8))
                                                        .state_dict()) == 0


def test_balanced_labels_are_uniform_and_a_random_subset_when_there_are_fewer_samples_than_classes() -> None:
    """The evaluation's labels: every class n // K or n // K + 1 times; with n < K (a quick check of 500 samples
    on stacked digits' 1,000 classes) a random subset of the classes, not always the first n."""
    gen = torch.Generator().manual_seed(0)
    counts = torch.bincount(balanced_labels(2503, 10, gen), minlength=10)
    assert counts.sum() == 2503 and int(counts.max() - counts.min()) <= 1
    few = balanced_labels(500, 1000, gen)
    assert len(set(few.tolist())) == 500 and int(few.max()) >= 500


@pytest.mark.parametrize("name", ["digits", "stacked_digits"])
def test_real_labels_are_what_the_classifier_reads(name: str) -> None:
    """The labels a real batch comes with name its digits (stacked: the triple read first channel first): the
    digits classifier agrees on nearly all of them; so does the conditional metric's reading of stacked logits."""
    cfg = _cfg(data={"name": name, "resolution": 8})
    data = load_data(cfg.data, CPU, 0)
    assert data.n_classes == (10 if name == "digits" else 1000)
    x, y = data.sample_labelled(400)
    net = load_digits_net(CPU)
    logits = torch.cat([net(x[:, c:c + 1])[1] for c in range(x.shape[1])], dim=1)
    assert (predicted_classes(logits, x.shape[1]) == y).float().mean() > 0.9
    twin, twin_y = data.twin(300), data.twin_labels(300)
    assert twin_y is not None
    tl = torch.cat([net(twin[:, c:c + 1])[1] for c in range(twin.shape[1])], dim=1)
    assert (predicted_classes(tl, twin.shape[1]) == twin_y).float().mean() > 0.9


# --- training -------------------------------------------------------------------------------------------------


KNOBS: list[dict[str, Any]] = [
    {},
    {"loss": {"name": "wgan-gp"}, "optim": {"n_critic": 2}},
    {"loss": {"r1_weight": 1.0, "feature_matching": 1.0}},
    {"loss": {"unroll": 1, "feature_matching": 0.5}},
    {"loss": {"unroll": 1, "name": "wgan-gp"}},
    {"model": {"minibatch_std": True, "minibatch_disc": 4, "minibatch_disc_dim": 3, "d_dropout": 0.2}},
    {"data": {"augment": ["translation", "cutout", "color"]}, "loss": {"instance_noise": 0.1}},
    {"model": {"d_norm": "spectral", "g_norm": "layer"}, "loss": {"name": "hinge"}, "optim": {"ema": 0.9}},
    {"model": {"g_norm": "instance"}, "data": {"name": "stacked_digits"}},
]


@pytest.mark.parametrize("extra", KNOBS, ids=lambda e: json.dumps(e)[:60])
def test_every_path_that_calls_d_passes_the_labels(extra: dict[str, Any]) -> None:
    """Penalties, feature matching, the unrolled look-ahead, minibatch layers, DiffAugment and noise all call a D
    that needs labels (an unlabelled call is a TypeError): each trains finite, and G's and D's class parameters
    get gradients."""
    cfg = _cfg(**extra)
    trainer = _trainer(cfg)
    for i in range(3):
        trainer.schedule(i)
        trainer.step(measure=i == 2)
    stats = trainer.read_stats()
    assert all(np.isfinite(v) for v in stats.values()), stats
    for net, key in ((trainer.G, "class_gain"), (trainer.D, "class_embed")):
        grads = [p.grad for n, p in net.named_parameters() if key in n]
        assert grads and all(g is not None and g.abs().sum() > 0 for g in grads), key


def test_fakes_get_the_real_batchs_labels() -> None:
    """Fakes are generated for the labels of the real batch they are scored beside (the real label
    distribution: D cannot separate real from fake by the class prior alone)."""
    cfg = _cfg()
    trainer = _trainer(cfg)
    seen: list[tuple[str, torch.Tensor]] = []
    g_forward, d_forward = trainer.G.forward, trainer.D.forward
    trainer._g_fast = lambda z, y: (seen.append(("g", y)), g_forward(z, y))[1]  # type: ignore[method-assign]
    trainer._d_fast = lambda x, y: (seen.append(("d", y)), d_forward(x, y))[1]  # type: ignore[method-assign]
    real_labels: list[torch.Tensor] = []
    sample = trainer.labelled.sample  # type: ignore[union-attr]

    def record(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = sample(n)
        real_labels.append(y)
        return x, y

    trainer.labelled = type(trainer.labelled)(record, 10)  # type: ignore[misc]
    trainer.step()
    assert len(real_labels) == 1 and [k for k, _ in seen] == ["g", "d", "d", "d"]
    assert all(torch.equal(y, real_labels[0]) for _, y in seen)


def test_a_short_conditional_run_on_digits_reports_the_conditional_metrics_and_a_grid_of_class_rows(
        tmp_path: Path) -> None:
    cfg = _cfg(train={"steps": 30, "batch_size": 32}, eval={"every": 30, "n_samples": 200, "metrics": ["default"]},
               optim={"ema": 0.9})
    result = train(cfg, run_dir=tmp_path)
    assert result.status == "completed"
    ev = result.last_eval
    for key in ("fid", "classes", "cond_accuracy", "cond_class_coverage"):
        assert key in ev and np.isfinite(ev[key]), key
    assert 0 <= ev["cond_accuracy"] <= 1 and 0 <= ev["cond_class_coverage"] <= 1
    floor = result.provenance["floor"]  # real digits with their own labels: the classifier reads nearly all
    assert floor["cond_accuracy"] > 0.95 and floor["cond_class_coverage"] == 1.0
    png = Image.open(tmp_path / "samples" / "step_0000030.png")
    # 10 class rows of 64 // 10 = 6 samples, 8 px + 1 px padding, drawn 4x (8-px images are enlarged)
    assert png.size == ((6 * 9 + 1) * 4, (10 * 9 + 1) * 4)
    resumed = train(_cfg(train={"steps": 40, "batch_size": 32}, eval={"every": 40, "n_samples": 100},
                         optim={"ema": 0.9}), run_dir=tmp_path, resume=True)
    assert resumed.status == "completed" and resumed.steps == 40


def test_a_conditional_generator_learns_to_make_the_class_it_is_asked_for() -> None:
    """400 steps of a small conditional DCGAN on 8 px digits: the classifier reads the asked-for class in about a
    third of the samples (0.32 to 0.37 over three seeds here), where a generator that ignored its label would
    score chance, 0.1."""
    cfg = _cfg(model={"z_dim": 16, "g_width": 16, "d_width": 16}, loss={"name": "hinge"},
               optim={"lr_g": 2e-3, "lr_d": 2e-3, "beta1": 0.0, "beta2": 0.9},
               train={"steps": 400, "batch_size": 64, "log_every": 100},
               eval={"every": 400, "n_samples": 500, "metrics": ["conditional"]})
    result = train(cfg)
    assert result.status == "completed" and result.last_eval["cond_accuracy"] > 0.2, result.last_eval


def test_a_conditional_run_on_a_folder_with_one_subfolder_per_class(tmp_path: Path) -> None:
    """A folder's labels are its top-level subfolders (sorted); a folder with images at its root, or one class
    only, has nothing to condition on: one line when the trial starts (only loading the data tells)."""
    rng = np.random.default_rng(0)
    for cls, level in (("b_bright", 220), ("a_dark", 30)):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(6):
            px = np.clip(level + rng.integers(-20, 20, (8, 8)), 0, 255).astype(np.uint8)
            Image.fromarray(px).save(tmp_path / "imgs" / cls / f"{i}.png")
    folder = {"name": "folder", "path": str(tmp_path / "imgs"), "channels": 1}
    cfg = _cfg(data=folder, train={"steps": 4, "batch_size": 8}, eval={"every": 4})
    data = load_data(cfg.data, CPU, 0)
    assert data.n_classes == 2 and data.labels is not None
    x, y = data.sample_labelled(64)
    assert torch.equal(y == 0, x.mean(dim=(1, 2, 3)) < 0)  # a_dark is class 0
    assert train(cfg).status == "completed"
    one = tmp_path / "one"
    (one / "only").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(one / "only" / "0.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "imgs" / "loose.png")
    # a stray image beside the class subfolders: "has no class labels" named neither it nor the subfolders
    for path, needle in ((one, "model.conditional: data 'folder' has one class"),
                         (tmp_path / "imgs", f"data.path: 1 image(s) lie directly in {tmp_path / 'imgs'} (loose.png) "
                                             "beside its class subfolders")):
        bad = _cfg(data={**folder, "path": str(path)}, train={"steps": 2, "batch_size": 8}, eval={"every": 2})
        with pytest.raises(GantuneError) as exc:
            train(bad)
        msg = str(exc.value)
        assert needle in msg and "\n" not in msg, msg


def test_a_max_images_subset_keeps_the_folders_class_indices(tmp_path: Path) -> None:
    """Class indices come from the whole folder: a ``max_images`` subset that missed ``a_one`` numbered ``b_mid``
    0 and ``c_top`` 1, so an unconditional run's labels named other folders than a full run's, and a conditional
    run made a generator with a class too few without a word. A conditional run on such a subset is refused."""
    levels = {"a_one": (30, 1), "b_mid": (120, 6), "c_top": (220, 6)}
    for cls, (level, n) in levels.items():
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((8, 8), level, np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    folder = {"name": "folder", "path": str(tmp_path / "imgs"), "channels": 1, "max_images": 2}
    plain = _cfg(data=folder, model={"conditional": False}, train={"steps": 2, "batch_size": 2}, eval={"every": 2})
    data = load_data(plain.data, CPU, 0)
    assert data.images is not None and data.labels is not None and len(data) == 2
    assert 0 not in data.labels.tolist()  # the seeded subset missed a_one (the case that renumbered)
    level = data.images.flatten(1).float().mean(1)  # the stored 8-bit pixels
    assert data.labels.tolist() == [1 if v < 170 else 2 for v in level.tolist()]
    with pytest.raises(GantuneError) as exc:
        train(_cfg(data=folder, train={"steps": 2, "batch_size": 2}, eval={"every": 2}))
    assert str(exc.value) == ("data.max_images: its subset of 2 leaves out 1 of the folder's 3 classes (a_one), and a "
                              "conditional GAN needs images of every class; raise data.max_images")


@pytest.mark.parametrize(("images", "message"), [
    (1, "leaves out 9 of the digits' 10 classes (0, 1, 2 and 6 more)"),
    (30, "leaves out 1 of the digits' 10 classes (0)")])
def test_a_digits_subset_missing_a_class_counts_all_ten(images: int, message: str) -> None:
    """digits with ``max_images: 1`` (one 3) said "images of 1 of its 4 classes (none of class 0, 1, 2)": its class
    count was read off the subset's highest label (found by a review). The digits have 10, said before the run
    starts, as a folder's subset is."""
    from gantune.gan.conditional import check_classes

    cfg = _cfg(data={"name": "digits", "resolution": 8, "max_images": images})
    with pytest.raises(GantuneError) as exc:
        check_classes(cfg)
    assert str(exc.value) == (f"data.max_images: its subset of {images} {message}, and a conditional GAN needs "
                              "images of every class; raise data.max_images")
    check_classes(_cfg(data={"name": "digits", "resolution": 8, "max_images": 100}))  # every class among them


def test_labelled_data_missing_a_class_below_its_highest_is_refused() -> None:
    """Class count is the highest label + 1, so labelled data with no image of class 1 (a subset of a torchvision
    set, a plugin's) trained a class from nothing without a word."""
    from gantune.data import DATASETS, dataset

    @dataset("gappy", channels=1, labelled=True)
    def gappy(cfg: object) -> tuple[None, torch.Tensor, torch.Tensor]:
        return None, torch.zeros(8, 1, 8, 8, dtype=torch.uint8), torch.tensor([0, 0, 0, 0, 2, 2, 2, 2])

    try:
        cfg = _cfg(data={"name": "gappy"})
        with pytest.raises(GantuneError) as exc:
            labelled_data(cfg, load_data(cfg.data, CPU, 0))
        assert str(exc.value) == ("model.conditional: data 'gappy' has images of 2 of its 3 classes (none of class 1), "
                                  "and a conditional GAN needs images of every class")
    finally:
        DATASETS.remove("gappy")


def _two_class_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``tmp_path/cfg.yaml``: a conditional run on ``tmp_path/imgs`` (two class folders of 6 images), run from
    ``tmp_path``."""
    from gantune.config import dump_config

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GANTUNE_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "imgs").mkdir()
    for cls in ("cat", "dog"):
        grey_folder(tmp_path / "imgs" / cls, n=6)
    cfg = _cfg(data={"name": "folder", "path": str(tmp_path / "imgs"), "channels": 1},
               train={"steps": 4, "batch_size": 8, "checkpoint_every": 4}, eval={"every": 4})
    (tmp_path / "cfg.yaml").write_text(dump_config(cfg))


def test_a_resume_after_a_class_folder_was_added_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """The run's nets have its first class count; with a class folder added they no longer fit its weights (a
    traceback loading the checkpoint)."""
    import yaml

    from gantune.cli import main

    _two_class_config(tmp_path, monkeypatch)
    assert main(["train", "cfg.yaml", "--out", "run", "--no-tracking"]) == 0
    grey_folder(tmp_path / "imgs" / "fox", n=6)
    before = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    assert main(["train", "cfg.yaml", "--out", "run", "--no-tracking", "--resume", "--steps", "6"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("generator was trained on 2 classes, and " + str(tmp_path / "imgs") + " now has 3 class "
                        "folders; restore them, or train into another --out"), err
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == before
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]["steps"] == 4


def test_a_resume_after_the_folder_images_changed_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """An image added to (or replaced in) a class folder went unnoticed: the resumed run trained on from weights
    of other data and logged its metrics against another reference in the same log."""
    from gantune.cli import main

    _two_class_config(tmp_path, monkeypatch)
    assert main(["train", "cfg.yaml", "--out", "run", "--no-tracking"]) == 0
    added = tmp_path / "imgs" / "cat" / "new.png"
    added.write_bytes((tmp_path / "imgs" / "cat" / "00.png").read_bytes())
    before = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    capsys.readouterr()
    assert main(["train", "cfg.yaml", "--out", "run", "--no-tracking", "--resume", "--steps", "6"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"--resume: {tmp_path / 'imgs'} changed since run's checkpoint (12 images then, 13 now); "
                        "restore it, or train into another --out"), err
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == before
    added.unlink()
    first = tmp_path / "imgs" / "cat" / "00.png"  # the same count, one file rewritten with other bytes
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8), "L").save(first)
    assert main(["train", "cfg.yaml", "--out", "run", "--no-tracking", "--resume", "--steps", "6"]) == 2
    assert "(12 images then and now, other names or sizes)" in capsys.readouterr().err
    grey_folder(tmp_path / "restored", n=6)  # restored: the very file grey_folder wrote (it is seeded)
    first.write_bytes((tmp_path / "restored" / "00.png").read_bytes())
    assert main(["train", "cfg.yaml", "--out", "run", "--no-tracking", "--resume", "--steps", "6"]) == 0


def test_a_run_folder_at_the_data_or_a_class_folder_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """The run's lock made the image walk skip the folder holding it: ``--out imgs/cat`` trained a class short
    without a word, and ``--out imgs`` failed as "no images" and left the lock, so every later run failed too."""
    from gantune.cli import main

    _two_class_config(tmp_path, monkeypatch)
    (tmp_path / "imgs" / "fox").mkdir()
    grey_folder(tmp_path / "imgs" / "fox" / "deep", n=6)  # a class whose images are a folder further down
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "imgs").rglob("*"))
    for out, what in (("imgs", "the data folder"), ("imgs/cat", "a folder of the data"),
                      ("imgs/fox", "a folder of the data")):
        assert main(["train", "cfg.yaml", "--out", out, "--no-tracking"]) == 2
        assert f"--out: {out} is {what} ({tmp_path / 'imgs'})" in capsys.readouterr().err
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "imgs").rglob("*")) == before
    assert main(["train", "cfg.yaml", "--out", "imgs/runs/a", "--no-tracking", "--json"]) == 0  # a new folder: fine
    assert main(["train", "cfg.yaml", "--out", "imgs/runs/a", "--no-tracking", "--resume", "--steps", "6"]) == 0


def test_a_run_walks_its_image_folder_once_for_its_checks_and_once_to_load_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each check of a conditional folder run (the data is there, its classes, a resume's class count) walked the
    whole folder again: four walks before a resumed run trained, seconds apiece on 100k images."""
    from gantune.cli import main
    from gantune.data import images

    _two_class_config(tmp_path, monkeypatch)
    walks: list[str] = []
    walk = images._walk

    def counted(top: Path) -> list[Path]:
        walks.append(str(top))
        return walk(top)

    monkeypatch.setattr(images, "_walk", counted)
    assert main(["train", "cfg.yaml", "--out", "run", "--no-tracking"]) == 0
    assert walks.count(str(tmp_path / "imgs")) == 2
    walks.clear()
    assert main(["train", "cfg.yaml", "--out", "run", "--no-tracking", "--resume", "--steps", "6"]) == 0
    assert walks.count(str(tmp_path / "imgs")) == 2


@pytest.mark.parametrize(("edit", "needle"), [
    ({"data": {"name": "ring8"}, "model": {"g_norm": "batch"}}, "model.conditional: dataset 'ring8' has no class"),
    ({"data": {"name": "torchvision", "dataset": "CelebA", "path": "x"}},
     "dataset 'torchvision CelebA' has no class labels"),
    ({"model": {"g_norm": "none"}}, "model.g_norm 'none' has none (use batch, layer, instance)"),
    ({"model": {"g_norm": "spectral"}}, "model.g_norm 'spectral' has none"),
    ({"model": {"conditional": False}, "eval": {"metrics": ["fid", "conditional"]}},
     "eval.metrics: the conditional metric scores a conditional generator"),
])
def test_bad_combinations_are_one_line_at_load(edit: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError) as exc:
        _cfg(**edit)
    msg = str(exc.value)
    assert needle in msg and "\n" not in msg, msg


def test_the_conditional_metric_needs_a_classifier() -> None:
    from gantune.metrics.base import Reference
    from gantune.metrics.conditional import conditional

    with pytest.raises(ValueError, match="needs a classifier extractor"):
        conditional(Reference(x=torch.zeros(4, 3, 8, 8), feats=torch.zeros(4, 2)))


def test_conditional_metrics_score_known_labels() -> None:
    """Samples read as their label for classes 0-4 and as class 0 for 5-9: accuracy 0.5 + 0.1 * 0.5, classes
    0-4 covered (class 0 fully), 5-9 not."""
    from gantune.metrics.base import Reference, Samples
    from gantune.metrics.conditional import conditional

    ref = Reference(x=torch.zeros(4, 1, 8, 8), feats=torch.zeros(4, 2), logits=torch.zeros(4, 10))
    labels = torch.arange(10).repeat(20)
    read = torch.where(labels < 5, labels, torch.zeros_like(labels))
    score = conditional(ref)(Samples(x=torch.zeros(200, 1, 8, 8), feats=torch.zeros(200, 2),
                                     logits=nn.functional.one_hot(read, 10).float(), labels=labels))
    assert score == {"cond_accuracy": pytest.approx(0.5), "cond_class_coverage": pytest.approx(0.5)}
    assert conditional(ref)(Samples(x=torch.zeros(3), feats=torch.zeros(3, 2), logits=torch.zeros(3, 10))) == {}


def test_the_evaluator_gets_the_labels_the_samples_were_made_for(tmp_path: Path) -> None:
    """A generator that ignores its label scores chance accuracy; the evaluation's samples are made for labels
    uniform over the classes."""
    cfg = _cfg(eval={"metrics": ["conditional"], "n_samples": 500})
    data = load_data(cfg.data, CPU, 0)
    ext = build_extractor(cfg, CPU)
    assert ext.name == "digits"
    from gantune.metrics import Evaluator

    ev = Evaluator(cfg, data, CPU)
    real_x, real_y = data.sample_labelled(500)
    assert ev(lambda n: (real_x[:n], real_y[:n]))["cond_accuracy"] > 0.95
    shuffled = real_y[torch.randperm(500, generator=torch.Generator().manual_seed(0))]
    assert ev(lambda n: (real_x[:n], shuffled[:n]))["cond_accuracy"] < 0.3
    assert ev(lambda n: real_x[:n]) == {}  # no labels: nothing to score


SPACE = """
name: cond
search: {trials: 2, max_steps: 20, eval_every: 10}
data: {name: digits, resolution: 8}
model:
  conditional: {categorical: [false, true]}
  g_width: 8
  d_width: 8
"""


def test_conditional_is_searchable(tmp_path: Path) -> None:
    p = tmp_path / "cond.yaml"
    p.write_text(SPACE)
    space = load_space(p)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        cfg = config_from_dict(space.sample(trial))
        seen.add(cfg.model.conditional)
        study.tell(trial, 0.0)
    assert seen == {False, True}
    p.write_text(SPACE.replace("name: digits, resolution: 8", "name: grid25"))
    space = load_space(p)  # the rule is between sections: each sampled config meets it
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    raws = [space.sample(study.ask()) for _ in range(12)]
    bad = [raw for raw in raws if raw["model"]["conditional"]]
    assert bad and len(bad) < len(raws)
    with pytest.raises(ConfigError, match=r"model\.conditional: dataset 'grid25' has no class labels"):
        config_from_dict(bad[0])


def test_a_space_of_conditional_runs_may_search_on_the_conditional_metric(tmp_path: Path) -> None:
    """The objective check knows a fixed ``model.conditional: true`` adds ``cond_accuracy``; a space that samples
    ``conditional`` cannot follow it (half its trials would not report it)."""
    p = tmp_path / "obj.yaml"
    text = SPACE.replace("search: {trials: 2,", "search: {objective: cond_accuracy, direction: maximize, trials: 2,")
    p.write_text(text.replace("{categorical: [false, true]}", "true"))
    assert load_space(p).settings.objectives == ["cond_accuracy"]
    p.write_text(text)
    with pytest.raises(ConfigError, match="'cond_accuracy' is not reported with model.conditional false "
                       r"\(available there: fid, kid"):
        load_space(p)


def test_the_grid_never_asks_for_more_samples_than_its_size(tmp_path: Path) -> None:
    """``eval.grid`` below the class count (4 samples, 10 classes) gives 4 rows of one sample, not 10 rows that
    need more noise vectors than the grid has."""
    from gantune.gan.conditional import grid_labels

    labels, row = grid_labels(10, 64)
    assert row == 6 and labels.tolist() == [c for c in range(10) for _ in range(6)]
    labels, row = grid_labels(10, 4)
    assert row == 1 and labels.tolist() == [0, 1, 2, 3]
    assert grid_labels(1000, 64)[0].tolist() == [c for c in range(10) for _ in range(6)]
    cfg = _cfg(train={"steps": 2}, eval={"every": 2, "grid": 4})
    assert train(cfg, run_dir=tmp_path).status == "completed"
    assert Image.open(tmp_path / "samples" / "step_0000002.png").size == ((1 * 9 + 1) * 4, (4 * 9 + 1) * 4)
