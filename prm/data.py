"""Offline task sequences built from scikit-learn's bundled ``load_digits``.

Nothing is downloaded: ``sklearn.datasets.load_digits`` ships the 1797-image
test set of the UCI "Optical Recognition of Handwritten Digits" data (8x8
images, pixel counts 0..16). That file keeps the images in the order of the
original NIST forms, and every form asks its writer for the same fixed digit
string, so the label sequence alone reveals where one writer's form ends and
the next begins (see :func:`recover_forms` and ``docs/data.md``). This gives a
genuine per-writer split, which is what the ``digits-writers`` sequence needs
for *similar* tasks, next to the ``digits-classes`` sequence of *dissimilar*
tasks and ``digits-mixed``, which interleaves both.
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch

N_DIGITS = 10
CLASS_PAIRS: tuple[tuple[int, int], ...] = tuple((c, c + 1) for c in range(0, N_DIGITS, 2))
# Per-class fractions for validation and test; the rest is training data.
VAL_FRACTION = 0.2
TEST_FRACTION = 0.2

SEQUENCES: dict[str, str] = {
    "digits-classes": "5 dissimilar tasks: digit pairs {0,1},{2,3},...,{8,9}, 2-way heads, all writers",
    "digits-writers": "similar tasks: one 10-way task per writer's form (10 of 14 by default), ~130 images each",
    "digits-mixed": "class-pair and writer tasks interleaved in seeded order (default 5 + 5)",
}
DEFAULT_N_TASKS = {"digits-classes": 5, "digits-writers": 10, "digits-mixed": 10}


class DataError(ValueError):
    """An impossible data request (unknown sequence, bad task count, unparsable labels)."""


@dataclass(frozen=True, kw_only=True)
class Task:
    """One task: its own head of ``n_classes`` outputs and a train/val/test split.

    ``classes[k]`` is the original digit predicted by head index ``k``; labels in
    ``y_*`` are head indices. ``rows`` holds the original ``load_digits`` row
    numbers of (train, val, test), kept for provenance and leakage checks.
    """

    name: str
    family: str
    n_classes: int
    classes: tuple[int, ...]
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    rows: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] = field(default=((), (), ()), repr=False)

    def describe(self) -> dict:
        return {
            "name": self.name,
            "family": self.family,
            "n_classes": self.n_classes,
            "classes": list(self.classes),
            "sizes": {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)},
        }


@dataclass(frozen=True, kw_only=True)
class TaskSequence:
    name: str
    tasks: tuple[Task, ...]
    input_dim: int
    description: str
    seed: int = 0

    def describe(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "seed": self.seed,
            "input_dim": self.input_dim,
            "n_tasks": len(self.tasks),
            "tasks": [t.describe() for t in self.tasks],
        }


# --------------------------------------------------------------------------- forms


def _header() -> np.ndarray:
    """Every form opens with the ten digits written in order three times."""
    return np.tile(np.arange(N_DIGITS), 3)


def infer_template(labels: np.ndarray) -> np.ndarray:
    """Infer the digit string that every form asks for, from the labels alone.

    Split the sequence at every exact occurrence of the 30-digit header; the
    most frequent piece between consecutive headers is a complete, undamaged
    form, i.e. the template. It must occur at least twice to count as agreed.
    """
    labels = np.asarray(labels)
    header = _header()
    starts = []
    if len(labels) >= len(header):
        windows = np.lib.stride_tricks.sliding_window_view(labels, len(header))
        starts = np.flatnonzero((windows == header).all(axis=1)).tolist()
    pieces = Counter(tuple(labels[a:b].tolist()) for a, b in zip(starts, starts[1:] + [len(labels)]))
    if not pieces:
        raise DataError("no form header (0123456789 three times) found in the label sequence")
    template, count = pieces.most_common(1)[0]
    if count < 2:
        raise DataError("no digit string repeats between form headers; cannot infer a form template")
    return np.array(template)


def _align(labels: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Cost table for reading ``labels`` as consecutive passes through ``template``.

    ``D[i, j]`` is the cheapest way to explain the first ``i`` labels ending at
    template position ``j`` of the current form. A template digit the writer
    skipped costs 1, a label differing from the template costs 1, an extra
    label costs 1; finishing a form (``j == m``) starts the next one for free.
    Rows are updated with numpy: deletions along a row are a running minimum.
    """
    n, m = len(labels), len(template)
    ramp = np.arange(m + 1)
    D = np.empty((n + 1, m + 1), dtype=np.int64)

    def close_row(row):
        row = ramp + np.minimum.accumulate(row - ramp)  # skip template digits
        row[0] = min(row[0], row[m])  # a finished form opens the next one
        return ramp + np.minimum.accumulate(row - ramp)

    D[0] = ramp
    for i in range(1, n + 1):
        row = D[i - 1] + 1  # extra label
        row[1:] = np.minimum(row[1:], D[i - 1, :-1] + (template != labels[i - 1]))
        D[i] = close_row(row)
    return D


def recover_forms(labels: np.ndarray) -> list[range]:
    """Row ranges of each writer's form, found from the label sequence alone.

    The template is inferred from the data (:func:`infer_template`); the whole
    sequence is then aligned against repeated copies of it (:func:`_align`),
    and the points where one copy ends and the next begins are the form
    boundaries. This copes with forms whose header is damaged by a missing
    digit, which a plain header search would merge with the previous form.
    The returned ranges are contiguous and partition ``range(len(labels))``.
    """
    labels = np.asarray(labels).astype(np.int64)
    template = infer_template(labels)
    D = _align(labels, template)
    m = len(template)
    i, j, cuts = len(labels), m, [len(labels)]
    while i > 0 or j > 0:  # trace back; prefer matches, then skipped template digits
        here = D[i, j]
        if j > 0 and i > 0 and here == D[i - 1, j - 1] + (template[j - 1] != labels[i - 1]):
            i, j = i - 1, j - 1
        elif j > 0 and here == D[i, j - 1] + 1:
            j -= 1
        elif j == 0 and here == D[i, m] and i > 0:
            cuts.append(i)
            j = m
        else:
            i -= 1  # extra label
    cuts.append(0)
    cuts.reverse()
    return [range(a, b) for a, b in zip(cuts, cuts[1:])]


