"""Optional Fashion-MNIST sequences, from Debian's ``dataset-fashion-mnist`` package.

``apt-get install dataset-fashion-mnist`` puts Zalando's IDX files (MIT
licence) in ``/usr/share/datasets/fashion-mnist/``; a ``fashion-mnist/``
folder with the same files in the data folder is used first. To match the
MNIST-5k pool, the pool is the first 500 training images of each class, in
file order, so it does not depend on the seed. When neither folder has the
files, the sequences are not offered and asking for one says what to install.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from prm.datasets.core import DataError, Task, file_key, interleave, split_count
from prm.datasets.digits import CLASS_PAIRS
from prm.datasets.idx import find_idx, read_images_labels
from prm.datasets.mnist5k import mnist5k_pool
from prm.datasets.pool import Pool, pair_task

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
IMAGES, LABELS = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
PER_CLASS = 500


def _folders(data_dir: Path | None) -> list[Path]:
    return ([data_dir / "fashion-mnist"] if data_dir is not None else []) + [DEBIAN_DIR]


def fashion_files(data_dir: Path | None) -> tuple[Path, Path] | None:
    for folder in _folders(data_dir):
        images, labels = find_idx([folder], IMAGES), find_idx([folder], LABELS)
        if images and labels:
            return images, labels
    return None


def fashion_pool(data_dir: Path | None) -> Pool:
    files = fashion_files(data_dir)
    if files is None:
        where = " or ".join(str(f) for f in _folders(data_dir))
        raise DataError(
            f"Fashion-MNIST sequences need {IMAGES}.gz and {LABELS}.gz in {where}; "
            "install them with: apt-get install dataset-fashion-mnist"
        )
    return _pool(file_key(files[0]), file_key(files[1]))


@functools.lru_cache(maxsize=2)
def _pool(images_key, labels_key) -> Pool:
    x, y = read_images_labels(Path(images_key[0]), Path(labels_key[0]))
    if len(y) and y.max() >= len(CLASS_NAMES):
        raise DataError(f"{labels_key[0]} has label {y.max()}; Fashion-MNIST labels are 0..9")
    rows = []
    for c in range(len(CLASS_NAMES)):
        members = np.flatnonzero(y == c)[:PER_CLASS]
        if len(members) < 5:
            raise DataError(f"{images_key[0]} has {len(members)} images of class {c}; need at least 5")
        rows.append(members)
    rows = np.sort(np.concatenate(rows))
    px = (x[rows].reshape(len(rows), -1).astype(np.float32) / 255.0)
    py = y[rows].astype(np.int64)
    px.setflags(write=False)
    py.setflags(write=False)
    return Pool(name="fashion", x=px, y=py, class_names=CLASS_NAMES)


def fashion_tasks(kind: str, *, n: int, seed: int, data_dir: Path | None) -> list[Task]:
    """``kind`` "classes": Fashion pairs; "mnist": MNIST-5k pairs and Fashion pairs interleaved."""
    pool = fashion_pool(data_dir)
    rng = np.random.default_rng([seed, 14])
    if kind == "classes":
        return [pair_task(pool, CLASS_PAIRS[k], seed=seed, prefix="fashion") for k in rng.permutation(5)[:n]]
    n_mnist, n_fashion = split_count(n)
    mnist = [pair_task(mnist5k_pool(), CLASS_PAIRS[k], seed=seed) for k in rng.permutation(5)[:n_mnist]]
    fashion = [pair_task(pool, CLASS_PAIRS[k], seed=seed, prefix="fashion") for k in rng.permutation(5)[:n_fashion]]
    return interleave([mnist, fashion], rng)
