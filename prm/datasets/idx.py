"""Reader for the IDX format of MNIST, EMNIST and Fashion-MNIST (optionally gzip-compressed).

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number
of dimensions), one big-endian uint32 per dimension, then the values. We only
accept unsigned bytes (type 0x08), which is what all three data sets use, and
check the header against what the caller expects and the payload length
against the header, so a truncated or mismatched download is reported instead
of silently misread. The file is opened under the data file rules
(:func:`prm.datasets.core.data_file`) and read as a stream: the header's
promise is bounded by what the supported data sets hold (``MAX_IMAGES``), the
payload is read in chunks and never beyond that promise, and the buffer grows
only with the bytes actually read, so neither a header claiming a huge count
nor a gzip bomb nor a short file promising much can make it allocate more than
the file really holds (at most the bound). A plain file's length is checked
against the header before its payload is read.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from prm.datasets.core import DataError, data_file, file_key
from prm.safeio import MiB

UBYTE = 0x08
LARGEST_FILE = 112_800
"""Images in the largest IDX file read: EMNIST balanced's training set (Fashion-MNIST's holds
60,000). EMNIST's larger splits (byclass, 698k images) are never read, so they need no room."""
MAX_IMAGES = 2**17
"""Images (or labels) one file may promise: 131,072, a little room above ``LARGEST_FILE``."""
SIDE = 28
MAX_VALUES = MAX_IMAGES * SIDE * SIDE
"""Values (bytes) in one file: 98 MiB, MAX_IMAGES images of 28x28."""
MAX_FILE_BYTES = MAX_VALUES + MiB
"""The file on disk: the values and a header, or their gzip (a little larger for random bytes)."""
CHUNK = MiB
"""Bytes asked of the (decompressing) stream at a time."""


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
    with data_file(path, limit=MAX_FILE_BYTES) as (handle, file_size):
        try:
            with gzip.GzipFile(fileobj=handle, mode="rb") if gz else contextlib.nullcontext(handle) as f:
                dims = _header(f, path, ndim, shape_tail)
                if not gz:  # the length on disk tells a short or long file before anything is read
                    _check_length(path, dims, file_size - 4 - 4 * ndim)
                payload = _payload(f, math.prod(dims))
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path} is not a readable {'gzip ' if gz else ''}IDX file ({exc})") from None
    _check_length(path, dims, len(payload))
    array = np.frombuffer(payload, dtype=np.uint8).reshape(dims)
    array.setflags(write=False)
    return array


def _header(f, path: Path, ndim: int, shape_tail: tuple[int, ...]) -> tuple[int, ...]:
    """The dimensions the header promises, checked against the caller's and the reader's bounds."""
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
    what = "images" if ndim > 1 else "labels"
    if dims[0] > MAX_IMAGES:
        raise DataError(f"{path}: header promises {dims[0]} {what} {dims}, more than the {MAX_IMAGES} this reader "
                        f"accepts (the largest supported file, EMNIST balanced's training set, holds {LARGEST_FILE})")
    size = math.prod(dims)  # exact: numpy's int64 product could wrap round
    if size > MAX_VALUES:
        raise DataError(f"{path}: header promises {size} values {dims}, more than the {MAX_VALUES} this reader accepts")
    return dims


def _payload(f, size: int) -> bytearray:
    """Up to ``size + 1`` bytes of ``f`` (one byte more tells a longer file), read in chunks
    into a buffer that grows only as bytes arrive: a stream that ends early costs what it held."""
    buffer = bytearray()
    while len(buffer) <= size:
        chunk = f.read(min(CHUNK, size + 1 - len(buffer)))
        if not chunk:
            break
        buffer += chunk
    return buffer


def _check_length(path: Path, dims: tuple[int, ...], have: int) -> None:
    """Refuse a payload of ``have`` bytes that is not what the header promises."""
    size = math.prod(dims)
    if have != size:
        state = "truncated" if have < size else "longer than its header says"
        shown = have if have < size else "more"
        raise DataError(f"{path} is {state}: header promises {size} values {dims}, file has {shown}")


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
