"""EMNIST-10T: the 47 classes of EMNIST "balanced" in 10 tasks (5 classes each, the last three 4).

Reads the four gzip IDX files of NIST's EMNIST distribution ("gzip" archive),
from the data folder itself, its ``gzip/`` subfolder (as the official zip
unpacks), ``emnist/`` or ``emnist/gzip/``. EMNIST stores each image
transposed relative to MNIST, so images are transposed back here and come
out upright, row-major, ink = 1, like MNIST. Per task: 500 train / 200 val
(both from the training file) / 200 test (from the test file), as in the
paper's Table 1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from prm.datasets.classsplit import class_split_tasks
from prm.datasets.core import DataError, Task, need_data_dir
from prm.datasets.idx import find_idx, read_images_labels

NAME = "EMNIST-10T"
FILES = {
    part: (f"emnist-balanced-{part}-images-idx3-ubyte", f"emnist-balanced-{part}-labels-idx1-ubyte")
    for part in ("train", "test")
}
GROUPS = [5] * 7 + [4] * 3  # 47 classes
SIZES = (500, 200, 200)
# The label -> character mapping of EMNIST balanced (emnist-balanced-mapping.txt).
CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabdefghnqrt"


def folders(data_dir: Path) -> list[Path]:
    return [data_dir, data_dir / "gzip", data_dir / "emnist", data_dir / "emnist" / "gzip"]


def present(data_dir: Path | None) -> bool:
    return data_dir is not None and all(find_idx(folders(data_dir), f) for pair in FILES.values() for f in pair)


def _load(data_dir: Path, part: str) -> tuple[np.ndarray, np.ndarray]:
    paths = []
    for name in FILES[part]:
        path = find_idx(folders(data_dir), name)
        if path is None:
            raise DataError(
                f"{NAME} needs {name}.gz in {data_dir} (or {data_dir / 'gzip'}); "
                "download the EMNIST 'gzip' archive from NIST and unpack it there"
            )
        paths.append(path)
    x, y = read_images_labels(*paths)
    if len(y) and int(y.max()) >= len(CHARS):
        raise DataError(f"{paths[1]} has label {int(y.max())}; EMNIST balanced has labels 0..46 (is this another EMNIST split?)")
    return x, y


def _prepare(x: np.ndarray) -> np.ndarray:
    return (x.transpose(0, 2, 1).reshape(len(x), -1) / np.float32(255.0)).astype(np.float32)


def emnist_tasks(*, n: int, seed: int, data_dir: Path | None, sizes: tuple[int, int, int] | None = None) -> list[Task]:
    data_dir = need_data_dir(data_dir, NAME)
    train, test = _load(data_dir, "train"), _load(data_dir, "test")
    return class_split_tasks(
        what=NAME, train=train, test=test, groups=GROUPS, sizes=sizes or SIZES, n=n, seed=seed,
        prepare=_prepare, label=lambda c: CHARS[c],
    )
