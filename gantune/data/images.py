"""Images from a folder (one subfolder per class for a conditional GAN) or a torchvision dataset: decoded once per
search into a cached uint8 tensor file (``$GANTUNE_CACHE_DIR``), so a trial neither decodes them again nor holds
them in float32 (4x the memory); nothing is downloaded unless the config says ``download: true``."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch

from gantune.config import DataConfig
from gantune.data.core import dataset, pil_mode, subset_missing
from gantune.errors import DataError
from gantune.events import first_line
from gantune.rundir import LOCK, OWNER, SAMPLES_LIST, SamplesList, cache_dir, cached

#: the image files a folder dataset reads, in any case: the same on every machine (a Ray cluster's nodes list the
#: same files). AVIF needs Pillow 11.3 or later and JPEG 2000 a Pillow built with OpenJPEG (its wheels are): where
#: one does not decode, the load names it, as any unreadable image.
IMAGE_SUFFIXES = frozenset({".png", ".apng", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".gif", ".webp", ".tif", ".tiff",
                            ".pgm", ".ppm", ".pbm", ".pnm", ".tga", ".avif", ".qoi", ".jp2", ".j2k", ".jpc", ".j2c",
                            ".jpf", ".jpx"})
TORCHVISION_DATASETS = ("CIFAR10", "MNIST", "FashionMNIST", "CelebA")
GREY_TORCHVISION = ("MNIST", "FashionMNIST")


def _center_crop_resize(img: object, size: int) -> np.ndarray:
    from PIL import Image

    assert isinstance(img, Image.Image)
    w, h = img.size
    s = min(w, h)
    img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    return np.asarray(img.resize((size, size), Image.Resampling.BICUBIC))


def _to_nchw(arrays: Iterable[np.ndarray | None], n: int) -> torch.Tensor | None:
    """The ``n`` decoded (H, W) or (H, W, C) images as one uint8 (N, C, H, W) tensor, each written into it as it
    comes: a list of them, its stack and the stack's channels-first copy held a folder three times over (7 GB a
    trial for CelebA's 200k images at 64 px). A ``None`` among them is left unwritten; ``None`` when all are."""
    out: np.ndarray | None = None
    for i, a in enumerate(arrays):
        if a is None:  # one that did not decode (``_decode_all`` says which, once all are read)
            continue
        image = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
        if out is None:  # numpy's: PIL's arrays are read-only, which torch.from_numpy warns of
            out = np.empty((n, *image.shape), dtype=image.dtype)
        out[i] = image
    return None if out is None else torch.from_numpy(out)


#: a decoded copy of a folder is removed once another copy of that folder is made (after an edit, or at another
#: resolution, mode or subset) and it has not been read for this long (each edit of a folder made a full copy, kept
#: for ever; a search reads its copy as each trial starts; one removed is decoded again when next needed)
UNUSED_S = 24 * 3600
#: a copy's name before it named its folder: ``data-<dataset>-<16 hex digits>.pt``
_UNNAMED_COPY = re.compile(r"data-[A-Za-z0-9_]+-[0-9a-f]{16}\.pt")


