"""Per-person tasks from LEAF's JSON files: F-EMNIST-10T (writers) and F-CelebA-10T (people).

LEAF (https://leaf.cmu.edu) writes each data set as JSON files of the form
``{"users": [...], "num_samples": [...], "user_data": {user: {"x": [...], "y": [...]}}}``
in ``<name>/data/all_data/`` (everything) or, after its own sampling and
splitting, ``<name>/data/train/``. We read ``all_data/`` when present, else
``train/``, looked up under ``<data>/<name>/data``, ``<data>/<name>`` and
``<data>``. In FEMNIST ``x`` holds 784 floats per image; in CelebA it holds
image file names in ``img_align_celeba/`` (LEAF puts it in ``data/raw/``).

One task per person. People with at least ``min_samples`` samples and at
least two labels are eligible; the seed orders the JSON files, files are read
in that order only until ``n`` eligible people are known (a FEMNIST file holds
about 100 writers and 100+ MB, so a sequence parses one or two files, not all
of them), and the seed then picks ``n`` of them. Each person's samples are
split at random (not stratified: most FEMNIST letters occur one to three
times per writer, and stratifying would put them all in train).
"""

from __future__ import annotations

import json
import os
import warnings
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from prm.datasets.core import DataError, Task, data_file, make_task, need_data_dir, read_data
from prm.safeio import MiB


@dataclass(frozen=True)
class LeafSet:
    name: str  # sequence name, for messages
    folder: str  # LEAF's folder name
    family: str
    person: str  # task name prefix
    persons: str  # plural, for messages
    n_classes: int
    val: float
    test: float
    min_samples: int


FEMNIST = LeafSet(name="F-EMNIST-10T", folder="femnist", family="writers", person="writer", persons="writers",
                  n_classes=62, val=1 / 6, test=1 / 6, min_samples=200)
CELEBA = LeafSet(name="F-CelebA-10T", folder="celeba", family="people", person="celebrity", persons="celebrities",
                 n_classes=2, val=0.1, test=0.2, min_samples=30)
PIXELS = 784
CELEBA_SIDE = 32
IMAGE_FORMATS = ("JPEG", "PNG")
"""CelebA images are JPEG; nothing else is decoded (Pillow's rarer plugins are more attack surface)."""
MAX_JSON_BYTES = 256 * MiB
"""One LEAF JSON file. FEMNIST's hold about 100 writers in 100+ MB each (CelebA's, names only,
far less); twice that leaves room while bounding what one parse costs (a parsed file is several
times its size in Python objects)."""
MAX_IMAGE_BYTES = 4 * MiB
"""One CelebA image: the aligned 178x218 JPEGs are about 10 kB (a PNG copy about 100 kB).
Pillow's own pixel limit guards the decoding."""


def json_folder(leaf: LeafSet, data_dir: Path | None) -> Path | None:
    """The first ``all_data/`` or ``train/`` folder holding ``*.json`` for this data set."""
    if data_dir is None:
        return None
    for root in (data_dir / leaf.folder / "data", data_dir / leaf.folder, data_dir):
        for sub in ("all_data", "train"):
            if any((root / sub).glob("*.json")):
                return root / sub
    return None


def image_folder(data_dir: Path, json_dir: Path) -> Path | None:
    """CelebA's ``img_align_celeba/`` next to the JSON (LEAF: ``data/raw/``) or in the data folder."""
    root = json_dir.parent
    for folder in (root / "raw", root, root.parent, data_dir, data_dir / "celeba"):
        if (folder / "img_align_celeba").is_dir():
            return folder / "img_align_celeba"
    return None


def present(leaf: LeafSet, data_dir: Path | None) -> bool:
    folder = json_folder(leaf, data_dir)
    return folder is not None and (leaf is not CELEBA or image_folder(data_dir, folder) is not None)


