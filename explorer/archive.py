"""Runs as zip files: download any run, upload one back, never executing or unpickling it.

An upload is accepted only if every member is a file the run format defines (run.json,
events.jsonl, summary.json, projections.npz, arrays/<task|dtd>_NNN.npz), optionally under
one top folder, with no absolute path, no '..', no link, and within the size limits. It is
extracted under a fresh name in the user's runs folder and must then load with
``prm.runs.load_run`` (which opens .npz with allow_pickle=False), or it is removed again.
"""

from __future__ import annotations

import io
import re
import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

from prm.runs import RunFormatError, load_run

MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_EXTRACTED_BYTES = 200 * 1024 * 1024
MAX_MEMBERS = 2000
ALLOWED = re.compile(r"^(run\.json|events\.jsonl|summary\.json|projections\.npz|arrays/(task|dtd)_\d{3,}\.npz)$")


class UploadError(ValueError):
    """The file is not an acceptable zipped run; the message says why."""


def zip_run(folder: Path) -> bytes:
    """The run's files (nothing else) under one top folder named after the run."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(folder).as_posix()
            if path.is_file() and not path.is_symlink() and ALLOWED.match(rel):
                zf.write(path, f"{folder.name}/{rel}")
    return buffer.getvalue()


def _members(zf: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """Validated members by their path inside the run (top folder stripped)."""
    infos = [i for i in zf.infolist() if not i.is_dir()]
    if not infos:
        raise UploadError("the zip file is empty")
    if len(infos) > MAX_MEMBERS:
        raise UploadError(f"the zip file has {len(infos)} files; a run has at most {MAX_MEMBERS}")
    for info in zf.infolist():
        name = info.filename
        parts = PurePosixPath(name).parts
        if name.startswith(("/", "\\")) or "\\" in name or ".." in parts or re.match(r"^[A-Za-z]:", name):
            raise UploadError(f"unsafe path in zip: {name!r}")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise UploadError(f"links are not allowed in a run zip: {name!r}")
    tops = {PurePosixPath(i.filename).parts[0] for i in infos}
    strip = len(tops) == 1 and not any(ALLOWED.match(i.filename) for i in infos)
    out = {}
    for info in infos:
        rel = "/".join(PurePosixPath(info.filename).parts[1:] if strip else PurePosixPath(info.filename).parts)
        if not ALLOWED.match(rel):
            raise UploadError(f"unexpected file in a run zip: {info.filename!r} (allowed: run.json, events.jsonl, "
                              "summary.json, projections.npz, arrays/task_NNN.npz, arrays/dtd_NNN.npz)")
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
    """Validate and unpack a zipped run into a new folder under ``root``; return it."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise UploadError(f"the file is {len(data) / 2**20:.1f} MiB; the limit is {MAX_UPLOAD_BYTES / 2**20:.0f} MiB")
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise UploadError("not a zip file") from None
    with zf:
        members = _members(zf)
        root.mkdir(parents=True, exist_ok=True)
        folder = fresh_folder(root, Path(name).stem)
        (folder / "arrays").mkdir(parents=True)
        try:
            budget = MAX_EXTRACTED_BYTES
            for rel, info in members.items():
                with zf.open(info) as src, open(folder / rel, "wb") as dst:
                    chunk = src.read(budget + 1)  # never trust the declared size alone
                    budget -= len(chunk)
                    if budget < 0:
                        raise UploadError("the run is larger unpacked than its zip declares")
                    dst.write(chunk)
            load_run(folder)
        except (UploadError, RunFormatError, zipfile.BadZipFile, OSError) as exc:
            shutil.rmtree(folder, ignore_errors=True)
            if isinstance(exc, UploadError):
                raise
            raise UploadError(f"the zip does not hold a readable run: {exc}") from None
    return folder
