"""Parsing event-log records back into typed events, trusting nothing.

A line of ``events.jsonl`` is JSON someone else may have written. Each record becomes the
event it claims to be (``prm.events``) only if every field has the right type and lies in
its range: task indices within the sequence, accuracies in [0, 1], finite times, DTD sets
that name earlier tasks, an X-means record whose split tree is a tree. Anything else is a
:class:`BadRecord` whose message names the field; the fold skips that record with a warning,
so one bad line never takes a run, a view or the run picker down.

Every JSON file of a run (``run.json``, ``summary.json``, each event line) is parsed by
:func:`load_json`, which lets through only numbers a float can hold (:func:`fits`): JSON allows
an integer of any length, and Python's ``json`` reads ``NaN`` and ``Infinity``; either would
otherwise raise ``OverflowError`` (or ``ValueError`` past 4300 digits) far from the file.
"""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Any

from prm.config import METHODS, PRM_CHOICES, ConfigError, RunConfig
from prm.events import (PHASES, STATUSES, ArraysWritten, DTDResult, EpochEnd, Event, RunEnd, RunStarted, TaskEnd,
                        TransferTest)
from prm.methods import STRATEGIES

MAX_TASKS = 1000
"""The longest sequence a run may describe (the accuracy matrix is T x T)."""
MAX_NAME = 200
MAX_TREE_DEPTH = 200
"""Levels of X-means' split tree (a real one has at most one level per task); the views draw
it recursively."""
TIMING_PHASES = ("dtd", "train", "eval", *PHASES)
ENDED = tuple(s for s in STATUSES if s != "running")
"""What a run_end line may say: a run that ended is not running."""
DTD_SOURCES = tuple(dict.fromkeys([*PRM_CHOICES["clustering"],
                                   *(s.similarity for s in STRATEGIES.values() if s.similarity is not None),
                                   "whatif"]))
"""What a DTD record's ``source`` may say: the clustering rule PRM used (``prm.clustering``:
xmeans, linkage, cut), the ablation's fixed similarity (``prm.methods.dissimilar_set``), or
``whatif``: a what-if run forced this decision (``prm.whatif``)."""
SPLIT_REASONS = ("bic-improved", "bic-not-improved", "too-few-points", "zero-variance", "k-max")


class BadRecord(ValueError):
    """A record that is not the event it claims to be; the message names the field."""


# ----------------------------------------------------------------------------- numbers

FLOAT_DIGITS = len(str(int(sys.float_info.max)))
"""Digits of the largest finite float. An integer literal with more is beyond float range,
known from its length alone, before Python converts it (a conversion of millions of digits
is slow, and past 4300 digits Python refuses it)."""
_FLOAT_MAX = sys.float_info.max


def fits(value: int | float) -> bool:
    """Is ``value`` a number a float can hold: finite and within float range? The one test
    every number read from a run file passes (in :func:`load_json` and in :func:`_num`);
    comparing an int with a float is exact and never raises, unlike ``float(value)`` or
    ``math.isfinite(value)`` on an integer beyond float range (OverflowError)."""
    return -_FLOAT_MAX <= value <= _FLOAT_MAX


class _UnfitNumber(Exception):
    """A number literal that fails :func:`fits`; the message says what it was."""


def _int_literal(text: str) -> int:
    digits = len(text) - text.startswith("-")
    if digits >= FLOAT_DIGITS and (digits > FLOAT_DIGITS or not fits(int(text))):  # shorter ones all fit
        raise _UnfitNumber(f"a {digits}-digit integer, beyond float range")
    return int(text)


def _float_literal(text: str) -> float:
    value = float(text)
    if not fits(value):
        raise _UnfitNumber(f"{text[:24]}{'…' if len(text) > 24 else ''}, beyond float range")
    return value


def _constant_literal(name: str) -> float:
    raise _UnfitNumber(f"{name}, not a finite number")


