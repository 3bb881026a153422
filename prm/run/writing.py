"""Writing a run folder: :class:`RunWriter` appends what the engine emits, and the
finishing steps (:func:`write_summary`, :func:`write_projections`) add the picker's summary
and the views' 2-D projections once the run has ended.

Every file appears whole or not at all (written to a temporary file and renamed), and the
event log always ends on a complete record, so a reader of a running, stopped or crashed run
never meets half a file. The folder layout is described in :mod:`prm.run.reading`.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
import torch

from prm import __version__, analysis, checkpoint, metrics, projection
from prm.config import RunConfig
from prm.events import ArraysWritten, EpochEnd, Event, RunEnd, TaskArrays, TaskCheckpoint, to_record
from prm.run.errors import SCHEMA
from prm.run.meta import RunParent, _process_start
from prm.run.reading import Run, load_run


def _versions() -> dict[str, str]:
    """The libraries' versions and the engine's own (``"prm"``: ``prm.__version__``), which
    says whether two runs' times compare (see ``Run.engine_version``)."""
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
            data = checkpoint.encode(event)
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
        test = analysis.matrix_metrics(R)
        summary.update(acc=test["acc"], bwt=test["bwt"],
                       acc_val=analysis.matrix_metrics(run.state.accuracy_matrix("val"))["acc"])
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
            coords, _ = projection.project(points, method=method, seed=run.meta["seed"])
            out[f"{method}_l{layer}"] = coords.astype(np.float32)
            done += 1
    if progress is not None and total:
        progress(total, total, "writing projections.npz")
    if out:
        _replace_atomic(run.path / "projections.npz", lambda tmp: np.savez_compressed(tmp, **out), ".tmp.npz")
    return total
