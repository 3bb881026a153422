"""The run folder: one writer appends what the engine emits; one loader reads any run back.

Layout of a run folder (schema version ``SCHEMA``)::

    run.json            config, schema, seed, library versions, start time, writer pid/host
    events.jsonl        append-only event log, one JSON object a line, flushed per event
    arrays/task_007.npz per task: final embedding, mask at smax, accumulated and protecting
                        masks, embedding trajectory (one array per masked layer)
    arrays/dtd_007.npz  per DTD step: the embeddings X-means clustered, the DTD trajectory
    projections.npz     2-D PCA/UMAP coordinates of the embeddings per layer (at run end)
    summary.json        Acc, BWT, timings, status (at run end)

Only JSON and ``.npz`` opened with ``allow_pickle=False`` are ever read. ``load_run`` reads a
finished, running, stopped, failed or killed run: a truncated last line, a corrupt line or a
missing array file gives a partial run with warnings, never an exception; a folder that is
not a run, or one from a newer schema, gives a ``RunFormatError`` that says so. Live views
read the same files through :class:`EventTail` and fold them with :func:`apply_events`.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import platform
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from prm import metrics
from prm.config import RunConfig
from prm.events import STATUSES, EpochEnd, Event, RunEnd, TaskArrays, to_record

SCHEMA = 1


class RunFormatError(ValueError):
    """The folder is not a readable run (missing/corrupt run.json, newer schema, ...)."""


def _versions() -> dict[str, str]:
    import sklearn
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "scikit-learn": sklearn.__version__}


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, allow_nan=False))
    os.replace(tmp, path)


def _jsonable(value: Any, digits: int | None = None) -> Any:
    """Replace non-finite floats by None, so every line is strict JSON; with ``digits``, keep
    that many significant digits (epoch lines: 5 is more than any accuracy, loss or timing
    means, at a much smaller log; BIC values in DTD records keep full precision)."""
    if isinstance(value, float):
        if not np.isfinite(value):
            return None
        return value if digits is None else float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {k: _jsonable(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, digits) for v in value]
    return value


class RunWriter:
    """Appends a run's events to its folder; the engine's ``emit`` in every recorded run.

    Arrays are written to a temporary file and renamed, and each line is flushed, so a reader
    never sees half an array and a crash loses at most the line being written.
    """

    def __init__(self, folder: str | Path, *, config: RunConfig, finalize: bool = True) -> None:
        self.folder = Path(folder)
        if self.folder.exists() and any(self.folder.iterdir()):
            raise FileExistsError(f"run folder {self.folder} already exists and is not empty")
        (self.folder / "arrays").mkdir(parents=True, exist_ok=True)
        self.finalize = finalize
        meta = {
            "schema": SCHEMA,
            "name": self.folder.name,
            "config": config.to_dict(),
            "seed": config.seed,
            "versions": _versions(),
            "started_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "pid": os.getpid(),
            "pid_start": _process_start(os.getpid()),
            "host": socket.gethostname(),
        }
        _write_json_atomic(self.folder / "run.json", meta)
        self._log = open(self.folder / "events.jsonl", "a", encoding="utf-8")

    def __call__(self, event: Event) -> None:
        if isinstance(event, TaskArrays):
            name = f"arrays/{event.kind}_{event.task:03d}.npz"
            tmp = self.folder / (name + ".tmp.npz")
            np.savez_compressed(tmp, **event.arrays)
            os.replace(tmp, self.folder / name)
            record = {"type": event.type, "task": event.task, "kind": event.kind, "file": name}
        else:
            record = to_record(event)
        digits = 5 if isinstance(event, EpochEnd) else None
        self._log.write(json.dumps(_jsonable(record, digits), allow_nan=False) + "\n")
        self._log.flush()
        if isinstance(event, RunEnd):
            self._log.close()
            if self.finalize:
                finalize_run(self.folder)

    def close(self) -> None:
        if not self._log.closed:
            self._log.close()


# ----------------------------------------------------------------------------- reading


@dataclass(frozen=True, kw_only=True)
class RunState:
    """Everything the event log says, folded; built only by :func:`apply_events`."""

    config: dict[str, Any] = field(default_factory=dict)
    sequence: str = ""
    tasks: tuple[dict[str, Any], ...] = ()
    oracle_transfer: tuple[tuple[float, ...], ...] | None = None
    epochs: tuple[dict[str, Any], ...] = ()
    dtd: dict[int, dict[str, Any]] = field(default_factory=dict)
    task_ends: dict[int, dict[str, Any]] = field(default_factory=dict)
    array_files: dict[tuple[str, int], str] = field(default_factory=dict)
    end: dict[str, Any] | None = None

    @property
    def n_tasks(self) -> int:
        return len(self.tasks)

    @property
    def tasks_done(self) -> int:
        return len(self.task_ends)

    def accuracy_matrix(self, split: str = "test") -> np.ndarray:
        """R[j, i] as a (T, T) float array, NaN where unknown."""
        key = {"test": "test_acc", "val": "val_acc"}[split]
        R = np.full((self.n_tasks, self.n_tasks), np.nan)
        for j, record in self.task_ends.items():
            row = [np.nan if v is None else v for v in record[key]]
            R[j, : len(row)] = row
        return R

    def current(self) -> dict[str, Any] | None:
        """The latest epoch record: where a running sequence is now."""
        return self.epochs[-1] if self.epochs else None


def apply_events(state: RunState, records: Iterable[dict[str, Any]]) -> RunState:
    """Fold event records (parsed JSON lines) into a new state; ``state`` is not changed."""
    new = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
    epochs = list(new["epochs"])
    dtd, task_ends, array_files = dict(new["dtd"]), dict(new["task_ends"]), dict(new["array_files"])
    for record in records:
        kind = record.get("type")
        if kind == "run_started":
            oracle = record.get("oracle_transfer")
            new.update(config=record["config"], sequence=record["sequence"], tasks=tuple(record["tasks"]),
                       oracle_transfer=None if oracle is None else tuple(tuple(row) for row in oracle))
        elif kind == "epoch":
            epochs.append(record)
        elif kind == "dtd":
            dtd[record["task"]] = record
        elif kind == "task_end":
            task_ends[record["task"]] = record
        elif kind == "arrays":
            array_files[(record["kind"], record["task"])] = record["file"]
        elif kind == "run_end":
            new["end"] = record
    new.update(epochs=tuple(epochs), dtd=dtd, task_ends=task_ends, array_files=array_files)
    return RunState(**new)


def parse_lines(text: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Parse JSON lines; return the records and a warning per line that could not be read."""
    records, problems = [], []
    lines = text.split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or "type" not in record:
                raise ValueError("not an event object")
            records.append(record)
        except ValueError:
            last = number == len(lines) or all(not rest.strip() for rest in lines[number:])
            what = "truncated last line" if last else f"corrupt line {number}"
            problems.append(f"events.jsonl: {what} skipped")
    return records, problems


