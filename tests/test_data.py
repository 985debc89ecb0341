import dataclasses
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from gantune.config import DataConfig
from gantune.data import as_float, digits_split, grid25_means, load_data, ring8_means, stack_labels
from gantune.errors import DataError
from gantune.viz import as_uint8

CPU = torch.device("cpu")


def _assign(x: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    return torch.cdist(x, means).argmin(1)


@pytest.mark.parametrize(("name", "means", "std"), [("ring8", ring8_means(), 0.01), ("grid25", grid25_means(), 0.05)])
def test_mixtures_match_their_definition(name: str, means: torch.Tensor, std: float) -> None:
    data = load_data(DataConfig(name=name), CPU, seed=0)
    x = data.sample(200_000)
    k = _assign(x, means)
    counts = torch.bincount(k, minlength=len(means)).float()
    assert counts.min() / counts.max() > 0.9  # equal weights
    resid = x - means[k]
    assert resid.mean(0).abs().max() < 1e-3
    assert resid.std(0) == pytest.approx(torch.tensor([std, std]), rel=0.02)


def test_means_are_exact() -> None:
    assert torch.allclose(ring8_means()[2], torch.tensor([0.0, 1.0]), atol=1e-6)
    assert torch.allclose(ring8_means().norm(dim=1), torch.ones(8))
    assert set(grid25_means()[:, 0].tolist()) == {-4.0, -2.0, 0.0, 2.0, 4.0}
    assert len(grid25_means()) == 25


def test_sampling_is_seeded() -> None:
    a = load_data(DataConfig(name="grid25"), CPU, seed=3).sample(10)
    b = load_data(DataConfig(name="grid25"), CPU, seed=3).sample(10)
    c = load_data(DataConfig(name="grid25"), CPU, seed=4).sample(10)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_digits_scaled_and_resized() -> None:
    data = load_data(DataConfig(name="digits", resolution=16), CPU, seed=0)
    assert len(data) == 1437 and data.shape == (1, 16, 16)  # the train split; the 360 held out are the reference
    assert data.images is not None and data.heldout is not None and data.heldout.shape == (360, 1, 16, 16)
    assert data.images.min() == -1.0 and data.images.max() == 1.0
    native = load_data(DataConfig(name="digits", resolution=8), CPU, seed=0)
    x_train, _ = digits_split("train")
    expected = torch.from_numpy(x_train[0, 0])
    assert native.images is not None and torch.allclose(native.images[0, 0], expected)
    from sklearn.datasets import load_digits

    raw = load_digits().images.astype(np.float32) / 8 - 1
    assert any(np.array_equal(raw[i], x_train[0, 0]) for i in range(len(raw)))  # scaled 0..16 -> [-1, 1]


def test_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    monkeypatch.setenv("GANTUNE_CACHE_DIR", str(tmp_path / "cache"))

    for i in range(3):
        Image.fromarray(np.full((20, 30, 3), i * 100, dtype=np.uint8)).save(tmp_path / f"{i}.png")
    data = load_data(DataConfig(name="folder", path=str(tmp_path), resolution=8), CPU, seed=0)
    assert data.shape == (3, 8, 8) and len(data) == 3
    with pytest.raises(DataError, match="does not exist"):
        load_data(DataConfig(name="folder", path=str(tmp_path / "missing")), CPU, 0)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no images"):
        load_data(DataConfig(name="folder", path=str(empty)), CPU, 0)


def test_every_unreadable_image_of_a_folder_is_named_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The load stopped at the first file that did not decode: a folder with several broken ones took a run (and
    the decode up to it) for each. They are counted in one refusal, the first ones named; no cache is written."""
    from PIL import Image

    monkeypatch.setenv("GANTUNE_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "data"
    root.mkdir()
    for i in range(6):
        Image.fromarray(np.full((8, 8, 3), 40 * i, dtype=np.uint8)).save(root / f"{i}.png")
    for name in ("1.png", "3.png", "4.png", "5.png"):
        (root / name).write_bytes(b"not an image")
    with pytest.raises(DataError) as err:
        load_data(DataConfig(name="folder", path=str(root), resolution=8), CPU, seed=0)
    said = str(err.value)
    assert said.startswith(f"data.path: cannot read 4 of its 6 images: {root / '1.png'} (cannot identify image "
                           f"file "), said
    assert str(root / "4.png") in said and str(root / "5.png") not in said and said.endswith("; ...")
    assert not list((tmp_path / "cache").glob("data-*.pt"))
    for name in ("3.png", "4.png", "5.png"):
        Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(root / name)
    with pytest.raises(DataError, match=r"^data.path: cannot read image .*1\.png: cannot identify image file"):
        load_data(DataConfig(name="folder", path=str(root), resolution=8), CPU, seed=0)


def test_a_large_jpeg_is_decoded_at_a_reduced_scale_that_keeps_twice_the_resolution(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 12-megapixel photo was decoded whole for a 64-px training image (5-7x the time of a reduced decode). The
    JPEG decoder's own 1/2-1/8 scaling now keeps the centre square at twice the resolution or more; the pixels stay
    within a level or two of the full decode's. A PNG decodes whole."""
    from PIL import Image

    import gantune.data.images as images

    y, x = np.mgrid[0:900, 0:1200]
    photo = np.stack([x / 5 % 256, y / 4 % 256, (x + y) / 9 % 256], -1).astype(np.uint8)
    Image.fromarray(photo).save(tmp_path / "a.jpg", quality=95)
    Image.fromarray(photo).save(tmp_path / "a.png")
    seen: list[tuple[int, int]] = []
    resize = images._center_crop_resize
    monkeypatch.setattr(images, "_center_crop_resize", lambda img, size: seen.append(img.size) or resize(img, size))
    reduced = images._decode_image(tmp_path / "a.jpg", "RGB", 16)
    png = images._decode_image(tmp_path / "a.png", "RGB", 16)
    assert seen == [(150, 113), (1200, 900)]  # 1/8: the centre square 113 px, at least 2 x 16
    with Image.open(tmp_path / "a.jpg") as im:
        whole = resize(im.convert("RGB"), 16)
    assert np.abs(reduced.astype(int) - whole.astype(int)).mean() < 1.5
    assert np.abs(png.astype(int) - whole.astype(int)).mean() < 3  # (the JPEG's own loss)
    seen.clear()
    images._decode_image(tmp_path / "a.jpg", "RGB", 512)  # nothing to reduce: the square is under 1,024 px
    assert seen == [(1200, 900)]


def test_readme_names_the_suffixes_a_folder_reads_and_each_one_decodes(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """README said "any PIL images" where the reader takes a fixed list: the list it names is the reader's, and
    each suffix on it is an image Pillow writes and the folder reader decodes (no extra library)."""
    import re

    from PIL import Image, features

    from gantune.data.images import IMAGE_SUFFIXES

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    sentence = readme[readme.index("the images under `path` whose suffix is"):]
    sentence = sentence[:sentence.index("(other files are not read)")]
    assert set(re.findall(r"`(\.[a-z0-9]+)`", sentence)) == IMAGE_SUFFIXES
    # .jpe, .apng, .avif, JPEG 2000 and QOI files were skipped without a word
    assert {".jpe", ".apng", ".avif", ".qoi", ".jp2"} <= IMAGE_SUFFIXES
    monkeypatch.setenv("GANTUNE_CACHE_DIR", str(tmp_path / "cache"))
    modes = {".pbm": "1", ".pgm": "L"}
    formats = Image.registered_extensions()
    # each one this Pillow writes (older ones write no AVIF or QOI; JPEG 2000 needs its OpenJPEG build)
    writes = {f for f in Image.SAVE if f != "JPEG2000" or features.check("jpg_2000")}  # (registered regardless)
    for i, suffix in enumerate(s for s in sorted(IMAGE_SUFFIXES) if formats.get(s) in writes):
        folder = tmp_path / suffix[1:]
        folder.mkdir()
        img = Image.fromarray(np.full((12, 12, 3), 40 + 8 * i, dtype=np.uint8))
        img.convert(modes.get(suffix, "RGB")).save(folder / f"a{suffix.upper() if i % 2 else suffix}")
        data = load_data(DataConfig(name="folder", path=str(folder), resolution=8), CPU, seed=0)
        assert len(data) == 1, suffix


def test_a_folder_reads_the_users_images_and_nothing_else(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          recwarn: pytest.WarningsRecorder) -> None:
    """Class subfolders through symlinks count (rglob did not follow them); hidden files and folders
    (``.ipynb_checkpoints`` read as a class, ``._x.png`` as a broken image), MLflow's artifact folders and
    gantune's own run and sample folders (a run inside its data folder read its sample grids back) do not; a link loop
    ends; ``max_images`` keeps every class (the first N in path order dropped the last classes whole)."""
    from PIL import Image

    from gantune.data import known_classes
    from gantune.rundir import LOCK, SAMPLES_LIST

    monkeypatch.setenv("GANTUNE_CACHE_DIR", str(tmp_path / "cache"))
    root, elsewhere = tmp_path / "data", tmp_path / "elsewhere"

    def images(folder: Path, n: int, level: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(np.full((8, 8), level, dtype=np.uint8)).save(folder / f"{i}.png")

    images(root / "a_cat", 10, 0)
    images(root / "b_dog", 10, 100)
    images(elsewhere / "fox", 10, 200)
    (root / "c_fox").symlink_to(elsewhere / "fox")
    (root / "b_dog" / "loop").symlink_to(root)  # followed once: the loop ends
    images(root / ".ipynb_checkpoints", 2, 50)
    (root / "a_cat" / "._0.png").write_bytes(b"AppleDouble")
    images(root / "runs" / "mine", 3, 255)
    (root / "runs" / "mine" / LOCK).write_text("1 train\n")
    images(root / "mlartifacts" / "1", 3, 255)
    for i in range(3):  # gantune generate's samples written into a class folder: read as that class's images
        Image.fromarray(np.full((8, 8), 255, dtype=np.uint8)).save(root / "b_dog" / f"{i:06d}.png")
    (root / "b_dog" / SAMPLES_LIST).write_text('{"numbered": 3}')  # the folder's own images are still read
    palette = Image.new("P", (8, 8), 1)  # as pngquant writes: Pillow warned on every decode
    palette.putpalette([0, 0, 0, 100, 100, 100] * 128)
    palette.save(root / "b_dog" / "palette.png", transparency=bytes([0, 128]))
    cfg = DataConfig(name="folder", path=str(root), resolution=8, channels=1)
    assert known_classes(cfg) == 3
    data = load_data(cfg, CPU, seed=0)
    assert len(data) == 31 and data.n_classes == 3
    assert data.images is not None
    # (the palette image: its grey 100 at half opacity, shown over white)
    assert sorted(set(data.images.flatten(1).float().mean(1).round().tolist())) == [0, 100, 177, 200]
    few = load_data(DataConfig(name="folder", path=str(root), resolution=8, channels=1, max_images=15), CPU, 0)
    assert len(few) == 15 and few.n_classes == 3
    assert not [w for w in recwarn if "PIL" in w.filename], [str(w.message) for w in recwarn]
    (root / "a_alias").symlink_to(root / "a_cat")  # sorts before it, and is a link: the real folder keeps its name
    assert known_classes(cfg) == 3 and len(load_data(cfg, CPU, seed=0)) == 31
    with pytest.raises(DataError, match="is a file, not a folder"):
        load_data(DataConfig(name="folder", path=str(root / "a_cat" / "0.png")), CPU, 0)


def test_a_class_folder_without_images_is_refused_not_dropped(tmp_path: Path) -> None:
    """A class subfolder with no image vanished from the classes and each one after it took the index before its
    own: ``generate --class 1`` made ``c``, which README says is class 2 (torchvision's ImageFolder refuses such a
    folder). A folder holding only gantune's output (a run trained inside the data) is still no class."""
    from PIL import Image

    from gantune.data import known_classes
    from gantune.rundir import LOCK, SAMPLES_LIST

    root = tmp_path / "data"
    for name in ("a", "c"):
        (root / name).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(root / name / "0.png")
    (root / "runs" / "mine").mkdir(parents=True)
    (root / "runs" / "mine" / LOCK).write_text("1 train\n")
    # what the walk skips is not known to be no class (found in review: generate's samples were refused): nor is a
    # second link to a folder read under the first's name, or a folder of hidden images
    (root / "samples").mkdir()
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(root / "samples" / "000000.png")
    (root / "samples" / SAMPLES_LIST).write_text('{"numbered": 1}')
    (root / "thumbs" / ".cache").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(root / "thumbs" / ".cache" / "0.png")
    (tmp_path / "elsewhere").mkdir()
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "elsewhere" / "0.png")
    (root / "e_link").symlink_to(tmp_path / "elsewhere")
    (root / "f_link").symlink_to(tmp_path / "elsewhere")
    cfg = DataConfig(name="folder", path=str(root), resolution=8, channels=1)
    assert known_classes(cfg) == 3
    (root / "b").mkdir()
    (root / "b" / "notes.txt").write_text("to do")
    with pytest.raises(DataError) as err:
        known_classes(cfg)
    assert str(err.value).startswith(f"data.path: class folder {root / 'b'} holds no image file: a conditional")
    (root / "d").mkdir()
    with pytest.raises(DataError, match=r"\(nor do 1 other class folders\)"):
        known_classes(cfg)


def test_links_inside_the_folder_read_each_image_once_under_its_own_class(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """``a/shared_b -> ../b`` was walked before ``b`` (depth first), so b's images took a's label and class b
    vanished; a link to a file of the folder read that image twice."""
    from PIL import Image

    from gantune.data import known_classes

    monkeypatch.setenv("GANTUNE_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "data"
    for name, level, n in (("a", 0, 1), ("b", 100, 2), ("c", 200, 1)):
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((8, 8), level, dtype=np.uint8)).save(root / name / f"{name}{i}.png")
    (root / "a" / "shared_b").symlink_to(root / "b")
    (root / "c" / "zz_link.png").symlink_to(root / "c" / "c0.png")
    (root / "lost+found").mkdir()  # a file system's own (root's alone to read): never a class
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(root / "lost+found" / "x.png")
    cfg = DataConfig(name="folder", path=str(root), resolution=8, channels=1)
    assert known_classes(cfg) == 3
    data = load_data(cfg, CPU, seed=0)
    assert data.images is not None and data.labels is not None
    levels = data.images.flatten(1).float().mean(1).round().tolist()
    assert sorted(zip(data.labels.tolist(), levels, strict=True)) == [(0, 0), (1, 100), (1, 100), (2, 200)]


def test_a_folder_that_cannot_be_listed_is_named_not_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A class folder without read permission was left out without a word: the data trained a class short. (The
    permission error is raised where ``os.walk`` lists the folder: root, as in CI, reads any folder.)"""
    import os

    from PIL import Image

    monkeypatch.setenv("GANTUNE_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "data"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(root / name / "0.png")
    listing = os.scandir

    def scandir(path: str) -> object:
        if os.path.basename(path) == "b":
            raise PermissionError(13, "Permission denied", path)
        return listing(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(DataError, match=r"^data\.path: cannot read folder .*b: Permission denied$"):
        load_data(DataConfig(name="folder", path=str(root), resolution=8, channels=1), CPU, 0)


def test_a_photos_orientation_tag_is_applied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A phone photo stores its pixels sideways with an EXIF orientation: decoded as stored, it trained sideways."""
    from PIL import Image

    monkeypatch.setenv("GANTUNE_CACHE_DIR", str(tmp_path / "cache"))
    px = np.zeros((8, 16), dtype=np.uint8)
    px[:, :8] = 255  # stored: left half white; orientation 6 shows it turned 90 degrees clockwise, white on top
    exif = Image.Exif()
    exif[0x0112] = 6
    (tmp_path / "photos").mkdir()
    Image.fromarray(px).save(tmp_path / "photos" / "0.jpg", exif=exif, quality=100)
    data = load_data(DataConfig(name="folder", path=str(tmp_path / "photos"), resolution=8, channels=1), CPU, 0)
    assert data.images is not None
    img = data.images[0, 0].float()
    assert img[:3].mean() > 200 and img[5:].mean() < 50, img
    Image.new("L", (8, 8), 7).save(tmp_path / "photos" / "1.png", exif=b"garbagegarbage")  # Pillow: SyntaxError
    assert len(load_data(DataConfig(name="folder", path=str(tmp_path / "photos"), resolution=8, channels=1),
                         CPU, 0)) == 2  # decoded as stored


def test_transparent_pixels_show_white_whatever_colour_they_store(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Found in review: ``convert("RGB")`` drops alpha, so a folder of sprites on transparent backgrounds trained
    on whatever colour each file stored there (white, black, a palette's green)."""
    from PIL import Image

    monkeypatch.setenv("GANTUNE_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "sprites").mkdir()
    for name, hidden in (("a", (255, 255, 255)), ("b", (0, 0, 0))):
        px = np.zeros((8, 8, 4), dtype=np.uint8)
        px[..., :3] = hidden  # the colour stored under the transparent background
        px[2:6, 2:6] = (255, 0, 0, 255)  # an opaque red square
        Image.fromarray(px, "RGBA").save(tmp_path / "sprites" / f"{name}.png")
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([0, 255, 0, 255, 0, 0] + [0] * 762)  # index 0 green, the transparent one; index 1 red
    pal.paste(1, (2, 2, 6, 6))
    pal.save(tmp_path / "sprites" / "c.png", transparency=0)
    for channels in (3, 1):
        data = load_data(DataConfig(name="folder", path=str(tmp_path / "sprites"), resolution=8, channels=channels),
                         CPU, 0)
        assert data.images is not None and len(data) == 3
        corners = data.images[:, :, 0, 0]
        assert (corners == 255).all(), corners  # white behind every sprite
        assert (data.images[:, 0, 4, 4] == (255 if channels == 3 else 76)).all()  # the red square kept (L: 76)


def test_pillows_notes_on_large_images_are_not_said_on_every_load(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Found in review: the warning filters were set inside ``Image.open``'s block, after the open had warned (an
    image past Pillow's decompression-bomb size printed its note twice a load). The limit is lowered so that a
    12x12 image passes it."""
    import warnings

    from PIL import Image

    monkeypatch.setenv("GANTUNE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 144 pixels: a warning, below 2x a refusal
    (tmp_path / "big").mkdir()
    Image.new("RGB", (12, 12), (9, 9, 9)).save(tmp_path / "big" / "0.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = load_data(DataConfig(name="folder", path=str(tmp_path / "big"), resolution=8), CPU, 0)
    assert len(data) == 1


@pytest.mark.parametrize("kind", ["16-bit png", "32-bit int tiff", "float tiff [0, 1]", "float tiff [0, 255]"])
def test_images_of_more_than_8_bits_keep_their_scale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     kind: str) -> None:
    """PIL's convert clipped a 16-bit greyscale ramp at 255 (almost all white) and a float image in [0, 1] to
    black, without a word: each reads as the same ramp saved in 8 bits."""
    from PIL import Image

    monkeypatch.setenv("GANTUNE_CACHE_DIR", str(tmp_path / "cache"))
    ramp = np.tile(np.linspace(0, 1, 16), (16, 1))
    (tmp_path / "eight").mkdir()
    (tmp_path / "deep").mkdir()
    Image.fromarray(np.rint(ramp * 255).astype(np.uint8)).save(tmp_path / "eight" / "0.png")
    deep = {"16-bit png": (np.rint(ramp * 65535).astype(np.uint16), "png"),
            "32-bit int tiff": (np.rint(ramp * 65535).astype(np.int32), "tiff"),
            "float tiff [0, 1]": (ramp.astype(np.float32), "tiff"),
            "float tiff [0, 255]": ((ramp * 255).astype(np.float32), "tiff")}[kind]
    Image.fromarray(deep[0]).save(tmp_path / "deep" / f"0.{deep[1]}")
    assert Image.open(tmp_path / "deep" / f"0.{deep[1]}").mode in ("I;16", "I", "F")
    cfg = DataConfig(name="folder", path=str(tmp_path / "eight"), resolution=16, channels=1)
    eight = load_data(cfg, CPU, seed=0).images
    got = load_data(dataclasses.replace(cfg, path=str(tmp_path / "deep")), CPU, seed=0).images
    assert eight is not None and got is not None and eight.dtype == got.dtype == torch.uint8
    assert int((got.int() - eight.int()).abs().max()) <= 1  # one 8-bit level of rounding apart


def test_an_image_whose_values_have_no_known_scale_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    monkeypatch.setenv("GANTUNE_CACHE_DIR", str(tmp_path / "cache"))
    Image.fromarray(np.full((8, 8), 1000.0, dtype=np.float32)).save(tmp_path / "0.tiff")
    with pytest.raises(DataError, match=r"cannot read image .*0\.tiff: F pixel values from 1000 to 1000 have no "
                                        r"known scale"):
        load_data(DataConfig(name="folder", path=str(tmp_path), resolution=8), CPU, 0)


def test_folder_is_decoded_once_into_a_uint8_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The second trial of a search reads the cached uint8 tensor (no image is opened); the device holds uint8
    and batches come out as float in [-1, 1]; changing a file invalidates the cache."""
    import PIL.Image
    from PIL import Image

    monkeypatch.setenv("GANTUNE_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(np.full((12, 12, 3), i * 60, dtype=np.uint8)).save(folder / f"{i}.png")
    cfg = DataConfig(name="folder", path=str(folder), resolution=8)
    first = load_data(cfg, CPU, seed=0)
    assert first.images is not None and first.images.dtype == torch.uint8
    (first_copy,) = (tmp_path / "cache").glob("data-folder-*.pt")

    opened: list[object] = []
    real_open = PIL.Image.open
    monkeypatch.setattr(PIL.Image, "open", lambda *a, **k: opened.append(a) or real_open(*a, **k))
    second = load_data(cfg, CPU, seed=0)
    assert not opened and second.images is not None and torch.equal(second.images, first.images)
    batch = second.sample(16)
    assert batch.dtype == torch.float32 and batch.min() >= -1 and batch.max() <= 1
    assert {round(float(v), 4) for v in batch.unique()} <= {round(i * 60 / 127.5 - 1, 4) for i in range(4)}
    ref, pixels = second.reference(4), first.images.float() / 127.5 - 1  # every image, in a seeded order
    assert sorted(ref.flatten(1).tolist()) == sorted(pixels.flatten(1).tolist())

    Image.fromarray(np.full((12, 12, 3), 255, dtype=np.uint8)).save(folder / "0.png")
    third = load_data(cfg, CPU, seed=0)
    assert opened and third.images is not None and int(third.images.max()) == 255
    copies = [first_copy, *(f for f in (tmp_path / "cache").glob("data-folder-*.pt") if f != first_copy)]
    assert len(copies) == 2
    # each edit made a full copy, kept for ever: one unused for a day goes when the next copy is made
    day = 24 * 3600
    os.utime(copies[0], (time.time() - 2 * day, time.time() - 2 * day))
    os.utime(copies[1], (time.time() - 2 * day, time.time() - 2 * day))
    assert load_data(cfg, CPU, seed=0).images is not None  # a read is a use
    assert copies[1].stat().st_mtime > time.time() - 60 and copies[0].exists()
    unnamed = tmp_path / "cache" / "data-folder-0123456789abcdef.pt"  # named as before the folder was in it
    unnamed.write_bytes(b"an older gantune's copy")
    os.utime(unnamed, (time.time() - 2 * day, time.time() - 2 * day))
    reference = tmp_path / "cache" / "reference-folder-x-4-0123456789abcdef.pt"  # not a copy of data
    reference.write_bytes(b"features")
    os.utime(reference, (time.time() - 2 * day, time.time() - 2 * day))
    Image.fromarray(np.full((12, 12, 3), 7, dtype=np.uint8)).save(folder / "0.png")
    assert load_data(cfg, CPU, seed=0).images is not None
    left = list((tmp_path / "cache").glob("data-folder-*.pt"))
    assert len(left) == 2 and copies[1] in left and copies[0] not in left and reference.exists()


def test_torchvision_never_downloads_unasked(tmp_path: Path) -> None:
    cfg = DataConfig(name="torchvision", dataset="CIFAR10", path=str(tmp_path))
    with pytest.raises(DataError) as exc:
        load_data(cfg, CPU, 0)
    msg = str(exc.value)
    assert "torchvision" in msg or "not found" in msg
    assert not any(tmp_path.iterdir())


def _digit_index(pool: np.ndarray) -> dict[bytes, int]:
    """Each digit's bytes -> its index in ``pool`` (the first, for the few digits that appear twice)."""
    index: dict[bytes, int] = {}
    for i, img in enumerate(pool):
        index.setdefault(img.tobytes(), i)
    return index


def test_stacked_digits_stack_three_independent_train_digits() -> None:
    """Every channel of a sample is one train-split digit, as is (8 px: the digits' own resolution), drawn
    independently of the other channels: the channels' labels are uncorrelated and agree as often as two
    independent digits do (about 10%), the same digit is in two channels about 1 in 1,437 times, and 26,000 samples
    hold all 1,000 triples."""
    data = load_data(DataConfig(name="stacked_digits", resolution=8), CPU, seed=0)
    assert data.shape == (3, 8, 8) and data.reference_split == "heldout"
    x = data.sample(26_000)
    assert x.shape == (26_000, 3, 8, 8) and x.min() == -1.0 and x.max() == 1.0
    train, labels = digits_split("train")
    index = _digit_index(train[:, 0])
    draws = torch.tensor([[index[ch.numpy().tobytes()] for ch in sample] for sample in x])  # KeyError: not a digit
    digit = torch.from_numpy(labels)[draws]
    assert len(torch.unique(stack_labels(torch.from_numpy(labels), draws))) == 1000
    for a, b in ((0, 1), (0, 2), (1, 2)):
        assert 0.09 < float((digit[:, a] == digit[:, b]).float().mean()) < 0.11
        assert abs(float(torch.corrcoef(digit[:, [a, b]].T.float())[0, 1])) < 0.03
        assert float((draws[:, a] == draws[:, b]).float().mean()) < 5 / 1437
    counts = torch.bincount(draws.flatten(), minlength=len(train)).float()
    assert counts.min() > 0 and counts.max() / counts.mean() < 2  # uniform over the pool, with replacement


def test_stack_labels_read_the_digits_first_channel_first() -> None:
    labels = torch.tensor([7, 3, 0, 9])
    assert stack_labels(labels, torch.tensor([[1, 2, 0], [3, 3, 3]])).tolist() == [307, 999]


def test_stacked_digits_reference_stacks_only_heldout_digits() -> None:
    data = load_data(DataConfig(name="stacked_digits", resolution=8), CPU, seed=0)
    heldout = _digit_index(digits_split("heldout")[0][:, 0])
    train_only = _digit_index(digits_split("train")[0][:, 0]).keys() - heldout.keys()
    ref = data.reference(3000)
    channels = [ch.numpy().tobytes() for sample in ref for ch in sample]
    assert ref.shape == (3000, 3, 8, 8) and all(c in heldout for c in channels)
    assert len(set(channels)) > 340  # 9,000 draws reach nearly all 360 held-out digits
    assert data.reference_size == 360**3 and torch.equal(data.reference(3000), ref)  # fixed
    twin = [ch.numpy().tobytes() for sample in data.twin(300) for ch in sample]
    assert sum(c in train_only for c in twin) > 800  # the real-vs-real floor's samples are train digits


def test_stacked_digits_have_three_channels() -> None:
    from gantune.data import check_data

    assert load_data(DataConfig(name="stacked_digits", resolution=16), CPU, 0).sample(2).shape == (2, 3, 16, 16)
    bad = DataConfig(name="stacked_digits", channels=1)
    with pytest.raises(DataError, match=r"^data\.channels: stacked_digits stacks 3 images, one a channel"):
        check_data(bad)  # before a search starts
    with pytest.raises(DataError, match=r"^data\.channels: "):
        load_data(bad, CPU, 0)


def test_what_data_a_trial_trained_on_names_only_what_the_dataset_reads() -> None:
    """Stacked digits draw from the whole pool whatever ``max_images`` says: a search over it ranked trials on the
    same data as measured differently (the newest trial's "data" alone)."""
    from gantune.data.core import data_label

    assert data_label(DataConfig(name="stacked_digits", max_images=10)) == "stacked_digits"
    assert data_label(DataConfig(name="digits", max_images=10)) == "digits max_images 10"
    assert data_label(DataConfig(name="grid25", max_images=10)) == "grid25"


def test_a_folder_of_greyscale_images_is_named_before_it_trains_as_rgb(tmp_path: Path) -> None:
    """A folder of greyscale images trained as three equal channels without a word (``data.channels`` defaults to
    3 for a folder). ``gantune train`` and a search's load now say so; colour, a palette or a set channel count
    is quiet."""
    from PIL import Image

    from gantune.data import data_notes
    from gantune.sampling.space import load_space

    grey = tmp_path / "grey"
    for cls in ("a", "b"):
        (grey / cls).mkdir(parents=True)
        for i in range(20):
            Image.fromarray(np.full((8, 8), i * 10, dtype=np.uint8)).save(grey / cls / f"{i}.png")
    cfg = DataConfig(name="folder", path=str(grey))
    assert data_notes(cfg) == ["data.path: its images are greyscale (16 of 40 looked at): they train as 3 equal "
                               "channels; set data.channels: 1 to train on one (or 3 to keep three and quiet this "
                               "note)"]
    assert data_notes(dataclasses.replace(cfg, channels=1)) == data_notes(dataclasses.replace(cfg, channels=3)) == []
    first = grey / "a" / "0.png"  # the first of the listing: always among the 16 looked at
    Image.fromarray(np.full((8, 8, 3), 9, dtype=np.uint8)).save(first)
    assert data_notes(cfg) == []
    Image.new("P", (8, 8), 1).save(first)
    assert data_notes(cfg) == []
    Image.fromarray(np.full((8, 8), 3, dtype=np.uint8)).save(first)
    last = max((grey / "b").iterdir())  # and the last: the 16 spread to it (they stopped at the 31st of 40, so a
    Image.fromarray(np.full((8, 8, 3), 9, dtype=np.uint8)).save(last)  # colour class folder sorted last went unseen)
    assert data_notes(cfg) == []
    Image.fromarray(np.full((8, 8), 3, dtype=np.uint8)).save(last)
    space = tmp_path / "s.yaml"
    space.write_text(f"data: {{name: folder, path: {grey}, resolution: 8}}\nmodel: {{arch: dcgan}}\n"
                     "eval: {metrics: [diversity]}\nsearch: {objective: diversity, direction: minimize}\n")
    assert any("its images are greyscale" in note for note in load_space(space, weights=False).notes)


def test_pixels_round_trip_through_float_exactly() -> None:
    """Found by a review: Inception's input was cast, not rounded, so 63 of the 256 levels of a real image came
    back one lower than the data's."""
    levels = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    assert torch.equal(as_uint8(as_float(levels)), levels)
    assert as_uint8(torch.tensor([-2.0, 1.5, 0.0, 1 / 255])).tolist() == [0, 255, 128, 128]  # clamped, rounded



def test_a_folder_decodes_into_one_array_not_three(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The decoded images were held as a list, its stack and the stack's channels-first copy: a peak of three
    times the folder's tensor (7 GB a trial for CelebA at 64 px). Each image is written into one array now."""
    import tracemalloc

    from PIL import Image

    monkeypatch.setenv("GANTUNE_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "data"
    root.mkdir()
    for i in range(300):
        Image.fromarray(np.full((64, 64, 3), i % 256, dtype=np.uint8)).save(root / f"{i:03d}.png")
    cfg = DataConfig(name="folder", path=str(root), resolution=64, channels=3)
    tracemalloc.start()  # numpy's allocations are traced (torch's are not: the old channels-first copy is uncounted)
    try:
        data = load_data(cfg, CPU, 0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert data.images is not None and data.images.shape == (300, 3, 64, 64)
    assert data.images[7].float().mean().item() == 7
    assert peak < 1.5 * data.images.numel()


def test_a_dark_16_bit_pgm_is_read_at_16_bits() -> None:
    """Found by a review: Pillow opens a PGM of maxval 65,535 as mode I; one whose pixels all stayed under 256 was
    taken as 8-bit, 257x bright (200 of 65,535 read as 200 of 255) beside brighter frames of the same folder."""
    import tempfile

    from gantune.data.images import _decode_image

    folder = Path(tempfile.mkdtemp())
    for value, expected in ((200, 1), (60000, 233)):
        (folder / f"v{value}.pgm").write_bytes(b"P5\n4 4\n65535\n" + np.full((4, 4), value, dtype=">u2").tobytes())
        assert _decode_image(folder / f"v{value}.pgm", "L", 4).max() == expected
    (folder / "eight.pgm").write_bytes(b"P5\n4 4\n255\n" + bytes([200] * 16))  # 8-bit: as it is
    assert _decode_image(folder / "eight.pgm", "L", 4).max() == 200


def test_images_fitted_in_memory_read_as_a_folders_do() -> None:
    """Found by a review: a plugin's (or digits') images were made one channel by a plain mean (pure green -0.33,
    PIL's luma 0.18) and non-square ones stretched, where a folder's are cropped to their centre square."""
    from gantune.data.core import _fit

    green = torch.tensor([-1.0, 1.0, -1.0]).view(1, 3, 1, 1).expand(1, 3, 8, 8)
    grey = _fit(green, DataConfig(name="digits", resolution=8, channels=1))
    assert grey.shape == (1, 1, 8, 8) and float(grey.mean()) == pytest.approx(0.587 * 2 - 1, abs=1e-6)
    frame = -torch.ones(1, 1, 8, 16)
    frame[..., 4:12] = 1.0  # a white centre square in a wide black frame
    assert bool((_fit(frame, DataConfig(name="digits", resolution=8, channels=1)) == 1).all())


def test_a_damaged_cache_entry_is_computed_again(tmp_path: Path) -> None:
    """The cache can never fail a trial: a file that is not torch's zip (garbage bytes) raised UnpicklingError."""
    from gantune.rundir import cached

    entry = tmp_path / "entry.pt"
    for damage in (b"\x00garbage", b"e" * 64):  # UnpicklingError, KeyError from torch.load
        entry.write_bytes(damage)
        assert cached(entry, lambda: {"x": torch.ones(2)})["x"].tolist() == [1.0, 1.0]
        assert torch.load(entry, weights_only=True)["x"].tolist() == [1.0, 1.0]  # and kept, mended
