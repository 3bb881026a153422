"""The run folder: one writer appends what the engine emits; one loader reads any run back.

Layout of a run folder (schema version ``SCHEMA``)::

    run.json            config, schema, seed, library versions, start time, writer pid/host
    events.jsonl        append-only event log, one JSON object a line, flushed per event
    arrays/task_007.npz per task: final embedding, mask at smax, accumulated and protecting
                        masks, embedding trajectory (one array per masked layer)
    arrays/dtd_007.npz  per DTD step: the embeddings X-means clustered, the DTD trajectory
    checkpoints/task_007.safetensors
                        masked methods: the state task 7 starts from (``prm.checkpoint``),
                        which ``python -m prm whatif`` resumes; run.json's ``parent`` names
                        the run a what-if run was resumed from
    projections.npz     2-D PCA/UMAP coordinates of the embeddings per layer (at run end)
    summary.json        Acc, BWT, timings, status (at run end)

A run folder is untrusted input (it may be uploaded, copied or damaged). Only JSON and
numeric ``.npz`` arrays are read, through :mod:`prm.safeio` (regular files inside the folder,
sizes checked before anything is allocated, never a pickle); every JSON document is parsed
by :func:`prm.records.load_json` (a number no float can hold refuses its record), every
event record into its typed event by :mod:`prm.records` (types and ranges checked), and
every array is checked against the run's shapes. ``load_run`` reads a finished, running, stopped, failed or
killed run: a truncated or corrupt line, a record out of range, a missing or refused array
file or a bad summary gives a partial run with warnings; a folder that is not a run, or one
from a newer schema, raises ``RunFormatError``, and nothing else is ever raised. Live views
read the same files through :class:`EventTail` and fold them with :func:`apply_events`.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import re
import socket
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from prm import metrics, safeio
from prm.config import ConfigError, RunConfig
from prm.events import (ArraysWritten, DTDResult, EpochEnd, Event, RunEnd, RunStarted, TaskArrays, TaskCheckpoint, TaskEnd,
                        TransferTest, to_record)
from prm.methods import STRATEGIES
from prm.records import (BadRecord, check_strings, check_text, load_json, parse_event, parse_record, parse_started,
                         parse_summary)

SCHEMA = 1


class RunFormatError(ValueError):
    """The folder is not a readable run (missing/corrupt run.json, newer schema, ...)."""


def _versions() -> dict[str, str]:
    """The libraries' versions and the engine's own (``"prm"``: ``prm.__version__``), which
    says whether two runs' times compare (see ``Run.engine_version``)."""
    import sklearn
    import torch

    from prm import __version__

    return {"prm": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "scikit-learn": sklearn.__version__}


def _replace_atomic(path: Path, write: Callable[[Path], None], suffix: str = ".tmp") -> None:
    """Write through a temporary file renamed into place, so a reader never sees half a file;
    the temporary file is removed when the write fails (a full disk leaves nothing behind),
    and the write's own error is the one raised."""
    tmp = path.with_name(path.name + suffix)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise


