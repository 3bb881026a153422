"""Hyper-parameter studies and shared comparisons, kept in an Optuna storage.

The paper tunes dropout and the regulariser with Optuna's TPE over 20 trials and reports PS,
the standard deviation of Acc over those trials: how much a method's result depends on
getting its hyper-parameters right. :func:`tune` runs such a study; :func:`compare_grid`
spreads a comparison (sequence x method x seed) over whoever runs the same command on the
same storage. Both keep each trial's metrics and accuracy matrix in the storage itself, so a
table or the explorer's Tuning view needs no file from another machine; each trial also
names the run folder it recorded.

Storages (:func:`open_storage`): ``sqlite:///path.db`` (embedded, the default), a
PostgreSQL URL (``postgresql://user@host/db``) for machines that share a server, or
``journal:///path.log``, Optuna's journal file on a folder every machine mounts.

Workers coordinate only through the storage. A trial counts towards ``--trials`` from the
moment it starts, so parallel workers never overshoot; one that started after the study was
already full, or a grid cell another worker also took, is closed as *pruned* with the reason
in its ``note`` attribute, before any training. A worker stopped by Ctrl-C marks its trial
failed; one killed outright leaves it running until its heartbeat goes stale (two minutes;
SQLite and PostgreSQL), after which the next worker marks it failed. Failed trials do not
count: running the same command again trains the trials still missing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import socket
import time
import warnings
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from prm import metrics
from prm.config import ConfigError, RunConfig, results_relevant

DEFAULT_STORAGE = "sqlite:///runs/optuna.db"
HEARTBEAT_SECONDS = 30
ATTRS_WAIT_SECONDS = 10.0
"""How long a worker waits for the one that created a study to finish writing what the study
was made for (its attributes are written one by one after the study exists)."""
GRACE_SECONDS = 120


class StorageError(ConfigError):
    """A storage URL that cannot be opened, or a study that does not fit the command."""


# ----------------------------------------------------------------------------- search space


@dataclasses.dataclass(frozen=True, kw_only=True)
class Range:
    """One tuned hyper-parameter: where it lives in :class:`RunConfig` and its range."""

    name: str
    section: str | None  # RunConfig section ("model", "optim", "hat"), None for a top-level field
    field: str
    low: float
    high: float
    log: bool = False

    def describe(self) -> str:
        return f"{self.name} in [{self.low:g}, {self.high:g}]" + (" (log scale)" if self.log else "")


INPUT_DROPOUT = Range(name="input_dropout", section="model", field="input_dropout", low=0.0, high=0.5)
HIDDEN_DROPOUT = Range(name="hidden_dropout", section="model", field="hidden_dropout", low=0.0, high=0.7)
LR = Range(name="lr", section="optim", field="lr", low=0.01, high=0.3, log=True)
LAMB = Range(name="lamb", section="hat", field="lamb", low=0.05, high=5.0, log=True)
EWC_LAMBDA = Range(name="ewc_lambda", section=None, field="ewc_lambda", low=10.0, high=1e5, log=True)


def search_space(method: str) -> tuple[Range, ...]:
    """The paper's space: both dropouts and the learning rate for every method, plus the
    method's regulariser strength (HAT's and PRM's mask sparsity ``lamb``, EWC's lambda).
    The ranges hold this project's defaults (dropout 0.2/0.5, lr 0.1, lamb 0.75, EWC 5000)
    well inside them; docs/tuning.md says why each bound is where it is."""
    base = (INPUT_DROPOUT, HIDDEN_DROPOUT, LR)
    if method in ("hat", "cat") or method.startswith("prm"):
        return (*base, LAMB)
    if method == "ewc":
        return (*base, EWC_LAMBDA)
    return base


def apply_params(base: RunConfig, params: dict[str, float]) -> RunConfig:
    """``base`` with tuned values set (validated like any config). The lowest learning rate
    follows a tuned lr down, as the CLI's ``--lr`` does."""
    ranges = {r.name: r for r in search_space(base.method)}
    data = base.to_dict()
    for name, value in params.items():
        if name not in ranges:
            raise StorageError(f"{name} is not tuned for {base.method}; its space is "
                               f"{', '.join(ranges)}")
        r = ranges[name]
        (data[r.section] if r.section else data)[r.field] = float(value)
    data["optim"]["lr_min"] = min(data["optim"]["lr_min"], data["optim"]["lr"])
    return RunConfig.from_dict(data)


