"""The fold: event records in, a typed :class:`RunState` out; pure, no files.

Recorded runs and live ones (both read by :func:`prm.run.load_run`, the live ones again as they
grow) are folded by the same :func:`apply_events`, so a view shows a
running sequence exactly as it will show the finished run. Each record is parsed into its
typed event (:mod:`prm.records`); one that is not what it claims, or comes out of the engine's
order, is skipped and the reason kept, so one bad line never takes a run down.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from prm.events import ArraysWritten, DTDResult, EpochEnd, RunEnd, RunStarted, TaskEnd, TransferTest
from prm.records import BadRecord, method_flags, parse_record, parse_started

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
        A method with transfer tests (CAT): its test, ``who`` = the method's name, one set for
        every layer."""
        out = {t: (record.source, list(record.layers[layer]["dissimilar"])) for t, record in self.dtd.items()}
        out.update({t: (self.config["method"], test.dissimilar) for t, test in self.transfer.items()})
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
    if isinstance(event, (TransferTest, DTDResult)):  # who may decide similarity: the method's way
        transfers = method_flags(state["started"].config["method"]).transfer_tests
        if isinstance(event, TransferTest) and not transfers:
            return "a transfer test in a run of a method without them (only CAT makes them)"
        if isinstance(event, DTDResult) and transfers:
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
