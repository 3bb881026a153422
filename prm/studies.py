"""Studies and trials read from an Optuna storage as untrusted input.

A storage may come from another machine or be edited by hand, so every trial is read as a run
record is: each field typed and bounded, and a trial with any field that is not what ``prm
tune`` writes is kept as *unreadable*, with the reason, and counts towards nothing. The views
and ``compare --tuned`` read studies only through here (and so through
:func:`prm.storages.read_storage`, which never writes).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import optuna

from prm.records import MAX_TASKS, fits
from prm.storages import StorageError, one_line, read_storage

# ----------------------------------------------------------------------------- reading studies


@dataclasses.dataclass(frozen=True, kw_only=True)
class Trial:
    """One trial as the storage holds it: what the tables and the Tuning view show. A trial
    whose record is not what ``prm tune`` writes has state 'unreadable', ``problem`` says why,
    and every other field is empty: it counts towards nothing."""

    number: int
    state: str  # complete | running | fail | pruned | waiting | unreadable
    params: dict[str, Any]
    val_acc: float | None  # the objective: Acc on the validation sets
    test_acc: float | None
    bwt: float | None
    seconds: float | None
    run_dir: str | None  # the run folder as recorded: relative to the storage file where it has one, else absolute
    run_dir_relative: str | None  # the same, relative to the storage file: written by earlier versions only
    host: str | None
    note: str | None  # why a trial was failed or pruned
    test_matrix: np.ndarray | None
    families: tuple[str, ...]
    problem: str | None = None  # why the trial is unreadable


@dataclasses.dataclass(frozen=True, kw_only=True)
class Study:
    """A study's record: ``kind`` 'tune' (a TPE search) or 'compare' (a shared grid).
    ``problems`` names what could not be read (a study attribute, a trial and its field)."""

    name: str
    kind: str
    attrs: dict[str, Any]
    trials: tuple[Trial, ...]
    problems: tuple[str, ...] = ()

    @property
    def sequence(self) -> str | None:
        return self.attrs.get("sequence")

    @property
    def method(self) -> str | None:
        return self.attrs.get("method")

    @property
    def complete(self) -> tuple[Trial, ...]:
        return tuple(t for t in self.trials if t.state == "complete" and t.val_acc is not None)

    @property
    def best(self) -> Trial | None:
        """The trial with the highest validation Acc (never chosen by test Acc)."""
        done = self.complete
        return max(done, key=lambda t: (t.val_acc, -t.number)) if done else None

    @property
    def ps(self) -> float | None:
        """PS: the standard deviation of test Acc over the complete trials (population std,
        as ``compare``'s ± columns); None below two trials."""
        return parameter_sensitivity([t.test_acc for t in self.complete if t.test_acc is not None])


def parameter_sensitivity(accs: Sequence[float]) -> float | None:
    """PS of the paper: the standard deviation of Acc over a study's trials."""
    values = [float(a) for a in accs if a is not None and math.isfinite(a)]
    return float(np.std(values)) if len(values) >= 2 else None


def study_names(url: str) -> list[str]:
    """The studies in a storage, by name (a look: never writes, never creates anything)."""
    storage = read_storage(url)
    with one_line(url, "read"):
        return [s.study_name for s in storage.get_all_studies()]


def load_study(url: str, name: str) -> Study:
    """One study with every trial, read from ``url`` (a look: never writes)."""
    storage = read_storage(url)
    with one_line(url, "read"):
        return read_study(storage, name)


def read_study(storage: Any, name: str) -> Study:
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        raise StorageError(f"no study named {name!r} in this storage") from None
    attrs, problems = _study_attrs(storage.get_study_user_attrs(study_id))
    kind = attrs.get("kind", "other")
    trials = _trials(storage, study_id, kind=kind)
    problems += [f"trial {t.number}: {t.problem}" for t in trials if t.problem]
    return Study(name=name, kind=kind, attrs=attrs, trials=trials, problems=tuple(problems))


def importances(url: str, name: str) -> dict[str, float]:
    """Optuna's parameter importances (fANOVA, seeded) for validation Acc; empty below two
    complete trials, where there is nothing to explain."""
    storage = read_storage(url)
    with one_line(url, "read"):
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            raise StorageError(f"no study named {name!r} in this storage") from None
        done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if len(done) < 2 or not study.best_trial.params:
            return {}
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        return {k: float(v) for k, v in optuna.importance.get_param_importances(study, evaluator=evaluator).items()}


def tuned_studies(url: str) -> dict[tuple[str, str], Study]:
    """Every tune study of a storage, keyed by (sequence, method): where the Compare view and
    ``compare --tuned`` find PS and the best parameters. Of two studies of one pair, the one
    with more complete trials wins."""
    storage = read_storage(url)
    found: dict[tuple[str, str], Study] = {}
    with one_line(url, "read"):
        for summary in storage.get_all_studies():
            if summary.user_attrs.get("kind") != "tune":
                continue
            study = read_study(storage, summary.study_name)
            key = (study.sequence, study.method)
            if study.kind == "tune" and (key not in found or len(study.complete) > len(found[key].complete)):
                found[key] = study
    return found


def default_study(sequence: str, method: str) -> str:
    """The name ``tune`` gives a study unless told otherwise, and where ``compare --tuned`` looks."""
    return f"tune-{sequence}-{method}"


# ----------------------------------------------------------------------------- a study's record, trusting nothing

MAX_NAME = 200
MAX_PATH = 4096
MAX_NOTE = 2000
MAX_PARAMS = 100
MAX_CELLS = 10_000
"""Bounds of what a trial or a study may hold: ``prm tune`` writes names (sequences,
families, hosts) of a few dozen characters, paths, notes of one sentence, a handful of
parameters, grids of a few dozen cells, and one T x T matrix with T at most MAX_TASKS."""


class _Bad(ValueError):
    """A field that is not what ``prm tune`` writes; the message names the field."""


def _show(value: Any) -> str:
    """A bad value as named in a message: a number as it is, anything else by its type (a
    storage's text is never echoed)."""
    return (repr(value) if isinstance(value, (int, float, bool, type(None))) else type(value).__name__)[:40]


def _number(value: Any, what: str, low: float = -math.inf, high: float = math.inf) -> float | None:
    """A finite number in [low, high]; None where there is none (NaN too: a value not measured)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and fits(value) and low <= value <= high):
        raise _Bad(f"{what} must be a finite number in [{low:g}, {high:g}], got {_show(value)}")
    return float(value)


def _integer(value: Any, what: str, low: int = 0, high: int = 2**31) -> int:
    if not (isinstance(value, int) and not isinstance(value, bool) and low <= value <= high):
        raise _Bad(f"{what} must be an integer in [{low}, {high}], got {_show(value)}")
    return value


def _text(value: Any, what: str, limit: int = MAX_NAME, *, none: bool = True) -> str | None:
    """A string of at most ``limit`` characters without NUL (a path with one cannot be
    opened); None where there is none, if ``none``."""
    if value is None and none:
        return None
    if not (isinstance(value, str) and len(value) <= limit and "\0" not in value):
        raise _Bad(f"{what} must be a string of at most {limit} characters without NUL, got {_show(value)}")
    return value


def _items(value: Any, what: str, limit: int) -> list:
    if not (isinstance(value, list) and len(value) <= limit):
        raise _Bad(f"{what} must be a list of at most {limit} items, got {_show(value)}")
    return value


def _names(value: Any, what: str, limit: int) -> list[str]:
    return [_text(v, f"{what}[]", none=False) for v in _items(value, what, limit)]


def _matrix(value: Any) -> np.ndarray | None:
    """The test accuracy matrix: T x T of accuracies in [0, 1] or null, T <= MAX_TASKS."""
    if value is None:
        return None
    rows = _items(value, "test_matrix", MAX_TASKS)
    cells = [[_number(v, "test_matrix[][]", 0.0, 1.0) for v in _items(row, "test_matrix[]", len(rows))]
             for row in rows]
    if any(len(row) != len(rows) for row in cells):
        raise _Bad("test_matrix must be square")
    matrix = np.array([[np.nan if v is None else v for v in row] for row in cells], dtype=float)
    return matrix.reshape(len(rows), len(rows))  # an empty matrix too, (0, 0)


def _cells(value: Any) -> list[list]:
    cells = []
    for cell in _items(value, "cells", MAX_CELLS):
        sequence, method, seed = (_items(cell, "cells[]", 3) + [None] * 3)[:3]
        cells.append([_text(sequence, "cells[] sequence", none=False), _text(method, "cells[] method", none=False),
                      _integer(seed, "cells[] seed")])
    return cells


STUDY_ATTRS: dict[str, Callable[[Any], Any]] = {
    "kind": lambda v: _text(v, "kind"),
    "sequence": lambda v: _text(v, "sequence"),
    "method": lambda v: _text(v, "method"),
    "setup": lambda v: _text(v, "setup"),
    "seed": lambda v: _integer(v, "seed"),
    "tasks": lambda v: _integer(v, "tasks", 1, MAX_TASKS),
    "space": lambda v: _names(v, "space", MAX_PARAMS),
    "cells": _cells,
}
"""The study attributes anything reads, each with its parser; others are not kept."""


def _study_attrs(raw: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The study's attributes that parse, and a line for each that does not (dropped)."""
    attrs, problems = {}, []
    for key, parse in STUDY_ATTRS.items():
        if raw.get(key) is None:
            continue
        try:
            attrs[key] = parse(raw[key])
        except _Bad as exc:
            problems.append(f"study attribute {exc}")
    return attrs, problems


def _trials(storage: Any, study_id: int, *, kind: str) -> tuple[Trial, ...]:
    """Every trial of the study. Optuna builds a study's trials together, so one it cannot
    build (an attribute that is not JSON, an unknown state) fails them all: the trials are
    then read one by one, by number, up to the first number the storage does not hold."""
    try:
        return tuple(_trial(t, kind=kind) for t in storage.get_all_trials(study_id, deepcopy=False))
    except Exception:  # noqa: BLE001 - read again trial by trial, which names the one at fault
        pass
    trials = []
    for number in itertools.count():
        try:
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
        except KeyError:
            break
        try:
            trials.append(_trial(storage.get_trial(trial_id), kind=kind))
        except Exception as exc:  # noqa: BLE001 - any failure of Optuna's reading is this trial's
            trials.append(_unreadable(number, f"Optuna cannot read it ({type(exc).__name__}: "
                                              f"{str(exc).splitlines()[0][:200] if str(exc) else ''})"))
    return tuple(trials)


def _unreadable(number: int, why: str) -> Trial:
    return Trial(number=number, state="unreadable", params={}, val_acc=None, test_acc=None, bwt=None, seconds=None,
                 run_dir=None, run_dir_relative=None, host=None, note=None, test_matrix=None, families=(),
                 problem=why)


def _trial(t: Any, *, kind: str) -> Trial:
    """A trial with every field typed and bounded as ``prm tune`` writes it; one with any
    field that is not is unreadable, and the reason names each such field."""
    number = t.number if isinstance(t.number, int) and not isinstance(t.number, bool) else -1
    bad: list[str] = []

    def field(parse: Callable[..., Any], *args: Any) -> Any:
        try:
            return parse(*args)
        except _Bad as exc:
            bad.append(str(exc))
            return None

    a = t.user_attrs if isinstance(t.user_attrs, dict) else {}
    trial = Trial(
        number=number, state=t.state.name.lower(), params=field(_params, t.params, kind) or {},
        val_acc=field(_objective, t.values, a.get("val_acc")),
        test_acc=field(_number, a.get("test_acc"), "test_acc", 0.0, 1.0),
        bwt=field(_number, a.get("bwt"), "bwt", -1.0, 1.0), seconds=field(_number, a.get("seconds"), "seconds", 0.0),
        run_dir=field(_text, a.get("run_dir"), "run_dir", MAX_PATH),
        run_dir_relative=field(_text, a.get("run_dir_relative"), "run_dir_relative", MAX_PATH),
        host=field(_text, a.get("host"), "host"), note=field(_text, a.get("note"), "note", MAX_NOTE),
        test_matrix=field(_matrix, a.get("test_matrix")),
        families=tuple(field(_names, a.get("families", []), "families", MAX_TASKS) or ()))
    if number < 0:
        bad.insert(0, f"number must be an integer, got {_show(t.number)}")
    return _unreadable(number, "; ".join(bad)) if bad else trial


def _objective(values: Any, recorded: Any) -> float | None:
    """Validation Acc: the trial's one objective value, else the attribute recorded beside it."""
    if not values:
        return _number(recorded, "val_acc", 0.0, 1.0)
    if len(values) != 1:
        raise _Bad(f"value must be one number (validation Acc), got {len(values)}")
    return _number(values[0], "value", 0.0, 1.0)


def _params(raw: Any, kind: str) -> dict[str, Any]:
    if not (isinstance(raw, dict) and len(raw) <= MAX_PARAMS):
        raise _Bad(f"params must be at most {MAX_PARAMS} named values, got {_show(raw)}")
    return {name: _param(value, _text(name, "parameter name", none=False), kind) for name, value in raw.items()}


def _param(value: Any, name: str, kind: str) -> Any:
    """A drawn value: a number in a tune study; in a compare study's grid, the sequence and
    method by name and the seed an integer; elsewhere a number, a name, true/false or null."""
    if kind == "tune":
        number = _number(value, name)
        if number is None:
            raise _Bad(f"{name} must be a number, got {_show(value)}")
        return number
    if kind == "compare" and name == "seed":
        return _integer(value, name)
    if kind == "compare" and name in ("sequence", "method"):
        return _text(value, name, none=False)
    if isinstance(value, bool) or (isinstance(value, (int, float)) and fits(value)):
        return value
    return _text(value, name)
