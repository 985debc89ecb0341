"""``gantune generate WEIGHTS --interpolate N``: slerp walks as an image grid, or as the paths of 2-D points."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from PIL import Image

from gantune.cli import main
from gantune.generate import load_generator
from gantune.latent import walk
from gantune.trial import train
from gantune.viz import MIN_CELL_PX
from tests.conftest import last_json, tiny, tiny_images


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """generator.pt of a tiny digits (8 px, 1 channel) run and of a tiny grid25 (2-D points) run."""
    root = tmp_path_factory.mktemp("interp")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GANTUNE_CACHE_DIR", str(root / "cache"))
        train(tiny_images(train={"steps": 4}, eval={"every": 4}), run_dir=root / "digits")
        train(tiny(train={"steps": 4}, eval={"every": 4}), run_dir=root / "grid")
        yield {"images": root / "digits" / "generator.pt", "points": root / "grid" / "generator.pt"}


def test_images_give_a_grid_of_rows_by_steps(weights: dict[str, Path], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sub" / "walk.png"
    assert main(["generate", str(weights["images"]), "--interpolate", "5", "--rows", "3", "--out", str(out),
                 "--json"]) == 0
    assert last_json(capsys)["kind"] == "images"
    img = Image.open(out)
    # 5 columns and 3 rows of 8 px digits with 1 px gaps around each: (5 * 9 + 1) x (3 * 9 + 1), one channel,
    # drawn 4x (MIN_CELL_PX // 8), each pixel a 4 x 4 block
    k = MIN_CELL_PX // 8
    assert img.size == (46 * k, 28 * k) and img.mode == "L"
    # the first column is G of the walk's first endpoints, the last of its second ones
    net, cfg = load_generator(weights["images"], torch.device("cpu"))
    z = walk(3, 5, cfg.model.z_dim, seed=0)
    with torch.no_grad():
        ends = net(torch.cat([z[:, 0], z[:, -1]]))
    pixels = torch.tensor(list(img.getdata()), dtype=torch.uint8).reshape(28 * k, 46 * k)[::k, ::k]
    expect = ((ends.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)[:, 0]
    for r in range(3):
        assert torch.equal(pixels[1 + 9 * r: 9 + 9 * r, 1:9], expect[r])
        assert torch.equal(pixels[1 + 9 * r: 9 + 9 * r, 37:45], expect[3 + r])


def test_the_default_output_and_the_seed(weights: dict[str, Path], tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["generate", str(weights["images"]), "--interpolate", "4"]) == 0
    first = (tmp_path / "interpolation.png").read_bytes()
    # 8 rows by default, 8-px digits drawn 4x
    assert Image.open(io.BytesIO(first)).size == ((4 * 9 + 1) * 4, (8 * 9 + 1) * 4)
    assert main(["generate", str(weights["images"]), "--interpolate", "4", "--seed", "1"]) == 0
    assert (tmp_path / "interpolation.png").read_bytes() != first


def test_points_give_a_paths_plot_or_a_csv_of_the_paths(weights: dict[str, Path], tmp_path: Path) -> None:
    assert main(["generate", str(weights["points"]), "--interpolate", "6", "--rows", "2", "--out",
                 str(tmp_path / "paths.png")]) == 0
    assert Image.open(tmp_path / "paths.png").format == "PNG"
    assert main(["generate", str(weights["points"]), "--interpolate", "6", "--rows", "2", "--out",
                 str(tmp_path / "paths.csv")]) == 0
    rows = list(csv.DictReader((tmp_path / "paths.csv").open()))
    assert len(rows) == 12 and list(rows[0]) == ["row", "step", "t", "x", "y"]
    assert [(r["row"], r["step"], r["t"]) for r in rows[:2]] == [("0", "0", "0.000000"), ("0", "1", "0.200000")]
    net, cfg = load_generator(weights["points"], torch.device("cpu"))
    with torch.no_grad():
        ends = net(walk(2, 6, cfg.model.z_dim, seed=0)[:, [0, -1]].reshape(4, -1))
    got = torch.tensor([[float(r["x"]), float(r["y"])] for r in rows]).reshape(2, 6, 2)[:, [0, -1]].reshape(4, 2)
    assert torch.allclose(got, ends, atol=1e-5)


@pytest.mark.parametrize(("kind", "args", "expected"), [
    ("images", ["--interpolate", "1"], "--interpolate 1: an interpolation needs at least 2 steps"),
    ("points", ["--interpolate", "0"], "--interpolate 0: an interpolation needs at least 2 steps"),
    ("images", ["--interpolate", "4", "--rows", "0"], "--rows: must be at least 1"),
    ("images", ["--interpolate", "4", "--out", "{tmp}/walk.csv"], "an interpolation of images is a .png"),
    ("points", ["--interpolate", "4", "--out", "{tmp}/walk"], "an interpolation of 2-D points is a .png"),
    ("images", [], "--out: required"),
])
def test_bad_arguments_are_one_line_exit_2(weights: dict[str, Path], tmp_path: Path, kind: str, args: list[str],
                                           expected: str, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    argv = ["generate", str(weights[kind]), *[a.replace("{tmp}", str(tmp_path)) for a in args]]
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gantune generate: error: ") and expected in lines[0], lines
    assert list(tmp_path.iterdir()) == []
