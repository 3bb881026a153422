"""Measured task-to-task transfer: a ground truth for "which tasks are similar".

For synthetic sequences we know by construction which tasks share a function,
but a number is more useful than a label: ``transfer_matrix(tasks)[a, b]`` is
the test accuracy on task ``b`` of a classifier trained on task ``a``'s
training split alone and applied unchanged (its head index ``k`` is read as
task ``b``'s head index ``k``). The diagonal is each task's own accuracy;
chance level of entry ``[a, b]`` is ``1 / n_classes`` of task ``b``, or less
when task ``a`` has fewer outputs.

The classifier is ridge regression onto one-hot targets, solved in closed
form (in the dual when there are fewer samples than pixels). It is
deterministic, needs no tuning, and fits ten 784-pixel tasks in well under a
second, which is what lets every build of a sequence carry its matrix.
"""

from __future__ import annotations

import numpy as np

from prm.datasets.core import Task

RIDGE = 1.0


def _features(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return np.hstack([x, np.ones((len(x), 1))])


def fit_ridge(x, y, n_classes: int, *, ridge: float = RIDGE):
    """A predictor ``f(x) -> head index`` trained on (x, y) by one-hot ridge regression."""
    a = _features(x)
    targets = np.eye(n_classes)[np.asarray(y)]
    if len(a) < a.shape[1]:  # dual: w = A^T (A A^T + r I)^-1 Y
        w = a.T @ np.linalg.solve(a @ a.T + ridge * np.eye(len(a)), targets)
    else:
        w = np.linalg.solve(a.T @ a + ridge * np.eye(a.shape[1]), a.T @ targets)
    return lambda z: np.argmax(_features(z) @ w, axis=1)


def transfer_matrix(tasks: list[Task] | tuple[Task, ...]) -> np.ndarray:
    """T x T float array: row = task trained on, column = task tested on."""
    tests = [(t.x_test.numpy(), t.y_test.numpy()) for t in tasks]
    out = np.zeros((len(tasks), len(tasks)))
    for a, task in enumerate(tasks):
        predict = fit_ridge(task.x_train.numpy(), task.y_train.numpy(), task.n_classes)
        for b, (x, y) in enumerate(tests):
            out[a, b] = float(np.mean(predict(x) == y)) if len(y) else float("nan")
    return out
