"""The metrics' reference: the digits' held-out split, the real-vs-real floor, and a cache that cannot go stale."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gantune import metrics
from gantune.catalogue import config_from_dict
from gantune.data import as_float, digits_split, load_data
from gantune.errors import ConfigError
from gantune.metrics import Evaluator, load_reference
from gantune.metrics.digits_net import DigitsNet
from gantune.metrics.features import build_extractor
from gantune.metrics.fid import frechet_distance, real_statistics
from gantune.metrics.train_digits_classifier import heldout_accuracy
from tests.conftest import grey_folder

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GANTUNE_CACHE_DIR", str(tmp_path / "cache"))
    metrics._MEMO.clear()


def _rows(x: torch.Tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in x.reshape(len(x), -1)}


def test_digits_split_is_fixed_stratified_and_disjoint() -> None:
    (x_tr, y_tr), (x_te, y_te) = digits_split("train"), digits_split("heldout")
    assert (len(x_tr), len(x_te)) == (1437, 360)
    assert np.bincount(y_te).min() >= 35  # stratified: every class held out at its share
    assert np.bincount(y_tr).min() >= 135
    again = digits_split("heldout")[0]
    assert np.array_equal(again, x_te)  # fixed: the same digits on every call and machine


def test_gans_train_on_the_train_split_and_metrics_compare_with_the_heldout_one() -> None:
    cfg = config_from_dict({"data": {"name": "digits", "resolution": 8}, "eval": {"n_samples": 1000}})
    data = load_data(cfg.data, CPU, 0)
    assert len(data) == 1437 and data.reference_split == "heldout"
    train_rows = _rows(data.images.cpu())
    ref = data.reference(1000)
    assert len(ref) == 360  # all the held-out digits (fewer than the samples asked for)
    heldout_only = _rows(torch.from_numpy(digits_split("heldout")[0])) - train_rows
    assert _rows(ref) >= heldout_only and len(heldout_only) > 300  # the reference is the held-out split
    twin = data.twin(1000)
    assert len(twin) == 1000 and _rows(twin) <= train_rows  # the floor's real samples come from the train split


def test_classifier_was_trained_on_the_train_split_only() -> None:
    from gantune.metrics.digits_net import load_digits_net

    assert heldout_accuracy(load_digits_net(CPU)) >= 0.98


def test_floor_is_real_training_images_scored_against_the_heldout_reference() -> None:
    cfg = config_from_dict({"data": {"name": "digits", "resolution": 16},
                            "eval": {"n_samples": 1000, "metrics": ["fid", "kid", "classes"]}})
    data = load_data(cfg.data, CPU, 0)
    ev = Evaluator(cfg, data, CPU)
    p = ev.provenance
    assert (p["extractor"], p["n"], p["reference_n"], p["reference"], p["resolution"]) == (
        "digits", 1000, 360, "heldout", 16)
    assert len(p["weights"]) == 16
    ext = build_extractor(cfg, CPU)
    real = real_statistics(load_reference(cfg, data, ext, 360))
    expected = frechet_distance(real, ext(data.twin(1000))[0])
    assert p["floor"]["fid"] == pytest.approx(expected, rel=1e-9)
    assert p["floor"]["fid"] > 0.5 and p["floor"]["classes"] == 10
    # a generator that reproduces the training images scores the floor
    again = ev(lambda n: data.twin(n))
    assert again["fid"] == pytest.approx(p["floor"]["fid"], rel=1e-9)


def test_a_floor_on_fewer_training_samples_than_n_says_so() -> None:
    """digits has 1,437 training images: under ``eval.n_samples`` 2,000 (the schema's default is 2,500) the floor
    scored those 1,437 while every output called it the same N as the trial's values (FID falls with N: 19.6 on
    360 of them, 5.8 on 1,437, against one reference). The provenance records the floor's N, and each line says it."""
    from gantune.provenance import floor_scored, floor_text

    def provenance(n: int) -> dict[str, object]:
        cfg = config_from_dict({"data": {"name": "digits", "resolution": 8},
                                "eval": {"n_samples": n, "metrics": ["fid"]}})
        return Evaluator(cfg, load_data(cfg.data, CPU, 0), CPU).provenance

    p = provenance(2000)
    assert p["floor_n"] == 1437 and p["n"] == 2000 and p["floor"]["fid"] > 0
    assert floor_text(p).startswith("real-vs-real floor (all 1437 training samples, fewer than the 2000 a trial "
                                    "scores) fid=")
    p = provenance(1000)
    assert "floor_n" not in p and floor_scored(p) == "training data scored like samples"


