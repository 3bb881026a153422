"""Types and small helpers shared by every data set module.

A data set module turns files into :class:`Task` objects; ``prm.data`` names
the sequences and assembles them. Everything here is independent of where the
pixels come from, so the split and sampling rules are written once, and so are
the rules for reading a data file (:func:`data_file`).

A data folder is the user's own, not an upload: they chose it, filled it and may
have made links in it (to a shared copy of a data set on another disk), so links
are followed, anywhere in the path, where ``prm.safeio`` follows none inside a run
folder. What is read must still be a regular file, opened non-blocking and checked
on its open descriptor, no larger than its reader's bound: a FIFO, a device
(``/dev/zero``), a folder or an oversized file is one DataError, never a hang or a
read until memory runs out.
"""

from __future__ import annotations

import dataclasses
import os
import zlib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from prm import safeio

# Environment variable naming the data folder when no ``data_dir`` is given.
DATA_ENV = "PRM_DATA"


class DataError(ValueError):
    """An impossible data request or a missing/malformed data file.

    The message is meant for the user as is: it names the file or setting that
    is wrong and what was expected, so callers print it instead of a traceback.
    """


@dataclass(frozen=True, kw_only=True)
class Task:
    """One task: its own head of ``n_classes`` outputs and a train/val/test split.

    ``classes[k]`` is the original label predicted by head index ``k``; labels in
    ``y_*`` are head indices. ``rows`` holds the source row numbers of
    (train, val, test), kept for provenance and leakage checks (what a row
    number refers to is documented per data set in ``docs/data.md``).
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
    """An ordered list of tasks sharing one input size.

    ``oracle_transfer[a, b]``, where measured, is the test accuracy on task
    ``b`` of a simple classifier trained on task ``a`` alone (see
    ``prm.datasets.oracle``): a ground-truth hint of which tasks help which.
    """

    name: str
    tasks: tuple[Task, ...]
    input_dim: int
    description: str
    seed: int = 0
    oracle_transfer: np.ndarray | None = field(default=None, repr=False, compare=False)

    def describe(self) -> dict:
        oracle = self.oracle_transfer
        return {
            "name": self.name,
            "description": self.description,
            "seed": self.seed,
            "input_dim": self.input_dim,
            "n_tasks": len(self.tasks),
            "tasks": [t.describe() for t in self.tasks],
            "oracle_transfer": None if oracle is None else np.round(oracle, 4).tolist(),
        }


# --------------------------------------------------------------------------- building tasks


def make_task(
    *,
    name: str,
    family: str,
    classes: tuple[int, ...],
    parts: tuple[tuple[np.ndarray, np.ndarray], ...],
    rows: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> Task:
    """A task from three (images, head labels) pairs: train, val, test.

    Images are flattened and converted to float32 tensors, labels to int64;
    ``rows`` are the provenance row numbers recorded on the task.
    """
    tensors = {}
    for part, (x, y) in zip(("train", "val", "test"), parts):
        tensors[f"x_{part}"] = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32).reshape(len(y), -1))
        tensors[f"y_{part}"] = torch.from_numpy(np.array(y, dtype=np.int64))
    return Task(
        name=name,
        family=family,
        n_classes=len(classes),
        classes=tuple(int(c) for c in classes),
        rows=tuple(tuple(int(r) for r in part) for part in rows),
        **tensors,
    )


def few_shot(task: Task, shots: int, *, seed: int) -> Task:
    """``task`` with only ``shots`` training images per class (validation and test unchanged).

    The images kept depend on (seed, task name) alone, so a writer keeps the same images in
    every sequence it appears in. A class with fewer images keeps them all.
    """
    rng = np.random.default_rng([seed, 61, zlib.crc32(task.name.encode())])
    y = task.y_train.numpy()
    keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(y == c))[:shots] for c in range(task.n_classes)]))
    train_rows = tuple(np.asarray(task.rows[0])[keep].tolist()) if task.rows[0] else ()
    index = torch.from_numpy(keep)
    return dataclasses.replace(task, x_train=task.x_train[index], y_train=task.y_train[index],
                               rows=(train_rows, task.rows[1], task.rows[2]))


@dataclass(frozen=True, kw_only=True)
class Concept:
    """One yes/no question asked of every image of a multi-class task.

    The paper's similar tasks are one binary question per identity (F-CelebA: "is this
    celebrity smiling?"), so tasks share a concept while their people differ. A concept
    turns a 10-way writer or style task into that shape: ``positive`` lists the head
    indices answered "yes". Head indices, not digits, so that a style task's
    label-permuted twin keeps asking a different question (the control stays a control).
    """

    name: str
    question: str
    positive: frozenset[int]

    def apply(self, task: Task) -> Task:
        """``task`` relabelled to head 0 = "no", head 1 = "yes"; images and splits unchanged."""
        if task.n_classes <= max(self.positive):
            raise DataError(f"concept {self.name!r} needs {max(self.positive) + 1} classes; {task.name} has "
                            f"{task.n_classes}")
        yes = torch.zeros(task.n_classes, dtype=torch.int64)
        yes[sorted(self.positive)] = 1
        return dataclasses.replace(task, name=f"{task.name} {self.name}", n_classes=2, classes=(0, 1),
                                   y_train=yes[task.y_train], y_val=yes[task.y_val], y_test=yes[task.y_test])


HIGH_DIGIT = Concept(name=">=5?", question="is the digit 5 or more?", positive=frozenset(range(5, 10)))


def pick(x: np.ndarray, y: np.ndarray, splits) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """(x[idx], y[idx]) for each index array: the ``parts`` of :func:`make_task` from one array."""
    return tuple((x[idx], y[idx]) for idx in splits)


def head_labels(y: np.ndarray, classes: tuple[int, ...]) -> np.ndarray:
    """Map original labels to head indices (``classes[k]`` -> ``k``); others -> -1."""
    head = np.full(int(max(np.max(y, initial=0), max(classes))) + 1, -1, dtype=np.int64)
    head[list(classes)] = np.arange(len(classes))
    return head[y]


def split_rows(rows: np.ndarray, y: np.ndarray, rng: np.random.Generator, *, val: float = 0.2, test: float = 0.2):
    """Stratified per-class split into train/val/test, every class kept in train.

    Per class of n images: test = round(test * n), val = floor(val * n), and
    the rest is train, which keeps at least one image (so a class with one
    image stays in train). Returns three sorted index arrays.
    """
    rows = np.asarray(rows)
    parts = ([], [], [])
    for c in np.unique(y[rows]):
        members = rng.permutation(rows[y[rows] == c])
        n = len(members)
        n_test = int(round(test * n))
        n_val = int(val * n)
        if n - n_test - n_val < 1:  # only possible for tiny classes
            n_val = max(0, n - n_test - 1)
            n_test = min(n_test, n - 1 - n_val)
        n_train = n - n_val - n_test
        for part, chunk in zip(parts, np.split(members, [n_train, n_train + n_val])):
            part.append(chunk)
    return tuple(np.sort(np.concatenate(p)) if p else np.zeros(0, dtype=np.int64) for p in parts)


def per_class(total: int, n_classes: int) -> list[int]:
    """Spread ``total`` images as evenly as possible over classes (earlier classes get the remainder)."""
    base, extra = divmod(int(total), n_classes)
    return [base + (k < extra) for k in range(n_classes)]


def sample_classes(
    y: np.ndarray, classes: tuple[int, ...], counts: tuple[int, ...], rng: np.random.Generator, *, what: str
) -> tuple[np.ndarray, ...]:
    """Draw disjoint class-balanced samples of the given total sizes from one file's labels.

    ``counts`` are totals per part (e.g. train 500, val 200), each spread
    evenly over ``classes`` by :func:`per_class`. Raises DataError naming the
    short class when a class has too few images: an incomplete file is the
    user's to fix, and silently smaller tasks would make results incomparable.
    """
    shares = [per_class(c, len(classes)) for c in counts]
    parts = [[] for _ in counts]
    for k, c in enumerate(classes):
        need = [s[k] for s in shares]
        members = np.flatnonzero(y == c)
        if len(members) < sum(need):
            raise DataError(f"{what}: class {c} has {len(members)} images, needs {sum(need)} ({'+'.join(map(str, need))})")
        members = rng.choice(members, sum(need), replace=False)
        for part, chunk in zip(parts, np.split(members, np.cumsum(need)[:-1])):
            part.append(chunk)
    return tuple(np.sort(np.concatenate(p)) for p in parts)


def group_classes(classes: np.ndarray, sizes: list[int]) -> list[tuple[int, ...]]:
    """Cut a (shuffled) class list into consecutive groups of the given sizes."""
    cuts = np.cumsum(sizes)[:-1]
    return [tuple(int(c) for c in g) for g in np.split(np.asarray(classes), cuts)]


def interleave(groups: list[list], rng: np.random.Generator) -> list:
    """Concatenate the groups and shuffle the result (one seeded order for mixed sequences)."""
    units = [u for g in groups for u in g]
    return [units[k] for k in rng.permutation(len(units))]


def split_count(n: int) -> tuple[int, int]:
    """Split ``n`` tasks of a two-family mixed sequence: ``n - n // 2`` and ``n // 2``."""
    return n - n // 2, n // 2