class EventTail:
    """Reads the complete lines appended to ``events.jsonl`` since the last call (live runs)."""

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / "events.jsonl"
        self.offset = 0

    def read_new(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            chunk = handle.read()
        end = chunk.rfind(b"\n")
        if end < 0:
            return []
        self.offset += end + 1
        records, _ = parse_lines(chunk[: end + 1].decode("utf-8", errors="replace"))
        return records


@dataclass(frozen=True, kw_only=True)
class Run:
    """A run read back from its folder."""

    path: Path
    meta: dict[str, Any]
    state: RunState
    status: str
    arrays: dict[tuple[str, int], dict[str, np.ndarray]]
    projections: dict[str, np.ndarray]
    summary: dict[str, Any] | None
    warnings: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config(self) -> RunConfig:
        return RunConfig.from_dict(self.meta["config"])

    def task_arrays(self, task: int, kind: str = "task") -> dict[str, np.ndarray]:
        return self.arrays.get((kind, task), {})


def read_meta(folder: str | Path) -> dict[str, Any]:
    folder = Path(folder)
    if not folder.is_dir():
        raise RunFormatError(f"{folder}: no such run folder")
    path = folder / "run.json"
    if not path.exists():
        raise RunFormatError(f"{folder}: not a run folder (no run.json)")
    try:
        meta = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise RunFormatError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("schema"), int) or "config" not in meta:
        raise RunFormatError(f"{path}: missing schema or config")
    if meta["schema"] > SCHEMA:
        raise RunFormatError(
            f"{folder}: written with run schema {meta['schema']}, this version reads up to {SCHEMA}; "
            "upgrade prm-explorer to open it")
    return meta


