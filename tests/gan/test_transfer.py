"""``model.init_from``: a trial's G (and D) start from weights a finished run wrote."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from gantune.catalogue import config_from_dict
from gantune.config import TrialConfig
from gantune.errors import ConfigError, GantuneError
from gantune.gan import GANTrainer
from gantune.gan.transfer import check_init
from gantune.rundir import CHECKPOINT, GENERATOR
from gantune.trial import train
from tests.conftest import tiny, tiny_images


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The run directory of a tiny digits (8 px) run: checkpoint.pt (G and D) and generator.pt."""
    root = tmp_path_factory.mktemp("transfer")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GANTUNE_CACHE_DIR", str(root / "cache"))
        result = train(tiny_images(train={"steps": 6}, eval={"every": 6}), run_dir=root / "run")
        assert result.status == "completed"
        yield root / "run"


def _trainer(cfg: TrialConfig, seed: int = 0) -> GANTrainer:
    torch.manual_seed(seed)
    return GANTrainer(cfg, torch.device("cpu"), lambda n: torch.zeros(n, 1, 8, 8))


def _same(net: torch.nn.Module, state: dict[str, torch.Tensor]) -> bool:
    own = net.state_dict()
    return own.keys() == state.keys() and all(torch.equal(own[k], state[k]) for k in own)


def _saved(run: Path) -> dict[str, dict[str, torch.Tensor]]:
    return torch.load(run / CHECKPOINT, weights_only=True)["trainer"]


def test_a_run_directory_gives_g_and_d_and_the_ema_starts_from_g(source: Path) -> None:
    fresh = _trainer(tiny_images(optim={"ema": 0.99}))
    saved = _saved(source)
    assert not _same(fresh.G, saved["G"])  # the test could fail: a fresh G is not the trained one
    for init_from in (source, source / CHECKPOINT):
        tr = _trainer(tiny_images(model={"init_from": str(init_from)}, optim={"ema": 0.99}))
        assert _same(tr.G, saved["G"]) and _same(tr.D, saved["D"])
        assert tr.G_ema is not None and _same(tr.G_ema, saved["G"])


def test_a_generator_file_gives_g_and_d_starts_fresh(source: Path, tmp_path: Path) -> None:
    payload = torch.load(source / GENERATOR, weights_only=True)
    exported = tmp_path / "weights"  # what ``gantune export --weights DIR`` writes: generator.pt, no checkpoint
    exported.mkdir()
    shutil.copy(source / GENERATOR, exported / GENERATOR)
    for init_from in (source / GENERATOR, exported):
        tr = _trainer(tiny_images(model={"init_from": str(init_from)}))
        assert _same(tr.G, payload["state_dict"])
        assert _same(tr.D, _trainer(tiny_images()).D.state_dict())  # as a run without init_from draws it
        assert not _same(tr.D, _saved(source)["D"])


def test_training_from_the_weights_starts_there_and_moves_on(source: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A real run from the weights trains: its G moves away from them (that it starts at them is the test above)."""
    monkeypatch.setenv("GANTUNE_CACHE_DIR", str(tmp_path / "cache"))
    cfg = tiny_images(model={"init_from": str(source)}, train={"steps": 3}, eval={"every": 3})
    result = train(cfg, run_dir=tmp_path / "run")
    assert result.status == "completed"
    after = torch.load(tmp_path / "run" / GENERATOR, weights_only=True)["state_dict"]
    saved = _saved(source)["G"]
    assert after.keys() == saved.keys() and any(not torch.equal(after[k], saved[k]) for k in after)


def test_resume_keeps_the_checkpoint_and_does_not_load_init_from_again(source: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GANTUNE_CACHE_DIR", str(tmp_path / "cache"))
    cfg = tiny_images(model={"init_from": str(source)}, train={"steps": 4}, eval={"every": 4})
    train(cfg, run_dir=tmp_path / "run")
    trained = _saved(tmp_path / "run")["G"]
    assert not _same(_trainer(cfg).G, trained)  # what init_from gives differs from what the run trained into
    # resumed at its last step: no step runs, so the weights it writes are what it restored (not init_from's)
    train(cfg, run_dir=tmp_path / "run", resume=True)
    final = torch.load(tmp_path / "run" / GENERATOR, weights_only=True)["state_dict"]
    assert final.keys() == trained.keys() and all(torch.equal(final[k], trained[k]) for k in final)


def test_points_nets_take_their_own_weights(tmp_path: Path) -> None:
    train(tiny(train={"steps": 2}, eval={"every": 2}), run_dir=tmp_path / "run")
    tr = _trainer(tiny(model={"init_from": str(tmp_path / "run")}))
    assert _same(tr.G, _saved(tmp_path / "run")["G"])


def test_a_shape_mismatch_names_the_first_tensor(source: Path) -> None:
    cfg = tiny_images(model={"init_from": str(source), "g_width": 16})
    with pytest.raises(GantuneError, match=r"^model.init_from: .*checkpoint.pt: G tensor 'net.0.weight' is "
                                           r"\[8, 8, 4, 4\] in the file but \[8, 16, 4, 4\] in this config's net$"):
        check_init(cfg)
    with pytest.raises(GantuneError, match=r"G tensor 'net\.0\.weight'"):
        _trainer(cfg)
    cfg = tiny_images(model={"init_from": str(source), "d_width": 16})  # G fits, D does not: D named, G unchanged
    with pytest.raises(GantuneError, match=r"D tensor '.*' is .* in the file but"):
        check_init(cfg)


def test_missing_and_foreign_files_are_one_line(source: Path, tmp_path: Path) -> None:
    raw = tiny_images().to_dict()
    raw["model"]["init_from"] = str(tmp_path / "nope.pt")
    with pytest.raises(ConfigError, match=r"^cfg.yaml: model.init_from: .*nope.pt does not exist"):
        config_from_dict(raw, "cfg.yaml")
    raw["model"]["init_from"] = str(tmp_path)  # a directory, but not a run's
    with pytest.raises(ConfigError, match=f"without {CHECKPOINT} or {GENERATOR}"):
        config_from_dict(raw, "cfg.yaml")
    (tmp_path / "notes.txt").write_text("not weights")
    with pytest.raises(GantuneError, match=r"notes\.txt: not a readable weights file"):
        check_init(tiny_images(model={"init_from": str(tmp_path / "notes.txt")}))
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(GantuneError, match=r"other\.pt: neither a gantune generator\.pt nor a checkpoint\.pt"):
        check_init(tiny_images(model={"init_from": str(tmp_path / "other.pt")}))