# --------------------------------------------------------------------------- files


def expand_home(path: str | os.PathLike) -> Path:
    """``path`` with a leading ``~`` or ``~user`` replaced by that home folder.

    ``Path.expanduser`` raises RuntimeError when it cannot (an unknown user; no ``HOME`` and no
    passwd entry). A path typed by a user or set in the environment is input, so that is a
    ValueError saying which part could not be expanded; callers word it as their own error.
    """
    try:
        return Path(path).expanduser()
    except (RuntimeError, ValueError):  # ValueError: a NUL in the user name
        head = str(path).split("/", 1)[0]
        raise ValueError(f"{str(path)!r}: {head!r} names no home folder on this machine") from None


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path | None:
    """The data folder: ``data_dir`` if given, else ``$PRM_DATA``, else None, with ``~`` expanded.

    A folder that cannot be expanded is a DataError for every sequence, also the bundled ones
    that read none: it was asked for, and quietly ignoring it would hide the typo.
    """
    source = "data folder"
    if data_dir is None:
        data_dir = os.environ.get(DATA_ENV) or None
        source = f"data folder (${DATA_ENV})"
    if data_dir is None:
        return None
    try:
        return expand_home(data_dir)
    except ValueError as exc:
        raise DataError(f"{source} {exc}") from None


