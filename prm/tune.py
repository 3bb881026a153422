"""Hyper-parameter studies and shared comparisons, kept in an Optuna storage.

The paper tunes dropout and the regulariser with Optuna's TPE over 20 trials and reports PS,
the standard deviation of Acc over those trials: how much a method's result depends on
getting its hyper-parameters right. :func:`tune` runs such a study; :func:`compare_grid`
spreads a comparison (sequence x method x seed) over whoever runs the same command on the
same storage. Both keep each trial's metrics and accuracy matrix in the storage itself, so a
table or the explorer's Tuning view needs no file from another machine; each trial also
names the run folder it recorded, relative to the storage file where there is one
(:func:`recorded_folder`), so a storage copied with its folders opens them wherever it lies.

Storages are opened and read by :mod:`prm.storages` (a look never writes), studies and trials
read as untrusted input by :mod:`prm.studies`; this module re-exports both, so callers keep
one name, ``prm.tune``, for the whole feature.

Workers coordinate only through the storage. A trial counts towards ``--trials`` from the
moment it starts, so parallel workers never overshoot; one that started after the study was
already full, or a grid cell another worker also took, is closed as *pruned* with the reason
in its ``note`` attribute, before any training. A worker stopped by Ctrl-C marks its trial
failed; one killed outright leaves it running until its heartbeat goes stale (two minutes;
SQLite and PostgreSQL), after which the next worker marks it failed. Failed trials do not
count: running the same command again trains the trials still missing.
"""

from __future__ import annotations

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

from prm import analysis, methods
from prm.methods.base import Range
from prm.config import RunConfig, key_view
from prm.storages import StorageError, engine_url, file_of, open_storage, read_storage, safe_url
from prm.studies import (Study, Trial, default_study, importances, load_study, parameter_sensitivity, read_study,
                         study_names, tuned_studies)

DEFAULT_STORAGE = "sqlite:///runs/optuna.db"
ATTRS_WAIT_SECONDS = 10.0
"""How long a worker waits for the one that created a study to finish writing what the study
was made for (its attributes are written one by one after the study exists)."""


# ----------------------------------------------------------------------------- search space


INPUT_DROPOUT = Range(name="input_dropout", section="model", field="input_dropout", low=0.0, high=0.5)
HIDDEN_DROPOUT = Range(name="hidden_dropout", section="model", field="hidden_dropout", low=0.0, high=0.7)
LR = Range(name="lr", section="optim", field="lr", low=0.01, high=0.3, log=True)
LAMB = Range(name="lamb", section="hat", field="lamb", low=0.05, high=5.0, log=True)
EWC_LAMBDA = Range(name="ewc_lambda", section=None, field="ewc_lambda", low=10.0, high=1e5, log=True)
METHOD_RANGES = {r.name: r for r in (LAMB, EWC_LAMBDA)}
"""The ranges a method adds to the common ones by name (``Method.tuned``)."""


def search_space(method: str) -> tuple[Range, ...]:
    """The paper's space: both dropouts and the learning rate for every method, plus the
    method's regulariser strength (HAT's and PRM's mask sparsity ``lamb``, EWC's lambda) and
    the ranges of its own settings (``Method.ranges``: PathNet's, SupSup's, HyperNet's, ACL's).
    The ranges hold this project's defaults (dropout 0.2/0.5, lr 0.1, lamb 0.75, EWC 5000)
    well inside them; docs/tuning.md says why each bound is where it is."""
    method = methods.get(method)
    return (INPUT_DROPOUT, HIDDEN_DROPOUT, LR, *(METHOD_RANGES[name] for name in method.tuned), *method.ranges)


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


# ----------------------------------------------------------------------------- recording a trial


def _outcome(trial: Any, *, result: Any, families: Sequence[str]) -> float:
    """Keep a finished trial's metrics in the storage; return its objective, validation Acc."""
    if result.status != "finished":
        raise RuntimeError(f"the run ended {result.status}")
    val, test = (analysis.matrix_metrics(R) for R in (result.val_acc, result.test_acc))
    for key, value in {
        "val_acc": val["acc"], "test_acc": test["acc"], "bwt": test["bwt"],
        "seconds": round(float(result.seconds), 3),
        "test_matrix": [[None if not math.isfinite(v) else round(float(v), 6) for v in row] for row in result.test_acc],
        "families": list(families),
    }.items():
        trial.set_user_attr(key, value)
    return val["acc"]