def _decoded(ident: dict[str, Any], decode: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """``decode()``'s uint8 images (and labels), cached under what identifies them: decoded once per search. The
    file's time is its last use; a new copy of the same folder removes those unused for ``UNUSED_S``."""
    digest = hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    folder = hashlib.sha1(f"{ident['name']} {ident.get('dataset', '')} {ident['root']}".encode()).hexdigest()[:8]
    path = cache_dir() / f"data-{ident['name']}-{folder}-{digest}.pt"
    new = not path.is_file()
    stored = cached(path, decode)
    with contextlib.suppress(OSError):
        os.utime(path)  # read now (a cache that cannot be written costs recomputation only, as ``cached`` says)
        if new:
            now = time.time()
            # (and the copies named before the folder was in the name, which only an older gantune reads)
            older = [f for f in path.parent.glob("data-*.pt") if _UNNAMED_COPY.fullmatch(f.name)]
            for other in [*path.parent.glob(f"data-{ident['name']}-{folder}-*.pt"), *older]:
                with contextlib.suppress(OSError):
                    if other != path and now - other.stat().st_mtime > UNUSED_S:
                        other.unlink()
    return stored


#: folders of MLflow's local artifact stores (gantune's sample grids among them): never data
ARTIFACT_FOLDERS = ("mlartifacts", "mlruns")


#: the folders walked inside ``listed_once`` (None outside it): resolved root -> its image files
_walked: dict[str, list[Path]] | None = None


@contextlib.contextmanager
def listed_once() -> Iterator[None]:
    """Within the block each image folder is walked once: a run's checks (the data is there, its class count, the
    ``init_from`` weights' fit, a resume's classes) each walked it again, a second or more apiece on a folder
    of 100k images. Scoped, not process-wide: the folder is read afresh when the data is loaded."""
    global _walked
    outer = _walked
    _walked = {} if outer is None else outer
    try:
        yield
    finally:
        _walked = outer


def folder_images(root: Path) -> list[Path]:
    """The image files a ``folder`` dataset at ``root`` reads (all of them: ``max_images`` picks among these)."""
    return _listed(root)


def _listed(root: Path) -> list[Path]:
    """The image files under ``root``, sorted: symlinked folders followed (each real folder once, so a link loop
    ends); hidden files and folders skipped (``.ipynb_checkpoints`` read as a class, macOS's ``._x.png`` as a
    broken image); so is gantune's own output, a folder holding a run's or a search's lock and MLflow's artifact
    folders (a run trained inside its data folder read its sample grids back as training images)."""
    if _walked is None:
        return _walk(root)
    key = str(root)  # as given: the files' paths start with it (``folder_labels`` reads them relative to it)
    if key not in _walked:
        _walked[key] = _walk(root)
    return list(_walked[key])


#: folders of a file system's own (ext4's ``lost+found``, readable by root only): never data
SYSTEM_FOLDERS = ("lost+found",)


def _unreadable(err: OSError) -> NoReturn:
    """A folder the walk cannot list (no permission) was skipped without a word, and with it a class of a
    conditional GAN's data: it is one line naming it."""
    raise DataError(f"data.path: cannot read folder {err.filename}: {err.strerror}")


def _walk(root: Path) -> list[Path]:
    """``_listed``'s walk: one ``scandir`` a folder, whose entries know whether they are links and folders without
    another system call. A link to a folder or file inside the data is not followed: the folder or file is read
    under its own name (a class folder linked from another class, ``a/shared_b -> ../b``, was walked first, so its
    images took class ``a``'s label and ``b`` vanished; a linked file was read twice); a link to a folder outside
    is read under the link's name (data kept elsewhere), each real folder once (a loop ends)."""
    inside = os.path.realpath(root)
    found: list[Path] = []
    seen: set[str] = set()
    pending = [str(root)]
    while pending:
        folder = pending.pop()
        real = os.path.realpath(folder)
        if real in seen:
            continue
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as err:
            _unreadable(err)
        if _ours(entries):
            continue
        seen.add(real)
        subfolders = []
        for e, kind in _read(folder, entries, inside):
            if kind == "folder":
                subfolders.append(e.path)
            else:
                found.append(Path(e.path))
        pending += reversed(subfolders)
    return sorted(found)


def _ours(entries: list[os.DirEntry[str]]) -> bool:
    """Whether a folder of these entries is gantune's own output: a run's or a search's folder."""
    return any(e.name in (LOCK, OWNER) for e in entries)


def _read(folder: str, entries: list[os.DirEntry[str]], inside: str) -> Iterator[tuple[os.DirEntry[str], str]]:
    """The entries of ``folder`` the walk reads, each with ``"folder"`` or ``"image"``: not hidden, not the samples
    ``generate`` wrote there (by its list: the folder's other files are the user's), not a link inside the data
    (``inside``, resolved: read under its own name, or not at all), not an artifact or system folder."""
    generated = SamplesList.read(Path(folder)) if any(e.name == SAMPLES_LIST for e in entries) else SamplesList()
    for e in entries:
        if e.name.startswith(".") or e.name in generated:
            continue
        try:
            is_dir = e.is_dir()
            if e.is_symlink() and ((real := os.path.realpath(e.path)) == inside or real.startswith(inside + os.sep)):
                continue
            if is_dir and e.name not in ARTIFACT_FOLDERS + SYSTEM_FOLDERS:
                yield e, "folder"
            elif not is_dir and Path(e.name).suffix.lower() in IMAGE_SUFFIXES and e.is_file():
                yield e, "image"
        except OSError:  # a link that cannot be resolved (a loop of links): nothing to read
            continue


def _empty_classes(root: Path, index: dict[str, int]) -> list[str]:
    """The top-level subfolders of ``root`` the walk reads that hold no image file at all (``index``: those it found
    images in): each would be a class of a conditional run, which torchvision's ImageFolder refuses. A folder
    whose images the walk skips (``generate``'s samples, a run's folder, a second link to a folder it read) or
    cannot read is not known to be empty: it is passed over, as before."""
    try:
        with os.scandir(root) as listing:
            top = sorted(listing, key=lambda e: e.name)
    except OSError as err:
        _unreadable(err)
    return [e.name for e, kind in _read(str(root), top, os.path.realpath(root))
            if kind == "folder" and e.name not in index and not _holds_anything(e.path)]


def _holds_anything(folder: str) -> bool:
    """Whether ``folder`` or a folder under it (links followed, each real folder once) holds an image file under
    any name, gantune's own output, or a folder it cannot list."""
    pending, seen = [folder], set()
    while pending:
        current = pending.pop()
        if (real := os.path.realpath(current)) in seen:
            continue
        seen.add(real)
        try:
            with os.scandir(current) as listing:
                for e in listing:
                    if e.name in (LOCK, OWNER, SAMPLES_LIST) or Path(e.name).suffix.lower() in IMAGE_SUFFIXES:
                        return True
                    if e.is_dir():
                        pending.append(e.path)
        except OSError:
            return True
    return False


def _image_files(cfg: DataConfig) -> tuple[Path, list[Path]]:
    """The folder's image files, in the order they are loaded; at most ``max_images``, a seeded random subset
    (the first ones in path order dropped whole classes, which sort together)."""
    root = Path(cfg.path or "").expanduser()
    if not root.is_dir():
        raise DataError(f"data.path: image folder {root} " + ("is a file, not a folder" if root.exists() else
                                                              "does not exist"))
    files = _listed(root)
    if not files:
        raise DataError(f"data.path: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {root}")
    if cfg.max_images is not None and cfg.max_images < len(files):
        files = sorted(random.Random(0).sample(files, cfg.max_images))
    return root, files


def _eight_bit(im: Any, fmt: str | None = None) -> Any:
    """A single-channel image of more than 8 bits as 8-bit ``L``: PIL's ``convert`` clips 16-bit and 32-bit
    integers at 255 (a 16-bit ramp read as almost all white) and a float image's [0, 1] to black. 16-bit values
    scale by 1/257 (65,535 -> 255); a float image in [0, 1] by 255, one in [0, 255] stays; anything else has no
    known scale and is refused (``ValueError``). Modes ``I`` and ``F`` do not say their range, so it is read off
    each image: a 32-bit integer image whose values stay within 0-255 is taken as 8-bit, a float one within 0-1
    as [0, 1]; but a PGM/PPM (``fmt`` ``PPM``) opens as ``I`` only when its maxval is above 255, scaled to 16
    bits by Pillow, so its dark frames are 16-bit too (they read up to 257x bright)."""
    from PIL import Image

    if im.mode not in ("I", "F") and not im.mode.startswith("I;16"):
        return im
    a = np.asarray(im, dtype=np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{im.mode} image with non-finite pixel values")
    top = float(a.max(initial=0.0))
    if float(a.min(initial=0.0)) < 0 or (im.mode == "F" and top > 255) or top > 65535:
        raise ValueError(f"{im.mode} pixel values from {a.min():g} to {top:g} have no known scale (expected "
                         "8 or 16 bits, or floats in [0, 1] or [0, 255])")
    sixteen = im.mode != "I" or top > 255 or fmt == "PPM"
    scale = (255.0 if top <= 1 else 1.0) if im.mode == "F" else (1 / 257 if sixteen else 1.0)
    return Image.fromarray(np.clip(np.rint(a * scale), 0, 255).astype(np.uint8))


def _upright(im: Any) -> Any:
    """``im`` turned as its EXIF orientation tag says, as image viewers show it (a phone photo is stored sideways);
    as it is when the tag cannot be read (Pillow raises ``SyntaxError`` on a malformed EXIF block)."""
    from PIL import ImageOps

    try:
        return ImageOps.exif_transpose(im)
    except Exception:  # the pixels decode without it, as they did before orientation was read
        return im


#: what a transparent pixel shows: white, as on a page (its stored colour, which ``convert`` kept, is any the
#: encoder chose: a folder of sprites trained on white, black or a palette's green behind each)
BACKDROP = (255, 255, 255)


def _opaque(im: Any) -> Any:
    """``im`` over ``BACKDROP`` where it has transparency (an alpha channel, or a palette's transparent colour)."""
    from PIL import Image

    if im.mode not in ("RGBA", "LA", "PA", "La", "RGBa") and "transparency" not in im.info:
        return im
    rgba = im.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (*BACKDROP, 255)), rgba).convert("RGB")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Pillow's notes on palette transparency, EXIF it cannot parse and very large images, said once per image on
    every run (set before the file is opened: a filter set inside ``Image.open``'s block came after them)."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


def _reduced(im: Any, resolution: int) -> None:
    """A JPEG decoded at 1/2, 1/4 or 1/8 scale where its centre square stays at least twice ``resolution`` (as
    Pillow's ``thumbnail`` does, reducing_gap 2; then resized as any image): a 12-megapixel photo was decoded
    whole for a 64-px training image. Other formats decode whole (``draft`` does nothing for them)."""
    w, h = im.size
    side = min(w, h)
    if side > 2 * resolution:
        im.draft(None, (-(-w * 2 * resolution // side), -(-h * 2 * resolution // side)))


def _decode_image(f: Path, mode: str, resolution: int) -> np.ndarray:
    image = _decoded_or_why(f, mode, resolution)
    if isinstance(image, str):
        raise _unreadable_image(f, image)
    return image


def _unreadable_image(f: Path, why: str) -> DataError:
    return DataError(f"data.path: cannot read image {f}: {why}")


def _decoded_or_why(f: Path, mode: str, resolution: int) -> np.ndarray | str:
    """The image, or why it does not decode (text: an exception kept would keep its decoder's buffers alive)."""
    from PIL import Image

    try:
        with _quiet(), Image.open(f) as im:
            _reduced(im, resolution)
            return _center_crop_resize(_opaque(_eight_bit(_upright(im), im.format)).convert(mode), resolution)
    except (OSError, ValueError, Image.DecompressionBombError) as err:  # UnidentifiedImageError is an OSError
        return str(err)


#: how many unreadable images a refusal names (it counts them all)
NAMED_BROKEN = 3


def _decode_all(files: list[Path], mode: str, resolution: int) -> torch.Tensor:
    """Every file decoded into one uint8 (N, C, H, W) tensor; a ``DataError`` naming the unreadable ones, all
    counted: the first one stopped the load, so a folder with several took a run (and the decode up to it) each."""
    broken: list[tuple[Path, str]] = []

    def each() -> Iterator[np.ndarray | None]:
        for f in files:
            image = _decoded_or_why(f, mode, resolution)
            if isinstance(image, str):
                broken.append((f, image))
                yield None
            else:
                yield image

    images = _to_nchw(each(), len(files))
    if len(broken) == 1:
        raise _unreadable_image(*broken[0])
    if broken:
        named = "; ".join(f"{f} ({why})" for f, why in broken[:NAMED_BROKEN])
        raise DataError(f"data.path: cannot read {len(broken)} of its {len(files)} images: {named}"
                        f"{'; ...' if len(broken) > NAMED_BROKEN else ''}")
    assert images is not None
    return images


def _check_folder(cfg: DataConfig) -> None:
    """The folder exists, holds images, and the first one decodes."""
    _, files = _image_files(cfg)
    _decode_image(files[0], pil_mode(cfg), cfg.resolution)


def _class_index(root: Path, listing: list[Path]) -> dict[str, int] | None:
    """Each top-level subfolder's class index (as torchvision's ImageFolder: sorted order), ``None`` when an
    image lies directly under ``root``."""
    parts = [f.relative_to(root).parts for f in listing]
    if any(len(p) < 2 for p in parts):
        return None
    return {name: i for i, name in enumerate(sorted({p[0] for p in parts}))}


def folder_labels(root: Path, files: list[Path], listing: list[Path] | None = None) -> torch.Tensor | None:
    """Class labels of ``files``, a folder with one subfolder per class, indexed over ``listing`` (all of the
    folder's images; default ``files``): a ``max_images`` subset that missed a class renumbered the classes after
    it, and the generator's class 2 was another folder's than its data's. ``None`` when an image lies directly
    under ``root``."""
    index = _class_index(root, files if listing is None else listing)
    return None if index is None else torch.tensor([index[f.relative_to(root).parts[0]] for f in files])


def _folder_classes(cfg: DataConfig) -> int:
    """The folder's class subfolders (0: images directly under ``path``). Asked by conditional runs only, so a
    ``max_images`` subset missing a class is refused here: the generator would learn that class from nothing."""
    with listed_once():  # the subset and the class index read one walk of the folder
        root, files = _image_files(cfg)
        listing = _listed(root)
        index = _class_index(root, listing)
    if index is None:
        loose = [f for f in listing if f.parent == root]
        if len(loose) < len(listing):  # class subfolders, and a stray image beside them: "no class labels" said
            # nothing of which file to move
            raise DataError(f"data.path: {len(loose)} image(s) lie directly in {root} ({loose[0].name}"
                            f"{', ...' if len(loose) > 1 else ''}) beside its class subfolders: a conditional GAN "
                            "reads each top-level subfolder as a class; move them into one, or out of data.path")
        return 0
    if empty := _empty_classes(root, index):
        # it vanished from the classes, and each one after it took the index before its own
        raise DataError(f"data.path: class folder {root / empty[0]} holds no image file"
                        f"{f' (nor do {len(empty) - 1} other class folders)' if len(empty) > 1 else ''}: a "
                        "conditional GAN reads each top-level subfolder as a class, class K the K-th in sorted order; "
                        "add its images, or move it out of data.path")
    missing = sorted(set(index) - {f.relative_to(root).parts[0] for f in files})
    if missing:
        raise subset_missing(cfg, missing, len(index), "the folder's")
    return len(index)


def _folder_listing(cfg: DataConfig) -> dict[str, Any]:
    """The folder's images by name and size (a rewritten file of the same size passes: reading every file to
    hash it would cost a run's start as much as decoding them)."""
    root, files = _image_files(cfg)
    names = [(str(f.relative_to(root)), f.stat().st_size) for f in files]
    return {"images": len(files), "digest": hashlib.sha1(json.dumps(names).encode()).hexdigest()[:16]}


#: how many of a folder's images ``_folder_notes`` opens (their headers only), spread over the listing
GREY_PROBE = 16


def greyscale(cfg: DataConfig) -> tuple[int, int] | None:
    """``(looked at, images)`` when the folder's images look greyscale (``GREY_PROBE`` of them, spread over the
    listing, their headers only); ``None`` when one is in colour or cannot be read (the load says which)."""
    from PIL import Image

    try:
        _, files = _image_files(cfg)
    except DataError:
        return None  # the check says what is wrong with the folder
    last, k = len(files) - 1, min(GREY_PROBE, len(files))  # evenly from the first file to the last: sorted paths
    probe = [files[i * last // max(k - 1, 1)] for i in range(k)]  # group classes, and a prefix misses the last
    for f in probe:
        try:
            with _quiet(), Image.open(f) as im:
                bands = [b for b in im.getbands() if b != "A"]
        except (OSError, ValueError, Image.DecompressionBombError):
            return None
        if len(bands) != 1 or bands[0] == "P":  # colour, or a palette (which may hold colours)
            return None
    return len(probe), len(files)


def _folder_notes(cfg: DataConfig) -> list[str]:
    """A folder of greyscale images trains as three equal channels unless ``data.channels`` is set: the nets
    carry three times the input and output for one channel's worth, and nothing said so."""
    if cfg.channels is not None or (grey := greyscale(cfg)) is None:
        return []
    return [f"data.path: its images are greyscale ({grey[0]} of {grey[1]} looked at): they train as 3 equal "
            "channels; set data.channels: 1 to train on one (or 3 to keep three and quiet this note)"]


@dataset("folder", needs=("path",), check=_check_folder, labelled=lambda cfg: None, classes=_folder_classes,
         listing=_folder_listing, notes=_folder_notes)
def _folder(cfg: DataConfig) -> tuple[None, torch.Tensor, torch.Tensor | None]:
    with listed_once():  # the subset and the class index read one walk of the folder
        root, files = _image_files(cfg)
        listing = _listed(root)
    mode = pil_mode(cfg)

    def decode() -> dict[str, torch.Tensor]:
        return {"images": _decode_all(files, mode, cfg.resolution)}

    # an added, removed or rewritten file changes the key
    stats = [(str(f.relative_to(root)), (st := f.stat()).st_size, st.st_mtime_ns) for f in files]  # one stat each
    # decode 2: images of more than 8 bits scaled, not clipped (a cache of the clipped ones is not reused);
    # 3: EXIF orientation applied; 4: transparency shown over white; 5: JPEGs decoded at a reduced scale
    ident = {"name": "folder", "root": str(root.resolve()), "files": stats, "mode": mode, "res": cfg.resolution,
             "decode": 5}
    return None, _decoded(ident, decode)["images"], folder_labels(root, files, listing)


def _torchvision_class(cfg: DataConfig) -> Any:
    if cfg.dataset not in TORCHVISION_DATASETS:
        raise DataError(f"data.dataset: {cfg.dataset!r} is not one of {', '.join(TORCHVISION_DATASETS)}")
    try:
        import torchvision
    except ImportError:
        raise DataError("data.name: torchvision datasets need torchvision (pip install 'gantune[torchvision]')") \
            from None
    return getattr(torchvision.datasets, cfg.dataset)


def _torchvision_dataset(cfg: DataConfig, download: bool) -> Any:
    root = Path(cfg.path or "").expanduser()
    kwargs = {"split": "train"} if cfg.dataset == "CelebA" else {"train": True}
    try:
        return _torchvision_class(cfg)(root=str(root), download=download, **kwargs)
    except (RuntimeError, FileNotFoundError) as err:
        hint = "" if cfg.download else " (set data.download: true to fetch it)"
        raise DataError(f"data.path: {cfg.dataset} not found under {root}{hint}: {first_line(err)}") from None


def _check_torchvision(cfg: DataConfig) -> None:
    """torchvision is there and, unless the config asks to download the dataset, so is the dataset under
    ``path`` (opened, not decoded; nothing is downloaded here)."""
    if cfg.download:
        _torchvision_class(cfg)
    else:
        _torchvision_dataset(cfg, download=False)


@dataset("torchvision", needs=("path", "dataset"), check=_check_torchvision,
         channels=lambda cfg: 1 if cfg.dataset in GREY_TORCHVISION else 3,
         labelled=lambda cfg: cfg.dataset != "CelebA")  # CelebA's targets are attributes, not one class
def _torchvision(cfg: DataConfig) -> tuple[None, torch.Tensor, torch.Tensor | None]:
    root = Path(cfg.path or "").expanduser()
    ds = _torchvision_dataset(cfg, cfg.download)
    n = len(ds) if cfg.max_images is None else min(len(ds), cfg.max_images)
    mode = pil_mode(cfg)

    def decode() -> dict[str, torch.Tensor]:
        labels: list[int] = []

        def decoded() -> Iterator[np.ndarray]:
            for i in range(n):
                img, label = ds[i]
                labels.append(int(label) if isinstance(label, int) else -1)
                yield _center_crop_resize(img.convert(mode), cfg.resolution)

        images = _to_nchw(decoded(), n)  # each written into one array as it comes
        assert images is not None, "no images to stack"
        return {"images": images, "labels": torch.tensor(labels)}

    ident = {"name": "torchvision", "dataset": cfg.dataset, "root": str(root.resolve()), "n": n, "mode": mode,
             "res": cfg.resolution}
    stored = _decoded(ident, decode)
    return None, stored["images"], stored["labels"]
