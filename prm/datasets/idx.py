"""Reader for the IDX format of MNIST, EMNIST and Fashion-MNIST (optionally gzip-compressed).

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number
of dimensions), one big-endian uint32 per dimension, then the values. We only
accept unsigned bytes (type 0x08), which is what all three data sets use, and
check the header against what the caller expects and the payload length
against the header, so a truncated or mismatched download is reported instead
of silently misread.
"""

from __future__ import annotations

import functools
import gzip
import zlib
from pathlib import Path

import numpy as np

from prm.datasets.core import DataError, file_key

UBYTE = 0x08


def read_idx(path: Path, *, ndim: int, shape_tail: tuple[int, ...] = ()) -> np.ndarray:
    """The uint8 array stored in ``path`` (read-only, cached per file version).

    ``ndim`` is the expected number of dimensions (3 for images, 1 for labels)
    and ``shape_tail`` the expected sizes after the first (e.g. ``(28, 28)``).
    """
    return _read_idx(file_key(Path(path)), ndim, tuple(shape_tail))


@functools.lru_cache(maxsize=8)
def _read_idx(key: tuple[str, int, int], ndim: int, shape_tail: tuple[int, ...]) -> np.ndarray:
    path = Path(key[0])
    try:
        raw = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path} is not a readable {'gzip ' if path.name.endswith('.gz') else ''}IDX file ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != UBYTE:
        raise DataError(f"{path} is not an IDX file of unsigned bytes (bad magic number {raw[:4].hex() or 'empty'})")
    if raw[3] != ndim:
        raise DataError(f"{path} has {raw[3]} dimensions, expected {ndim}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated: the header needs {header} bytes, the file has {len(raw)}")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    if shape_tail and dims[1:] != shape_tail:
        raise DataError(f"{path} holds arrays of shape {dims[1:]}, expected {shape_tail}")
    size = int(np.prod(dims, dtype=np.int64))
    if len(raw) != header + size:
        state = "truncated" if len(raw) < header + size else "longer than its header says"
        raise DataError(f"{path} is {state}: header promises {size} values {dims}, file has {len(raw) - header}")
    array = np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)
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