def _write_json_atomic(path: Path, data: Any) -> None:
    text = json.dumps(data, indent=1, allow_nan=False)
    _replace_atomic(path, lambda tmp: tmp.write_text(text))


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

    Arrays are written to a temporary file and renamed, and each line is written whole or cut
    back (:meth:`_append`), so a reader never sees half an array and the log always ends on a
    complete record, even when the disk fills. With ``finalize`` (the app, scripts) the
    ``run_end`` event also writes the summary and the projections (:func:`finalize_run`); the
    CLI passes False and writes them itself after the run, so that its progress bar does not
    sit at 100% through UMAP's compile.

    The writer remembers every file and folder it created, by name, so that :meth:`discard`
    removes exactly those: never a file someone else put into the folder, never a parent
    folder that meanwhile holds another run. A constructor that fails discards what it made.
    """

    def __init__(self, folder: str | Path, *, config: RunConfig, finalize: bool = True,
                 parent: "RunParent | None" = None) -> None:
        self.folder = Path(folder)
        if self.folder.exists() and any(self.folder.iterdir()):
            raise FileExistsError(f"run folder {self.folder} already exists and is not empty")
        self.finalize = finalize
        self.ended = False
        """True once the ``run_end`` line is written: what follows (summary, projections) only
        adds to a run whose status is settled."""
        self.status: str | None = None
        """The status in the ``run_end`` line written, None while there is none."""
        self.records = 0
        """Whole records in the event log: 0 means nothing of the run was recorded."""
        self._files: list[Path] = []
        self._folders: list[Path] = []  # outermost first
        self._log: Any = None
        self._size = 0  # bytes of whole records in the log
        try:
            self._make_folder(self.folder / "arrays")
            _write_json_atomic(self.folder / "run.json", self._meta(config, parent))
            self._files.append(self.folder / "run.json")
            self._log = open(self.folder / "events.jsonl", "xb", buffering=0)
            self._files.append(self.folder / "events.jsonl")
        except BaseException:
            self.discard()
            raise

    def _meta(self, config: RunConfig, parent: "RunParent | None") -> dict[str, Any]:
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
        if parent is not None:
            meta["parent"] = parent.to_dict()
        return meta

    def _make_folder(self, folder: Path) -> None:
        """``mkdir -p``, noting each folder this call made (one another process made in the
        meantime is not ours)."""
        missing = []
        for path in (folder, *folder.parents):
            if path.exists():
                break
            missing.append(path)
        for path in reversed(missing):
            try:
                path.mkdir()
            except FileExistsError:
                if not path.is_dir():
                    raise
                continue
            self._folders.append(path)

    def _write_file(self, name: str, write: Callable[[Path], None], suffix: str = ".tmp") -> None:
        path = self.folder / name
        self._make_folder(path.parent)
        _replace_atomic(path, write, suffix)
        self._files.append(path)

    def __call__(self, event: Event) -> None:
        if isinstance(event, TaskCheckpoint):  # a file, not a log line (prm.checkpoint)
            from prm.checkpoint import encode

            data = encode(event)
            self._write_file(event.file_name(event.task), lambda tmp: tmp.write_bytes(data))
            return
        if isinstance(event, TaskArrays):
            written = ArraysWritten(task=event.task, kind=event.kind, file=ArraysWritten.file_name(event.kind, event.task))
            self._write_file(written.file, lambda tmp: np.savez_compressed(tmp, **event.arrays), ".tmp.npz")
            record = to_record(written)
        else:
            record = to_record(event)
        self._append(_jsonable(record, 5 if isinstance(event, EpochEnd) else None))
        if isinstance(event, RunEnd):
            self._end(event.status)

    def _append(self, record: dict[str, Any]) -> None:
        """Write one record as one line, whole or not at all: a write that fails part-way (a
        full disk, Ctrl-C) is cut back to the last whole record before the error goes on, so
        the log never ends on half a line and a later line never follows a fragment."""
        data = memoryview((json.dumps(record, allow_nan=False) + "\n").encode())
        try:
            while data:
                written = self._log.write(data)
                if not written:
                    raise OSError(f"{self.folder / 'events.jsonl'}: no byte of the record could be written")
                data = data[written:]
        except BaseException:
            try:  # back to the end of the last whole record: the next line starts there
                self._log.seek(self._size)
                self._log.truncate()
            except OSError:
                pass  # the reader reports a truncated last line
            raise
        self._size = self._log.tell()
        self.records += 1

    def _end(self, status: str) -> None:
        self._log.close()
        self.ended, self.status = True, status
        if self.finalize:
            finalize_run(self.folder)

    def close(self, *, error: BaseException | None = None) -> None:
        """Close the log. Given the ``error`` that stopped the run (a full disk), a log that
        has records but no closing line gets a short 'failed' one naming it, so the run reads
        as failed at once rather than as running until this process exits. If even that line
        does not fit, the log still ends on a whole record, and the run reads as failed (no
        closing record) once the process has exited."""
        if self._log is None or self._log.closed:
            return
        if error is not None and self.records and not self.ended:
            try:
                self._append(to_record(RunEnd(status="failed", seconds=None,
                                              error=f"the run could not be written: {str(error)[:500]}")))
                self._end("failed")
            except OSError:
                pass
        self._log.close()

    def discard(self) -> bool:
        """Remove what this writer created and nothing else: its files by name, then the
        folders it made, innermost first and only while empty (``os.rmdir``); the first folder
        that holds something else stops it, since every folder above holds that too. Returns
        whether the run folder is gone."""
        if self._log is not None:
            self._log.close()
        for path in self._files:
            try:
                path.unlink(missing_ok=True)
            except OSError:
                pass
        for folder in reversed(self._folders):
            try:
                os.rmdir(folder)
            except OSError:
                break
        return not self.folder.exists()


# ----------------------------------------------------------------------------- reading

MAX_LINE_CHARS = 16 * safeio.MiB
"""The longest event line read; a real one is under 100 kB (a 1000-task oracle matrix, the
largest possible, under 10 MB)."""
MAX_SKIP_MESSAGES = 20
"""Skipped records beyond this are counted, not each described (a log of garbage would
otherwise drown the page in warnings)."""


@dataclass(frozen=True, kw_only=True)
class RunState:
    """Everything the event log says, as typed events; built only by :func:`apply_events`.

    ``skipped`` says why records were left out (wrong types or ranges, out of order, before
    ``run_started`` or after ``run_end``); ``n_skipped`` counts them all.
    """

    started: RunStarted | None = None
    epochs: tuple[EpochEnd, ...] = ()
    dtd: dict[int, DTDResult] = field(default_factory=dict)
    transfer: dict[int, TransferTest] = field(default_factory=dict)
    task_ends: dict[int, TaskEnd] = field(default_factory=dict)
    array_files: dict[tuple[str, int], str] = field(default_factory=dict)
    end: RunEnd | None = None
    skipped: tuple[str, ...] = ()
    n_skipped: int = 0

    @property
    def config(self) -> dict[str, Any]:
        return self.started.config if self.started else {}

    @property
    def sequence(self) -> str:
        return self.started.sequence if self.started else ""

    @property
    def tasks(self) -> Sequence[dict[str, Any]]:
        return self.started.tasks if self.started else ()

    @property
    def oracle_transfer(self) -> list[list[float]] | None:
        return self.started.oracle_transfer if self.started else None

    @property
    def n_tasks(self) -> int:
        return len(self.started.tasks) if self.started else 0

    @property
    def tasks_done(self) -> int:
        return len(self.task_ends)

    def accuracy_matrix(self, split: str = "test") -> np.ndarray:
        """R[j, i] as a (T, T) float array, NaN where unknown."""
        R = np.full((self.n_tasks, self.n_tasks), np.nan)
        for j, record in self.task_ends.items():
            row = record.test_acc if split == "test" else record.val_acc
            R[j] = [np.nan if v is None else v for v in row]
        return R

    def task_seconds(self) -> dict[str, np.ndarray]:
        """Seconds spent on each learnt task, per timing phase (``train``, ``dtd``, ``eval``,
        CAT's ``transfer`` and ``reference``): arrays of length ``tasks_done``, 0 where a task
        had no such phase. Their sum per task is the time per task of the paper's Figure 3."""
        done = sorted(self.task_ends)
        phases = sorted({p for t in done for p in self.task_ends[t].seconds})
        return {p: np.array([self.task_ends[t].seconds.get(p, 0.0) for t in done]) for p in phases}

    def calls(self, layer: int = -1) -> dict[int, tuple[str, list[int]]]:
        """Every similarity decision of the run: task -> (who decided, earlier tasks called
        dissimilar). PRM and its ablations: DTD's set for ``layer`` (the last by default: the
        layer the heads read), ``who`` its source (xmeans, linkage, cut, true, whatif ...).
        CAT: its transfer test, ``who`` = ``cat``, one set for every layer."""
        out = {t: (record.source, list(record.layers[layer]["dissimilar"])) for t, record in self.dtd.items()}
        out.update({t: ("cat", test.dissimilar) for t, test in self.transfer.items()})
        return dict(sorted(out.items()))

    def current(self) -> EpochEnd | None:
        """The latest epoch record: where a running sequence is now."""
        return self.epochs[-1] if self.epochs else None


def _admit(state: dict[str, Any], event: Any) -> str | None:
    """Why ``event`` cannot follow what the state holds (None: it can). Events come in the
    engine's order, task by task, so a record out of that order is damage, not news."""
    if state["end"] is not None:
        return "after run_end"
    current = len(state["task_ends"])
    if isinstance(event, (EpochEnd, TaskEnd, DTDResult, TransferTest, ArraysWritten)) and event.task != current:
        return f"for task {event.task + 1} while task {current + 1} is being learnt"
    if isinstance(event, DTDResult) and event.task in state["dtd"]:
        return "a second DTD record for this task"
    cat = STRATEGIES[state["started"].config["method"]].cat
    if isinstance(event, TransferTest) and not cat:
        return "a transfer test in a run of a method without them (only CAT makes them)"
    if isinstance(event, DTDResult) and cat:
        return "a DTD record in a CAT run (CAT makes transfer tests, not DTD)"
    if isinstance(event, TransferTest) and event.task in state["transfer"]:
        return "a second transfer test for this task"
    if isinstance(event, ArraysWritten) and (event.kind, event.task) in state["array_files"]:
        return "a second array file for this task"
    if isinstance(event, RunEnd) and event.status == "finished" and current < len(state["started"].tasks):
        return (f"status finished after {current} of {len(state['started'].tasks)} tasks: a finished run has learnt "
                "its whole sequence")
    return None


def apply_events(state: RunState, records: Iterable[dict[str, Any]]) -> RunState:
    """Fold event records (parsed JSON lines) into a new state; ``state`` is not changed.

    Each record is parsed into its typed event (:mod:`prm.records`); a record that is not
    what it claims, or comes out of order, is skipped and the reason kept in ``skipped``.
    """
    new = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
    epochs, skipped = list(new["epochs"]), list(new["skipped"])
    for name in ("dtd", "transfer", "task_ends", "array_files"):
        new[name] = dict(new[name])
    for record in records:
        kind = record.get("type")
        label = kind[:40] if isinstance(kind, str) else "untyped"
        try:
            if new["started"] is None:
                new["started"] = parse_started(record)
                continue
            if kind == "run_started":
                raise BadRecord("a second run_started")
            event = parse_record(record, started=new["started"])
            reason = _admit(new, event)
            if reason:
                raise BadRecord(reason)
        except BadRecord as exc:
            new["n_skipped"] += 1
            if len(skipped) < MAX_SKIP_MESSAGES:
                skipped.append(f"events.jsonl: a {label} record skipped ({exc})")
            continue
        if isinstance(event, EpochEnd):
            epochs.append(event)
        elif isinstance(event, DTDResult):
            new["dtd"][event.task] = event
        elif isinstance(event, TransferTest):
            new["transfer"][event.task] = event
        elif isinstance(event, TaskEnd):
            new["task_ends"][event.task] = event
        elif isinstance(event, ArraysWritten):
            new["array_files"][(event.kind, event.task)] = event.file
        elif isinstance(event, RunEnd):
            new["end"] = event
    new.update(epochs=tuple(epochs), skipped=tuple(skipped))
    return RunState(**new)


def iter_records(text: str, problems: list[str]) -> Iterator[dict[str, Any]]:
    """The JSON objects of an event log, one line at a time (so a long log is folded without
    holding every parsed line at once); a warning per line that is not one goes to ``problems``."""
    lines = text.split("\n")
    final = next((n for n in range(len(lines), 0, -1) if lines[n - 1].strip()), 0)  # last line with text
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if len(line) > MAX_LINE_CHARS:  # parsing it could build hundreds of MB of Python objects
            if len(problems) < MAX_SKIP_MESSAGES:
                problems.append(f"events.jsonl: line {number} is longer than {MAX_LINE_CHARS // safeio.MiB} MiB; skipped")
            continue
        try:
            record = load_json(line)
            if not isinstance(record, dict) or "type" not in record:
                raise ValueError("not an event object")
        except BadRecord as exc:  # a number no float can hold: the line is JSON, its record is refused
            if len(problems) < MAX_SKIP_MESSAGES:
                problems.append(f"events.jsonl: line {number} skipped ({exc})")
            continue
        except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser's stack
            if len(problems) < MAX_SKIP_MESSAGES:
                problems.append(f"events.jsonl: {'truncated last line' if number == final else f'corrupt line {number}'}"
                                " skipped")
            continue
        yield record


def parse_lines(text: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Parse JSON lines; return the objects and a warning per line that is not one."""
    problems: list[str] = []
    return list(iter_records(text, problems)), problems


class EventTail:
    """Reads the complete lines appended to ``events.jsonl`` since the last call (live runs)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.offset = 0

    def read_new(self) -> list[dict[str, Any]]:
        try:
            chunk = safeio.read_bytes(self.folder, "events.jsonl", limit=safeio.MAX_EVENTS_BYTES, truncate=True,
                                      start=self.offset)
        except (FileNotFoundError, safeio.UnsafeFile):
            return []
        end = chunk.rfind(b"\n")
        if end < 0:
            return []
        self.offset += end + 1
        records, _ = parse_lines(chunk[: end + 1].decode("utf-8", errors="replace"))
        return records


@dataclass(frozen=True, kw_only=True)
class Run:
    """A run read back from its folder, every part checked (see the module docstring).

    ``warnings`` lists damage (records skipped, arrays refused); ``status_note`` says why a
    run without a closing record counts as failed. Views read arrays through the accessors
    below, never by array names.
    """

    path: Path
    meta: dict[str, Any]
    state: RunState
    status: str
    arrays: dict[tuple[str, int], dict[str, np.ndarray]]
    projections: dict[str, np.ndarray]
    summary: dict[str, Any] | None
    warnings: tuple[str, ...]
    status_note: str | None = None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def engine_version(self) -> str | None:
        """The version of the engine that recorded the run (``prm.__version__``), None for a
        run recorded before run.json held it: only runs of one version have comparable times."""
        return self.meta["versions"].get("prm")

    @property
    def config(self) -> RunConfig:
        return RunConfig.from_dict(self.meta["config"])

    @property
    def parent(self) -> RunParent | None:
        """The run this what-if run was resumed from (None for an ordinary run, or when the
        link names a task beyond this run's sequence)."""
        return RunParent.parse(self.meta.get("parent"), n_tasks=self.state.n_tasks or None,
                               n_layers=len(self.meta["config"]["model"]["hidden"]))

    def has_checkpoint(self, task: int) -> bool:
        """Is there a checkpoint file for the start of ``task`` (checked only when read)?"""
        try:
            return safeio.inside(self.path, TaskCheckpoint.file_name(task)).is_file()
        except (safeio.UnsafeFile, OSError):
            return False

    @property
    def n_layers(self) -> int:
        """Masked layers (0 for the unmasked methods, which have no masks or embeddings)."""
        from prm.methods import STRATEGIES

        return len(self.meta["config"]["model"]["hidden"]) if STRATEGIES[self.meta["config"]["method"]].masked else 0

    def _array(self, kind: str, task: int, name: str, layer: int) -> np.ndarray | None:
        return self.arrays.get((kind, task), {}).get(f"{name}_l{layer}")

    def embedding(self, task: int, layer: int) -> np.ndarray | None:
        """Task ``task``'s final embedding e_t of ``layer``, shape (units,)."""
        return self._array("task", task, "embedding", layer)

    def mask(self, task: int, layer: int) -> np.ndarray | None:
        """Task ``task``'s mask at s = smax, shape (units,)."""
        return self._array("task", task, "mask", layer)

    def accumulated(self, task: int, layer: int) -> np.ndarray | None:
        """HAT's accumulated mask a_<=task (every unit tasks 1..task used)."""
        return self._array("task", task, "accumulated", layer)

    def protected(self, task: int, layer: int) -> np.ndarray | None:
        """The mask that protected the weights while ``task`` was learnt (PRM: p_<=task-1)."""
        return self._array("task", task, "protected", layer)

    def trajectory(self, task: int, layer: int, *, dtd: bool = False) -> np.ndarray | None:
        """The embedding's snapshots during training (or during that task's DTD), (k, units)."""
        return self._array("dtd" if dtd else "task", task, "trajectory", layer)

    def dtd_embeddings(self, task: int, layer: int) -> np.ndarray | None:
        """The embeddings X-means clustered when ``task`` arrived: tasks 0..task, (task+1, units)."""
        return self._array("dtd", task, "embeddings", layer)

    def learnt(self, layer: int) -> list[int]:
        """Tasks whose final embedding and mask of ``layer`` were recorded, in order."""
        return sorted(t for (kind, t) in self.arrays if kind == "task" and self.embedding(t, layer) is not None
                      and self.mask(t, layer) is not None)

    def dtd_steps(self) -> list[int]:
        """Tasks with a DTD decision and the embeddings it clustered (every masked layer)."""
        return sorted(t for t in self.state.dtd
                      if all(self.dtd_embeddings(t, layer) is not None for layer in range(self.n_layers)))

    def stored_projection(self, method: str, layer: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(task, is-DTD, 2-D coordinates) of every point ``projections.npz`` holds for ``layer``."""
        keys = (f"task_l{layer}", f"dtd_l{layer}", f"{method}_l{layer}")
        if not all(k in self.projections for k in keys):
            return None
        return tuple(self.projections[k] for k in keys)  # type: ignore[return-value]


@dataclass(frozen=True, kw_only=True)
class RunParent:
    """The run a what-if run (``prm.whatif``) was resumed from: its folder (resolved when the
    child was made) and name, the task (0-based) whose DTD decision was replaced, and the
    dissimilar set forced on each masked layer (every other earlier task was called similar)."""

    run: str
    name: str
    task: int
    dissimilar: tuple[tuple[int, ...], ...]

    def similar(self, layer: int) -> list[int]:
        """The earlier tasks the child called similar in ``layer``."""
        return [i for i in range(self.task) if i not in self.dissimilar[layer]]

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run, "name": self.name, "task": self.task,
                "dissimilar": [list(d) for d in self.dissimilar],
                "similar": [self.similar(l) for l in range(len(self.dissimilar))]}

    @classmethod
    def parse(cls, value: Any, *, n_tasks: int | None, n_layers: int) -> "RunParent | None":
        """run.json's ``parent``, checked (None when absent or malformed: the run still loads,
        it just names no parent). ``n_tasks`` None: the sequence length is not known yet."""
        try:
            return cls.read(value, n_tasks=n_tasks, n_layers=n_layers)
        except BadRecord:
            return None

    @classmethod
    def read(cls, value: Any, *, n_tasks: int | None, n_layers: int) -> "RunParent | None":
        """As :meth:`parse`, but a ``parent`` that is there and malformed raises ``BadRecord``
        naming the field (:func:`read_meta` warns with it). The folder must be a path a path
        function can take: a NUL makes ``Path.resolve`` raise ValueError, and a control
        character or a lone surrogate is no name a writer makes."""
        if value is None:
            return None
        if not isinstance(value, dict):
            raise BadRecord("parent must be an object")
        run, name, task, dissimilar = (value.get(k) for k in ("run", "name", "task", "dissimilar"))
        _check_name(run, "parent.run", MAX_PATH)
        _check_name(name, "parent.name", 200)
        high = (n_tasks or 10**6) - 1
        if not (type(task) is int and 1 <= task <= high):
            raise BadRecord(f"parent.task must be an integer in [1, {high}]")
        if not (isinstance(dissimilar, list) and len(dissimilar) == n_layers):
            raise BadRecord(f"parent.dissimilar must hold one set per masked layer ({n_layers})")
        sets = []
        for d in dissimilar:
            if not (isinstance(d, list) and all(type(i) is int and 0 <= i < task for i in d) and len(set(d)) == len(d)):
                raise BadRecord("parent.dissimilar must hold sets of tasks before parent.task")
            sets.append(tuple(sorted(d)))
        return cls(run=run, name=name, task=task, dissimilar=tuple(sets))


MAX_PATH = 4096
"""Linux's PATH_MAX: a longer folder path in a run file cannot name a folder here."""
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def _check_name(value: Any, what: str, limit: int) -> str:
    """A folder path or name read from a run file: non-empty text within ``limit`` characters,
    with no control character (C0, DEL, C1; NUL among them)."""
    if not (isinstance(value, str) and 0 < len(value) <= limit):
        raise BadRecord(f"{what} must be a string of 1 to {limit} characters")
    found = _CONTROL.search(value)
    if found:
        raise BadRecord(f"{what} holds a control character ({found.group()!r})")
    return check_text(value, what)


UPLOADED = "uploaded"
"""run.json key an upload is marked with: its writer ran elsewhere, so it is never running."""


def read_meta(folder: str | Path, problems: list[str] | None = None) -> dict[str, Any]:
    """``run.json``, checked: schema, a valid config, and the writer's identity if any.
    Raises ``RunFormatError`` (only) when the folder is not a readable run. An optional field
    that is there but refused (a pid beyond pid_t, a host that is not text, a parent link no
    path function takes) reads as absent, and ``problems`` (when given) gets a warning naming
    it: ``load_run`` reports it, and an upload with one is refused."""
    folder = Path(folder)
    meta = _meta_document(folder)
    if meta["schema"] > SCHEMA:
        raise RunFormatError(f"{folder}: written with run schema {meta['schema']}, this version reads 1 to {SCHEMA}; "
                             "upgrade prm-explorer to open it")
    if meta["schema"] < 1:
        raise RunFormatError(f"{folder}: schema {meta['schema']} is not valid")
    try:
        config = RunConfig.from_dict(meta["config"])
        check_strings(config.to_dict(), "config")  # a free-form path (data_dir) is shown too
    except BadRecord as exc:
        raise RunFormatError(f"{folder / 'run.json'}: {exc}") from None
    except (ConfigError, TypeError, ValueError, RecursionError) as exc:
        raise RunFormatError(f"{folder / 'run.json'}: config: {str(exc)[:300]}") from None
    problems = [] if problems is None else problems

    def opt(key: str, kind: type, check=lambda v: True):
        return _optional(meta, key, kind, check, problems)

    return {
        "schema": meta["schema"], "name": opt("name", str, lambda v: len(v) <= 200), "config": config.to_dict(),
        "seed": config.seed, "started_at": opt("started_at", str, lambda v: len(v) <= 64),
        "versions": {k: v for k, v in (opt("versions", dict) or {}).items()
                     if isinstance(k, str) and isinstance(v, str) and len(k) + len(v) <= 100},
        "pid": opt("pid", int, lambda v: abs(v) < 2**31),  # a pid_t: os.kill raises OverflowError beyond it
        "pid_start": opt("pid_start", int), "host": opt("host", str, lambda v: len(v) <= 255),
        UPLOADED: opt(UPLOADED, str, lambda v: len(v) <= 64),
        "parent": _parent_dict(meta.get("parent"), config, problems),
    }


def _meta_document(folder: Path) -> dict[str, Any]:
    """run.json parsed, with an integer schema and a config; else ``RunFormatError``."""
    if not folder.is_dir():
        raise RunFormatError(f"{folder}: no such run folder")
    try:
        meta = load_json(safeio.read_text(folder, "run.json"))
    except FileNotFoundError:
        raise RunFormatError(f"{folder}: not a run folder (no run.json)") from None
    except safeio.UnsafeFile as exc:
        raise RunFormatError(f"{folder}: {exc}") from None
    except BadRecord as exc:  # a number no float can hold
        raise RunFormatError(f"{folder / 'run.json'}: {exc}") from None
    except (ValueError, RecursionError) as exc:
        raise RunFormatError(f"{folder / 'run.json'}: not valid JSON ({str(exc)[:120]})") from None
    if not isinstance(meta, dict) or type(meta.get("schema")) is not int or "config" not in meta:
        raise RunFormatError(f"{folder / 'run.json'}: missing schema or config")
    return meta


def _optional(meta: dict[str, Any], key: str, kind: type, check: Callable[[Any], bool], problems: list[str]) -> Any:
    """``meta[key]`` when it is a ``kind`` that passes ``check`` and holds only text; None when
    it is absent, and None with a warning in ``problems`` when it is there and refused."""
    value = meta.get(key)
    if value is None:
        return None
    try:
        if not (isinstance(value, kind) and not isinstance(value, bool) and check(value)):
            raise BadRecord(f"not a valid {kind.__name__} here")
        check_strings(value, key)
    except BadRecord as exc:
        problems.append(f"run.json: {key} ignored ({exc})")
        return None
    return value


def _parent_dict(value: Any, config: RunConfig, problems: list[str]) -> dict[str, Any] | None:
    try:
        parent = RunParent.read(value, n_tasks=config.n_tasks, n_layers=len(config.model.hidden))
    except BadRecord as exc:
        problems.append(f"run.json: parent ignored ({exc}); the run names no parent")
        return None
    return None if parent is None else parent.to_dict()


def _process_start(pid: int) -> int | None:
    """The kernel's start time of a process (Linux /proc), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def writer_alive(meta: dict[str, Any]) -> bool:
    """Is the process that writes this run still running? Only when run.json names a pid on
    this host whose kernel start time matches the one recorded (a reused pid does not), and
    the run was not uploaded. Where /proc is missing the start time cannot be checked and a
    live pid is taken at its word (status only: Stop asks for more, ``explorer.live``)."""
    pid, started = meta.get("pid"), meta.get("pid_start")
    if meta.get(UPLOADED) or type(pid) is not int or pid <= 1 or meta.get("host") != socket.gethostname():
        return False
    if Path("/proc/self/stat").exists():
        return type(started) is int and _process_start(pid) == started
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


_TASK_ARRAYS = ("embedding", "mask", "accumulated", "protected", "trajectory")
_DTD_ARRAYS = ("embeddings", "trajectory")


def _check_arrays(kind: str, task: int, data: dict[str, np.ndarray], widths: list[int]) -> tuple[dict, list[str]]:
    """Keep the arrays whose name, shape and values fit the run; say what was dropped."""
    kept, problems = {}, []
    layers = {str(n): n for n in range(len(widths))}  # looked up as text: int() would refuse "²" or 5000 digits
    for name, array in data.items():
        base, _, layer = name.rpartition("_l")
        problem = None
        if base not in (_TASK_ARRAYS if kind == "task" else _DTD_ARRAYS) or layer not in layers:
            problem = "not an array of this run"
        else:
            H = widths[layers[layer]]
            shape = {"trajectory": (None, H), "embeddings": (task + 1, H)}.get(base, (H,))
            if array.ndim != len(shape) or any(want is not None and n != want for n, want in zip(array.shape, shape)):
                problem = f"shape {array.shape}, expected {tuple('k' if w is None else w for w in shape)}"
            elif array.dtype.kind != "f" or not np.isfinite(array).all():
                problem = "not finite floating-point values"
            elif base in ("mask", "accumulated", "protected") and not ((array >= 0) & (array <= 1)).all():
                problem = "mask values outside [0, 1]"
        if problem:
            problems.append(f"arrays/{kind}_{task:03d}.npz: {name} ignored ({problem})")
        else:
            kept[name] = array
    required = ("embedding", "mask", "accumulated") if kind == "task" else ("embeddings",)
    missing = [f"{base}_l{layer}" for layer in range(len(widths)) for base in required
               if f"{base}_l{layer}" not in data]
    if missing:
        problems.append(f"arrays/{kind}_{task:03d}.npz: {', '.join(missing)} missing")
    return kept, problems


def _check_projections(data: dict[str, np.ndarray], n_tasks: int, n_layers: int) -> tuple[dict, list[str]]:
    """Keep each layer's projections only if its rows name distinct (task, is-DTD) points."""
    kept, problems = {}, []
    for layer in range(n_layers):
        tasks, is_dtd = data.get(f"task_l{layer}"), data.get(f"dtd_l{layer}")
        if tasks is None or is_dtd is None:
            continue
        n = len(tasks) if tasks.ndim == 1 else -1
        ok = (tasks.ndim == 1 and tasks.dtype.kind in "iu" and is_dtd.shape == (n,) and is_dtd.dtype.kind in "biu"
              and ((tasks >= 0) & (tasks < n_tasks)).all()
              and len({(int(t), bool(d)) for t, d in zip(tasks, is_dtd)}) == n)
        coords = {m: data[f"{m}_l{layer}"] for m in ("pca", "umap") if f"{m}_l{layer}" in data}
        ok = ok and all(c.shape == (n, 2) and c.dtype.kind == "f" and np.isfinite(c).all() for c in coords.values())
        if not ok:
            problems.append(f"projections.npz: layer {layer} ignored (rows do not match); computed on demand instead")
            continue
        kept.update({f"task_l{layer}": tasks, f"dtd_l{layer}": is_dtd.astype(bool),
                     **{f"{m}_l{layer}": c for m, c in coords.items()}})
    return kept, problems


def read_summary(folder: Path) -> dict[str, Any] | None:
    """``summary.json`` checked field by field, None when the run has none. Raises
    ``ValueError`` saying why when it is there but unreadable or wrong (a claim, not the record:
    the event log is the record, the summary a cache for the run picker)."""
    try:
        text = safeio.read_text(folder, "summary.json")
    except FileNotFoundError:
        return None
    try:
        return parse_summary(load_json(text))
    except RecursionError:
        raise ValueError("nested too deeply") from None


SUMMARY_TAIL_READS = (8 * 1024, safeio.MiB)
"""Bytes read from the end of the event log to check a summary against the log's last
records, the wider read only when the first holds too little: 8 KiB hold the last task_end
and run_end lines of a run of up to about 100 tasks, 1 MiB those of the longest sequence or a
run_end carrying a long traceback."""


def trusted_summary(folder: Path, meta: dict[str, Any]) -> dict[str, Any] | None:
    """``summary.json`` when the event log bears it out, else None (absent, unreadable, or
    contradicted: the caller then folds the log itself). The summary is a cache for the run
    picker, which must not read thousands of logs; it is checked against what the log's own
    last records say, read from its end (:data:`SUMMARY_TAIL_READS`): the last record is a
    ``run_end`` with the summary's status, and the last ``task_end`` is the summary's last task
    learnt, of a sequence as long as the summary's, with the summary's Acc (the mean of its
    test accuracies). A summary left from before the log changed, or written by hand, fails."""
    try:
        summary = read_summary(folder)
    except ValueError:  # safeio.UnsafeFile and records.BadRecord are ValueErrors too
        return None
    if summary is None:
        return None
    n_layers = len(meta["config"]["model"]["hidden"])
    for nbytes in SUMMARY_TAIL_READS:
        try:
            tail = safeio.read_tail(folder, "events.jsonl", nbytes=nbytes)
        except (FileNotFoundError, safeio.UnsafeFile):
            return None
        verdict = _tail_verdict(tail, summary, n_layers, whole=len(tail) < nbytes)
        if verdict is not None:
            return summary if verdict else None
    return None


def _tail_verdict(tail: bytes, summary: dict[str, Any], n_layers: int, *, whole: bool) -> bool | None:
    """Do the log's last records (``tail``, the whole log when ``whole``) bear ``summary`` out?
    None when the tail is too short to tell: a wider read may."""
    lines = tail.split(b"\n")
    if lines[-1]:
        return False  # a truncated last line: the log has no closing record
    lines = [line for line in (lines if whole else lines[1:]) if line.strip()]  # lines[0] may be cut
    if not lines:
        return False if whole else None
    done, n_tasks = summary["tasks_done"], summary["n_tasks"]
    last_task = next((line for line in reversed(lines[:-1]) if b'"task_end"' in line), None)
    if last_task is None and not whole:
        return None
    try:
        end = parse_event(load_json(lines[-1].decode("utf-8", errors="replace")), n_tasks=n_tasks, n_layers=n_layers)
        task = None if last_task is None else parse_event(load_json(last_task.decode("utf-8", errors="replace")),
                                                          n_tasks=n_tasks, n_layers=n_layers)
    except (ValueError, RecursionError):  # BadRecord is a ValueError
        return False
    if not (isinstance(end, RunEnd) and end.status == summary["status"]
            and (end.status != "finished" or done == n_tasks)):
        return False
    if task is None:
        return done == 0 and summary["acc"] is None
    acc = float(np.mean(task.test_acc[:done])) if isinstance(task, TaskEnd) and task.task + 1 == done else None
    return acc is not None and summary["acc"] is not None and math.isclose(acc, summary["acc"], rel_tol=1e-9)


def load_run(folder: str | Path) -> Run:
    """Read any run folder; see the module docstring for what is tolerated and what is not.
    Raises nothing but ``RunFormatError``."""
    folder = Path(folder)
    problems: list[str] = []
    meta = read_meta(folder, problems)
    try:
        raw = safeio.read_bytes(folder, "events.jsonl", limit=safeio.MAX_EVENTS_BYTES, truncate=True)
    except FileNotFoundError:
        raw = b""
        problems.append("events.jsonl is missing: nothing was recorded")
    except safeio.UnsafeFile as exc:
        raw = b""
        problems.append(f"{exc}; nothing was read from it")
    if len(raw) >= safeio.MAX_EVENTS_BYTES:
        raw = raw[: raw.rfind(b"\n") + 1]
        problems.append(f"events.jsonl: only its first {safeio.MAX_EVENTS_BYTES // safeio.MiB} MiB were read")
    bad: list[str] = []
    state = apply_events(RunState(), iter_records(raw.decode("utf-8", errors="replace"), bad))
    del raw
    problems += bad + list(state.skipped)
    if state.n_skipped > len(state.skipped):
        problems.append(f"events.jsonl: {state.n_skipped - len(state.skipped)} more records skipped")
    if state.started is not None and state.config != meta["config"]:
        problems.append("events.jsonl: its config differs from run.json's; the event log is ignored")
        state = RunState()
    note = None
    if state.end is not None:
        status = state.end.status
    elif meta.get(UPLOADED):
        status, note = "failed", "uploaded without a closing record: it was still running, or its process was killed"
    elif writer_alive(meta):
        status = "running"
    else:
        status, note = "failed", "the run ended without a closing record (the process was killed or crashed)"
    widths = list(meta["config"]["model"]["hidden"])
    budget = safeio.Budget()
    arrays: dict[tuple[str, int], dict[str, np.ndarray]] = {}
    for (kind, task), name in sorted(state.array_files.items()):
        try:
            data = safeio.read_npz(folder, name, budget=budget)
        except FileNotFoundError:
            problems.append(f"{name}: missing; its arrays are missing")
            continue
        except safeio.UnsafeFile as exc:
            problems.append(f"{exc}; its arrays are missing")
            continue
        arrays[(kind, task)], dropped = _check_arrays(kind, task, data, widths)
        problems += dropped
    projections: dict[str, np.ndarray] = {}
    try:
        projections, dropped = _check_projections(safeio.read_npz(folder, "projections.npz", budget=budget),
                                                  state.n_tasks, len(widths))
        problems += dropped
    except FileNotFoundError:
        pass  # computed on demand
    except safeio.UnsafeFile as exc:
        problems.append(f"projections.npz: unreadable ({exc}); projections will be computed on demand")
    summary = None
    try:
        summary = read_summary(folder)
    except ValueError as exc:  # safeio.UnsafeFile and records.BadRecord are ValueErrors too
        problems.append(f"summary.json: ignored ({str(exc)[:160]})")
    return Run(path=folder, meta=meta, state=state, status=status, arrays=arrays, projections=projections,
               summary=summary, warnings=tuple(problems), status_note=note)


# ----------------------------------------------------------------------------- finishing


def embedding_points(run: Run, layer: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every embedding of ``layer`` worth plotting: (points, task index, is-DTD flag).

    Rows are each learnt task's final embedding, then each DTD step's embedding of its new
    task (the one X-means actually saw), so every step shares one coordinate system.
    """
    finals = [(t, run.embedding(t, layer), False) for t in sorted(t for k, t in run.arrays if k == "task")]
    steps = [(t, run.dtd_embeddings(t, layer), True) for t in sorted(t for k, t in run.arrays if k == "dtd")]
    rows = [(t, e if not is_dtd else e[t], is_dtd) for t, e, is_dtd in finals + steps if e is not None]
    if not rows:
        return np.zeros((0, 0)), np.zeros(0, dtype=int), np.zeros(0, dtype=bool)
    return (np.stack([r[1] for r in rows]), np.array([r[0] for r in rows]), np.array([r[2] for r in rows]))


def summarise(run: Run) -> dict[str, Any]:
    R = run.state.accuracy_matrix("test")
    done = metrics.completed_rows(R)
    summary: dict[str, Any] = {
        "name": run.name, "status": run.status, "method": run.meta["config"]["method"],
        "sequence": run.state.sequence, "seed": run.meta.get("seed"), "n_tasks": run.state.n_tasks,
        "tasks_done": done, "acc": None, "bwt": None, "acc_val": None,
        "seconds": run.state.end.seconds if run.state.end else None,
        "phase_seconds": {}, "capacity": None,
    }
    if done:
        summary.update(acc=metrics.average_accuracy(R), bwt=metrics.backward_transfer(R),
                       acc_val=metrics.average_accuracy(run.state.accuracy_matrix("val")))
        totals: dict[str, float] = {}
        for record in run.state.task_ends.values():
            for phase, sec in record.seconds.items():
                totals[phase] = totals.get(phase, 0.0) + sec
        summary["phase_seconds"] = totals
        summary["capacity"] = run.state.task_ends[done - 1].capacity or None
    return summary


def write_summary(folder: str | Path) -> dict[str, Any]:
    """Write ``summary.json`` for a run that has ended, and return it.

    It comes first, before any projection: the run's status is settled by its ``run_end``
    line, and the picker lists a run from its summary without reading its event log.
    """
    return _write_summary(load_run(folder))


def write_projections(folder: str | Path, *, progress: Callable[[int, int, str], None] | None = None) -> int:
    """Write ``projections.npz`` (every configured method, every masked layer) for a run that
    has ended; return how many projections it holds (0: no embeddings, no file).

    ``progress(done, total, step)`` is called before each projection ("umap layer 2/3"), so a
    caller can show what a first UMAP fit spends its seconds on, and once more before the file
    is written. An interrupt (raised there too) or a failure leaves no file: the explorer
    computes missing projections when it opens the run.
    """
    return _write_projections(load_run(folder), progress=progress)


def finalize_run(folder: str | Path) -> dict[str, Any]:
    """:func:`write_summary`, then :func:`write_projections` (``RunWriter(finalize=True)``:
    the app and scripts, which show no progress of their own); returns the summary."""
    run = load_run(folder)
    summary = _write_summary(run)
    _write_projections(run)
    return summary


def _write_summary(run: Run) -> dict[str, Any]:
    summary = summarise(run)
    _write_json_atomic(run.path / "summary.json", _jsonable(summary))
    return summary


def _write_projections(run: Run, *, progress: Callable[[int, int, str], None] | None = None) -> int:
    from prm.projection import project

    methods = run.meta["config"]["record"]["projections"]
    layers = [(layer, embedding_points(run, layer)) for layer in range(run.n_layers)]
    layers = [(layer, found) for layer, found in layers if len(found[0])]
    total, done = len(layers) * len(methods), 0
    out: dict[str, np.ndarray] = {}
    for layer, (points, tasks, is_dtd) in layers:
        out[f"task_l{layer}"], out[f"dtd_l{layer}"] = tasks, is_dtd
        for method in methods:
            if progress is not None:
                progress(done, total, f"{method} layer {layer + 1}/{run.n_layers}")
            coords, _ = project(points, method=method, seed=run.meta["seed"])
            out[f"{method}_l{layer}"] = coords.astype(np.float32)
            done += 1
    if progress is not None and total:
        progress(total, total, "writing projections.npz")
    if out:
        _replace_atomic(run.path / "projections.npz", lambda tmp: np.savez_compressed(tmp, **out), ".tmp.npz")
    return total


def list_runs(root: str | Path) -> list[Path]:
    """Sub-folders of ``root`` that look like runs (a run.json or an events.jsonl), newest
    first. A folder with an event log but no run.json is listed too, so that it can say what
    is wrong. Never raises: an unreadable root or a folder that vanishes is left out."""
    def stamp(p: Path) -> float | None:
        for name in ("run.json", "events.jsonl"):
            try:
                if (p / name).is_file():
                    return (p / name).stat().st_mtime
            except OSError:
                return None
        return None

    try:
        children = [p for p in Path(root).iterdir() if p.is_dir()]
    except OSError:
        return []
    found = [(t, p) for p in children if (t := stamp(p)) is not None]
    return [p for _, p in sorted(found, key=lambda item: (-item[0], item[1].name))]


__all__ = ["SCHEMA", "Run", "RunFormatError", "RunParent", "RunState", "RunWriter", "EventTail", "apply_events",
           "finalize_run", "list_runs", "load_run", "writer_alive", "parse_lines", "read_meta", "read_summary",
           "summarise", "trusted_summary", "write_projections", "write_summary"]
