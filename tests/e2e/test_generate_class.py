"""``gantune generate WEIGHTS --class K``: a conditional generator's samples of class K; one line, exit 2, for a
class out of range or a generator that is not conditional."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from gantune.cli import main
from gantune.gan.conditional import ConditionalGenerator
from gantune.generate import load_generator, sample

CPU = torch.device("cpu")


def _train(tmp_path: Path, name: str, conditional: bool) -> Path:
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"name": "digits", "resolution": 8},
                                   "model": {"conditional": conditional, "z_dim": 8, "g_width": 4, "d_width": 4,
                                             "g_depth": 1, "d_depth": 1},
                                   "train": {"steps": 6, "batch_size": 8, "log_every": 3, "device": "cpu"},
                                   "eval": {"metrics": [], "every": 6}}))
    assert main(["train", str(cfg), "--out", str(tmp_path / name), "--no-tracking"]) == 0
    return tmp_path / name / "generator.pt"


def _last_json(capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _pixels(folder: Path) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))])


def test_generate_class_writes_that_classs_samples(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trained = _train(tmp_path, "cond", conditional=True)
    net, cfg = load_generator(trained, CPU)
    assert isinstance(net, ConditionalGenerator) and net.n_classes == 10  # the class count is the weights'
    payload = torch.load(trained, weights_only=True)  # classes far apart, whatever 6 steps trained
    gen = torch.Generator().manual_seed(0)
    for key, value in payload["state_dict"].items():
        if key.endswith("class_bias.weight"):
            payload["state_dict"][key] = torch.randn(value.shape, generator=gen)
    weights = tmp_path / "apart.pt"
    torch.save(payload, weights)
    for k in (3, 4):
        assert main(["generate", str(weights), "--n", "6", "--class", str(k), "--out", str(tmp_path / f"c{k}"),
                     "--json"]) == 0
        assert _last_json(capsys)["class"] == k
    net, cfg = load_generator(weights, CPU)
    for k in (3, 4):
        want = sample(net, cfg, 6, CPU, 0, label=k)
        assert np.array_equal(_pixels(tmp_path / f"c{k}"),
                              ((want.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)[:, 0].numpy())
    assert not np.array_equal(_pixels(tmp_path / "c3"), _pixels(tmp_path / "c4"))  # same noise, another class
    assert main(["generate", str(weights), "--n", "20", "--out", str(tmp_path / "all.png")]) == 0


@pytest.mark.parametrize("k", ["10", "-1"])
def test_a_class_out_of_range_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 k: str) -> None:
    weights = _train(tmp_path, "cond", conditional=True)
    capsys.readouterr()
    assert main(["generate", str(weights), "--class", k, "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--class: {k} is not a class of this generator (0 to 9)" in err, err
    assert not (tmp_path / "x.png").exists()


def test_class_on_an_unconditional_generator_is_one_line_exit_2(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    weights = _train(tmp_path, "plain", conditional=False)
    capsys.readouterr()
    assert main(["generate", str(weights), "--class", "0", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--class: this generator is unconditional" in err, err


def test_interpolate_holds_a_class_along_each_walk(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--interpolate`` on a conditional generator: ``--class K`` holds K on every row (rows of one class are the
    unconditional walks' latents through G at K); without it, row r is class r mod classes. Its ``--json`` names
    the class as a plain ``--class`` does (it left it out)."""
    trained = _train(tmp_path, "cond", conditional=True)
    net, cfg = load_generator(trained, CPU)
    for label in (None, 3):
        out = tmp_path / f"walk-{label}.png"
        args = ["generate", str(trained), "--interpolate", "4", "--rows", "2", "--out", str(out), "--json"]
        capsys.readouterr()
        assert main(args + (["--class", str(label)] if label is not None else [])) == 0
        assert Image.open(out).size[0] > 0
        assert _last_json(capsys).get("class") == label
    from gantune.generate import walk_samples
    x_k = walk_samples(net, cfg, 4, 2, CPU, 0, label=3)
    x_rows = walk_samples(net, cfg, 4, 2, CPU, 0)
    assert x_k.shape == (8, 1, 8, 8)
    assert not torch.equal(x_k[:4], x_rows[:4])  # row 0 is class 0 without --class, class 3 with it
    assert main(["generate", str(trained), "--interpolate", "4", "--class", "10", "--out",
                 str(tmp_path / "bad.png")]) == 2