# --------------------------------------------------------------------------- data


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray, tuple[range, ...]]:
    """Images scaled to [0, 1] and flattened, labels, and the writers' forms.

    Cached: sequences are built many times per process (sweeps, tests).
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y, tuple(recover_forms(y))


def _split_rows(rows: np.ndarray, y: np.ndarray, rng: np.random.Generator):
    """Stratified per-class split into train/val/test, every class kept in train.

    Per class of n images: test = round(0.2 n), val = floor(0.2 n), so a writer's
    13 images of a digit give 8/2/3 and a class with one image stays in train.
    """
    parts = ([], [], [])
    for c in np.unique(y[rows]):
        members = rng.permutation(rows[y[rows] == c])
        n = len(members)
        n_test = int(round(TEST_FRACTION * n))
        n_val = int(VAL_FRACTION * n)
        if n - n_test - n_val < 1:  # only possible for tiny classes
            n_val = max(0, n - n_test - 1)
            n_test = min(n_test, n - 1 - n_val)
        n_train = n - n_val - n_test
        for part, chunk in zip(parts, np.split(members, [n_train, n_train + n_val])):
            part.append(chunk)
    return tuple(np.sort(np.concatenate(p)) for p in parts)


def _make_task(name: str, family: str, classes: tuple[int, ...], rows: np.ndarray, seed_key: list[int]) -> Task:
    x, y, _ = _digits()
    # The split depends only on (seed, family, unit): a writer's split is the
    # same in the writers sequence and in the mixed sequence.
    rng = np.random.default_rng(seed_key)
    splits = _split_rows(rows, y, rng)
    head = np.full(N_DIGITS, -1, dtype=np.int64)
    head[list(classes)] = np.arange(len(classes))
    tensors = {}
    for part, idx in zip(("train", "val", "test"), splits):
        tensors[f"x_{part}"] = torch.from_numpy(x[idx].copy())
        tensors[f"y_{part}"] = torch.from_numpy(head[y[idx]])
    return Task(
        name=name,
        family=family,
        n_classes=len(classes),
        classes=classes,
        rows=tuple(tuple(int(r) for r in idx) for idx in splits),
        **tensors,
    )


def _class_task(pair_index: int, seed: int) -> Task:
    _, y, _ = _digits()
    classes = CLASS_PAIRS[pair_index]
    rows = np.flatnonzero(np.isin(y, classes))
    return _make_task(f"classes {classes[0]}-{classes[1]}", "classes", classes, rows, [seed, 0, pair_index])


def _writer_task(form_index: int, seed: int) -> Task:
    _, _, forms = _digits()
    form = forms[form_index]
    rows = np.arange(form.start, form.stop)
    return _make_task(f"writer {form_index:02d}", "writers", tuple(range(N_DIGITS)), rows, [seed, 1, form_index])


def task_count_range(name: str) -> tuple[int, int]:
    """Smallest and largest valid ``n_tasks`` for a sequence."""
    n_forms = len(_digits()[2])
    return {
        "digits-classes": (1, len(CLASS_PAIRS)),
        "digits-writers": (1, n_forms),
        "digits-mixed": (2, len(CLASS_PAIRS) + n_forms),  # 2: both families must appear
    }[name]


def make_sequence(name: str, *, seed: int = 0, n_tasks: int | None = None) -> TaskSequence:
    """Build a named task sequence; ``seed`` fixes task choice, order and splits."""
    if name not in SEQUENCES:
        raise DataError(f"unknown sequence {name!r}; choose one of: {', '.join(SEQUENCES)}")
    lo, hi = task_count_range(name)
    n = DEFAULT_N_TASKS[name] if n_tasks is None else n_tasks
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not lo <= n <= hi:
        raise DataError(f"{name} takes n_tasks from {lo} to {hi} (or None for {DEFAULT_N_TASKS[name]}); got {n_tasks!r}")
    n = int(n)
    rng = np.random.default_rng(seed)
    n_forms = len(_digits()[2])
    if name == "digits-classes":
        units = [("classes", int(k)) for k in rng.permutation(len(CLASS_PAIRS))[:n]]
    elif name == "digits-writers":
        units = [("writers", int(k)) for k in rng.permutation(n_forms)[:n]]
    else:  # half and half, overflow of the 5 class pairs goes to writers
        n_cls = min(n - n // 2, len(CLASS_PAIRS))
        units = [("classes", int(k)) for k in rng.permutation(len(CLASS_PAIRS))[:n_cls]]
        units += [("writers", int(k)) for k in rng.permutation(n_forms)[: n - n_cls]]
        units = [units[k] for k in rng.permutation(len(units))]
    build = {"classes": _class_task, "writers": _writer_task}
    tasks = tuple(build[family](k, seed) for family, k in units)
    return TaskSequence(
        name=name,
        tasks=tasks,
        input_dim=int(tasks[0].x_train.shape[1]),
        description=f"{SEQUENCES[name]} [seed={seed}, {n} tasks]",
        seed=seed,
    )