# ----------------------------------------------------------------------------- storages


def open_storage(url: str, *, create: bool = True) -> Any:
    """An Optuna storage for ``url``; ``create=False`` refuses a file that does not exist yet
    (the explorer reads, and must not leave an empty database where a path was mistyped).

    RDB storages (SQLite, PostgreSQL) keep a heartbeat, so a trial whose worker was killed is
    failed by the next worker instead of counting for ever; Optuna's journal file keeps none
    (``fail_running`` clears such trials by hand)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = url.strip()
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise StorageError(f"storage {url!r} is not a URL; use sqlite:///path.db, journal:///path.log or "
                           "postgresql://user@host/database")
    heartbeat = {"heartbeat_interval": HEARTBEAT_SECONDS, "grace_period": GRACE_SECONDS}
    try:
        if scheme == "journal":
            path = file_of(url)
            _check_file(path, url, create=create)
            from optuna.storages.journal import JournalFileBackend

            with warnings.catch_warnings():  # the journal backend is marked experimental in some versions
                warnings.simplefilter("ignore")
                return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        if scheme == "sqlite":
            _check_file(file_of(url), url, create=create)
            return _rdb(url, heartbeat)
        if scheme.startswith("postgresql") or scheme.startswith("mysql"):
            return _rdb(url, {**heartbeat, "engine_kwargs": {"pool_pre_ping": True}})
    except StorageError:
        raise
    except ImportError as exc:
        raise StorageError(f"storage {safe_url(url)}: a driver is missing ({exc}); for PostgreSQL "
                           "pip install psycopg2-binary") from None
    except Exception as exc:  # sqlalchemy's OperationalError and friends: one line, no password
        raise StorageError(f"cannot open storage {safe_url(url)}: {type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:300]}") from None
    raise StorageError(f"storage {safe_url(url)}: unknown kind {scheme!r}; use sqlite:///path.db, "
                       "journal:///path.log or postgresql://user@host/database")


def _rdb(url: str, kwargs: dict[str, Any]) -> Any:
    """``RDBStorage(url)``, tried again when another worker was creating the same empty
    database's tables at that moment: Optuna creates them without a lock, and the loser gets
    'already exists' or a unique violation (optuna#1092); a moment later the tables are there."""
    import time

    import sqlalchemy.exc

    def make() -> Any:
        with warnings.catch_warnings():  # the heartbeat is marked experimental; it fails a killed worker's trial
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, **kwargs)

    for attempt in range(3):
        try:
            return make()
        except sqlalchemy.exc.DBAPIError as exc:
            if not (isinstance(exc, sqlalchemy.exc.IntegrityError) or "already exists" in str(exc)):
                raise
            time.sleep(0.2 * (attempt + 1))
    return make()  # a fourth time; its error is the one reported


def _check_file(path: Path, url: str, *, create: bool) -> None:
    if path.is_dir():
        raise StorageError(f"storage {url}: {path} is a folder, not a file")
    if not path.exists():
        if not create:
            raise StorageError(f"storage {url}: {path} does not exist")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"storage {url}: cannot create {path.parent}: {exc}") from None