def test_a_floor_on_too_few_training_samples_is_none() -> None:
    """digits with ``max_images: 5``: the floor scored 5 training images with PRDC, whose k-NN radii need more than
    5, and the run died in a ``kthvalue`` traceback before its first step (found by a review)."""
    from gantune.provenance import floor_text

    cfg = config_from_dict({"data": {"name": "digits", "resolution": 8, "max_images": 5},
                            "eval": {"n_samples": 16}})  # the default metrics: fid, kid, classes, prdc, ...
    p = Evaluator(cfg, load_data(cfg.data, CPU, 0), CPU).provenance
    assert p["floor"] == {} and p["floor_n"] == 5
    assert floor_text(p) == "no real-vs-real floor (the training data holds 5 samples, too few to score)"


def test_a_folders_floor_scores_images_outside_its_reference(tmp_path: Path) -> None:
    """A folder has no held-out split: its reference is its training images, and the floor's twin drew from the
    same images, so with ``n_samples`` at the folder's size it scored the reference against itself (FID -3.8e-07,
    read as "a generator can reach 0"). The twin now holds only images outside the reference; with fewer than
    ``n_samples`` of those there is no floor, and ``gantune train`` says so."""
    root = tmp_path / "imgs"
    grey_folder(root, n=40)

    def evaluated(n: int) -> tuple[Evaluator, object]:
        cfg = config_from_dict({"data": {"name": "folder", "path": str(root), "resolution": 8, "channels": 1},
                                "eval": {"n_samples": n, "extractor": "digits", "metrics": ["fid"]}})
        return Evaluator(cfg, data := load_data(cfg.data, CPU, 0), CPU), data

    ev, data = evaluated(16)
    assert ev.provenance["reference"] == "train"
    twin = data.twin(16)
    assert twin is not None and len(twin) == 16 and not _rows(twin) & _rows(data.reference(16))
    assert ev.provenance["floor"]["fid"] > 1.0  # 16 other random images: far from a copy of the reference
    for n in (21, 40, 100):  # fewer than n images outside an n-image reference
        ev, data = evaluated(n)
        assert data.twin(n) is None and data.twin_labels(n) is None and ev.provenance["floor"] == {}
        from gantune.provenance import floor_text

        assert floor_text(ev.provenance) == (f"no real-vs-real floor (the reference is the training images, and "
                                             f"fewer than {n} lie outside it)")


