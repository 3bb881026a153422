"""Class-split tasks of the paper's data sets (EMNIST-10T, CIFAR100-10T).

The classes are shuffled with the seed and cut into groups, one task per
group. Each task samples its own class-balanced train and validation sets
from the training file and its test set from the test file, with the sizes of
the paper's Table 1 by default. A class without enough images raises
DataError rather than giving a silently smaller task.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from prm.datasets.core import Task, group_classes, head_labels, make_task, sample_classes


def class_split_tasks(
    *,
    what: str,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    groups: list[int],
    sizes: tuple[int, int, int],
    n: int,
    seed: int,
    prepare: Callable[[np.ndarray], np.ndarray],
    label: Callable[[int], str] = str,
) -> list[Task]:
    """The first ``n`` of ``len(groups)`` class groups as tasks.

    ``train``/``test`` are (raw images, labels) of the two files; ``prepare``
    turns raw rows into flattened float32 in [0, 1] (applied only to the rows
    a task uses). ``sizes`` are per-task (train, val, test) totals. Task
    ``rows`` are row numbers in the training file (train, val) and the test
    file (test).
    """
    order = np.random.default_rng([seed, 20]).permutation(sum(groups))
    tasks = []
    for k, classes in enumerate(group_classes(order, groups)[:n]):
        classes = tuple(sorted(classes))
        rng = np.random.default_rng([seed, 21, k])
        tr, va = sample_classes(train[1], classes, sizes[:2], rng, what=f"{what} training file")
        (te,) = sample_classes(test[1], classes, sizes[2:], rng, what=f"{what} test file")
        parts = tuple(
            (prepare(x[idx]), head_labels(y[idx], classes))
            for (x, y), idx in ((train, tr), (train, va), (test, te))
        )
        name = f"{what.split('-')[0]} {' '.join(label(c) for c in classes)}"
        tasks.append(make_task(name=name, family="classes", classes=classes, parts=parts, rows=(tr, va, te)))
    return tasks