def _start(trial: Any, run_dir: Path, url: str) -> None:
    trial.set_user_attr("run_dir", recorded_folder(run_dir, url))
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")


# ----------------------------------------------------------------------------- where a trial's run folder is


def recorded_folder(run_dir: Path, url: str) -> str:
    """``run_dir`` as a trial records it: relative to the storage file's folder (POSIX) when it
    lies below it, so a storage copied with its study's folders opens them in any clone or on any
    machine; absolute only where that cannot be, a server storage (PostgreSQL has no file) or a
    runs folder outside the storage file's, and then it names a folder on the machine in ``host``."""
    folder = Path(os.path.abspath(run_dir))
    home = file_of(url)
    if home is not None:
        try:
            return folder.relative_to(Path(os.path.abspath(home)).parent).as_posix()
        except ValueError:
            pass
    return str(folder)


def relative_folder(trial: Trial) -> str | None:
    """The trial's folder as recorded relative to its storage file: ``run_dir`` where it is
    relative (as :func:`recorded_folder` writes it), else ``run_dir_relative``, which earlier
    versions recorded beside an absolute ``run_dir``; None where neither is."""
    if trial.run_dir and not os.path.isabs(trial.run_dir):
        return trial.run_dir
    return trial.run_dir_relative or None


def inside(relative: str) -> str | None:
    """``relative`` normalised, None where it would leave the folder it is relative to: a
    storage is untrusted, and one naming ``../..`` or an absolute path must not point a reader
    elsewhere. Judged on the text (a link the user made inside that folder is theirs to follow)."""
    path = os.path.normpath(relative)
    if os.path.isabs(path) or path in (".", "..") or path.startswith("../"):
        return None
    return path


def run_folder(url: str, trial: Trial) -> Path | None:
    """The trial's run folder on this machine, or None. A relative record is resolved against
    the storage file's folder (only :func:`inside` it) and preferred: a clone's own copy,
    wherever the study was made. An absolute one is used as recorded, where it exists here."""
    home, relative = file_of(url), relative_folder(trial)
    kept = inside(relative) if home is not None and relative else None
    candidates = [Path(os.path.abspath(home.parent)) / kept if kept else None,
                  Path(trial.run_dir) if trial.run_dir and os.path.isabs(trial.run_dir) else None]
    return next((p for p in candidates if p is not None and os.path.isdir(p)), None)


# ----------------------------------------------------------------------------- sharing a study


def study_key(config: RunConfig) -> str:
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

    data = key_view(config.to_dict(), without=("seed", "record", "place"))
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
        "tasks": len(families), "setup": study_key(config),
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
        after(read_study(study._storage, study_name))
    while True:
        _fail_stale(study)
        if _complete(study) + _running(study) >= trials:
            break  # full, or the rest are running on other workers
        study.optimize(objective, n_trials=1, catch=())
        if after:
            after(read_study(study._storage, study_name))
    return read_study(study._storage, study_name)


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
        after(read_study(study._storage, study_name))
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
            after(read_study(study._storage, study_name))
    return read_study(study._storage, study_name)


def cell_of(params: dict[str, Any]) -> Cell | None:
    """A compare trial's (sequence, method, seed), None before it has drawn them, or where
    they are not two names and an integer seed."""
    sequence, method, seed = (params.get(p) for p in ("sequence", "method", "seed"))
    if isinstance(sequence, str) and isinstance(method, str) and isinstance(seed, int) and not isinstance(seed, bool):
        return (sequence, method, seed)
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
    _start(trial, run_dir, url)
    try:
        result = train(config, run_dir, trial.number)
    except KeyboardInterrupt:
        trial.set_user_attr("note", "interrupted (Ctrl-C); the same command trains a new trial in its place")
        raise
    except Exception as exc:
        trial.set_user_attr("note", f"failed: {type(exc).__name__}: {str(exc)[:200]}")
        raise
    return _outcome(trial, result=result, families=families)


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


__all__ = ["DEFAULT_STORAGE", "Cell", "cell_of", "compare_grid", "engine_url", "grid_key",
           "fail_running", "inside", "study_key", "tune", "Range", "Study", "StorageError", "Trial", "apply_params",
           "default_study", "file_of", "importances", "load_study", "open_storage", "parameter_sensitivity",
           "read_storage", "recorded_folder", "relative_folder", "run_folder", "safe_url", "search_space", "study_names", "tuned_studies"]
