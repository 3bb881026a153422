"""Reading files from a folder nobody vouches for: a run someone uploaded, copied or damaged.

Every read of a run folder goes through :func:`opened`, so one set of rules holds everywhere:

- the run folder itself is the user's choice (a path typed, a runs folder picked), so links in
  *its own* path are followed: a runs folder that is a link to another disk works. The names
  inside it come from untrusted files, so *no* link inside the folder is ever followed, whether
  it points out or back in (no run writer makes one, and a link that points in today can be
  swapped for one that points out while it is read). The folder is opened once; the file is
  then opened from the folder's descriptor one name at a time (``dir_fd``), each folder on the
  way with ``O_DIRECTORY | O_NOFOLLOW`` and the file with ``O_NOFOLLOW``, so no name is
  resolved twice and a swap between a check and the open cannot lead out. A name with ``..``
  or an absolute path is refused by name. Hard links are regular files inside the folder and
  stay readable: an upload never holds one (``explorer/archive.py`` writes plain files), making
  one takes local access to the file itself, and it names a file on the folder's own device;
- the open descriptor is checked, not the path: a regular file (a device, FIFO or socket would
  block the reader forever; the file is opened non-blocking so even opening one cannot) on the
  folder's own device (a file system mounted inside the folder is refused);
- every size is bounded before anything is allocated: text files by their length, each
  array of an ``.npz`` by its zip entry and its ``.npy`` header (each dimension and shape x
  item size), the arrays of one run by a shared budget. A 200 kB zip entry that inflates to
  1 GB is refused from its header, never unpacked;
- only numeric arrays are read, never pickles.

POSIX only (``dir_fd`` and ``O_NOFOLLOW``), like the rest of the engine's file handling.
Failures raise :class:`UnsafeFile` with a message fit for a user; callers turn it into a
warning (an array, a summary) or a ``RunFormatError`` (run.json, a checkpoint).
"""

from __future__ import annotations

import errno
import math
import os
import re
import stat
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import numpy as np

from prm.limits import MAX_EPOCHS, MAX_WIDTH

MiB = 2**20
MAX_JSON_BYTES = 4 * MiB
"""run.json and summary.json: a config and a handful of numbers; real ones are < 10 kB."""
MAX_EVENTS_BYTES = 32 * MiB
"""events.jsonl: a 50-task run writes about 3 MB; a longer log is read up to here (32 MiB of
epoch lines fold in about 6 s into about 200 MB, a bound on what one upload can cost)."""
MAX_ARRAY_BYTES = 64 * MiB
"""One array unpacked; the largest real one (a 2000-unit DTD embedding table of 50 tasks,
or a float32 trajectory of 200 epochs) is under 2 MB."""
MAX_RUN_ARRAY_BYTES = 256 * MiB
"""All arrays of one run unpacked, together: a 50-task run at the paper's width 2000 holds
about 60 MB."""
MAX_NPZ_MEMBERS = 64
"""Arrays in one .npz: five per masked layer, at most 8 layers, plus slack."""
MAX_NDIM = 3
MAX_DIM = max(MAX_WIDTH, MAX_EPOCHS + 1)
"""The largest dimension of any array a run holds, from the engine's own limits: a layer's units
(``MAX_WIDTH``) or a trajectory's snapshots (at most one per epoch, ``MAX_EPOCHS``, plus the
final one); an embedding table's rows (one per task) and a projection's (two per task) stay
far below. Each dimension is bounded, not only the product: ``(0, 10**30)`` holds no bytes,
but numpy cannot shape it."""
NUMERIC_KINDS = "biuf"
_MEMBER = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}\.npy")
_FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_INNER_FOLDER_FLAGS = _FOLDER_FLAGS | os.O_NOFOLLOW
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class UnsafeFile(ValueError):
    """The file may not or cannot be read; the message says which file and why."""


def _parts(relative: str) -> tuple[str, ...]:
    """The names of a path inside the run folder; refuses one that leaves it by name alone."""
    if not relative or relative.startswith(("/", "\\")) or "\\" in relative or "\x00" in relative:
        raise UnsafeFile(f"{relative!r}: not a path inside the run folder")
    parts = PurePosixPath(relative).parts
    if ".." in parts:
        raise UnsafeFile(f"{relative!r}: '..' is not allowed in a run's file names")
    if not parts:
        raise UnsafeFile(f"{relative!r}: not a path inside the run folder")
    return parts


def inside(folder: Path, relative: str) -> Path:
    """``folder / relative`` if it stays inside ``folder`` with links resolved, else refuse.
    For asking whether a file is there and for messages; never read through the path it
    returns (:func:`opened` is the one way to read)."""
    _parts(relative)
    try:
        base = folder.resolve()
        target = (folder / relative).resolve()
    except (OSError, RuntimeError) as exc:  # a link loop, or a link swapped while it is resolved
        raise UnsafeFile(f"{relative}: cannot be resolved ({exc})") from None
    if target != base and base not in target.parents:
        raise UnsafeFile(f"{relative}: points outside the run folder (to {target})")
    return target