def test_a_conditional_run_starts_from_a_conditional_generator(tmp_path: Path) -> None:
    """``model.init_from`` with ``model.conditional``: the file's class weights are part of the shape check."""
    trained = _train(tmp_path, "cond", conditional=True)
    cfg = tmp_path / "again.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"name": "digits", "resolution": 8},
                                   "model": {"conditional": True, "z_dim": 8, "g_width": 4, "d_width": 4,
                                             "g_depth": 1, "d_depth": 1, "init_from": str(trained)},
                                   "train": {"steps": 2, "batch_size": 8, "log_every": 1, "device": "cpu"},
                                   "eval": {"metrics": [], "every": 2}}))
    assert main(["train", str(cfg), "--out", str(tmp_path / "again"), "--no-tracking"]) == 0


def test_generate_into_a_folder_replaces_the_set_whole_or_not_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A second ``generate`` into the same folder with a smaller ``--n`` left the first's extra samples there,
    read as part of the new set; a write that failed part-way left some new files among the old ones. The
    folder's other files stay."""
    weights = _train(tmp_path, "plain", conditional=False)
    out = tmp_path / "samples"
    assert main(["generate", str(weights), "--n", "5", "--out", str(out)]) == 0
    (tmp_path / "made").mkdir()
    assert out.stat().st_mode == (tmp_path / "made").stat().st_mode  # a folder as mkdir makes it, not 0700
    (out / "notes.txt").write_text("mine")
    assert main(["generate", str(weights), "--n", "3", "--seed", "1", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [".gantune-samples.json", "000000.png", "000001.png", "000002.png",
                                                     "notes.txt"]
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real = Path.write_bytes
    calls = []

    def full_disk(self: Path, data: bytes) -> int:  # the third file of the set cannot be written
        calls.append(self)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    assert main(["generate", str(weights), "--n", "4", "--seed", "2", "--out", str(out)]) == 2
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary folder left
    dotted = tmp_path / "samples.v2"  # a folder, whatever its name says
    dotted.mkdir()
    assert main(["generate", str(weights), "--n", "2", "--out", str(dotted)]) == 0
    assert sorted(p.name for p in dotted.iterdir()) == [".gantune-samples.json", "000000.png", "000001.png"]
    (dotted / "000002.png").mkdir()  # in the way: said before anything is written, naming it
    assert main(["generate", str(weights), "--n", "3", "--seed", "3", "--out", str(dotted)]) == 2
    assert f"--out: {dotted} holds 000002.png, which gantune generate did not write" in capsys.readouterr().err
    assert sorted(p.name for p in dotted.iterdir()) == [".gantune-samples.json", "000000.png", "000001.png",
                                                        "000002.png"]


def test_generate_never_replaces_or_removes_images_it_did_not_write(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Any ``000000.png`` counted as an earlier ``generate``'s: into a folder of a dataset's ten numbered images,
    ``--n 2`` replaced two of them and removed the other eight. Such a folder is refused; one ``generate`` wrote
    (its list beside the samples) is still replaced whole."""
    weights = _train(tmp_path, "plain", conditional=False)
    data = tmp_path / "mydata"
    data.mkdir()
    mine = {f"{i:06d}.png": bytes([i]) for i in range(10)}
    for name, body in mine.items():
        (data / name).write_bytes(body)
    capsys.readouterr()
    assert main(["generate", str(weights), "--n", "2", "--out", str(data)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"gantune generate: error: --out: {data} holds 000000.png and 1 more, which gantune generate did not write "
        "there (or an older gantune did, without the list it keeps now): its samples would replace them; choose a "
        "new or an empty folder")
    assert {p.name: p.read_bytes() for p in data.iterdir()} == mine
    (data / "000000.png").unlink()
    (data / "000001.png").unlink()
    assert main(["generate", str(weights), "--n", "2", "--out", str(data)]) == 0  # none of its names taken
    assert len(list(data.iterdir())) == 11 and (data / "000009.png").read_bytes() == mine["000009.png"]


def test_a_name_too_long_leaves_no_folder_made_for_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--out g1/g2/<256 characters>.png`` (or a folder, or an interpolation) was refused after ``g1/g2`` was made
    for it, and left there (found by a review)."""
    weights = _train(tmp_path, "plain", conditional=False)
    long = "b" * 256
    for extra in (["--n", "2"], ["--interpolate", "3"]):
        for out in (f"g1/g2/{long}.png", f"g1/g2/{long}/"):
            if extra[0] == "--interpolate" and out.endswith("/"):
                continue  # an interpolation is one file
            assert main(["generate", str(weights), "--out", str(tmp_path / out), *extra]) == 2
            assert "too long" in capsys.readouterr().err
            assert not (tmp_path / "g1").exists()


def test_a_trailing_slash_asks_for_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--out new.png/`` wrote the file ``new.png`` (Path drops the slash), and over an existing file it
    replaced that file."""
    weights = _train(tmp_path, "plain", conditional=False)
    assert main(["generate", str(weights), "--n", "2", "--out", f"{tmp_path / 'new.png'}/"]) == 0
    assert sorted(p.name for p in (tmp_path / "new.png").iterdir()) == [".gantune-samples.json", "000000.png",
                                                                        "000001.png"]
    (tmp_path / "grid.png").write_bytes(b"mine")
    capsys.readouterr()
    assert main(["generate", str(weights), "--n", "2", "--out", f"{tmp_path / 'grid.png'}/"]) == 2
    assert capsys.readouterr().err.strip() == (f"gantune generate: error: --out: {tmp_path / 'grid.png'}/ names a "
                                               f"folder, and {tmp_path / 'grid.png'} is a file")
    assert (tmp_path / "grid.png").read_bytes() == b"mine"
    assert main(["generate", str(weights), "--interpolate", "3", "--out", f"{tmp_path / 'walk.png'}/"]) == 2
    assert "an interpolation is one file" in capsys.readouterr().err and not (tmp_path / "walk.png").exists()


def test_the_samples_list_keeps_both_kinds_and_reads_seven_digit_names(tmp_path: Path) -> None:
    """The list a write leaves while it runs names the earlier write's files as well as its own, of either kind
    (points' ``samples.csv`` before images, say), so a write stopped part-way leaves none of them unlisted; past
    999,999 a sample's name has 7 digits and is still its own, a zero-padded 7-digit name never."""
    from gantune.generate import SAMPLES_LIST, _own_files

    out = tmp_path / "s"
    out.mkdir()
    (out / SAMPLES_LIST).write_text(json.dumps({"files": ["samples.csv", "samples.png"]}))
    ours, listed = _own_files(out, 3, points=False)
    assert listed == {"numbered": 3, "files": ["samples.csv", "samples.png"]}
    assert ours("samples.csv") and not ours("000000.png")  # images of the earlier write's: none
    (out / SAMPLES_LIST).write_text(json.dumps({"numbered": 1_000_001}))
    ours, listed = _own_files(out, 2, points=True)
    assert listed == {"numbered": 1_000_001, "files": ["samples.csv", "samples.png"]}
    assert ours("1000000.png") and ours("000007.png") and not ours("1000001.png")
    assert not ours("0000007.png") and not ours("000007.PNG") and not ours("notes.txt")


def test_generate_replaces_only_a_file_it_wrote(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--out x.png`` or ``x.csv`` replaced any file of that name (a user's photo, their own data.csv), exit 0:
    refused unless an earlier ``generate`` (or ``--interpolate``) wrote it, its samples replaced again."""
    images = _train(tmp_path, "plain", conditional=False)
    points_cfg = tmp_path / "points.yaml"
    points_cfg.write_text(yaml.safe_dump({"data": {"name": "ring8"}, "model": {"z_dim": 2, "g_width": 8,
                                                                                "d_width": 8},
                                          "train": {"steps": 4, "batch_size": 8, "log_every": 2, "device": "cpu"},
                                          "eval": {"metrics": [], "every": 4}}))
    assert main(["train", str(points_cfg), "--out", str(tmp_path / "points"), "--no-tracking"]) == 0
    points = tmp_path / "points" / "generator.pt"
    photo = tmp_path / "photo.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(photo)
    table = tmp_path / "data.csv"
    table.write_text("x,y\n1,2\n")
    for args, target in (([str(images), "--n", "4"], photo), ([str(images), "--interpolate", "3"], photo),
                         ([str(points), "--n", "4"], table), ([str(points), "--interpolate", "3"], table)):
        before = target.read_bytes()
        capsys.readouterr()
        assert main(["generate", *args, "--out", str(target)]) == 2
        assert capsys.readouterr().err.strip() == (
            f"gantune generate: error: --out: {target} exists and is not an earlier output of gantune generate, "
            "which alone this replaces; delete it or choose another --out")
        assert target.read_bytes() == before
    for args, name in (([str(images), "--n", "4"], "grid.png"), ([str(images), "--interpolate", "3"], "walk.png"),
                       ([str(points), "--n", "4"], "samples.png"), ([str(points), "--n", "300"], "samples.csv"),
                       ([str(points), "--interpolate", "3"], "paths.csv"),
                       ([str(points), "--interpolate", "3"], "paths.png")):
        for seed in ("0", "1"):  # the second replaces the first's
            assert main(["generate", *args, "--seed", seed, "--out", str(tmp_path / name)]) == 0, (args, name)
    # beside the weights it came from (a run's folder): replaced too
    for _ in range(2):
        assert main(["generate", str(images), "--n", "4", "--out", str(images.parent / "more.png")]) == 0
