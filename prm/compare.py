"""Compare's tables: several runs side by side, metrics per run, mean and spread per group of
like runs, their mean accuracy matrices and the time per task (pure: pandas in, pandas out;
the explorer's Compare view draws them, ``explorer.figures.compare``).

Only like runs are averaged: the same sequence, method, tasks learnt out of how many, and
configuration apart from the seed; the spread is over distinct seeds (copies of one seed
count once), so a stopped 2-of-10 run or a 3-task run never blurs a finished 10-task one.
Times (CT, the time per task) are compared only between runs of one engine version
(:func:`split_by_engine`): a new engine may step faster or slower, so older seconds mislead.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from prm.analysis import SINGLE_TASK, run_metrics
from prm.config import key_view

if TYPE_CHECKING:  # types only
    from prm.run import RunState

METRICS = {"acc": "Acc", "bwt": "BWT", "fwt": "FWT", "ct": "CT (s)"}
GROUP = ["sequence", "method", "tasks", "config"]
"""What makes runs alike enough to average: everything but the seed."""
DETECTION_PHASES = ("dtd", "transfer", "reference")
"""The timing phases (``RunState.task_seconds``) spent deciding which tasks are similar: PRM's
DTD (its passes and X-means), CAT's transfer and reference trainings."""
TIME = ["run", "method", "config", "seed", "task", "seconds", "detection", "accumulated"]


def config_key(config: dict) -> str:
    """A config without its seed and its recording options (what was written to disk, such as
    checkpoints or the trajectory dtype, changes no result), as canonical JSON: the grouping key
    of 'the same experiment' (:func:`prm.config.key_view`). Sections the method never reads
    (``Method.sections``: CAT's settings outside CAT runs) are left out too, so a run recorded now still groups with an
    earlier one of the same experiment."""
    return json.dumps(key_view(config, without=("seed", "record")), sort_keys=True, default=list)


def setup_key(config: dict) -> str:
    """A config's set-up alone (sequence, tasks, network, optimiser, HAT's settings), as
    canonical JSON: what may differ between runs told side by side (HAT next to PRM+) is left
    out: the method and its own settings, the seed, where the data and the computation were,
    what was written to disk."""
    return json.dumps(key_view(config, without=("seed", "record", "method", "place")), sort_keys=True, default=list)


def config_id(config: dict) -> str:
    """A short name for a configuration apart from its seed: equal ids, same experiment."""
    return hashlib.sha1(config_key(config).encode()).hexdigest()[:6]


@dataclass(frozen=True, kw_only=True)
class EngineSplit:
    """Runs whose times compare with the open run's (``comparable``, by name) and the others
    (``left_out``: name -> the engine version that recorded it, None where it recorded none)."""

    reference: str | None
    comparable: tuple[str, ...]
    left_out: dict[str, str | None]


def split_by_engine(versions: Mapping[str, str | None], *, reference: str | None) -> EngineSplit:
    """Split runs (name -> ``Run.engine_version``) by the open run's version ``reference``:
    only runs of that very version have comparable seconds, since a new engine version is cut
    exactly when the step's speed or results change (``prm.__version__``). A run of unknown
    version never compares, and when the open run's own version is unknown nothing does."""
    if reference is None:
        return EngineSplit(reference=None, comparable=(), left_out=dict(versions))
    return EngineSplit(reference=reference, comparable=tuple(n for n, v in versions.items() if v == reference),
                       left_out={n: v for n, v in versions.items() if v != reference})


def stl_for(state: RunState, seed: int | None, others: dict[str, tuple[RunState, int | None]]) -> RunState | None:
    """The STL run of the same sequence, seed and task count: the reference FWT needs."""
    for other, other_seed in others.values():
        if (other.config.get("method") == SINGLE_TASK and other.sequence == state.sequence and other_seed == seed
                and other.n_tasks == state.n_tasks):
            return other
    return None


def per_run(runs: dict[str, tuple[RunState, int | None]], *, variants: Mapping[str, str] | None = None,
            timed: Collection[str] | None = None) -> pd.DataFrame:
    """One row per run: sequence, method, seed, tasks learnt of all, how it ended, its
    configuration id and the four metrics (FWT None without STL). ``variants`` names what
    sets a run apart that its config does not say (a what-if run: the decision it forced), so
    it is never averaged with its parent's experiment. ``timed`` names the runs whose CT
    compares (``EngineSplit.comparable``); the others' CT is None (all are timed without it)."""
    rows = []
    for name, (state, seed) in runs.items():
        values = run_metrics(state, stl=stl_for(state, seed, runs))
        variant = (variants or {}).get(name)
        if timed is not None and name not in timed:
            values["ct"] = None
        rows.append({"run": name, "sequence": state.sequence, "method": state.config.get("method"), "seed": seed,
                     "tasks": f"{values['tasks_done']}/{state.n_tasks}",
                     "ended": state.end.status if state.end is not None else "not ended",
                     "config": config_id(state.config) + (f" · {variant}" if variant else ""),
                     **{label: values[key] for key, label in METRICS.items()}})
    return pd.DataFrame(rows, columns=["run", "sequence", "method", "seed", "tasks", "ended", "config",
                                       *METRICS.values()])


