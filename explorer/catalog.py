"""Which runs exist: the rows of the run picker, read cheaply from each run folder.

A finished run's ``summary.json`` has everything the picker shows, so only runs without one
(running, killed, broken) are loaded in full. Nothing here touches Streamlit; the app
caches :func:`describe` on :func:`fingerprint`, which changes whenever a run moves on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from prm.runs import RunFormatError, load_run, read_meta, summarise
from prm.runs import writer_alive

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_runs"


@dataclass(frozen=True, kw_only=True)
class RunEntry:
    key: str  # what the URL holds: the path relative to the repository, or absolute
    path: Path
    name: str
    sequence: str | None
    method: str | None
    seed: int | None
    n_tasks: int | None
    tasks_done: int
    acc: float | None
    status: str  # finished | running | stopped | failed | unreadable
    started: str | None
    problem: str | None = None

    @property
    def label(self) -> str:
        if self.status == "unreadable":
            return f"{self.name} · unreadable"
        acc = "–" if self.acc is None else f"{self.acc:.3f}"
        return f"{self.sequence} · {self.method} · s{self.seed} · Acc {acc} · {self.status} ({self.name})"


def key_of(folder: Path) -> str:
    folder = folder.resolve()
    try:
        return str(folder.relative_to(ROOT))
    except ValueError:
        return str(folder)


def resolve(key: str) -> Path:
    path = Path(key)
    return path if path.is_absolute() else ROOT / path


def candidate_folders(root: Path) -> list[Path]:
    """Sub-folders that look like runs (run.json or events.jsonl), newest first. A folder
    with an event log but no run.json is listed too, so that it can say what is wrong."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and ((p / "run.json").is_file() or (p / "events.jsonl").is_file())]

    def stamp(p: Path) -> float:
        marker = p / "run.json" if (p / "run.json").is_file() else p / "events.jsonl"
        return marker.stat().st_mtime

    return sorted(found, key=stamp, reverse=True)


def fingerprint(folder: Path) -> tuple:
    """Changes whenever what the picker shows may change: new events, a summary, a writer
    that died without a closing record."""
    parts: list = [str(folder)]
    for name in ("run.json", "events.jsonl", "summary.json"):
        try:
            st = (folder / name).stat()
            parts.append((st.st_mtime_ns, st.st_size))
        except OSError:
            parts.append(None)
    try:
        parts.append(writer_alive(json.loads((folder / "run.json").read_text())))
    except (OSError, ValueError):
        parts.append(False)
    return tuple(parts)


def describe(folder: Path) -> RunEntry:
    base = dict(key=key_of(folder), path=folder, name=folder.name)
    try:
        meta = read_meta(folder)
    except RunFormatError as exc:
        return RunEntry(**base, sequence=None, method=None, seed=None, n_tasks=None, tasks_done=0, acc=None,
                        status="unreadable", started=None, problem=str(exc))
    summary = None
    if (folder / "summary.json").is_file():
        try:
            summary = json.loads((folder / "summary.json").read_text())
        except ValueError:
            summary = None
    if not isinstance(summary, dict) or summary.get("status") in (None, "running"):
        summary = summarise(load_run(folder))
    cfg = meta.get("config", {})
    return RunEntry(**base, sequence=summary.get("sequence") or cfg.get("sequence"),
                    method=summary.get("method") or cfg.get("method"), seed=meta.get("seed"),
                    n_tasks=summary.get("n_tasks"), tasks_done=summary.get("tasks_done") or 0,
                    acc=summary.get("acc"), status=summary.get("status", "failed"), started=meta.get("started_at"))


def default_key(entries: list[RunEntry]) -> str | None:
    """The run the app opens on: the bundled PRM run on the mixed sequence when present."""
    preferred = ["sample_runs/digits-mixed-prm-s0", "sample_runs/digits-writers-prm-s0",
                 "sample_runs/digits-classes-prm-s0"]
    keys = [e.key for e in entries]
    for key in preferred:
        if key in keys:
            return key
    readable = [e.key for e in entries if e.status != "unreadable"]
    return (readable or keys or [None])[0]