def safe_url(url: str) -> str:
    """``url`` without its password (in the user part, up to the last '@' before any query,
    as libpq reads it, or in a ``password=`` query), for messages."""
    import re

    scheme, sep, rest = url.partition("://")
    query_at = rest.find("?") if "?" in rest else len(rest)
    at = rest.rfind("@", 0, query_at)
    if sep and at > 0 and ":" in rest[:at]:
        rest = rest[:at].split(":", 1)[0] + ":***" + rest[at:]
    return re.sub(r"(?i)([?&]password=)[^&]*", r"\1***", f"{scheme}{sep}{rest}")


def file_of(url: str) -> Path | None:
    """The file an SQLite or journal storage lives in (None for a server): the folder a
    recorded run path is resolved against when the storage was copied from elsewhere. Both
    read paths as SQLAlchemy does: ``sqlite:///runs/x.db`` is relative, ``sqlite:////x.db``
    absolute."""
    scheme, _, rest = url.strip().partition("://")
    if scheme in ("sqlite", "journal"):
        return Path(rest[1:]) if rest.startswith("/") else Path(rest)
    return None


# ----------------------------------------------------------------------------- reading studies


@dataclasses.dataclass(frozen=True, kw_only=True)
class Trial:
    """One trial as the storage holds it: what the tables and the Tuning view show."""

    number: int
    state: str  # complete | running | fail | pruned | waiting
    params: dict[str, Any]
    val_acc: float | None  # the objective: Acc on the validation sets
    test_acc: float | None
    bwt: float | None
    seconds: float | None
    run_dir: str | None  # the run folder as recorded (absolute, on the machine named by host)
    run_dir_relative: str | None  # the same, relative to the storage file (SQLite or journal only)
    host: str | None
    note: str | None  # why a trial was failed or pruned
    test_matrix: np.ndarray | None
    families: tuple[str, ...]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Study:
    """A study's record: ``kind`` 'tune' (a TPE search) or 'compare' (a shared grid)."""

    name: str
    kind: str
    attrs: dict[str, Any]
    trials: tuple[Trial, ...]

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
    """The studies in a storage, by name (never creates the storage file)."""

    storage = open_storage(url, create=False)
    return [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]


def load_study(url: str, name: str) -> Study:
    """One study with every trial, read from ``url`` (never creates anything)."""
    return _read(open_storage(url, create=False), name)


def _read(storage: Any, name: str) -> Study:

    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise StorageError(f"no study named {name!r} in this storage") from None
    attrs = dict(study.user_attrs)
    trials = tuple(_trial(t) for t in study.get_trials(deepcopy=False))
    return Study(name=name, kind=attrs.get("kind", "other"), attrs=attrs, trials=trials)


def _trial(t: Any) -> Trial:
    a = t.user_attrs
    matrix = a.get("test_matrix")
    return Trial(number=t.number, state=t.state.name.lower(), params=dict(t.params),
                 val_acc=t.values[0] if t.values and len(t.values) == 1 else a.get("val_acc"), test_acc=a.get("test_acc"), bwt=a.get("bwt"),
                 seconds=a.get("seconds"), run_dir=a.get("run_dir"), run_dir_relative=a.get("run_dir_relative"),
                 host=a.get("host"), note=a.get("note"),
                 test_matrix=None if matrix is None else np.array(
                     [[np.nan if v is None else v for v in row] for row in matrix], dtype=float),
                 families=tuple(a.get("families", ())))


def run_folder(url: str, trial: Trial) -> Path | None:
    """The trial's run folder on this machine, or None: the recorded path where it exists,
    else the path relative to the storage file (a study copied with its folders)."""
    if trial.run_dir and Path(trial.run_dir).is_dir():
        return Path(trial.run_dir)
    home = file_of(url)
    if home is not None and trial.run_dir_relative:
        candidate = (home.parent / trial.run_dir_relative).resolve()
        if candidate.is_dir():
            return candidate
    return None


def importances(url: str, name: str) -> dict[str, float]:
    """Optuna's parameter importances (fANOVA, seeded) for validation Acc; empty below two
    complete trials, where there is nothing to explain."""

    storage = open_storage(url, create=False)
    study = optuna.load_study(study_name=name, storage=storage)
    done = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]
    if len(done) < 2 or not study.best_trial.params:
        return {}
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    return {k: float(v) for k, v in optuna.importance.get_param_importances(study, evaluator=evaluator).items()}