def per_method(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over distinct seeds for each group of like runs (GROUP);
    copies of one seed are averaged first and count as one seed. A metric a run lacks (FWT
    without STL, CT of a run of another engine) is averaged over the seeds that have it."""
    rows = []
    for group, part in table.groupby(GROUP, sort=False, dropna=False):
        row = {**dict(zip(GROUP, group)), "runs": len(part), "seeds": part["seed"].nunique(dropna=False)}
        by_seed = part.assign(seed=part["seed"].fillna(-1)).groupby("seed")
        for label in METRICS.values():
            values = by_seed[label].apply(lambda v: pd.to_numeric(v, errors="coerce").mean()).dropna()
            row[label] = float(values.mean()) if len(values) else None
            row[f"{label} sd"] = float(values.std(ddof=0)) if len(values) > 1 else None
        rows.append(row)
    return pd.DataFrame(rows, columns=[*GROUP, "runs", "seeds", *(f"{label}{sd}" for label in METRICS.values()
                                                                   for sd in ("", " sd"))])


def with_ps(summary: pd.DataFrame, ps: Mapping[tuple[str, str], float | None]) -> pd.DataFrame:
    """:func:`per_method` with a PS column: the parameter sensitivity of each group's
    (sequence, method) from its tune study (``ps``), None where there is no study or the
    study has fewer than two complete trials."""
    return summary.assign(PS=[ps.get((s, m)) for s, m in zip(summary["sequence"], summary["method"])])


def group_matrices(table: pd.DataFrame, states: dict[str, RunState]) -> list[dict]:
    """Per group of like runs (:data:`GROUP`, as in :func:`per_method`), its mean accuracy
    matrix over distinct seeds and their standard deviation (copies of one seed averaged
    first, as for the metrics); a group of one seed is its own matrix, with no sd. ``table``
    is :func:`per_run` of ``states``."""
    out = []
    for group, part in table.groupby(GROUP, sort=False, dropna=False):
        by_seed: dict = {}
        for name, seed in zip(part["run"], part["seed"].fillna(-1)):
            by_seed.setdefault(seed, []).append(states[name].accuracy_matrix("test"))
        with warnings.catch_warnings():  # cells above the diagonal are blank in every seed: stay blank
            warnings.simplefilter("ignore", RuntimeWarning)
            seeds = np.array([np.nanmean(ms, axis=0) if len(ms) > 1 else ms[0] for ms in by_seed.values()])
            many = len(seeds) > 1
            mean = np.nanmean(seeds, axis=0) if many else seeds[0]
            sd = np.nanstd(seeds, axis=0) if many else None
        sequence, method, tasks, config = group
        title = (f"{method} · {sequence} · {tasks} · mean of {len(seeds)} seeds" if many
                 else str(part["run"].iloc[0]))
        out.append({"title": title, "mean": mean, "sd": sd, "seeds": len(seeds), "group": dict(zip(GROUP, group))})
    return out


def task_times(runs: dict[str, tuple[RunState, int | None]]) -> pd.DataFrame:
    """One row per run and learnt task: its seconds, summed over every timing phase of
    ``RunState.task_seconds`` (training, evaluation, DTD, CAT's transfer and reference
    trainings), those of them spent deciding similarity (:data:`DETECTION_PHASES`), and the
    seconds accumulated up to it. A run still running, stopped or failed has rows for the
    tasks it learnt. A run whose seconds do not add up to a finite number (a damaged log: each
    value is finite, their sum need not be) is left out."""
    rows = []
    for name, (state, seed) in runs.items():
        phases = state.task_seconds()
        zero = np.zeros(state.tasks_done)
        per_task = sum(phases.values(), zero)
        if not np.isfinite(per_task.sum()):
            continue
        detection = sum((phases[p] for p in DETECTION_PHASES if p in phases), zero)
        for task, (seconds, spent, accumulated) in enumerate(zip(per_task, detection, np.cumsum(per_task))):
            rows.append({"run": name, "method": state.config.get("method"), "config": config_id(state.config),
                         "seed": seed, "task": task, "seconds": float(seconds), "detection": float(spent),
                         "accumulated": float(accumulated)})
    return pd.DataFrame(rows, columns=TIME)


def time_per_method(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`task_times` per method (and configuration, where a method has runs of several)
    and task: the mean over distinct seeds of the time per task and of the accumulated time
    (copies of one seed averaged first, as for the metrics), over the seeds that reached that
    task."""
    rows = []
    for (method, config, task), part in table.groupby(["method", "config", "task"], sort=False, dropna=False):
        by_seed = part.assign(seed=part["seed"].fillna(-1)).groupby("seed")[["seconds", "detection",
                                                                             "accumulated"]].mean()
        rows.append({"method": method, "config": config, "task": task, "seeds": len(by_seed),
                     **{column: float(by_seed[column].mean()) for column in ("seconds", "detection", "accumulated")}})
    out = pd.DataFrame(rows, columns=["method", "config", "task", "seeds", "seconds", "detection", "accumulated"])
    return out.sort_values(["method", "config", "task"], kind="stable").reset_index(drop=True)
