"""Continual-learning metrics as pure functions over the accuracy matrix.

R is a (T, T) array: R[j, i] = test accuracy on task i after learning task j (0-based), NaN
where task i has not been learnt yet (i > j) or was never evaluated. Every function accepts a
partially filled matrix (a stopped run): it uses the last completed row.
"""

from __future__ import annotations

import numpy as np


def completed_rows(R: np.ndarray) -> int:
    """How many tasks have been learnt: the rows whose diagonal entry is known."""
    diag = np.diag(np.asarray(R, dtype=float))
    done = 0
    while done < len(diag) and not np.isnan(diag[done]):
        done += 1
    return done


def _last(R: np.ndarray) -> tuple[np.ndarray, int]:
    R = np.asarray(R, dtype=float)
    n = completed_rows(R)
    if n == 0:
        raise ValueError("the accuracy matrix has no completed task")
    return R, n


def _pick(n: int, tasks) -> np.ndarray:
    """The learnt tasks among ``tasks`` (all learnt tasks when None), as indices."""
    index = np.arange(n) if tasks is None else np.array([i for i in tasks if i < n], dtype=int)
    if len(index) == 0:
        raise ValueError("none of the selected tasks has been learnt")
    return index


def average_accuracy(R: np.ndarray, tasks=None) -> float:
    """Acc = mean_i R[T, i] over the tasks learnt so far (or over the learnt ones of ``tasks``)."""
    R, n = _last(R)
    return float(np.mean(R[n - 1, _pick(n, tasks)]))


def just_learnt(R: np.ndarray, tasks=None) -> float:
    """Mean of the diagonal, R[i, i]: accuracy right after each task is learnt (Acc - BWT)."""
    R, n = _last(R)
    return float(np.mean(np.diag(R)[_pick(n, tasks)]))


def backward_transfer(R: np.ndarray, tasks=None) -> float:
    """BWT = mean_i (R[T, i] - R[i, i]); negative means forgetting. 0 after a single task.
    ``tasks`` restricts the mean to those tasks (for example one task family)."""
    R, n = _last(R)
    index = _pick(n, tasks)
    return float(np.mean(R[n - 1, index] - np.diag(R)[index]))


def forward_transfer(R: np.ndarray, stl: np.ndarray, tasks=None) -> float:
    """FWT = mean_i (R[i, i] - STL_i): accuracy just after learning a task, minus single-task.

    ``stl`` holds each task's single-task accuracy (the diagonal of an STL run's matrix);
    ``tasks`` restricts the mean as in :func:`backward_transfer`.
    """
    R, n = _last(R)
    stl = np.asarray(stl, dtype=float)
    if len(stl) < n:
        raise ValueError(f"need STL accuracies for {n} tasks, got {len(stl)}")
    index = _pick(n, tasks)
    return float(np.mean(np.diag(R)[index] - stl[index]))


def median_seed(gains: dict[int, float]) -> int:
    """The representative seed of a claim: the seed whose gain (say Acc of PRM − Acc of HAT on
    the same seed) is the median over seeds, the lower middle for an even count, ties broken by
    the smaller seed. Samples and the app's default run use it so that what is shown is a
    typical seed, never the best of several."""
    if not gains:
        raise ValueError("median_seed needs at least one seed")
    ranked = sorted(gains, key=lambda s: (gains[s], s))
    return ranked[(len(ranked) - 1) // 2]
