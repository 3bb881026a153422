"""Parsing event-log records back into typed events, trusting nothing.

A line of ``events.jsonl`` is JSON someone else may have written. Each record becomes the
event it claims to be (``prm.events``) only if every field has the right type and lies in
its range: task indices within the sequence, accuracies in [0, 1], finite times, DTD sets
that name earlier tasks, an X-means record whose split tree is a tree. Anything else is a
:class:`BadRecord` whose message names the field; the fold skips that record with a warning,
so one bad line never takes a run, a view or the run picker down.

Each event declares its fields' bounds (``prm.events.bound``); this module compiles those
declarations once per event type into one generic check, so no event's limits are restated
here. JSON text is parsed before (``prm.strictjson.load_json``: only numbers a float can hold).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from prm import methods
from prm.config import PRM_CHOICES, ConfigError, RunConfig
from prm.events import (MAX_NAME, MAX_TASKS, PER, SPLIT_REASONS, STATUSES, TIMING_PHASES, ArraysWritten, Choice, Config,
                        DTDResult, EpochEnd, Event, Flag, Int, Items, Keyed, Num, Record, RunEnd, RunStarted,
                        SplitTree, TaskEnd, Tasks, Text, TransferTest, bounds)
from prm.strictjson import FLOAT_MAX, BadRecord, fits


class MethodFlags(NamedTuple):
    """What the run format needs to know of a method: whether it has masks (and so arrays of
    embeddings), and whether it makes transfer tests (CAT's) instead of DTD records."""
    masked: bool
    transfer_tests: bool


def method_flags(method: str) -> MethodFlags:
    """The one place the run format asks the method registry anything."""
    entry = methods.get(method)
    return MethodFlags(masked=entry.masked, transfer_tests=entry.transfer_tests)


MAX_TREE_DEPTH = 200
"""Levels of X-means' split tree (a real one has at most one level per task); the views draw
it recursively."""
DTD_SOURCES = tuple(dict.fromkeys([*PRM_CHOICES["clustering"],
                                   *methods.dtd_sources(),
                                   "whatif"]))
"""What a DTD record's ``source`` may say: the clustering rule PRM used (``PRMConfig.clustering``:
xmeans, linkage, cut), the ablation's fixed similarity (``prm.methods.base.Hooks.source``), or
``whatif``: a what-if run forced this decision (``prm.whatif``)."""
VOCABULARIES = {"dtd source": DTD_SOURCES}
"""The choices an event names rather than lists (``prm.events.Choice``)."""


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


# ----------------------------------------------------------------------------- the generic check

Check = Callable[[Any, str, dict[str, int]], Any]
"""A compiled bound: ``check(value, what, sizes)`` returns the value as read or raises
:class:`BadRecord` naming ``what``; ``sizes`` holds the run's dimensions and the record's
earlier fields (``prm.events.Size``)."""
Field = tuple[str, Check, Any, bool]
_SIZE = re.compile(r"([A-Za-z_]+)([+-]\d+)?")


def _size(size: int | str) -> Callable[[dict[str, int]], int]:
    """A :data:`prm.events.Size` as a function of the sizes known."""
    if isinstance(size, int):
        return lambda sizes: size
    name, offset = _SIZE.fullmatch(size).groups()
    shift = int(offset or 0)
    return lambda sizes: sizes[name] + shift


def _compile(spec: Any) -> Check:
    """The check of one declared bound (``prm.events``), built once per event type so that a
    log of thousands of records pays for the checks, not for reading the declarations."""
    return _COMPILERS[type(spec)](spec)


def _nullable(spec: Any, check: Check) -> Check:
    if not getattr(spec, "none", False):
        return check
    return lambda value, what, sizes: None if value is None else check(value, what, sizes)


def _compile_int(spec: Int) -> Check:
    if isinstance(spec.low, int) and isinstance(spec.high, int):  # most bounds: no size to look up
        low, high = spec.low, spec.high

        def fixed(value: Any, what: str, sizes: dict[str, int]) -> int:
            if type(value) is int and low <= value <= high:
                return value
            return _int(value, what, low, high)  # refuses it, saying why
        return _nullable(spec, fixed)
    lowest, highest = _size(spec.low), _size(spec.high)
    return _nullable(spec, lambda value, what, sizes: _int(value, what, lowest(sizes), highest(sizes)))


def _compile_num(spec: Num) -> Check:
    low, high, none = spec.low, spec.high, spec.none

    def check(value: Any, what: str, sizes: dict[str, int]) -> float | None:
        if type(value) is float and low <= value <= high and -FLOAT_MAX <= value <= FLOAT_MAX:
            return value
        return _num(value, what, low, high, none=none)  # an int, a null, or a refusal
    return check


def _compile_text(spec: Text) -> Check:
    return lambda value, what, sizes: _str(value, what, none=spec.none, limit=spec.limit)


def _compile_choice(spec: Choice) -> Check:
    values = VOCABULARIES[spec.values] if isinstance(spec.values, str) else spec.values
    none = spec.none

    def check(value: Any, what: str, sizes: dict[str, int]) -> str | None:
        return value if value in values and type(value) is str else _str(value, what, choices=values, none=none)
    return check


def _compile_flag(spec: Flag) -> Check:
    message = " must be true, false or absent" if spec.none else " must be true or false"

    def check(value: Any, what: str, sizes: dict[str, int]) -> bool | None:
        _need(isinstance(value, bool) or (spec.none and value is None), what + message)
        return value
    return check


def _compile_items(spec: Items) -> Check:
    item, limit = _compile(spec.item), _size(spec.limit)
    length = None if spec.length is None else _size(spec.length)
    known = None if spec.known is None else _size(spec.known)
    indexed = isinstance(spec.item, Record)  # an object in a list is named by its place: tasks[3]
    per = "" if spec.length is None else PER[spec.length]

    def check(value: Any, what: str, sizes: dict[str, int]) -> Any:
        items = _list(value, what, limit(sizes))
        _need(len(items) >= spec.least, f"{what} must not be empty")
        if length is not None and not (spec.empty and not items):
            want = length(sizes)
            _need(len(items) == want, f"{what} must have one entry per {per} ({want})")
        inner = what + "[]"
        out = spec.kind(item(v, f"{what}[{n}]" if indexed else inner, sizes) for n, v in enumerate(items))
        if known is not None:
            k = known(sizes)
            _need(all(v is not None for v in out[:k]) and all(v is None for v in out[k:]),
                  f"{what} must hold the tasks learnt so far (1..{k}) and nothing else")
        return out
    return _nullable(spec, check)


def _compile_tasks(spec: Tasks) -> Check:
    below = _size(spec.below)
    return lambda value, what, sizes: _indices(value, what, below(sizes))


def _compile_keyed(spec: Keyed) -> Check:
    key, inner = _compile(spec.keys), _compile(spec.values)

    def check(value: Any, what: str, sizes: dict[str, int]) -> dict:
        entries = _dict(value, what)
        return {key(k, f"{what} key", sizes): inner(v, f"{what}.{k}", sizes) for k, v in entries.items()}
    return check


def _compile_fields(declared: dict[str, Any]) -> list[Field]:
    """A record's fields as (name, check, value when absent, whether a later size names it)."""
    named = {name for spec in declared.values() for name in _size_names(spec)}
    return [(name, _compile(spec), getattr(spec, "absent", None), name in named) for name, spec in declared.items()]


def _size_names(spec: Any) -> Iterator[str]:
    """The record fields the sizes of ``spec`` (and of the bounds inside it) name."""
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        if f.name in _SIZED and isinstance(value, str):
            yield _SIZE.fullmatch(value).group(1)
        elif dataclasses.is_dataclass(value):
            yield from _size_names(value)
        elif isinstance(value, dict):  # a Record's fields
            for inner in value.values():
                yield from _size_names(inner)


_SIZED = ("low", "high", "limit", "length", "known", "below", "points")
"""The attributes of ``prm.events``' bounds that hold a :data:`prm.events.Size`."""


def _compile_record(spec: Record) -> Check:
    fields = _compile_fields(spec.fields)

    def check(value: Any, what: str, sizes: dict[str, int]) -> dict[str, Any]:
        return _fields(fields, _dict(value, what), f"{what}.", dict(sizes))
    return check


def _fields(fields: list[Field], record: dict, prefix: str, sizes: dict[str, int]) -> dict[str, Any]:
    """Each field checked in order, named ``prefix`` + its name; the value of an integer field
    a later size names, or the length of such a list, joins ``sizes`` (changed in place)."""
    out = {}
    for name, check, absent, named in fields:
        out[name] = value = check(record.get(name, absent), prefix + name, sizes)
        if named:
            sizes[name] = value if type(value) is int else len(value)
    return out


def _compile_tree(spec: SplitTree) -> Check:
    points = _size(spec.points)
    return lambda value, what, sizes: _xmeans(value, points(sizes), what)


def _compile_config(spec: Config) -> Check:
    def check(value: Any, what: str, sizes: dict[str, int]) -> dict[str, Any]:
        try:
            return RunConfig.from_dict(_dict(value, what)).to_dict()
        except (ConfigError, TypeError, ValueError) as exc:
            raise BadRecord(f"{what}: {exc}") from None
    return check


_COMPILERS: dict[type, Callable[[Any], Check]] = {
    Int: _compile_int, Num: _compile_num, Text: _compile_text, Choice: _compile_choice, Flag: _compile_flag,
    Items: _compile_items, Tasks: _compile_tasks, Keyed: _compile_keyed, Record: _compile_record,
    SplitTree: _compile_tree, Config: _compile_config}


def _event_check(cls: type) -> Callable[[dict, dict[str, int]], Event]:
    """The generic check of one event type: every declared field, then the event's own
    :meth:`fault` (a rule between its fields), if it has one."""
    fields = _compile_fields(bounds(cls))
    if not hasattr(cls, "fault"):
        return lambda record, sizes: cls(**_fields(fields, record, "", sizes))

    def parse(record: dict, sizes: dict[str, int]) -> Event:
        event = cls(**_fields(fields, record, "", sizes))
        fault = event.fault()
        _need(fault is None, fault or "")
        return event
    return parse


# ----------------------------------------------------------------------------- events


def parse_started(record: dict[str, Any]) -> RunStarted:
    """The first record: the config and the sequence every later record is checked against."""
    _need(record.get("type") == "run_started", "the first event must be run_started")
    return _PARSERS["run_started"](record, {})


def parse_record(record: dict[str, Any], *, started: RunStarted) -> Event:
    """Any record after run_started, checked against that run's sequence and config."""
    return parse_event(record, n_tasks=len(started.tasks), n_layers=len(started.config["model"]["hidden"]))


def parse_event(record: dict[str, Any], *, n_tasks: int, n_layers: int) -> Event:
    """Any record after run_started, checked against a sequence of ``n_tasks`` tasks and a
    network of ``n_layers`` masked layers (known without the log's first record: the run
    picker checks a summary against the log's last records, ``prm.run.trusted_summary``)."""
    kind = record.get("type")
    parse = _PARSERS.get(kind) if isinstance(kind, str) and kind != "run_started" else None
    _need(parse is not None, f"unknown event type {_show(kind) if not isinstance(kind, str) else kind[:40]!r}")
    return parse(record, {"T": n_tasks, "L": n_layers})


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



_PARSERS = {cls.type: _event_check(cls) for cls in (RunStarted, EpochEnd, TaskEnd, DTDResult, TransferTest,
                                                     ArraysWritten, RunEnd)}


# ----------------------------------------------------------------------------- summary.json

_SUMMARY = _compile_fields({
    "name": Text(none=True), "status": Choice(values=STATUSES), "method": Choice(values=methods.NAMES, none=True),
    "sequence": Text(none=True), "seed": Int(none=True), "n_tasks": Int(high=MAX_TASKS),
    "tasks_done": Int(high="n_tasks"), "acc": Num(low=0.0, high=1.0, none=True),
    "bwt": Num(low=-1.0, high=1.0, none=True), "acc_val": Num(low=0.0, high=1.0, none=True),
    "seconds": Num(low=0.0, none=True),
    "phase_seconds": Keyed(keys=Choice(values=TIMING_PHASES), values=Num(low=0.0), absent={}),
    "capacity": Items(item=Num(low=0.0, high=1.0), limit=64, none=True)})


def parse_summary(value: Any) -> dict[str, Any]:
    """``summary.json`` as :func:`prm.run.summarise` writes it, every field checked."""
    return _fields(_SUMMARY, _dict(value, "summary"), "", {})
