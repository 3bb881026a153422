"""Reader for the IDX format of MNIST, EMNIST and Fashion-MNIST (optionally gzip-compressed).

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number
of dimensions), one big-endian uint32 per dimension, then the values. We only
accept unsigned bytes (type 0x08), which is what all three data sets use, and
check the header against what the caller expects and the payload length
against the header, so a truncated or mismatched download is reported instead
of silently misread. The file is read as a stream and never beyond what the
header promises (at most ``MAX_VALUES``), so neither a header claiming a huge
count nor a gzip bomb can make it allocate more.
"""

from __future__ import annotations

import functools
import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from prm.datasets.core import DataError, file_key

UBYTE = 0x08
MAX_VALUES = 2**30
"""Values (bytes) in one file: EMNIST's largest split ("byclass", 698k images) holds 547 million."""


def read_idx(path: Path, *, ndim: int, shape_tail: tuple[int, ...] = ()) -> np.ndarray:
    """The uint8 array stored in ``path`` (read-only, cached per file version).

    ``ndim`` is the expected number of dimensions (3 for images, 1 for labels)
    and ``shape_tail`` the expected sizes after the first (e.g. ``(28, 28)``).
    """
    return _read_idx(file_key(Path(path)), ndim, tuple(shape_tail))


@functools.lru_cache(maxsize=8)
def _read_idx(key: tuple[str, int, int], ndim: int, shape_tail: tuple[int, ...]) -> np.ndarray:
    path = Path(key[0])
    gz = path.name.endswith(".gz")
    try:
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
            raw = f.read(4)
            if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != UBYTE:
                magic = raw[:4].hex() or "empty"
                raise DataError(f"{path} is not an IDX file of unsigned bytes (bad magic number {magic})")
            if raw[3] != ndim:
                raise DataError(f"{path} has {raw[3]} dimensions, expected {ndim}")
            header = 4 + 4 * ndim
            raw += f.read(header - 4)
            if len(raw) < header:
                raise DataError(f"{path} is truncated: the header needs {header} bytes, the file has {len(raw)}")
            dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
            if shape_tail and dims[1:] != shape_tail:
                raise DataError(f"{path} holds arrays of shape {dims[1:]}, expected {shape_tail}")
            size = math.prod(dims)  # exact: numpy's int64 product could wrap round
            if size > MAX_VALUES:
                raise DataError(f"{path}: header promises {size} values {dims}, "
                                f"more than the {MAX_VALUES} this reader accepts")
            payload = f.read(size + 1)  # one byte more tells a longer file
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path} is not a readable {'gzip ' if gz else ''}IDX file ({exc})") from None
    if len(payload) != size:
        state = "truncated" if len(payload) < size else "longer than its header says"
        have = len(payload) if len(payload) < size else "more"
        raise DataError(f"{path} is {state}: header promises {size} values {dims}, file has {have}")
    array = np.frombuffer(payload, dtype=np.uint8).reshape(dims)
    array.setflags(write=False)
    return array


def find_idx(folders: list[Path], name: str) -> Path | None:
    """``name`` (the uncompressed IDX name) as ``name.gz`` or ``name`` in the first folder that has it."""
    for folder in folders:
        for candidate in (folder / f"{name}.gz", folder / name):
            if candidate.is_file():
                return candidate
    return None


def read_images_labels(images: Path, labels: Path, *, side: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """A matching pair of image and label IDX files, checked to have equal counts."""
    x = read_idx(images, ndim=3, shape_tail=(side, side))
    y = read_idx(labels, ndim=1)
    if len(x) != len(y):
        raise DataError(f"{images} holds {len(x)} images but {labels} holds {len(y)} labels")
    return x, y