def _marking(parse):
    """The literal parser returning the refusal in place of the number, so that
    :func:`_unfit_field` can find where it sits."""
    def mark(text: str) -> Any:
        try:
            return parse(text)
        except _UnfitNumber as exc:
            return exc
    return mark


_HOOKS = {"parse_int": _int_literal, "parse_float": _float_literal, "parse_constant": _constant_literal}
_STRICT = json.JSONDecoder(**_HOOKS)
_MARKING = json.JSONDecoder(**{name: _marking(hook) for name, hook in _HOOKS.items()})
_KEY = re.compile(r"[\w-]{1,40}", re.ASCII)


def load_json(text: str) -> Any:
    """Parse one JSON document of a run folder, or raise :class:`BadRecord` naming the field
    whose number fails :func:`fits` (``layers[0].xmeans.bic: NaN, not a finite number``). Text
    that is not JSON raises ``ValueError`` (``json.JSONDecodeError``) and nesting deeper than
    the parser's stack ``RecursionError``, as ``json.loads`` does. The field is looked up only
    after a refusal, by parsing the text again: a good document is parsed once."""
    try:
        return _STRICT.decode(text)
    except _UnfitNumber:
        raise BadRecord(_unfit_field(_MARKING.decode(text))) from None


def _unfit_field(document: Any) -> str:
    """Where the first refused number of a parsed document sits, and what it was (iterative:
    the document may be nested as deep as the parser allows)."""
    stack: list[tuple[str, Any]] = [("", document)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, _UnfitNumber):
            return f"{where or 'the document'}: {value}"
        if isinstance(value, dict):
            items = [(f"{where}." if where else "") + (k if _KEY.fullmatch(k) else "…") for k in value]
            stack.extend(reversed(list(zip(items, value.values()))))
        elif isinstance(value, list):
            stack.extend(reversed([(f"{where}[{n}]", v) for n, v in enumerate(value)]))
    return "a number beyond float range"


def _need(ok: bool, message: str) -> None:
    """Raise when a check fails. The checkers below test first and build their message only
    on failure: a log holds thousands of epoch records, and formatting a message for every
    field of each was most of the time a run took to load."""
    if not ok:
        raise BadRecord(message)


def _int(value: Any, what: str, low: int = 0, high: int = 2**31) -> int:
    if not (isinstance(value, int) and not isinstance(value, bool) and low <= value <= high):
        raise BadRecord(f"{what} must be an integer in [{low}, {high}], got {_show(value)}")
    return value


def _num(value: Any, what: str, low: float = -math.inf, high: float = math.inf, *, none: bool = False) -> float | None:
    if value is None and none:
        return None
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and fits(value) and low <= value <= high):
        raise BadRecord(f"{what} must be a finite number in [{low}, {high}], got {_show(value)}")
    return float(value)


def _str(value: Any, what: str, *, choices: tuple[str, ...] | None = None, none: bool = False,
         limit: int = MAX_NAME) -> str | None:
    if value is None and none:
        return None
    if not (isinstance(value, str) and len(value) <= limit and (choices is None or value in choices)):
        raise BadRecord(f"{what} must be " + (f"one of {', '.join(choices)}" if choices else
                                              f"a string of at most {limit} characters") + f", got {_show(value)}")
    return value if choices else check_text(value, what)


_SURROGATE = re.compile("[\ud800-\udfff]")


def check_text(value: str, what: str) -> str:
    """``value`` if it is text, else :class:`BadRecord` naming ``what``. JSON's ``\\ud800``
    escape decodes to a lone surrogate, a string no UTF-8 encoder takes: shown in a table
    (pyarrow), printed or written to a file, it raises ``UnicodeEncodeError`` far from the run
    file. The one check of every free-form string of a run (records, run.json, summary.json)."""
    found = _SURROGATE.search(value)
    _need(found is None, f"{what} holds a lone surrogate ({ascii(found.group()) if found else ''}), not text")
    return value