def tuned_studies(url: str) -> dict[tuple[str, str], Study]:
    """Every tune study of a storage, keyed by (sequence, method): where the Compare view and
    ``compare --tuned`` find PS and the best parameters. Of two studies of one pair, the one
    with more complete trials wins."""
    storage = open_storage(url, create=False)

    found: dict[tuple[str, str], Study] = {}
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        if summary.user_attrs.get("kind") != "tune":
            continue
        study = _read(storage, summary.study_name)
        key = (study.sequence, study.method)
        if key not in found or len(study.complete) > len(found[key].complete):
            found[key] = study
    return found


def default_study(sequence: str, method: str) -> str:
    """The name ``tune`` gives a study unless told otherwise, and where ``compare --tuned`` looks."""
    return f"tune-{sequence}-{method}"


# ----------------------------------------------------------------------------- recording a trial


def _outcome(trial: Any, *, config: RunConfig, run_dir: Path, storage_url: str, result: Any,
             families: Sequence[str]) -> float:
    """Keep a finished trial's metrics in the storage; return its objective, validation Acc."""
    if result.status != "finished":
        raise RuntimeError(f"the run ended {result.status}")
    val = metrics.average_accuracy(result.val_acc)
    test = metrics.average_accuracy(result.test_acc)
    home = file_of(storage_url)
    relative = None
    if home is not None:
        try:
            relative = str(run_dir.resolve().relative_to(home.resolve().parent))
        except ValueError:
            relative = None
    for key, value in {
        "val_acc": val, "test_acc": test, "bwt": metrics.backward_transfer(result.test_acc),
        "seconds": round(float(result.seconds), 3),
        "test_matrix": [[None if not math.isfinite(v) else round(float(v), 6) for v in row] for row in result.test_acc],
        "families": list(families), "run_dir_relative": relative,
    }.items():
        trial.set_user_attr(key, value)
    return val


def _start(trial: Any, run_dir: Path) -> None:
    trial.set_user_attr("run_dir", str(run_dir.resolve()))
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")


def setup_key(config: RunConfig) -> str:
    """What a study was made for, without the seed, the tuned values and what is written to
    disk: a second command on the same study, or ``compare --tuned``, must use the same set-up."""
    data = _portable(config)
    for r in search_space(config.method):
        (data[r.section] if r.section else data).pop(r.field)
    data["optim"].pop("lr_min")  # follows lr (apply_params)
    return _digest(data)


def grid_key(config: RunConfig) -> str:
    """What a shared comparison's cell was made with: every training option, tuned ones too,
    so two machines with different ``--lr`` (or one with ``--tuned``) cannot fill one grid."""
    return _digest(_portable(config))


def _portable(config: RunConfig) -> dict[str, Any]:
    """The config as machines that share a study must agree on it: without the seed, what is
    written to disk, the device and the data folder (each machine has its own), and with the
    sequence's default task count and shots filled in (``--n-tasks 10`` is the default's 10)."""
    from prm.data import SPECS

    data = results_relevant(config.to_dict())
    for key in ("seed", "record", "device", "data_dir"):
        data.pop(key)
    spec = SPECS.get(config.sequence)
    if spec is not None:
        data["n_tasks"] = spec.default_n if config.n_tasks is None else config.n_tasks
        data["shots"] = spec.shots if config.shots is None else config.shots
    return data