def _process_start(pid: int) -> int | None:
    """The kernel's start time of a process (Linux /proc), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def writer_alive(meta: dict[str, Any]) -> bool:
    """Is the process that writes this run still running (same host, same pid, same start)?"""
    pid = meta.get("pid")
    if meta.get("host") != socket.gethostname() or not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError, OSError):
        return False
    started = meta.get("pid_start")
    return started is None or _process_start(pid) in (None, started)


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def load_run(folder: str | Path) -> Run:
    """Read any run folder; see the module docstring for what is tolerated and what is not."""
    folder = Path(folder)
    meta = read_meta(folder)
    problems: list[str] = []
    events_path = folder / "events.jsonl"
    text = events_path.read_text(encoding="utf-8", errors="replace") if events_path.exists() else ""
    if not events_path.exists():
        problems.append("events.jsonl is missing: nothing was recorded")
    records, bad = parse_lines(text)
    problems += bad
    state = apply_events(RunState(), records)
    if state.end is not None and state.end.get("status") in STATUSES:
        status = state.end["status"]
    elif writer_alive(meta):
        status = "running"
    else:
        status = "failed"
        problems.append("the run ended without a closing record (the process was killed or crashed)")
    arrays: dict[tuple[str, int], dict[str, np.ndarray]] = {}
    for key, name in sorted(state.array_files.items()):
        try:
            arrays[key] = _load_npz(folder / name)
        except Exception as exc:  # untrusted file: any failure is a warning
            problems.append(f"{name}: unreadable ({type(exc).__name__}); its arrays are missing")
    projections: dict[str, np.ndarray] = {}
    if (folder / "projections.npz").exists():
        try:
            projections = _load_npz(folder / "projections.npz")
        except Exception:  # untrusted file: any failure is a warning
            problems.append("projections.npz: unreadable; projections will be computed on demand")
    summary = None
    if (folder / "summary.json").exists():
        try:
            summary = json.loads((folder / "summary.json").read_text())
        except ValueError:
            problems.append("summary.json: not valid JSON; ignored")
    return Run(path=folder, meta=meta, state=state, status=status, arrays=arrays,
               projections=projections, summary=summary, warnings=tuple(problems))


# ----------------------------------------------------------------------------- finishing


def masked_layers(run: Run) -> int:
    """How many masked layers the run's network has (0 for the unmasked methods)."""
    from prm.methods import STRATEGIES

    strategy = STRATEGIES.get(run.state.config.get("method") or run.meta["config"]["method"])
    return len(run.meta["config"]["model"]["hidden"]) if strategy is not None and strategy.masked else 0


def embedding_points(run: Run, layer: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every embedding of ``layer`` worth plotting: (points, task index, is-DTD flag).

    Rows are each learnt task's final embedding, then each DTD step's embedding of its new
    task (the one X-means actually saw), so every step shares one coordinate system.
    """
    points, tasks, is_dtd = [], [], []
    for (kind, task), data in sorted(run.arrays.items(), key=lambda item: (item[0][0] != "task", item[0][1])):
        key = f"embedding_l{layer}" if kind == "task" else f"embeddings_l{layer}"
        if key not in data:
            continue
        points.append(data[key] if kind == "task" else data[key][task])
        tasks.append(task)
        is_dtd.append(kind == "dtd")
    if not points:
        return np.zeros((0, 0)), np.zeros(0, dtype=int), np.zeros(0, dtype=bool)
    return np.stack(points), np.array(tasks), np.array(is_dtd)


def summarise(run: Run) -> dict[str, Any]:
    R = run.state.accuracy_matrix("test")
    done = metrics.completed_rows(R)
    summary: dict[str, Any] = {
        "name": run.name, "status": run.status, "method": run.state.config.get("method"),
        "sequence": run.state.sequence, "seed": run.meta.get("seed"), "n_tasks": run.state.n_tasks,
        "tasks_done": done, "acc": None, "bwt": None, "acc_val": None,
        "seconds": (run.state.end or {}).get("seconds"),
        "phase_seconds": {}, "capacity": None,
    }
    if done:
        summary.update(acc=metrics.average_accuracy(R), bwt=metrics.backward_transfer(R),
                       acc_val=metrics.average_accuracy(run.state.accuracy_matrix("val")))
        totals: dict[str, float] = {}
        for record in run.state.task_ends.values():
            for phase, sec in record["seconds"].items():
                totals[phase] = totals.get(phase, 0.0) + sec
        summary["phase_seconds"] = totals
        summary["capacity"] = run.state.task_ends[done - 1].get("capacity")
    return summary


def finalize_run(folder: str | Path, *, seed: int | None = None) -> dict[str, Any]:
    """Write ``projections.npz`` and ``summary.json`` for a run that has ended."""
    from prm.projection import project

    run = load_run(folder)
    seed = run.meta.get("seed", 0) if seed is None else seed
    out: dict[str, np.ndarray] = {}
    for layer in range(masked_layers(run)):
        points, tasks, is_dtd = embedding_points(run, layer)
        if len(points) == 0:
            continue
        out[f"task_l{layer}"], out[f"dtd_l{layer}"] = tasks, is_dtd
        for method in run.meta["config"]["record"]["projections"]:
            coords, used = project(points, method=method, seed=seed)
            out[f"{method}_l{layer}"] = coords.astype(np.float32)
    if out:
        tmp = Path(folder) / "projections.tmp.npz"
        np.savez_compressed(tmp, **out)
        os.replace(tmp, Path(folder) / "projections.npz")
    summary = summarise(run)
    _write_json_atomic(Path(folder) / "summary.json", _jsonable(summary))
    return summary


def list_runs(root: str | Path) -> list[Path]:
    """Run folders directly under ``root`` (those with a run.json), newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if (p / "run.json").is_file()]
    return sorted(found, key=lambda p: (p / "run.json").stat().st_mtime, reverse=True)


__all__ = ["SCHEMA", "Run", "RunFormatError", "RunState", "RunWriter", "EventTail", "apply_events",
           "finalize_run", "list_runs", "load_run", "masked_layers", "writer_alive", "parse_lines", "read_meta", "summarise"]