def test_an_edited_image_changes_the_cached_reference(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    grey_folder(root)
    cfg = config_from_dict({"data": {"name": "folder", "path": str(root), "resolution": 8, "channels": 1},
                            "eval": {"n_samples": 16, "extractor": "digits"}})
    ext = build_extractor(cfg, CPU)
    first = load_reference(cfg, load_data(cfg.data, CPU, 0), ext, 12)
    Image.fromarray(np.full((8, 8), 255, np.uint8), "L").save(root / "03.png")
    metrics._MEMO.clear()  # as in a fresh worker process: only the disk cache is left
    data = load_data(cfg.data, CPU, 0)
    second = load_reference(cfg, data, ext, 12)
    assert not torch.equal(first.feats, second.feats)
    assert torch.allclose(second.feats, ext(data.reference(12))[0])


@pytest.mark.parametrize(("images", "metrics_", "needle"), [
    (5, ["prdc"], "eval.metrics: prdc needs more than 5 real samples (each one's radius is its 5th nearest "
                  "neighbour's); the data has 5"),
    (1, ["diversity"], "eval.metrics: the metrics (diversity) compare samples with the real data, which has one "
                       "sample"),
    # KID's subsets of half of 3 images hold one: every evaluation NaN, the run "diverged" (found by a review)
    (3, ["fid", "kid"], "eval.metrics: kid needs 4 real samples or more (two a subset, half of them); the data has 3"),
])
def test_too_few_real_images_for_the_metrics_is_one_line(tmp_path: Path, images: int, metrics_: list[str],
                                                         needle: str) -> None:
    """prdc on 5 images was a traceback (``kthvalue(): selected number k out of range``); diversity on one image
    read as a divergence (``non-finite diversity``) of a GAN that had not diverged."""
    from gantune.errors import ConfigError

    grey_folder(tmp_path / "few", n=images)
    cfg = config_from_dict({"data": {"name": "folder", "path": str(tmp_path / "few"), "resolution": 8,
                                     "channels": 1}, "eval": {"n_samples": 16, "extractor": "digits",
                                                              "metrics": metrics_}})
    with pytest.raises(ConfigError) as exc:
        Evaluator(cfg, load_data(cfg.data, CPU, 0), CPU)
    assert str(exc.value) == needle or str(exc.value).startswith(needle), str(exc.value)


def test_other_classifier_weights_change_the_cached_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gantune.metrics.digits_net as digits_net

    cfg = config_from_dict({"data": {"name": "digits", "resolution": 8}, "eval": {"n_samples": 100}})
    data = load_data(cfg.data, CPU, 0)
    first = load_reference(cfg, data, build_extractor(cfg, CPU), 100)
    other = tmp_path / "other.pt"
    torch.manual_seed(1)
    torch.save({k: v.half() for k, v in DigitsNet().state_dict().items()}, other)
    monkeypatch.setattr(digits_net, "weights_path", lambda: other)
    metrics._MEMO.clear()
    ext = build_extractor(cfg, CPU)
    second = load_reference(cfg, data, ext, 100)
    assert not torch.equal(first.feats, second.feats)
    assert torch.allclose(second.feats, ext(data.reference(100))[0])


def test_a_family_that_reports_a_new_key_gets_a_floor_for_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The floor is cached on disk once per reference and metric set; a family that gains a key (a new release
    of gantune, or a plugin's new version) must not read the old floor without that key: the cache key names
    the families' keys, not only their names."""
    import dataclasses

    from gantune.metrics.base import FAMILIES

    cfg = config_from_dict({"data": {"name": "grid25"}, "eval": {"n_samples": 200, "metrics": ["modes"]}})
    data = load_data(cfg.data, CPU, 0)
    assert "hq" in Evaluator(cfg, data, CPU).provenance["floor"]
    old = FAMILIES.get("modes")

    def build(ref: metrics.Reference) -> metrics.Scorer:
        score = old.build(ref)
        return lambda fake: {**score(fake), "hq_twice": 2 * score(fake)["hq"]}

    monkeypatch.setitem(FAMILIES._entries, "modes", dataclasses.replace(old, build=build, keys=(*old.keys, "hq_twice")))
    metrics._MEMO.clear()  # as in a fresh worker process: only the disk cache is left
    floor = Evaluator(cfg, data, CPU).provenance["floor"]
    assert floor["hq_twice"] == pytest.approx(2 * floor["hq"])


def test_an_edited_plugin_extractor_reads_its_own_features_and_floor() -> None:
    """A plugin's extractor has no version a key could follow (its weights digest is what its author sets, "none"
    here): cached on disk by its name, its second version read the first one's reference features, FID statistics
    and floor in every later process. It is kept in memory only, as a plugin's metric is."""
    from gantune.metrics.features import EXTRACTORS, Extractor

    scale = {"now": 1.0}

    def features(x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return x.flatten(1)[:, :16] * scale["now"], None

    # the name it registers under is what says it is a plugin's, not the name its Extractor gives (v1 here)
    EXTRACTORS.add("edited", lambda cfg, device: Extractor("edited_v1", 16, features))
    try:
        cfg = config_from_dict({"data": {"name": "digits", "resolution": 8},
                                "eval": {"n_samples": 200, "metrics": ["fid"], "extractor": "edited"}})
        data = load_data(cfg.data, CPU, 0)
        first = Evaluator(cfg, data, CPU).provenance["floor"]["fid"]
        metrics._MEMO.clear()  # a later process: the disk cache alone is left
        scale["now"] = 10.0  # the plugin's next version: its features ten times the first's
        second = Evaluator(cfg, data, CPU).provenance["floor"]["fid"]
        assert second == pytest.approx(100 * first, rel=1e-4)  # FID is a squared distance
        assert not list(Path(metrics.cache_dir()).glob("reference-*"))
        # an extractor that reads one digit a channel says so, with 10 logits a channel: other counts are one line
        EXTRACTORS.add("uneven", lambda cfg, device: Extractor("uneven", 16, lambda x: (
            x.flatten(1)[:, :16], x.flatten(1)[:, :15]), classes=15, depth=3))
        stacked = config_from_dict({"data": {"name": "stacked_digits", "resolution": 8},
                                    "eval": {"n_samples": 100, "metrics": ["is"], "extractor": "uneven"}})
        with pytest.raises(ConfigError, match=r"^eval.extractor: uneven reads one digit of 10 a channel \(depth 3\) "
                                              r"and gives 15 class logits a sample, not 30$"):
            Evaluator(stacked, load_data(stacked.data, CPU, 0), CPU)
    finally:
        EXTRACTORS.remove("edited")
        if "uneven" in EXTRACTORS.names():
            EXTRACTORS.remove("uneven")
        metrics._MEMO.clear()


def test_the_classifier_script_writes_where_it_is_told_and_leaves_the_shipped_weights(tmp_path: Path) -> None:
    """`--out` (and `--help`) must not retrain over the package's weights, which every digits FID reads."""
    import subprocess
    import sys

    from gantune.metrics.digits_net import weights_path

    shipped = weights_path().stat().st_mtime_ns
    script = [sys.executable, "-m", "gantune.metrics.train_digits_classifier"]
    assert "--out" in subprocess.run([*script, "--help"], capture_output=True, text=True, check=True).stdout
    out = tmp_path / "net.pt"
    done = subprocess.run([*script, "--out", str(out), "--epochs", "1"], capture_output=True, text=True, check=True)
    assert "held-out accuracy" in done.stdout and out.is_file()
    net = DigitsNet()
    net.load_state_dict({k: v.float() for k, v in torch.load(out).items()})
    assert heldout_accuracy(net) > 0.5  # one epoch learns the digits well past chance (0.1)
    assert weights_path().stat().st_mtime_ns == shipped


def test_a_folders_diversity_reference_spans_every_class_folder(tmp_path: Path) -> None:
    """A folder of 1,000 < N <= ``n_samples`` images is its whole reference; it was taken in sorted path order, and
    the diversity ratio's real spread reads the reference's first 1,000 samples: here 900 dark and 100 bright
    images of 900 + 300, so a generator that draws the data's own images read about 2, past the 1.5 ``diverged``
    ceiling. The reference is now in a seeded order."""
    root = tmp_path / "imgs"
    for cls, (level, count) in {"a_dark": (10, 900), "b_bright": (230, 300)}.items():
        (root / cls).mkdir(parents=True)
        for i in range(count):  # one flat grey a folder, each image one pixel apart
            px = np.full((8, 8), level, dtype=np.uint8)
            px.flat[i % 64] = level + 1 + i // 64
            Image.fromarray(px, "L").save(root / cls / f"{i:03d}.png")
    cfg = config_from_dict({"data": {"name": "folder", "path": str(root), "resolution": 8, "channels": 1},
                            "eval": {"n_samples": 1200, "extractor": "digits", "metrics": ["diversity"]}})
    data = load_data(cfg.data, CPU, 0)
    ev = Evaluator(cfg, data, CPU)
    gen = torch.Generator().manual_seed(1)
    images = as_float(data.images.cpu())

    def draw(n: int) -> torch.Tensor:  # fresh draws of the data's own images
        return images[torch.randint(len(images), (n,), generator=gen)]

    ref = data.reference(1200)
    assert len(ref) == 1200 and _rows(ref) == _rows(images)  # still the whole folder
    assert ev(draw)["diversity"] == pytest.approx(1.0, abs=0.1)


def test_a_conditional_floor_is_not_read_back_for_other_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    """The floor's cache tag hashed the twin's pixels but not its labels: the same images under other classes (a
    folder whose class folders were re-sorted) read back the old conditional floor. Here the twin's labels are
    shifted by one class, as if every folder had been renamed: its floor's accuracy must be the new labels'."""
    cfg = config_from_dict({"data": {"name": "digits", "resolution": 8}, "model": {"conditional": True},
                            "eval": {"n_samples": 300, "metrics": ["conditional"]}})
    data = load_data(cfg.data, CPU, 0)
    assert Evaluator(cfg, data, CPU).provenance["floor"]["cond_accuracy"] > 0.9
    true_labels = data.twin_labels

    def renamed(*args: int) -> torch.Tensor | None:
        labels = true_labels(*args)
        return None if labels is None else (labels + 1) % 10

    monkeypatch.setattr(data, "twin_labels", renamed)
    metrics._MEMO.clear()  # as in a fresh worker process: only the disk cache is left
    assert Evaluator(cfg, data, CPU).provenance["floor"]["cond_accuracy"] < 0.1