def _digest(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _claim(trial: Any, *, full: Callable[[int], bool], same: Callable[[Any], bool],
           pending: Callable[[list[Any]], bool] = lambda earlier: False) -> str | None:
    """Why ``trial`` must not train (None: it may). It may not when the trials numbered before
    it that have not failed already fill the study (``full(count)``), or when one of them is
    the same grid cell (``same``). Trial numbers are handed out by the storage, one at a time,
    so of two workers that started at once exactly one trains."""
    import time

    alive = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)
    for _ in range(20):  # an earlier trial that has not drawn its cell yet is read again, a moment later
        earlier = [t for t in trial.study.get_trials(deepcopy=False, states=alive) if t.number < trial.number]
        if not pending(earlier):
            break
        time.sleep(0.25)
    if full(len(earlier)):
        return "not trained: the study already had its trials when this one started"
    for t in earlier:
        if same(t):
            return f"not trained: trial {t.number} took the same cell"
    return None


def _open(url: str, name: str, *, sampler: Any, attrs: dict[str, Any]) -> Any:
    """Create the study, or load it and check it was made for the same thing (``attrs``)."""
    storage = open_storage(url)
    try:
        study = optuna.create_study(storage=storage, study_name=name, direction="maximize", load_if_exists=True,
                                    sampler=sampler)
    except Exception as exc:
        raise StorageError(f"cannot open study {name!r} on {safe_url(url)}: {type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:300]}") from None
    held = study.user_attrs
    deadline = time.monotonic() + ATTRS_WAIT_SECONDS
    while held and set(attrs) - set(held) and time.monotonic() < deadline:  # another worker is writing them
        time.sleep(0.05)
        held = study.user_attrs
    if not held:
        for key, value in attrs.items():
            study.set_user_attr(key, value)
        return study
    differs = [key for key, value in attrs.items() if held.get(key) != value]
    if differs:
        def show(d: dict[str, Any]) -> str:
            return ", ".join(f"{k}={d.get(k)}" for k in differs if k != "setup")
        what = show(held) + (" and other training options" if "setup" in differs else "")
        raise StorageError(f"study {name!r} on {safe_url(url)} was made for {what or 'other training options'}; "
                           f"use the same options to resume it, or another --study")
    return study


def _running(study: Any) -> int:
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)))


def fail_running(url: str, name: str) -> int:
    """Mark a study's running trials failed; for a journal storage, whose trials keep no
    heartbeat, after a worker was killed (only when no worker of the study is running)."""
    storage = open_storage(url, create=False)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise StorageError(f"no study named {name!r} in this storage") from None
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for t in running:
        storage.set_trial_user_attr(t._trial_id, "note", "failed by --fail-running: its worker had stopped")
        storage.set_trial_state_values(t._trial_id, state=optuna.trial.TrialState.FAIL)
    count = len(running)
    return count


Train = Callable[[RunConfig, Path, int], Any]
"""How a trial trains: (config, run folder, trial number) -> the engine's RunResult. The CLI
passes one that records the folder and shows progress."""


def tune(*, config: RunConfig, url: str, study_name: str, trials: int, runs_dir: Path, train: Train,
         families: Sequence[str], after: Callable[[Study], None] | None = None) -> Study:
    """Run trials of a TPE study until it holds ``trials`` complete ones (counting those of
    earlier commands and of other workers), then return it.

    The sampler is seeded by ``config.seed``: one worker replays the same study. Its first
    ten trials are drawn at random from a generator seeded by (seed, trial number), so
    parallel workers explore different points; the rest are multivariate TPE with the
    constant liar, which counts other workers' running trials as poor so as not to propose
    them again. The objective is validation Acc; test Acc is kept beside it, never optimised.
    """
    space = search_space(config.method)
    sampler = _StartupBySeed(seed=config.seed, space=space)
    study = _open(url, study_name, sampler=sampler, attrs={
        "kind": "tune", "sequence": config.sequence, "method": config.method, "seed": config.seed,
        "tasks": len(families), "setup": setup_key(config),
        "space": [r.describe() for r in space]})

    def objective(trial: Any) -> float:
        why = _claim(trial, full=lambda n: n >= trials, same=lambda t: False)
        if why:
            trial.set_user_attr("note", why)
            raise optuna.TrialPruned(why)
        params = {r.name: trial.suggest_float(r.name, r.low, r.high, log=r.log) for r in space}
        return _train_trial(trial, apply_params(config, params), runs_dir / f"trial-{trial.number:04d}", url=url,
                            train=train, families=families)

    _check_folders(runs_dir, study, lambda number: f"trial-{number:04d}")
    if after:
        after(_read(study._storage, study_name))
    while True:
        _fail_stale(study)
        if _complete(study) + _running(study) >= trials:
            break  # full, or the rest are running on other workers
        study.optimize(objective, n_trials=1, catch=())
        if after:
            after(_read(study._storage, study_name))
    return _read(study._storage, study_name)


