"""A fixed pool of labelled 28x28 images and the tasks cut from it.

The MNIST-5k and Fashion-MNIST sequences are all built the same way: one
pool, one seeded split of the pool into train/val/test (60/20/20 per class),
and tasks that take their images only from the matching part. Because the
split is global, an image that is test data in one task is never training
data in another, even when tasks reuse images (a digit-pair task and a style
task may show the same digit, untransformed and transformed).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from prm.datasets.core import Task, head_labels, make_task, pick, split_rows

SIDE = 28
PARTS = ("train", "val", "test")


@dataclass(frozen=True, eq=False)
class Pool:
    """Flattened float32 images in [0, 1] (row-major 28x28, ink = 1) and int labels."""

    name: str
    x: np.ndarray
    y: np.ndarray
    class_names: tuple[str, ...] = ()

    def label(self, c: int) -> str:
        return self.class_names[c] if self.class_names else str(c)


@functools.lru_cache(maxsize=16)
def global_split(pool: Pool, seed: int) -> np.ndarray:
    """Part of every pool row for this seed: 0 train, 1 val, 2 test (stratified 60/20/20)."""
    rng = np.random.default_rng([seed, 10])
    part = np.zeros(len(pool.y), dtype=np.int64)
    _, val, test = split_rows(np.arange(len(pool.y)), pool.y, rng)
    part[val], part[test] = 1, 2
    part.setflags(write=False)
    return part


def pair_task(pool: Pool, pair: tuple[int, int], *, seed: int, prefix: str = "classes") -> Task:
    """A 2-way task on every pool image of two classes, split by the global split."""
    part = global_split(pool, seed)
    rows = np.flatnonzero(np.isin(pool.y, pair))
    splits = tuple(rows[part[rows] == k] for k in range(3))
    a, b = pair
    names = f" ({pool.label(a)}, {pool.label(b)})" if pool.class_names else ""
    return make_task(
        name=f"{prefix} {a}-{b}{names}", family="classes", classes=pair,
        parts=pick(pool.x, head_labels(pool.y, pair), splits), rows=splits,
    )


def chunks(pool: Pool, k: int, *, seed: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``k`` disjoint, class-balanced (train, val, test) row sets covering the pool.

    Each class's rows in each part are shuffled and cut into ``k`` nearly equal
    pieces; chunk ``j`` takes piece ``j`` of every class and part.
    """
    part = global_split(pool, seed)
    rng = np.random.default_rng([seed, 11, k])
    out = [([], [], []) for _ in range(k)]
    for p in range(3):
        for c in np.unique(pool.y):
            members = rng.permutation(np.flatnonzero((part == p) & (pool.y == c)))
            for j, piece in enumerate(np.array_split(members, k)):
                out[j][p].append(piece)
    return [tuple(np.sort(np.concatenate(ps)) for ps in chunk) for chunk in out]