def read_leaf_json(path: Path, n_classes: int) -> dict[str, tuple[list, np.ndarray]]:
    """user -> (x list, labels) from one LEAF JSON file, structure checked.

    Not cached: a parsed FEMNIST file is several hundred MB of Python objects;
    the built TaskSequence is what callers keep.
    """
    raw = read_data(path, limit=MAX_JSON_BYTES)
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise DataError(f"{path} is not valid JSON ({exc})") from None
    except RecursionError:  # json's answer to "[[[[..." nested deeper than the stack
        raise DataError(f"{path} is not a LEAF file: its JSON is nested too deeply") from None
    if not isinstance(doc, dict) or not all(k in doc for k in ("users", "num_samples", "user_data")):
        raise DataError(f"{path} is not a LEAF file: expected an object with keys users, num_samples, user_data")
    users, counts, data = doc["users"], doc["num_samples"], doc["user_data"]
    if not (isinstance(users, list) and isinstance(counts, list) and isinstance(data, dict)) or len(users) != len(counts):
        raise DataError(f"{path}: users and num_samples must be lists of equal length and user_data an object")
    if not all(isinstance(u, str) for u in users):  # also keeps unhashable ids away from data.get
        raise DataError(f"{path}: users must be a list of strings (user ids)")
    bad = next((u for u in users if not _is_text(u)), None)
    if bad is not None:  # JSON's "\ud800" escape: a str that no printout, log or file can encode
        raise DataError(f"{path}: user id {bad!r} is not valid text (it holds a lone surrogate)")
    out = {}
    for user, count in zip(users, counts):
        entry = data.get(user)
        if not isinstance(entry, dict) or not isinstance(entry.get("x"), list) or not isinstance(entry.get("y"), list):
            raise DataError(f"{path}: user_data[{user!r}] must be an object with lists x and y")
        x, y = entry["x"], entry["y"]
        if len(x) != len(y) or len(y) != count:
            raise DataError(f"{path}: user {user!r} has {len(x)} x, {len(y)} y and num_samples {count}; they must agree")
        # Checked before numpy sees them: int(1.5) truncates, int(True) is 1 and 10**30 overflows.
        bad = next((k for k, v in enumerate(y) if type(v) is not int or not 0 <= v < n_classes), None)
        if bad is not None:
            raise DataError(f"{path}: user {user!r} has label {str(y[bad])[:40]}; "
                            f"labels must be integers 0..{n_classes - 1}")
        out[user] = (x, np.array(y, dtype=np.int64))
    return out