Cell = tuple[str, str, int]  # (sequence, method, seed)


def compare_grid(*, configs: dict[Cell, RunConfig], url: str, study_name: str, out_dir: Path,
                 train: Train, families: Callable[[RunConfig], Sequence[str]],
                 after: Callable[[Study], None] | None = None) -> Study:
    """Train the comparison's cells (``configs``) not yet trained by anyone on this study,
    one per trial, with Optuna's GridSampler handing them out; return the study.

    Each cell is trained once: GridSampler skips cells finished or running, and a worker
    that nevertheless drew a cell another took at the same moment closes its trial untrained.
    """
    cells = sorted(configs)
    grid = {"sequence": sorted({c[0] for c in cells}), "method": sorted({c[1] for c in cells}),
            "seed": sorted({c[2] for c in cells})}
    if len(cells) != math.prod(len(v) for v in grid.values()):
        raise StorageError("a shared comparison must be a full grid of sequences x methods x seeds")
    study = _open(url, study_name, sampler=optuna.samplers.GridSampler(grid, seed=0), attrs={
        "kind": "compare", "cells": [list(c) for c in cells],
        "setup": _digest({"cells": [grid_key(configs[c]) for c in cells]})})

    def objective(trial: Any) -> float:
        cell = (trial.suggest_categorical("sequence", grid["sequence"]),
                trial.suggest_categorical("method", grid["method"]),
                trial.suggest_categorical("seed", grid["seed"]))
        why = _claim(trial, full=lambda n: False, same=lambda t: cell_of(t.params) == cell,
                     pending=lambda earlier: any(t.state == optuna.trial.TrialState.RUNNING and cell_of(t.params) is None
                                                 for t in earlier))
        if why:
            trial.set_user_attr("note", why)
            raise optuna.TrialPruned(why)
        cfg = configs[cell]
        return _train_trial(trial, cfg, out_dir / f"{cell[0]}-{cell[1]}-s{cell[2]}-t{trial.number:04d}", url=url,
                            train=train, families=families(cfg))

    if after:
        after(_read(study._storage, study_name))
    while True:
        _fail_stale(study)
        trials = study.get_trials(deepcopy=False)
        taken = {cell_of(t.params) for t in trials if t.state in (optuna.trial.TrialState.COMPLETE,
                                                                 optuna.trial.TrialState.RUNNING)}
        if all(c in taken for c in cells):
            break
        tried = {cell_of(t.params) for t in trials}
        waiting = {cell_of(t.params) for t in trials if t.state == optuna.trial.TrialState.WAITING}
        for c in cells:  # GridSampler counts a failed cell as visited: queue it again, once
            if c in tried and c not in taken and c not in waiting:
                study.enqueue_trial({"sequence": c[0], "method": c[1], "seed": c[2]})
                break
        study.optimize(objective, n_trials=1, catch=())
        if after:
            after(_read(study._storage, study_name))
    return _read(study._storage, study_name)


def cell_of(params: dict[str, Any]) -> Cell | None:
    """A compare trial's (sequence, method, seed), None before it has drawn them."""
    try:
        return (params["sequence"], params["method"], int(params["seed"]))
    except KeyError:
        return None


