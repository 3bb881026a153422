"""Runs as zip files: download any run, upload one back, never executing or unpickling it.

An upload is accepted only if every member is a file the run format defines (run.json,
events.jsonl, summary.json, projections.npz, arrays/<task|dtd>_NNN.npz,
checkpoints/task_NNN.safetensors, which only ``prm whatif`` reads, through its own checks), optionally under
one top folder, with no absolute path, no '..', no link, no duplicate or control-character
name, and within the size limits (checked while unpacking, not only as declared). It is
extracted under a fresh name in the user's runs folder, marked as uploaded in its run.json
(so it is never taken for a running run, whatever pid it names), and must then load with
``prm.runs.load_run`` without a single warning, or it is refused and removed again.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import re
import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

from explorer.catalog import runs_folder_problem
from prm.runs import UPLOADED, RunFormatError, load_run, read_meta

MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_EXTRACTED_BYTES = 200 * 1024 * 1024
MAX_MEMBERS = 2000
ALLOWED = re.compile(r"run\.json|events\.jsonl|summary\.json|projections\.npz|arrays/(task|dtd)_\d{3,}\.npz"
                     r"|checkpoints/task_\d{3,}\.safetensors")
"""Every file a run folder may hold; matched whole (``fullmatch``), so no trailing newline slips by."""


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


def _members(zf: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """Validated members by their path inside the run (top folder stripped)."""
    everything = zf.infolist()
    if len(everything) > MAX_MEMBERS:  # folders count: each costs the reader as much as a file
        raise UploadError(f"the zip file has {len(everything)} entries; a run has at most {MAX_MEMBERS}")
    names = [i.filename for i in everything]
    if len(set(names)) != len(names):
        raise UploadError("the zip file names one member twice")
    infos = [i for i in everything if not i.is_dir()]
    if not infos:
        raise UploadError("the zip file is empty")
    for info in everything:
        name = info.filename
        if any(ord(c) < 32 or ord(c) == 127 for c in name):
            raise UploadError(f"control character in a zip member name: {name!r}")
        parts = PurePosixPath(name).parts
        if name.startswith(("/", "\\")) or "\\" in name or ".." in parts or re.match(r"^[A-Za-z]:", name):
            raise UploadError(f"unsafe path in zip: {name!r}")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise UploadError(f"links are not allowed in a run zip: {name!r}")
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
    """Validate and unpack a zipped run into a new folder under ``root``; return it."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise UploadError(f"the file is {len(data) / 2**20:.1f} MiB; the limit is {MAX_UPLOAD_BYTES / 2**20:.0f} MiB")
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, EOFError):
        raise UploadError("not a zip file") from None
    with zf:
        try:
            members = _members(zf)
        except (zipfile.BadZipFile, ValueError) as exc:
            raise UploadError(f"not a readable zip file ({exc})") from None
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
        try:
            _unpack(zf, members, folder)
            _mark_uploaded(folder)
            run = load_run(folder)
            if run.warnings:
                raise UploadError("the run does not load cleanly: " + "; ".join(run.warnings[:3])
                                  + (f" (and {len(run.warnings) - 3} more)" if len(run.warnings) > 3 else ""))
        except BaseException as exc:
            shutil.rmtree(folder, ignore_errors=True)
            if isinstance(exc, UploadError):
                raise
            if isinstance(exc, (RunFormatError, zipfile.BadZipFile, OSError, ValueError, EOFError)):
                raise UploadError(f"the zip does not hold a readable run: {exc}") from None
            raise
    return folder


def _unpack(zf: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo], folder: Path) -> None:
    """Copy each member in small chunks against one budget: the declared sizes are checked
    already, and this holds even if a member inflates past what it declares."""
    budget = MAX_EXTRACTED_BYTES
    for rel, info in members.items():
        with zf.open(info) as src, open(folder / rel, "xb") as dst:
            while chunk := src.read(min(2**20, budget + 1)):
                budget -= len(chunk)
                if budget < 0:
                    raise UploadError("the run is larger unpacked than its zip declares")
                dst.write(chunk)


def _mark_uploaded(folder: Path) -> None:
    """Record the upload in run.json and drop the sender's process identity: its writer ran
    elsewhere, so the run is never 'running' here and Stop has nothing to signal."""
    meta = read_meta(folder)
    for key in ("pid", "pid_start", "host"):
        meta.pop(key)
    meta[UPLOADED] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    (folder / "run.json").write_text(json.dumps(meta, indent=1))