def check_strings(value: Any, what: str) -> None:
    """:func:`check_text` on every string of a JSON value, keys included (a config, whose
    strings no field reader sees); iterative, as the value may nest deeply."""
    stack: list[tuple[str, Any]] = [(what, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            check_text(item, where)
        elif isinstance(item, dict):
            for key, inner in item.items():
                check_text(key, f"{where} key")
                stack.append((f"{where}.{key}", inner))
        elif isinstance(item, (list, tuple)):
            stack.extend((f"{where}[{n}]", inner) for n, inner in enumerate(item))


def _list(value: Any, what: str, limit: int) -> list:
    if not (isinstance(value, list) and len(value) <= limit):
        raise BadRecord(f"{what} must be a list of at most {limit} items, got {_show(value)}")
    return value


def _dict(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise BadRecord(f"{what} must be an object, got {_show(value)}")
    return value


def _indices(value: Any, what: str, below: int) -> list[int]:
    items = [_int(v, f"{what}[]", 0, below - 1) for v in _list(value, what, below)]
    _need(len(set(items)) == len(items), f"{what} repeats a task")
    return sorted(items)


def _show(value: Any) -> str:
    if isinstance(value, int) and not fits(value):  # its repr could be slow, or refused past 4300 digits
        return "an integer beyond float range"
    text = repr(value) if isinstance(value, (int, float, bool, type(None))) else type(value).__name__
    return text[:40]


# ----------------------------------------------------------------------------- run_started


def parse_started(record: dict[str, Any]) -> RunStarted:
    """The first record: the config and the sequence every later record is checked against."""
    _need(record.get("type") == "run_started", "the first event must be run_started")
    try:
        config = RunConfig.from_dict(_dict(record.get("config"), "config"))
    except (ConfigError, TypeError, ValueError) as exc:
        raise BadRecord(f"config: {exc}") from None
    tasks = _list(record.get("tasks"), "tasks", MAX_TASKS)
    _need(len(tasks) >= 1, "tasks must not be empty")
    parsed = [_task(t, f"tasks[{n}]") for n, t in enumerate(tasks)]
    oracle = record.get("oracle_transfer")
    if oracle is not None:
        rows = _list(oracle, "oracle_transfer", len(tasks))
        _need(len(rows) == len(tasks), "oracle_transfer must have one row per task")
        oracle = [[_num(v, "oracle_transfer[][]", 0.0, 1.0) for v in _list(row, "oracle_transfer[]", len(tasks))]
                  for row in rows]
        _need(all(len(row) == len(tasks) for row in oracle), "oracle_transfer must be square")
    compiled = record.get("compiled")
    _need(compiled is None or isinstance(compiled, bool), "compiled must be true, false or absent")
    return RunStarted(config=config.to_dict(), tasks=tuple(parsed), sequence=_str(record.get("sequence"), "sequence"),
                      input_dim=_int(record.get("input_dim"), "input_dim", 1, 10**7), oracle_transfer=oracle,
                      compiled=compiled)


def _task(value: Any, what: str) -> dict[str, Any]:
    task = _dict(value, what)
    sizes = _dict(task.get("sizes"), f"{what}.sizes")
    n_classes = _int(task.get("n_classes"), f"{what}.n_classes", 1, 100_000)
    return {
        "name": _str(task.get("name"), f"{what}.name"),
        "family": _str(task.get("family"), f"{what}.family"),
        "n_classes": n_classes,
        "classes": [_int(c, f"{what}.classes[]", 0, 10**6) for c in _list(task.get("classes"), f"{what}.classes",
                                                                          n_classes)],
        "sizes": {k: _int(sizes.get(k), f"{what}.sizes.{k}", 0, 10**9) for k in ("train", "val", "test")},
    }


# ----------------------------------------------------------------------------- the rest


def parse_record(record: dict[str, Any], *, started: RunStarted) -> Event:
    """Any record after run_started, checked against that run's sequence and config."""
    return parse_event(record, n_tasks=len(started.tasks), n_layers=len(started.config["model"]["hidden"]))


def parse_event(record: dict[str, Any], *, n_tasks: int, n_layers: int) -> Event:
    """Any record after run_started, checked against a sequence of ``n_tasks`` tasks and a
    network of ``n_layers`` masked layers (known without the log's first record: the run
    picker checks a summary against the log's last records, ``prm.runs.trusted_summary``)."""
    kind = record.get("type")
    parse = _PARSERS.get(kind) if isinstance(kind, str) else None
    _need(parse is not None, f"unknown event type {_show(kind) if not isinstance(kind, str) else kind[:40]!r}")
    return parse(record, n_tasks, n_layers)


def _epoch(r: dict, T: int, L: int) -> EpochEnd:
    return EpochEnd(
        task=_int(r.get("task"), "task", 0, T - 1), phase=_str(r.get("phase"), "phase", choices=PHASES),
        epoch=_int(r.get("epoch"), "epoch", 0, 10**6),
        train_loss=_num(r.get("train_loss"), "train_loss", 0.0, none=True),
        train_acc=_num(r.get("train_acc"), "train_acc", 0.0, 1.0, none=True),
        val_loss=_num(r.get("val_loss"), "val_loss", 0.0, none=True),
        val_acc=_num(r.get("val_acc"), "val_acc", 0.0, 1.0, none=True),
        lr=_num(r.get("lr"), "lr", 0.0, none=True), seconds=_num(r.get("seconds"), "seconds", 0.0))


def _accuracies(value: Any, what: str, T: int, task: int) -> list[float | None]:
    row = _list(value, what, T)
    _need(len(row) == T, f"{what} must have one entry per task ({T})")
    out = [_num(v, f"{what}[]", 0.0, 1.0, none=True) for v in row]
    _need(all(v is not None for v in out[: task + 1]) and all(v is None for v in out[task + 1:]),
          f"{what} must hold the tasks learnt so far (1..{task + 1}) and nothing else")
    return out


def _task_end(r: dict, T: int, L: int) -> TaskEnd:
    task = _int(r.get("task"), "task", 0, T - 1)
    seconds = _dict(r.get("seconds"), "seconds")
    epochs = _dict(r.get("epochs"), "epochs")
    capacity = _list(r.get("capacity"), "capacity", L)
    _need(len(capacity) in (0, L), f"capacity must have one value per masked layer ({L})")
    kta = r.get("kta")
    if kta is not None:
        kta = _list(kta, "kta", T)
        _need(len(kta) == task + 1 and all(isinstance(v, bool) for v in kta),
              f"kta must hold true or false for each task learnt so far (1..{task + 1})")
    return TaskEnd(
        task=task, test_acc=_accuracies(r.get("test_acc"), "test_acc", T, task),
        val_acc=_accuracies(r.get("val_acc"), "val_acc", T, task),
        seconds={_str(k, "seconds key", choices=TIMING_PHASES): _num(v, f"seconds.{k}", 0.0) for k, v in seconds.items()},
        epochs={_str(k, "epochs key", choices=TIMING_PHASES): _int(v, f"epochs.{k}", 0, 10**6) for k, v in epochs.items()},
        capacity=[_num(v, "capacity[]", 0.0, 1.0) for v in capacity], kta=kta)


def _transfer_test(r: dict, T: int, L: int) -> TransferTest:
    task = _int(r.get("task"), "task", 1, T - 1)
    accs = _list(r.get("transfer_acc"), "transfer_acc", task)
    epochs = _list(r.get("epochs"), "epochs", task)
    _need(len(accs) == task and len(epochs) == task, f"transfer_acc and epochs must have one entry per earlier task ({task})")
    seconds = _dict(r.get("seconds"), "seconds")
    return TransferTest(
        task=task, transfer_acc=[_num(v, "transfer_acc[]", 0.0, 1.0) for v in accs],
        reference_acc=_num(r.get("reference_acc"), "reference_acc", 0.0, 1.0),
        similar=_indices(r.get("similar"), "similar", task), epochs=[_int(v, "epochs[]", 0, 10**6) for v in epochs],
        reference_epochs=_int(r.get("reference_epochs"), "reference_epochs", 0, 10**6),
        seconds={_str(k, "seconds key", choices=("transfer", "reference")): _num(v, f"seconds.{k}", 0.0)
                 for k, v in seconds.items()})


def _dtd(r: dict, T: int, L: int) -> DTDResult:
    task = _int(r.get("task"), "task", 1, T - 1)
    layers = _list(r.get("layers"), "layers", L)
    _need(len(layers) == L, f"layers must have one entry per masked layer ({L})")
    return DTDResult(task=task, layers=[_dtd_layer(e, task, f"layers[{n}]") for n, e in enumerate(layers)],
                     source=_str(r.get("source"), "source", choices=DTD_SOURCES),
                     seconds=_num(r.get("seconds"), "seconds", 0.0))


def _dtd_layer(value: Any, task: int, what: str) -> dict[str, Any]:
    entry = _dict(value, what)
    undecided = entry.get("undecided", False)
    _need(isinstance(undecided, bool), f"{what}.undecided must be true or false")
    return {"xmeans": _xmeans(entry.get("xmeans"), task + 1, f"{what}.xmeans"), "undecided": undecided,
            "dissimilar_xmeans": _indices(entry.get("dissimilar_xmeans"), f"{what}.dissimilar_xmeans", task),
            "dissimilar": _indices(entry.get("dissimilar"), f"{what}.dissimilar", task)}


def _xmeans(value: Any, n: int, what: str) -> dict[str, Any]:
    """X-means' record over ``n`` points; its attempts must form a tree (the views draw it)."""
    xm = _dict(value, what)
    labels = [_int(v, f"{what}.labels[]", 0, n - 1) for v in _list(xm.get("labels"), f"{what}.labels", n)]
    _need(len(labels) == n, f"{what}.labels must have one label per task ({n})")
    k = _int(xm.get("k"), f"{what}.k", 1, n)
    _need(set(labels) == set(range(k)), f"{what}.labels must use exactly the clusters 0..k-1")
    k_init = _int(xm.get("k_init"), f"{what}.k_init", 1, n)
    cluster_ids = [_int(v, f"{what}.cluster_ids[]", 0, 4 * n) for v in _list(xm.get("cluster_ids"),
                                                                             f"{what}.cluster_ids", n)]
    _need(len(cluster_ids) == k, f"{what}.cluster_ids must have k entries")
    depth = {r: 0 for r in range(k_init)}  # every cluster id made so far, with its depth in the split tree
    attempts = []
    for m, a in enumerate(_list(xm.get("attempts"), f"{what}.attempts", 4 * n)):
        where = f"{what}.attempts[{m}]"
        a = _dict(a, where)
        parent = _int(a.get("parent"), f"{where}.parent", 0, 4 * n)
        _need(parent in depth, f"{where}.parent is not a cluster made earlier")
        members = _indices(a.get("members"), f"{where}.members", n)
        kept = a.get("kept")
        _need(isinstance(kept, bool), f"{where}.kept must be true or false")
        children, child_ids = a.get("children"), a.get("child_ids")
        if children is not None:
            children = [_indices(c, f"{where}.children[]", n) for c in _list(children, f"{where}.children", 2)]
            _need(len(children) == 2 and not set(children[0]) & set(children[1])
                  and set(children[0]) | set(children[1]) == set(members),
                  f"{where}.children must split the members in two")
        if kept:
            _need(children is not None, f"{where}: a kept split needs its children")
            ids = [_int(c, f"{where}.child_ids[]", 0, 4 * n) for c in _list(child_ids, f"{where}.child_ids", 2)]
            _need(len(ids) == 2 and ids[0] != ids[1] and not set(ids) & set(depth), f"{where}.child_ids must be two new ids")
            _need(depth[parent] < MAX_TREE_DEPTH, f"{where}: the split tree is deeper than {MAX_TREE_DEPTH} levels")
            depth.update({c: depth[parent] + 1 for c in ids})
            child_ids = ids
        else:
            child_ids = None
        attempts.append({
            "round": _int(a.get("round"), f"{where}.round", 0, 4 * n), "parent": parent, "members": members,
            "children": children, "child_ids": child_ids,
            "parent_bic": _num(a.get("parent_bic"), f"{where}.parent_bic", none=True),
            "children_bic": _num(a.get("children_bic"), f"{where}.children_bic", none=True),
            "kept": kept, "reason": _str(a.get("reason"), f"{where}.reason", choices=SPLIT_REASONS)})
        _need((attempts[-1]["parent_bic"] is None) == (attempts[-1]["children_bic"] is None),
              f"{where}: parent_bic and children_bic must both be set or both be null")
    return {"labels": labels, "k": k, "bic": _num(xm.get("bic"), f"{what}.bic"), "attempts": attempts,
            "variant": _str(xm.get("variant"), f"{what}.variant", limit=40), "cluster_ids": cluster_ids,
            "k_init": k_init, "var_floor": _num(xm.get("var_floor"), f"{what}.var_floor", 0.0)}


def _arrays(r: dict, T: int, L: int) -> ArraysWritten:
    """Array files are named by kind and task; any other name (a path out, a device) is refused."""
    kind = _str(r.get("kind"), "kind", choices=("task", "dtd"))
    task = _int(r.get("task"), "task", 1 if kind == "dtd" else 0, T - 1)
    expected = ArraysWritten.file_name(kind, task)
    _need(r.get("file") == expected, f"file must be {expected!r}, got {_show(r.get('file'))}"
          + (f" {str(r.get('file'))[:80]!r}" if isinstance(r.get("file"), str) else ""))
    return ArraysWritten(task=task, kind=kind, file=expected)


def _run_end(r: dict, T: int, L: int) -> RunEnd:
    return RunEnd(status=_str(r.get("status"), "status", choices=ENDED),
                  seconds=_num(r.get("seconds"), "seconds", 0.0, none=True),
                  error=_str(r.get("error"), "error", none=True, limit=100_000))


_PARSERS = {"epoch": _epoch, "task_end": _task_end, "dtd": _dtd, "transfer_test": _transfer_test, "arrays": _arrays, "run_end": _run_end}


# ----------------------------------------------------------------------------- summary.json


def parse_summary(value: Any) -> dict[str, Any]:
    """``summary.json`` as :func:`prm.runs.summarise` writes it, every field checked."""
    s = _dict(value, "summary")
    n_tasks = _int(s.get("n_tasks"), "n_tasks", 0, MAX_TASKS)
    phases = _dict(s.get("phase_seconds", {}), "phase_seconds")
    capacity = s.get("capacity")
    return {
        "name": _str(s.get("name"), "name", none=True),
        "status": _str(s.get("status"), "status", choices=STATUSES),
        "method": _str(s.get("method"), "method", choices=METHODS, none=True),
        "sequence": _str(s.get("sequence"), "sequence", none=True),
        "seed": None if s.get("seed") is None else _int(s.get("seed"), "seed"),
        "n_tasks": n_tasks, "tasks_done": _int(s.get("tasks_done"), "tasks_done", 0, n_tasks),
        "acc": _num(s.get("acc"), "acc", 0.0, 1.0, none=True), "bwt": _num(s.get("bwt"), "bwt", -1.0, 1.0, none=True),
        "acc_val": _num(s.get("acc_val"), "acc_val", 0.0, 1.0, none=True),
        "seconds": _num(s.get("seconds"), "seconds", 0.0, none=True),
        "phase_seconds": {_str(k, "phase_seconds key", choices=TIMING_PHASES): _num(v, f"phase_seconds.{k}", 0.0)
                          for k, v in phases.items()},
        "capacity": None if capacity is None else [_num(v, "capacity[]", 0.0, 1.0) for v in _list(capacity, "capacity", 64)],
    }
