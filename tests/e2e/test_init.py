"""``gantune init DATA``: a commented search space that loads, samples valid configs and starts from its recipe."""

from pathlib import Path

import numpy as np
import optuna
import pytest
from PIL import Image

from gantune.catalogue import config_from_dict
from gantune.cli import main
from gantune.errors import ConfigError
from gantune.sampling.space import load_space
from gantune.sampling.warm import OVERRIDES_KEY, RECIPE_KEY, chosen_recipes, project, starting, warm_start
from tests.conftest import last_json


def _sampled_configs(space: object, n: int) -> list[object]:
    """The recipe trials, then ``n`` sampled ones, each validated as a trial config."""
    study = optuna.create_study(directions=list(space.settings.directions))
    warm_start(study, space)
    configs = []
    for _ in range(n + len(study.get_trials())):
        trial = study.ask()
        configs.append((trial.user_attrs.get(RECIPE_KEY),
                        config_from_dict(space.sample(trial, trial.user_attrs.get(OVERRIDES_KEY)))))
        study.tell(trial, 1.0)
    return configs


def test_init_ring8_writes_a_commented_space_that_loads_and_samples(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x.yaml"
    assert main(["init", "ring8", "--out", str(out), "--json"]) == 0
    result = last_json(capsys)
    assert result["out"] == str(out) and result["recipes"] == ["points"] and result["objective"] == "coverage"
    text = out.read_text()
    assert text.startswith("# Written by `gantune init ring8`: a search for ring8's 2-D points around")
    assert "z_dim: 2  " in text and "# R1 on real samples" in text  # the recipe's values, and why
    space = load_space(out)
    assert space.name == "ring8" and space.settings.warm_start is True
    assert [project(r, space).skipped for r in chosen_recipes(space)] == [None]  # the recipe lies inside
    configs = _sampled_configs(space, 6)
    assert configs[0][0] == "points" and all(name is None for name, _ in configs[1:])
    recipe = configs[0][1]
    assert (recipe.model.z_dim, recipe.loss.r1_weight, recipe.optim.lr_g, recipe.optim.decay) == (2, 0.1, 2e-3,
                                                                                                  "linear")
    assert recipe.optim.lr_d == pytest.approx(2e-3) and recipe.train.batch_size == 512
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_the_line_init_prints_runs_as_pasted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Found in review: "run it: gantune search my space.yaml" ran a search of ``my`` when pasted."""
    import shlex

    out = tmp_path / "my space.yaml"
    assert main(["init", "ring8", "--out", str(out)]) == 0
    said = capsys.readouterr().out.strip()
    assert shlex.split(said.split("run it: ", 1)[1]) == ["gantune", "search", str(out)], said


def test_every_builtin_and_a_folder_of_images(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    images = tmp_path / "my photos"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(images / f"{i}.png")
    objectives = {"grid25": "coverage", "digits": "fid", "stacked_digits": "stacked_kl", str(images): "fid"}
    for data, objective in objectives.items():
        out = tmp_path / f"{Path(data).name}.yaml"
        assert main(["init", data, "--out", str(out), "--json"]) == 0, data
        result = last_json(capsys)
        assert result["objective"] == objective
        space = load_space(out, weights=data != str(images))  # a folder's FID needs weights the user sets
        # found in review: digits named its four recipes, of which its 8 trials start from two
        assert result["recipes"] == [p.recipe for p in starting(space) if p.skipped is None], data
        assert len(result["recipes"]) <= max(1, space.settings.trials // 4), data
        assert all(project(r, space).skipped is None for r in chosen_recipes(space)), data
        if data != str(images):  # sampled configs of the built-ins (a folder's would be the same shapes)
            assert len(_sampled_configs(space, 3)) >= 4
    folder = load_space(tmp_path / "my photos.yaml", weights=False)
    assert folder.name == "my-photos" and folder.leaves["data.path"].value == str(images.resolve())
    # it searches data.augment, which only training reads: a search of it still checks the weights at load
    monkeypatch.setenv("GANTUNE_INCEPTION_WEIGHTS", str(tmp_path / "none.pth"))
    with pytest.raises(ConfigError, match=r"eval.inception_weights: Inception-v3 weights not found at .*none\.pth"):
        load_space(tmp_path / "my photos.yaml")
    # the default output is <name>.yaml in the working directory
    monkeypatch.chdir(tmp_path)
    assert main(["init", "ring8"]) == 0 and load_space(tmp_path / "ring8.yaml").name == "ring8"


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.conftest import grey_folder

    grey_folder(tmp_path / "one", n=1)
    (tmp_path / "empty").mkdir()
    out = tmp_path / "x.yaml"
    out.write_text("mine\n")
    cases = [
        (["init", "ring8", "--out", str(out)], f"--out {out}: exists; pass --force to overwrite it"),
        (["init", "ring9", "--out", str(tmp_path / "y.yaml")],
         "ring9: not a built-in dataset (grid25, ring8, digits, stacked_digits) nor a folder of images (no such "
         "folder)"),
        (["init", str(tmp_path / "missing"), "--out", str(tmp_path / "y.yaml")], "(no such folder)"),
        (["init", str(out), "--out", str(tmp_path / "y.yaml")], "(a file, not a folder)"),
        # the working folder: a space was written for whatever it held (here: "data.path: no images")
        (["init", "", "--out", str(tmp_path / "y.yaml")], "'': name a built-in dataset (grid25, ring8"),
        (["init", str(tmp_path / "empty"), "--out", str(tmp_path / "y.yaml")], "data.path: no images"),
        (["init", "digits", "--out", str(tmp_path / "nope" / "y.yaml")], f"folder {tmp_path / 'nope'} does not exist"),
        (["init", "digits", "--out", str(out / "y.yaml")], f"{out} is a file, not a folder"),  # "does not exist"
        # a space its data cannot run: the line named the --out file, never written, as if the user should edit it
        (["init", str(tmp_path / "one"), "--out", str(tmp_path / "y.yaml")],
         f"error: {tmp_path / 'one'}: the space for this data would not load: eval.metrics: the metrics"),
    ]
    for argv, needle in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("gantune init: error: ") and needle in err[0], err
    assert out.read_text() == "mine\n" and not (tmp_path / "y.yaml").exists()
    assert main(["init", "ring8", "--out", str(out), "--force"]) == 0
    assert load_space(out).name == "ring8"


def test_out_writes_through_a_symlink_and_refuses_what_is_not_a_file(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """The rename over ``--out`` replaced whatever was there: a symlink (the file it named kept its old text), a
    named pipe, and, run as root, ``--out /dev/null --force`` turned the device into a regular file."""
    import os

    real, link, pipe = tmp_path / "real.yaml", tmp_path / "link.yaml", tmp_path / "pipe.yaml"
    real.write_text("mine\n")
    link.symlink_to(real)
    os.mkfifo(pipe)
    assert main(["init", "ring8", "--out", str(link), "--force"]) == 0
    assert link.is_symlink() and load_space(link).name == "ring8" and load_space(real).name == "ring8"
    capsys.readouterr()
    assert main(["init", "ring8", "--out", str(pipe), "--force"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"gantune init: error: --out {pipe}: cannot write it (not a regular file: a device, pipe or "
                   "socket)"], err
    assert pipe.is_fifo() and sorted(p.name for p in tmp_path.iterdir()) == ["link.yaml", "pipe.yaml", "real.yaml"]


def test_names_and_the_built_in_beside_a_folder_of_its_name(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """``my data ü`` named the search ``my-data--``; ``init digits`` beside a folder ``digits`` took the built-in
    without a word; ``--out ''`` wrote the default file."""
    from gantune.starter import _folder_name

    assert _folder_name(Path("my data ü")) == "my-data" and _folder_name(Path("__ü__")) == "images"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "digits").mkdir()
    assert main(["init", "digits", "--out", "d.yaml"]) == 0
    assert capsys.readouterr().err.splitlines() == [
        "warning: digits: the built-in dataset; for the folder digits here, give it as ./digits"]
    assert main(["init", "ring8", "--out", ""]) == 2
    assert capsys.readouterr().err.strip().endswith("--out: empty; name the file to write (or leave --out out for "
                                                    "<name>.yaml here)")
    assert not (tmp_path / "ring8.yaml").exists()


def test_a_folder_whose_name_is_outside_the_basic_plane_loads(tmp_path: Path) -> None:
    """The space's ``data.path`` was written as JSON's surrogate pair (``\\ud83d\\ude00``), which YAML reads as two
    lone surrogates: a folder named with an emoji was "not there", in an error that named the temporary file."""
    images = tmp_path / "emoji\U0001F600"
    images.mkdir()
    for i in range(2):
        Image.fromarray(np.zeros((12, 12, 3), dtype=np.uint8)).save(images / f"{i}.png")
    out = tmp_path / "e.yaml"
    assert main(["init", str(images), "--out", str(out)]) == 0
    assert load_space(out, weights=False).leaves["data.path"].value == str(images.resolve())


def test_a_folder_whose_name_is_not_utf8_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A name of bytes that are not UTF-8 (Python reads them as lone surrogates) cannot be written into a space
    file: it was a UnicodeEncodeError traceback, exit 1."""
    import os

    images = Path(os.fsdecode(bytes(tmp_path) + b"/img\xff"))
    try:
        images.mkdir()
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system takes only UTF-8 names")
    for i in range(2):
        Image.fromarray(np.zeros((12, 12, 3), dtype=np.uint8)).save(images / f"{i}.png")
    assert main(["init", str(images), "--out", str(tmp_path / "b.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "its path is not UTF-8 text, which a space file cannot hold; rename the folder" in err[0]
    assert not (tmp_path / "b.yaml").exists()


def test_a_folder_of_one_image_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """It wrote a space whose every trial then failed ("which has one sample here"), the search exiting 1."""
    images = tmp_path / "one"
    images.mkdir()
    Image.fromarray(np.zeros((12, 12, 3), dtype=np.uint8)).save(images / "0.png")
    capsys.readouterr()
    assert main(["init", str(images), "--out", str(tmp_path / "one.yaml")]) == 2
    assert "which has one sample here; add images" in capsys.readouterr().err
    assert not (tmp_path / "one.yaml").exists()


def test_a_tiny_search_of_the_written_space_starts_from_its_recipe(tmp_path: Path, ray_session: object,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("GANTUNE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    assert main(["init", "ring8", "--out", "x.yaml"]) == 0
    assert main(["search", "x.yaml", "--trials", "1", "--max-steps", "30", "--no-tracking", "--json"]) == 0
    summary = last_json(capsys)
    assert summary["recipe_trials"] == {"0": "points"} and summary["counts"]["completed"] == 1
    (trial,) = optuna.load_study(study_name="ring8", storage=summary["study_storage"]).trials
    assert trial.user_attrs["config"]["model"]["z_dim"] == 2 and trial.params["optim.lr_g"] == 2e-3


def test_a_greyscale_folder_gets_one_channel_and_class_subfolders_the_conditional_line(tmp_path: Path) -> None:
    """Found by a probe: the space of a greyscale folder trained three equal channels (``train`` warned later),
    and one of class subfolders said nothing of the class-conditional GAN they allow."""
    grey, classes = tmp_path / "grey", tmp_path / "classes"
    grey.mkdir()
    for i in range(3):
        Image.fromarray(np.zeros((12, 12), dtype=np.uint8)).save(grey / f"{i}.png")
        for cls in ("a", "b"):
            (classes / cls).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.zeros((12, 12, 3), dtype=np.uint8)).save(classes / cls / f"{i}.png")
    assert main(["init", str(grey), "--out", str(tmp_path / "g.yaml")]) == 0
    space = load_space(tmp_path / "g.yaml", weights=False)
    assert space.leaves["data.channels"].value == 1 and "model.conditional" not in space.leaves
    assert main(["init", str(classes), "--out", str(tmp_path / "c.yaml")]) == 0
    text = (tmp_path / "c.yaml").read_text()
    assert "  # conditional: true     # its 2 subfolders are classes" in text
    assert "data.channels" not in load_space(tmp_path / "c.yaml", weights=False).leaves
    (tmp_path / "c.yaml").write_text(text.replace("  # conditional: true    ", "  conditional: true"))
    assert load_space(tmp_path / "c.yaml", weights=False).leaves["model.conditional"].value is True


def test_force_never_replaces_a_database_of_searches(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``export --out`` and ``report --out`` refuse a study or MLflow database; ``init --out st.db --force``
    turned one into YAML (every search in it lost)."""
    import optuna

    db = tmp_path / "st.db"
    optuna.create_study(study_name="kept", storage=f"sqlite:///{db}")
    before = db.read_bytes()
    capsys.readouterr()
    assert main(["init", "ring8", "--out", str(db), "--force"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"gantune init: error: --out: {db} is ") and "which this would " \
        "replace; choose another --out" in err[0], err
    assert db.read_bytes() == before


def test_a_folder_name_with_characters_yaml_refuses_or_a_line_break_gives_a_space_and_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder named with DEL (or a C1 control) was written into the YAML as is: init refused its own space
    ("line 1: invalid YAML (character U+007F ...)"); a line break in the name made the success line, and any error
    naming it, two lines."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GANTUNE_CACHE_DIR", str(tmp_path / "cache"))
    for name in ("cats\x7f", "dogs\nx", "nel\x85"):
        (tmp_path / name).mkdir()
        for i in range(2):
            Image.fromarray(np.full((8, 8), 60 * i, dtype=np.uint8)).save(tmp_path / name / f"{i}.png")
        assert main(["init", name, "--out", str(tmp_path / "space.yaml"), "--force"]) == 0
        said = capsys.readouterr().out
        assert said.count("\n") == 1 and repr(name)[1:-1] in said, said
        space = load_space(tmp_path / "space.yaml", weights=False)  # (a folder's FID needs weights the user sets)
        assert all(Path(c.data.path) == tmp_path / name for _, c in _sampled_configs(space, 1))
    assert main(["init", "no\nsuch"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("gantune init: error: no\\nsuch: not a built-in dataset"), err