def need_data_dir(data_dir: Path | None, what: str) -> Path:
    if data_dir is None:
        raise DataError(f"{what} reads local files: pass a data folder (data_dir / --data-dir) or set {DATA_ENV}")
    if not data_dir.is_dir():
        raise DataError(f"{what}: data folder {data_dir} does not exist")
    return data_dir


def file_key(path: Path) -> tuple[str, int, int]:
    """Cache key for a parsed file: path, size and modification time (so rewritten files are re-read)."""
    try:
        st = path.stat()
    except OSError as exc:
        raise DataError(f"{path} cannot be read ({exc})") from None
    return str(path), st.st_size, st.st_mtime_ns


@contextmanager
def data_file(path: Path, *, limit: int) -> Iterator[tuple[BinaryIO, int]]:
    """A read handle of the data file ``path`` and its size: a regular file no larger than
    ``limit``, else a DataError naming ``path`` (see the module's docstring for the rules).

    Links are resolved once, then the file is opened by ``prm.safeio.opened`` from its own
    folder without following anything further, non-blocking, and checked on the descriptor.
    """
    path = Path(path)
    try:
        real = path.resolve(strict=True)
    except FileNotFoundError:
        raise DataError(f"{path} does not exist") from None
    except (OSError, RuntimeError, ValueError) as exc:  # a link loop, no permission, a NUL
        raise DataError(f"{path} cannot be read ({exc})") from None
    stack = ExitStack()
    try:
        handle, size = stack.enter_context(safeio.opened(real.parent, real.name, limit=limit))
    except FileNotFoundError:
        raise DataError(f"{path} was removed while it was opened") from None
    except safeio.UnsafeFile as exc:
        shown = f"{path} (a link to {real})" if path.is_symlink() else str(path)
        raise DataError(f"{shown}: {str(exc).removeprefix(f'{real.name}: ')}") from None
    with stack:
        yield handle, size


def read_data(path: Path, *, limit: int) -> bytes:
    """All bytes of the data file ``path``, under :func:`data_file`'s rules."""
    with data_file(path, limit=limit) as (handle, size):
        try:
            data = handle.read(size)
        except OSError as exc:
            raise DataError(f"{path} cannot be read ({exc})") from None
    if len(data) != size:
        raise DataError(f"{path} changed while it was read ({len(data)} of {size} bytes)")
    return data