@contextmanager
def opened(folder: Path, relative: str, *, limit: float) -> Iterator[tuple[BinaryIO, int]]:
    """The one route to a file of a run folder: a read handle of ``relative`` and its size, a
    regular file on the folder's device no larger than ``limit``, reached without following any
    link inside the folder. Raises ``FileNotFoundError`` when it is absent and
    :class:`UnsafeFile` when it may not be read."""
    fd, device = _open_inside(Path(folder), relative)
    try:
        size = _checked_size(fd, device, relative, limit)
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as handle:
        yield handle, size


def _open_inside(folder: Path, relative: str) -> tuple[int, int]:
    """A descriptor of ``relative``, opened from the folder's own descriptor one name at a time
    (folders with ``O_DIRECTORY | O_NOFOLLOW``, the file with ``O_NOFOLLOW``): no name is
    resolved twice, so nothing swapped in meanwhile is followed. Also the folder's device."""
    *folders, leaf = _parts(relative)
    try:
        fd = os.open(folder, _FOLDER_FLAGS)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise UnsafeFile(f"{relative}: cannot be opened (the run folder: {exc.strerror or exc})") from None
    device = os.fstat(fd).st_dev  # of the folder opened, not of a path looked up again
    for name, flags in [*((n, _INNER_FOLDER_FLAGS) for n in folders), (leaf, _FILE_FLAGS)]:
        parent = fd
        try:
            fd = os.open(name, flags, dir_fd=parent)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise _refusal(folder, relative, name, parent, exc) from None
        finally:
            os.close(parent)
    return fd, device


def _refusal(folder: Path, relative: str, name: str, parent: int, exc: OSError) -> UnsafeFile:
    """Why ``name`` (in the folder open as ``parent``) could not be opened, in a user's words."""
    try:
        os.readlink(name, dir_fd=parent)
    except OSError:  # not a link: a file where a folder should be, no permission, ...
        return UnsafeFile(f"{relative}: cannot be opened ({exc.strerror or exc})")
    try:
        inside(folder, relative)
    except UnsafeFile as where:  # the message only: the link is refused wherever it points
        return UnsafeFile(f"{where}; links are never followed")
    return UnsafeFile(f"{relative}: {name!r} is a link (inside the run folder); links are never followed")