def _is_text(s: str) -> bool:
    """Whether ``s`` is encodable text (lone surrogates, which JSON can escape, are not)."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _pixels(x: list, where: str) -> np.ndarray:
    if any(not isinstance(row, list) or len(row) != PIXELS for row in x):
        raise DataError(f"{where}: every x must be a list of {PIXELS} pixel values (28x28)")
    if any(type(v) not in (int, float) for row in x for v in row):  # no strings, booleans or lists
        raise DataError(f"{where}: x holds non-numeric pixel values")
    with np.errstate(over="ignore"):  # 10**40 becomes inf, refused below
        try:
            a = np.array(x, dtype=np.float32)
        except (OverflowError, ValueError):
            raise DataError(f"{where}: x holds pixel values outside [0, 1]") from None
    if len(a) and (not np.isfinite(a).all() or a.min() < 0.0 or a.max() > 1.0):
        raise DataError(f"{where}: pixel values must lie in [0, 1]")
    return a


def _images(x: list, folder: Path, where: str) -> np.ndarray:
    """Decode and shrink each image; any failure of an untrusted file is a DataError naming it.

    Names must be plain file names (no folder part: ``../x`` or ``/etc/x`` cannot escape
    ``folder``) and encodable text.
    """
    out = np.empty((len(x), 3 * CELEBA_SIDE * CELEBA_SIDE), dtype=np.float32)
    for k, name in enumerate(x):
        plain = isinstance(name, str) and _is_text(name) and Path(name).name == name and name not in ("", ".", "..")
        if not plain or not os.path.lexists(folder / name):
            raise DataError(f"{where}: image {str(name)[:80]!r} is not in {folder}")
        out[k] = _image(folder / name, where)
    return out


def _image(path: Path, where: str) -> np.ndarray:
    """One image as channel-major floats in [0, 1], like CIFAR. It is read under the data file
    rules (a regular file of at most ``MAX_IMAGE_BYTES``); Pillow's decompression-bomb warning
    counts as an error: an image that claims more than ``Image.MAX_IMAGE_PIXELS`` pixels is
    refused before it is decoded."""
    from PIL import Image, ImageOps

    with data_file(path, limit=MAX_IMAGE_BYTES) as (handle, _):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(handle, formats=IMAGE_FORMATS) as img:
                    small = ImageOps.fit(img.convert("RGB"), (CELEBA_SIDE, CELEBA_SIDE), Image.Resampling.BILINEAR)
        except Exception as exc:  # Pillow raises OSError, ValueError, SyntaxError, DecompressionBomb*, ...
            raise DataError(f"{where}: cannot read image {path} ({type(exc).__name__}: {exc})") from None
    return np.asarray(small, dtype=np.float32).transpose(2, 0, 1).reshape(-1) / 255.0


def random_split(m: int, rng: np.random.Generator, *, val: float, test: float):
    """Shuffle ``range(m)`` and cut it: round(test*m) test, round(val*m) val, the rest (>= 1) train."""
    n_test = min(int(round(test * m)), m - 1)
    n_val = min(int(round(val * m)), m - 1 - n_test)
    order = rng.permutation(m)
    n_train = m - n_val - n_test
    return tuple(np.sort(p) for p in np.split(order, [n_train, n_train + n_val]))


def leaf_tasks(leaf: LeafSet, *, n: int, seed: int, data_dir: Path | None, min_samples: int | None = None) -> list[Task]:
    data_dir = need_data_dir(data_dir, leaf.name)
    folder = json_folder(leaf, data_dir)
    where = f"{data_dir / leaf.folder / 'data'}/all_data (or train/)"
    if folder is None:
        raise DataError(f"{leaf.name} needs LEAF's {leaf.folder} JSON files in {where}; run LEAF's preprocess.sh for {leaf.folder}")
    images = image_folder(data_dir, folder) if leaf is CELEBA else None
    if leaf is CELEBA and images is None:
        raise DataError(f"{leaf.name} needs the img_align_celeba/ image folder in {folder.parent / 'raw'} or {data_dir}")
    least = leaf.min_samples if min_samples is None else min_samples
    rng = np.random.default_rng([seed, 30])
    files = sorted(folder.glob("*.json"))
    eligible = {}
    for path in (files[k] for k in rng.permutation(len(files))):
        for user, (x, y) in read_leaf_json(path, leaf.n_classes).items():
            if len(y) >= least and len(np.unique(y)) >= 2:
                eligible[user] = (path, x, y)
        if len(eligible) >= n:
            break
    if len(eligible) < n:
        raise DataError(
            f"{leaf.name}: only {len(eligible)} {leaf.persons} in {folder} have at least {least} samples "
            f"and two labels; ask for fewer tasks or a lower min_samples"
        )
    users = sorted(eligible)
    tasks = []
    for user in (users[k] for k in rng.choice(len(users), n, replace=False)):
        path, x, y = eligible[user]
        spot = f"{path}, user {user!r}"
        xs = _images(x, images, spot) if images is not None else _pixels(x, spot)
        splits = random_split(len(y), np.random.default_rng([seed, 31, zlib.crc32(user.encode("utf-8", "replace"))]),
                              val=leaf.val, test=leaf.test)
        tasks.append(make_task(
            name=f"{leaf.person} {user}", family=leaf.family, classes=tuple(range(leaf.n_classes)),
            parts=tuple((xs[idx], y[idx]) for idx in splits), rows=splits,
        ))
    if images is None and np.mean([t.x_train.mean().item() for t in tasks]) > 0.5:
        tasks = [_inverted(t) for t in tasks]
    return tasks


def _inverted(task: Task) -> Task:
    """LEAF keeps NIST's dark ink on white paper; flip to ink = 1 so writers match EMNIST and MNIST."""
    return replace(task, **{f"x_{p}": 1.0 - getattr(task, f"x_{p}") for p in ("train", "val", "test")})
