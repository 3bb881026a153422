"""Runs as zip files: download any run, upload one back, never executing or unpickling it.

An upload is accepted only if every member is a file the run format defines (run.json,
events.jsonl, summary.json, projections.npz, arrays/<task|dtd>_NNN.npz,
checkpoints/task_NNN.safetensors, which only ``prm whatif`` reads, through its own checks), optionally under
one top folder, with no absolute path, no '..', no link, no duplicate or control-character
name, and within the size limits. Each member must be plainly stored or deflated and not
encrypted, its bytes must lie between its own header and the next one, and it must unpack to
exactly the size it declares with the right CRC. It is extracted under a fresh name in the
user's runs folder, marked as uploaded in its run.json (so it is never taken for a running run,
whatever pid it names), and must then load with ``prm.run.load_run`` without a single warning,
or it is refused and removed again.

Every failure, whatever part of the zip reader or the run loader raised it, leaves this module
as one ``UploadError`` with a one-line reason: the app shows exactly that, and needs to catch
nothing else.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import re
import shutil
import stat
import struct
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from explorer.catalog import runs_folder_problem
from prm.run import UPLOADED, load_run, read_meta

MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_EXTRACTED_BYTES = 200 * 1024 * 1024
MAX_MEMBERS = 2000
ALLOWED = re.compile(r"run\.json|events\.jsonl|summary\.json|projections\.npz|arrays/(task|dtd)_[0-9]{3,}\.npz"
                     r"|checkpoints/task_[0-9]{3,}\.safetensors")
"""Every file a run folder may hold; matched whole (``fullmatch``), so no trailing newline slips
by, and with ASCII digits only (``\\d`` would also take '٠٠٠' or fullwidth '０００')."""

METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated"}
"""The compression methods an upload may use: what ``zip_run`` and every common zip tool write.
zipfile could also inflate bzip2 and LZMA, but a run never needs them and LZMA's decoder
allocates whatever dictionary the member's header asks for."""
ENCRYPTED_FLAGS = 0x0001 | 0x0040 | 0x2000
"""General-purpose flag bits of encryption (APPNOTE 4.4.4): traditional, strong, and a masked
central directory."""
PLAIN_FLAGS = 0x0002 | 0x0004 | 0x0008 | 0x0800
"""The flag bits a plain member may carry: the deflate level (bits 1-2), sizes in a trailing
data descriptor (bit 3), UTF-8 names (bit 11). Any other bit is a feature the reader lacks
(patched data, for one) or a reserved one."""
UNREADABLE = (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, NotImplementedError, ValueError)
"""What zipfile, zlib, the file system and the run loader raise on a damaged zip or run
(``RunFormatError`` is a ``ValueError``; ``RecursionError`` a ``RuntimeError``)."""
_LOCAL_HEADER = struct.Struct("<4s22xHH")
"""A local file header up to its name: signature, then the name and extra-field lengths."""


class UploadError(ValueError):
    """The file is not an acceptable zipped run; the message says why."""