def _checked_size(fd: int, device: int, relative: str, limit: float) -> int:
    """The size of the open file, once it is known to be a regular file on the folder's device
    within ``limit``."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise UnsafeFile(f"{relative}: not a regular file (a device, pipe or folder is never read)")
    if info.st_dev != device:
        raise UnsafeFile(f"{relative}: lies on another file system than the run folder (a mount inside it)")
    if info.st_size > limit:
        raise UnsafeFile(f"{relative}: {info.st_size / MiB:.1f} MiB, more than the {limit / MiB:.0f} MiB allowed")
    return info.st_size


def read_bytes(folder: Path, relative: str, *, limit: int, truncate: bool = False, start: int = 0) -> bytes:
    """A file's bytes from ``start``. Over ``limit``: an error, or with ``truncate`` the first
    ``limit`` bytes. Raises ``FileNotFoundError`` when it is absent and :class:`UnsafeFile`
    when it may not be read."""
    with opened(folder, relative, limit=math.inf if truncate else limit) as (handle, size):
        handle.seek(start)
        return handle.read(max(0, min(limit, size) - start))  # read(n) reserves n bytes: never more than the file


def read_tail(folder: Path, relative: str, *, nbytes: int) -> bytes:
    """The last ``nbytes`` of a file (a live run's latest lines), under the same rules."""
    with opened(folder, relative, limit=math.inf) as (handle, size):
        handle.seek(max(0, size - nbytes))
        return handle.read(nbytes)


def read_text(folder: Path, relative: str, *, limit: int = MAX_JSON_BYTES) -> str:
    return read_bytes(folder, relative, limit=limit).decode("utf-8", errors="replace")


@dataclass
class Budget:
    """Bytes of arrays one run may still unpack."""

    left: int = MAX_RUN_ARRAY_BYTES

    def take(self, nbytes: int, name: str) -> None:
        if nbytes > self.left:
            raise UnsafeFile(f"{name}: the run's arrays exceed {MAX_RUN_ARRAY_BYTES / MiB:.0f} MiB unpacked")
        self.left -= nbytes


def read_npz(folder: Path, relative: str, *, budget: Budget) -> dict[str, np.ndarray]:
    """The numeric arrays of an ``.npz``, each checked against its declared size first."""
    with opened(folder, relative, limit=MAX_RUN_ARRAY_BYTES) as (handle, size):
        _check_entry_count(handle, size, relative)
        try:
            with zipfile.ZipFile(handle) as zf:
                return _read_members(zf, relative, budget)
        except zipfile.BadZipFile as exc:
            raise UnsafeFile(f"{relative}: not a valid .npz file ({exc})") from None
        except (EOFError, zipfile.LargeZipFile, NotImplementedError, RuntimeError) as exc:
            raise UnsafeFile(f"{relative}: damaged ({type(exc).__name__}: {exc})") from None
        except OSError as exc:
            if exc.errno in (errno.EIO, errno.ENOMEM):
                raise
            raise UnsafeFile(f"{relative}: damaged ({exc})") from None


def _check_entry_count(handle, size: int, relative: str) -> None:
    """Refuse a zip whose central directory lists too many entries before ``zipfile`` builds
    an object for each (millions of empty entries fit in a few MB)."""
    tail_size = min(size, 22 + 65535)
    handle.seek(size - tail_size)
    tail = handle.read(tail_size)
    handle.seek(0)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        raise UnsafeFile(f"{relative}: not a valid .npz file (no zip directory)")
    entries = int.from_bytes(tail[at + 10: at + 12], "little")
    if entries > MAX_NPZ_MEMBERS:  # 0xFFFF (a ZIP64 count) lands here too
        raise UnsafeFile(f"{relative}: {entries} entries; an array file has at most {MAX_NPZ_MEMBERS}")


def _read_members(zf: zipfile.ZipFile, relative: str, budget: Budget) -> dict[str, np.ndarray]:
    infos = zf.infolist()  # directory entries count too: they cost the reader as much
    if len(infos) > MAX_NPZ_MEMBERS:
        raise UnsafeFile(f"{relative}: {len(infos)} entries; an array file has at most {MAX_NPZ_MEMBERS}")
    names = [info.filename for info in infos]
    if len(set(names)) != len(names):
        raise UnsafeFile(f"{relative}: duplicate entry names")
    for info in infos:
        if not _MEMBER.fullmatch(info.filename):
            raise UnsafeFile(f"{relative}: unexpected entry {info.filename!r} (only NAME.npy arrays)")
        if info.file_size > MAX_ARRAY_BYTES + 4096:
            raise UnsafeFile(f"{relative}: entry {info.filename} declares {info.file_size / MiB:.0f} MiB unpacked; "
                             f"an array may take at most {MAX_ARRAY_BYTES / MiB:.0f} MiB")
    out = {}
    for info in infos:
        name = info.filename[: -len(".npy")]
        with zf.open(info) as member:
            out[name] = _read_npy(member, declared=info.file_size, where=f"{relative}:{name}", budget=budget)
    return out


def _read_npy(member, *, declared: int, where: str, budget: Budget) -> np.ndarray:
    """One ``.npy`` stream: header first, then exactly the bytes the header promises."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(member)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(member, max_header_size=10_000)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = fmt.read_array_header_2_0(member, max_header_size=10_000)
        else:
            raise ValueError(f"unknown .npy version {version}")
    except (ValueError, SyntaxError, TypeError) as exc:
        raise UnsafeFile(f"{where}: not a valid .npy array ({exc})") from None
    if dtype.hasobject or dtype.kind not in NUMERIC_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise UnsafeFile(f"{where}: dtype {dtype} is not a plain number type (objects and pickles are never read)")
    if len(shape) > MAX_NDIM or any(type(n) is not int or n < 0 for n in shape):
        raise UnsafeFile(f"{where}: shape {shape} is not allowed")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > MAX_ARRAY_BYTES:
        raise UnsafeFile(f"{where}: shape {shape} needs {nbytes / MiB:.0f} MiB; the limit is "
                         f"{MAX_ARRAY_BYTES / MiB:.0f} MiB per array")
    if max(shape, default=0) > MAX_DIM:  # (0, 10**30): no bytes, but no real array either
        raise UnsafeFile(f"{where}: shape {shape} is not allowed (each dimension at most {MAX_DIM})")
    header = member.tell() if hasattr(member, "tell") else None
    if header is not None and header + nbytes != declared:
        raise UnsafeFile(f"{where}: its header promises {nbytes} bytes but the entry holds {declared - header}")
    budget.take(nbytes, where)
    data = member.read(nbytes)
    if len(data) != nbytes:
        raise UnsafeFile(f"{where}: truncated ({len(data)} of {nbytes} bytes)")
    try:  # whatever numpy still finds wrong in a crafted header is this file's fault, said as such
        array = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    except ValueError as exc:
        raise UnsafeFile(f"{where}: shape {shape} cannot be read ({exc})") from None
    return np.array(array)  # own, writable memory in C order
