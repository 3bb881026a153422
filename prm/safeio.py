"""Reading files from a folder nobody vouches for: a run someone uploaded, copied or damaged.

Every read of a run folder goes through here, so one set of rules holds everywhere:

- a file must lie inside the run folder once links are resolved (no absolute path, no
  ``..``, no symlink out) and be a regular file: a device, FIFO or socket (``/dev/stdin``,
  a named pipe) would block the reader forever;
- it is opened non-blocking and checked on the open descriptor, so a swap after the
  check cannot sneak one in;
- every size is bounded before anything is allocated: text files by their length, each
  array of an ``.npz`` by its zip entry and its ``.npy`` header (shape x item size), the
  arrays of one run by a shared budget. A 200 kB zip entry that inflates to 1 GB is refused
  from its header, never unpacked;
- only numeric arrays are read, never pickles.

Failures raise :class:`UnsafeFile` with a message fit for a user; callers turn it into a
warning (an array, a summary) or a ``RunFormatError`` (run.json).
"""

from __future__ import annotations

import errno
import math
import os
import re
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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
NUMERIC_KINDS = "biuf"
_MEMBER = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}\.npy")


class UnsafeFile(ValueError):
    """The file may not or cannot be read; the message says which file and why."""


def inside(folder: Path, relative: str) -> Path:
    """``folder / relative`` if it stays inside ``folder`` with links resolved, else refuse."""
    if not relative or relative.startswith(("/", "\\")) or "\\" in relative or "\x00" in relative:
        raise UnsafeFile(f"{relative!r}: not a path inside the run folder")
    if ".." in Path(relative).parts:
        raise UnsafeFile(f"{relative!r}: '..' is not allowed in a run's file names")
    base = folder.resolve()
    target = (folder / relative).resolve()
    if target != base and base not in target.parents:
        raise UnsafeFile(f"{relative}: points outside the run folder (to {target})")
    return target


def _open_regular(path: Path, limit: int, name: str) -> tuple[int, int]:
    """A read-only descriptor of a regular file no larger than ``limit`` and its size."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise UnsafeFile(f"{name}: cannot be opened ({exc.strerror or exc})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeFile(f"{name}: not a regular file (a device, pipe or folder is never read)")
        if info.st_size > limit:
            raise UnsafeFile(f"{name}: {info.st_size / MiB:.1f} MiB, more than the {limit / MiB:.0f} MiB allowed")
    except BaseException:
        os.close(fd)
        raise
    return fd, info.st_size


def read_bytes(folder: Path, relative: str, *, limit: int, truncate: bool = False, start: int = 0) -> bytes:
    """A file's bytes from ``start``. Over ``limit``: an error, or with ``truncate`` the first
    ``limit`` bytes. Raises ``FileNotFoundError`` when it is absent and :class:`UnsafeFile`
    when it may not be read."""
    path = inside(folder, relative)
    fd, size = _open_regular(path, math.inf if truncate else limit, relative)
    with os.fdopen(fd, "rb") as handle:
        handle.seek(start)
        return handle.read(max(0, min(limit, size) - start))  # read(n) reserves n bytes: never more than the file


def read_tail(folder: Path, relative: str, *, nbytes: int) -> bytes:
    """The last ``nbytes`` of a file (a live run's latest lines), under the same rules."""
    path = inside(folder, relative)
    fd, size = _open_regular(path, math.inf, relative)
    with os.fdopen(fd, "rb") as handle:
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
    path = inside(folder, relative)
    fd, size = _open_regular(path, MAX_RUN_ARRAY_BYTES, relative)
    with os.fdopen(fd, "rb") as handle:
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
    if len(shape) > MAX_NDIM or any(not isinstance(n, int) or n < 0 for n in shape):
        raise UnsafeFile(f"{where}: shape {shape} is not allowed")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > MAX_ARRAY_BYTES:
        raise UnsafeFile(f"{where}: shape {shape} needs {nbytes / MiB:.0f} MiB; the limit is "
                         f"{MAX_ARRAY_BYTES / MiB:.0f} MiB per array")
    header = member.tell() if hasattr(member, "tell") else None
    if header is not None and header + nbytes != declared:
        raise UnsafeFile(f"{where}: its header promises {nbytes} bytes but the entry holds {declared - header}")
    budget.take(nbytes, where)
    data = member.read(nbytes)
    if len(data) != nbytes:
        raise UnsafeFile(f"{where}: truncated ({len(data)} of {nbytes} bytes)")
    array = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    return np.array(array)  # own, writable memory in C order
