"""``summary.json``: a cache for the run picker, read back only when the log bears it out.

The picker lists hundreds of runs and must not fold every event log; a summary is trusted
only after a bounded read of the log's last records agrees with it (:func:`trusted_summary`).
The event log stays the record: :func:`prm.run.load_run` reads the summary only to warn
about a bad one.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from prm import safeio
from prm.events import RunEnd, TaskEnd
from prm.records import parse_event, parse_summary
from prm.strictjson import load_json


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