def zip_run(folder: Path) -> bytes:
    """The run's files (nothing else) under one top folder named after the run."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(folder).as_posix()
            if path.is_file() and not path.is_symlink() and ALLOWED.fullmatch(rel):
                zf.write(path, f"{folder.name}/{rel}")
    return buffer.getvalue()


def _check_name(info: zipfile.ZipInfo) -> None:
    """Refuse a member name that could leave the run folder, hide as a control character, be
    a link, or name nothing at all ('' or '.')."""
    name = info.filename
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise UploadError(f"control character in a zip member name: {name!r}")
    parts = PurePosixPath(name).parts
    if (not parts or name.startswith(("/", "\\")) or "\\" in name or ".." in parts
            or re.match(r"^[A-Za-z]:", name)):
        raise UploadError(f"unsafe path in zip: {name!r}")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise UploadError(f"links are not allowed in a run zip: {name!r}")


def _check_plain(info: zipfile.ZipInfo) -> None:
    """Refuse, from the central directory alone, a member zipfile would fail on or could not
    check: encrypted, compressed otherwise than stored or deflated, using a feature flag the
    reader lacks, or stored with a compressed size that differs from its size."""
    name = info.filename
    if info.flag_bits & ENCRYPTED_FLAGS:
        raise UploadError(f"{name!r} is encrypted; a run zip holds plain members only")
    if info.flag_bits & ~(ENCRYPTED_FLAGS | PLAIN_FLAGS):
        raise UploadError(f"{name!r} uses an unsupported zip feature (flag bits {info.flag_bits:#06x})")
    if info.compress_type not in METHODS:
        raise UploadError(f"{name!r} uses compression method {info.compress_type}; a run zip holds stored or "
                          "deflated members only")
    if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
        raise UploadError(f"{name!r} is stored, yet its entry declares a compressed size of {info.compress_size} "
                          f"for {info.file_size} bytes")


def _check_layout(data: bytes, zf: zipfile.ZipFile) -> None:
    """Each member's compressed bytes must end before the next member's header (or the central
    directory): a compressed size that runs past it lies, and overlapping members are how a
    small zip unpacks to many copies of the same bytes."""
    infos = sorted(zf.infolist(), key=lambda i: i.header_offset)
    ends = [i.header_offset for i in infos[1:]] + [zf.start_dir]
    for info, limit in zip(infos, ends):
        header = data[info.header_offset:info.header_offset + _LOCAL_HEADER.size]
        if len(header) < _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
            raise UploadError(f"{info.filename!r} has no local header where the zip's directory says")
        _, name_len, extra_len = _LOCAL_HEADER.unpack(header)
        if info.header_offset + _LOCAL_HEADER.size + name_len + extra_len + info.compress_size > limit:
            raise UploadError(f"{info.filename!r} overlaps the next entry: its compressed size "
                              f"({info.compress_size} bytes) runs past it")


def _members(data: bytes, zf: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """Validated members by their path inside the run (top folder stripped)."""
    everything = zf.infolist()
    if len(everything) > MAX_MEMBERS:  # folders count: each costs the reader as much as a file
        raise UploadError(f"the zip file has {len(everything)} entries; a run has at most {MAX_MEMBERS}")
    names = [i.filename for i in everything]
    if len(set(names)) != len(names):
        raise UploadError("the zip file names one member twice")
    for info in everything:
        _check_name(info)
        _check_plain(info)
    _check_layout(data, zf)
    infos = [i for i in everything if not i.is_dir()]
    if not infos:
        raise UploadError("the zip file is empty")
    return _run_files(infos)


def _run_files(infos: list[zipfile.ZipInfo]) -> dict[str, zipfile.ZipInfo]:
    """The file members by their path inside the run: each one a run file, none twice, run.json
    among them, and within the unpacked size limit as declared."""
    tops = {PurePosixPath(i.filename).parts[0] for i in infos}
    strip = len(tops) == 1 and not any(ALLOWED.fullmatch(i.filename) for i in infos)
    out = {}
    for info in infos:
        rel = "/".join(PurePosixPath(info.filename).parts[1:] if strip else PurePosixPath(info.filename).parts)
        if not ALLOWED.fullmatch(rel):
            raise UploadError(f"unexpected file in a run zip: {info.filename!r} (allowed: run.json, events.jsonl, "
                              "summary.json, projections.npz, arrays/task_NNN.npz, arrays/dtd_NNN.npz, "
                              "checkpoints/task_NNN.safetensors)")
        if rel in out:
            raise UploadError(f"the zip names {rel} twice")
        out[rel] = info
    if "run.json" not in out:
        raise UploadError("the zip holds no run.json: it is not a run folder")
    total = sum(i.file_size for i in out.values())
    if total > MAX_EXTRACTED_BYTES:
        raise UploadError(f"the run would take {total / 2**20:.0f} MiB unpacked; the limit is "
                          f"{MAX_EXTRACTED_BYTES / 2**20:.0f} MiB")
    return out


def fresh_folder(root: Path, name: str) -> Path:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-") or "uploaded-run"
    candidate, n = root / stem, 1
    while candidate.exists():
        n += 1
        candidate = root / f"{stem}-{n}"
    return candidate


def extract_run_zip(data: bytes, *, root: Path, name: str) -> Path:
    """Validate and unpack a zipped run into a new folder under ``root``; return it. Raises
    ``UploadError`` only, and then nothing of the upload is left under ``root``."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise UploadError(f"the file is {len(data) / 2**20:.1f} MiB; the limit is {MAX_UPLOAD_BYTES / 2**20:.0f} MiB")
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except UNREADABLE:
        raise UploadError("not a zip file") from None
    try:
        with zf:
            members = _members(data, zf)
            folder = _new_folder(root, name)
            _fill(zf, members, folder)
    except UploadError:
        raise
    except UNREADABLE as exc:
        raise UploadError(f"the zip does not hold a readable run: {exc}") from None
    return folder


def _new_folder(root: Path, name: str) -> Path:
    """A new, empty run folder under ``root`` named after the uploaded file."""
    problem = runs_folder_problem(root)
    if problem:
        raise UploadError(f"cannot create a run folder in {root}: {problem}")
    try:
        root.mkdir(parents=True, exist_ok=True)
        folder = fresh_folder(root, Path(name).stem)
        (folder / "arrays").mkdir(parents=True)
        (folder / "checkpoints").mkdir()
    except OSError as exc:
        raise UploadError(f"cannot create a run folder in {root}: {exc.strerror or exc}") from None
    return folder


def _fill(zf: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo], folder: Path) -> None:
    """Unpack, mark and load the run in ``folder``; on any failure (a Ctrl-C included) the
    folder is removed before the error goes on."""
    try:
        _unpack(zf, members, folder)
        warnings = _mark_uploaded(folder) + list(load_run(folder).warnings)
        if warnings:
            raise UploadError("the run does not load cleanly: " + "; ".join(warnings[:3])
                              + (f" (and {len(warnings) - 3} more)" if len(warnings) > 3 else ""))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _unpack(zf: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo], folder: Path) -> None:
    """Copy each member in small chunks, reading at most one byte more than it declares, and
    require exactly its declared size: the declared sizes were checked against the limit, so
    this bounds what lands on disk, and a member that lies about its size is refused."""
    for rel, info in members.items():
        written = 0
        with zf.open(info) as src, open(folder / rel, "xb") as dst:
            while chunk := src.read(min(2**20, info.file_size + 1 - written)):
                written += len(chunk)
                if written > info.file_size:
                    break
                dst.write(chunk)
        if written != info.file_size:
            raise UploadError(f"{info.filename!r} unpacks to {'more' if written > info.file_size else written} "
                              f"bytes, not the {info.file_size} its zip entry declares")


def _mark_uploaded(folder: Path) -> list[str]:
    """Record the upload in run.json and drop the sender's process identity: its writer ran
    elsewhere, so the run is never 'running' here and Stop has nothing to signal. Returns the
    warnings about the sender's run.json (a field refused, such as a parent link with a NUL):
    run.json is rewritten from what was kept, so the load that follows no longer sees them."""
    problems: list[str] = []
    meta = read_meta(folder, problems)
    for key in ("pid", "pid_start", "host"):
        meta.pop(key)
    meta[UPLOADED] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    (folder / "run.json").write_text(json.dumps(meta, indent=1))
    return problems