def _fail_stale(study: Any) -> None:
    """Fail trials whose worker's heartbeat went stale (SQLite and PostgreSQL), before counting
    what is running: otherwise a killed worker's trial would hold its place for ever."""
    with warnings.catch_warnings():  # marked experimental; it does nothing where no heartbeat is kept
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _check_folders(folder: Path, study: Any, name: Callable[[int], str]) -> None:
    """Refuse a runs folder holding trial folders this study did not make (another storage's
    study of the same name): each of its coming trials would fail on them."""
    if not folder.is_dir():
        return
    made = {name(t.number) for t in study.get_trials(deepcopy=False)}
    foreign = sorted(p.name for p in folder.iterdir() if p.name.startswith("trial-") and p.name not in made)
    if foreign:
        raise StorageError(f"{folder} holds trial folders this study did not make ({', '.join(foreign[:3])}"
                           f"{' ...' if len(foreign) > 3 else ''}); choose another --runs-dir or --study")


def _complete(study: Any) -> int:
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


def _train_trial(trial: Any, config: RunConfig, run_dir: Path, *, url: str, train: Train,
                 families: Sequence[str]) -> float:
    if run_dir.exists():
        raise StorageError(f"{run_dir} already exists (a study of the same name on another storage?); "
                           "choose another runs folder")
    _start(trial, run_dir)
    try:
        result = train(config, run_dir, trial.number)
    except KeyboardInterrupt:
        trial.set_user_attr("note", "interrupted (Ctrl-C); the same command trains a new trial in its place")
        raise
    except Exception as exc:
        trial.set_user_attr("note", f"failed: {type(exc).__name__}: {str(exc)[:200]}")
        raise
    return _outcome(trial, config=config, run_dir=run_dir, storage_url=url, result=result, families=families)


class _StartupBySeed(optuna.samplers.BaseSampler):
    """Multivariate TPE with the constant liar, whose random start-up trials are drawn from
    generators seeded by (seed, trial number, parameter) rather than one per process: two
    workers started with one seed would otherwise propose the same start-up points."""

    STARTUP = 10

    def __init__(self, *, seed: int, space: Sequence[Range]) -> None:
        self._seed = seed
        # the joint space is fixed, not inferred from past trials: Optuna would intersect it
        # with the (empty) parameters of a trial closed untrained and fall back to univariate TPE
        self._space = {r.name: optuna.distributions.FloatDistribution(r.low, r.high, log=r.log) for r in space}
        self._tpe = optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True,
                                               n_startup_trials=self.STARTUP)

    def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, Any]:
        return dict(self._space)

    def sample_relative(self, study: Any, trial: Any, search_space: dict[str, Any]) -> dict[str, Any]:
        return self._tpe.sample_relative(study, trial, search_space)

    def sample_independent(self, study: Any, trial: Any, param_name: str, param_distribution: Any) -> Any:
        finished = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,
                                                            optuna.trial.TrialState.PRUNED))
        if len(finished) < self.STARTUP:
            # one generator per (seed, trial, parameter), mixed by SeedSequence: generators of
            # nearby integer seeds start with nearly equal draws
            entropy = [self._seed, trial.number, zlib.crc32(param_name.encode())]
            rng = optuna.samplers.RandomSampler(seed=int(np.random.SeedSequence(entropy).generate_state(1)[0]))
            return rng.sample_independent(study, trial, param_name, param_distribution)
        return self._tpe.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Any, trial: Any) -> None:
        self._tpe.before_trial(study, trial)

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        self._tpe.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._tpe.reseed_rng()


__all__ = ["DEFAULT_STORAGE", "Cell", "cell_of", "compare_grid", "grid_key", "fail_running", "setup_key", "tune", "Range", "Study", "StorageError", "Trial", "apply_params", "default_study", "file_of",
           "importances", "load_study", "open_storage", "parameter_sensitivity", "run_folder", "safe_url", "search_space",
           "study_names", "tuned_studies"]
