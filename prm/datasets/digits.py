"""Task sequences built from scikit-learn's bundled ``load_digits`` (8x8, 64 inputs).

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

import numpy as np

from prm.datasets.core import DataError, Task, head_labels, interleave, make_task, pick, split_rows

N_DIGITS = 10
CLASS_PAIRS: tuple[tuple[int, int], ...] = tuple((c, c + 1) for c in range(0, N_DIGITS, 2))
# Per-class fractions for validation and test; the rest is training data.
VAL_FRACTION = 0.2
TEST_FRACTION = 0.2


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


def _make_task(name: str, family: str, classes: tuple[int, ...], rows: np.ndarray, seed_key: list[int]) -> Task:
    x, y, _ = _digits()
    # The split depends only on (seed, family, unit): a writer's split is the
    # same in the writers sequence and in the mixed sequence.
    splits = split_rows(rows, y, np.random.default_rng(seed_key), val=VAL_FRACTION, test=TEST_FRACTION)
    return make_task(name=name, family=family, classes=classes, parts=pick(x, head_labels(y, classes), splits), rows=splits)


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


def n_forms() -> int:
    return len(_digits()[2])


def digits_tasks(kind: str, *, n: int, seed: int) -> list[Task]:
    """``kind`` is "classes", "writers" or "mixed"; ``n`` is already validated."""
    rng = np.random.default_rng(seed)
    if kind == "classes":
        units = [("classes", int(k)) for k in rng.permutation(len(CLASS_PAIRS))[:n]]
    elif kind == "writers":
        units = [("writers", int(k)) for k in rng.permutation(n_forms())[:n]]
    else:  # half and half, overflow of the 5 class pairs goes to writers
        n_cls = min(n - n // 2, len(CLASS_PAIRS))
        classes = [("classes", int(k)) for k in rng.permutation(len(CLASS_PAIRS))[:n_cls]]
        writers = [("writers", int(k)) for k in rng.permutation(n_forms())[: n - n_cls]]
        units = interleave([classes, writers], rng)
    build = {"classes": _class_task, "writers": _writer_task}
    return [build[family](k, seed) for family, k in units]
