"""CIFAR100-10T: the 100 fine classes of CIFAR-100 in 10 tasks of 10, from the *binary* version.

The binary version (``cifar-100-binary.tar.gz``) stores fixed 3074-byte
records: coarse label, fine label, then 1024 red, 1024 green and 1024 blue
pixel bytes. Inputs keep that channel-major order (3 x 32 x 32 flattened to
3072). The python version is a pickle, and unpickling a file can run
arbitrary code, so it is never loaded; pointing at it gives an error that
asks for the binary version. Per task: 4500 train / 500 val (from the 5000
training images of its classes) / 1000 test.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from prm.datasets.classsplit import class_split_tasks
from prm.datasets.core import DataError, Task, file_key, need_data_dir, read_data

NAME = "CIFAR100-10T"
RECORD = 2 + 3072
MAX_RECORDS = 100_000
"""Records in one file (train.bin holds 50,000): a larger file is refused before it is read."""
GROUPS = [10] * 10
SIZES = (4500, 500, 1000)
FILES = ("train.bin", "test.bin")


def folders(data_dir: Path) -> list[Path]:
    return [data_dir / "cifar-100-binary", data_dir]


def find(data_dir: Path | None) -> Path | None:
    if data_dir is None:
        return None
    return next((f for f in folders(data_dir) if all((f / n).is_file() for n in FILES)), None)


def present(data_dir: Path | None) -> bool:
    return find(data_dir) is not None


@functools.lru_cache(maxsize=4)
def _read(key: tuple[str, int, int]) -> tuple[np.ndarray, np.ndarray]:
    path, size = Path(key[0]), key[1]
    if size == 0 or size % RECORD:
        raise DataError(
            f"{path} has {size} bytes, not a whole number of {RECORD}-byte CIFAR-100 records "
            "(coarse label, fine label, 3072 pixels): truncated, or not the CIFAR-100 binary version"
        )
    if size // RECORD > MAX_RECORDS:
        raise DataError(f"{path} holds {size // RECORD} records, more than CIFAR-100's files (at most {MAX_RECORDS})")
    raw = read_data(path, limit=MAX_RECORDS * RECORD)
    if len(raw) != size:
        raise DataError(f"{path} changed while it was read ({len(raw)} of {size} bytes)")
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, RECORD)
    coarse, fine = records[:, 0], records[:, 1]
    if coarse.max() >= 20 or fine.max() >= 100:
        raise DataError(f"{path} has labels out of range (coarse < 20, fine < 100 expected): not CIFAR-100 binary")
    x, y = records[:, 2:], fine.astype(np.int64)
    y.setflags(write=False)
    return x, y


def _python_version_hint(data_dir: Path) -> str:
    """A sentence explaining why the python (pickle) version found here is not used, or ''."""
    for folder in (data_dir / "cifar-100-python", data_dir):
        if (folder / "train").is_file() and (folder / "meta").is_file():
            return (
                f" {folder} holds the python version, which is a pickle: unpickling can run arbitrary code, "
                "so it is never loaded."
            )
    return ""


def cifar_tasks(*, n: int, seed: int, data_dir: Path | None, sizes: tuple[int, int, int] | None = None) -> list[Task]:
    data_dir = need_data_dir(data_dir, NAME)
    folder = find(data_dir)
    if folder is None:
        raise DataError(
            f"{NAME} needs cifar-100-binary/train.bin and test.bin in {data_dir}.{_python_version_hint(data_dir)} "
            "Download the CIFAR-100 *binary* version (cifar-100-binary.tar.gz) and unpack it there"
        )
    train, test = (_read(file_key(folder / f)) for f in FILES)
    return class_split_tasks(
        what=NAME, train=train, test=test, groups=GROUPS, sizes=sizes or SIZES, n=n, seed=seed,
        prepare=lambda x: (x / np.float32(255.0)).astype(np.float32),
    )
