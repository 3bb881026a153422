"""Tests for prm.data: form recovery from load_digits and the digits-* sequences."""

import json
import time

import numpy as np
import pytest
import torch

from prm import data
from prm.data import DataError, make_sequence, recover_forms

HEADER = list(range(10)) * 3


@pytest.fixture(scope="module")
def digits():
    x, y, forms = data._digits()
    return x, y, recover_forms(y)


def unexplained(block, template):
    """Labels in ``block`` not matched by a longest common subsequence with the template."""
    prev = [0] * (len(template) + 1)
    for a in block:
        cur = [0]
        for j, b in enumerate(template):
            cur.append(prev[j] + 1 if a == b else max(prev[j + 1], cur[j]))
        prev = cur
    return len(block) - prev[-1]


# --------------------------------------------------------------------------- forms


def test_forms_partition_rows_into_contiguous_blocks(digits):
    _, y, forms = digits
    assert len(forms) == 14
    assert forms[0].start == 0 and forms[-1].stop == len(y) == 1797
    for a, b in zip(forms, forms[1:]):
        assert a.stop == b.start
    assert all(f.step == 1 and 122 <= len(f) <= 130 for f in forms)
    assert sum(len(f) for f in forms) == len(y)


def test_every_form_covers_all_ten_classes(digits):
    _, y, forms = digits
    for f in forms:
        assert set(y[f].tolist()) == set(range(10))


def test_forms_follow_the_inferred_template(digits):
    _, y, forms = digits
    template = data.infer_template(y).tolist()
    assert len(template) == 130 and template[:30] == HEADER
    assert np.bincount(template).tolist() == [13] * 10
    misses = [unexplained(y[f].tolist(), template) for f in forms]
    # 13 forms are the template with some digits dropped; one form has a single
    # label off-template (row 385: the writer drew a 3 where the form asks for an 8).
    assert sorted(misses) == [0] * 13 + [1]
    assert misses.index(1) == next(k for k, f in enumerate(forms) if 385 in f)
    assert y[385] == 3


def test_every_intact_header_starts_a_form(digits):
    _, y, forms = digits
    starts = {f.start for f in forms}
    headers = [i for i in range(len(y) - 29) if y[i : i + 30].tolist() == HEADER]
    assert len(headers) == 12  # two forms have a damaged header and are found by alignment
    assert set(headers) <= starts


def test_recovery_on_synthetic_forms_with_dropped_digits():
    rng = np.random.default_rng(3)
    template = HEADER + rng.integers(0, 10, 60).tolist()
    blocks = []
    for k in range(7):
        drop = set() if k in (0, 3) else set(rng.choice(np.arange(1, len(template) - 1), k, replace=False).tolist())
        if k == 5:
            drop.add(12)  # damage the header
        blocks.append([d for j, d in enumerate(template) if j not in drop])
    labels = np.concatenate(blocks)
    got = [len(f) for f in recover_forms(labels)]
    assert got == [len(b) for b in blocks]


def test_unstructured_labels_raise():
    with pytest.raises(DataError, match="header"):
        recover_forms(np.zeros(300, dtype=int))
    one_form = np.array(HEADER + [5, 5, 5])
    with pytest.raises(DataError, match="template"):
        recover_forms(one_form)


# --------------------------------------------------------------------------- sequences


@pytest.mark.parametrize(
    "name, n, families, n_classes",
    [
        ("digits-classes", 5, {"classes": 5}, {2}),
        ("digits-writers", 10, {"writers": 10}, {10}),
        ("digits-mixed", 10, {"classes": 5, "writers": 5}, {2, 10}),
    ],
)
def test_default_sequences(name, n, families, n_classes, digits):
    x, y, _ = digits
    seq = make_sequence(name)
    assert seq.name == name and seq.input_dim == 64 and len(seq.tasks) == n
    assert {f: sum(t.family == f for t in seq.tasks) for f in families} == families
    assert {t.n_classes for t in seq.tasks} == n_classes
    for t in seq.tasks:
        assert len(t.classes) == t.n_classes
        train, val, test = (set(r) for r in t.rows)
        assert not (train & val or train & test or val & test)
        for xs, ys, rows in ((t.x_train, t.y_train, t.rows[0]), (t.x_val, t.y_val, t.rows[1]), (t.x_test, t.y_test, t.rows[2])):
            assert xs.dtype == torch.float32 and ys.dtype == torch.int64
            assert xs.shape == (len(rows), 64) and ys.shape == (len(rows),)
            assert torch.equal(xs, torch.from_numpy(x[list(rows)]))
            assert [t.classes[k] for k in ys.tolist()] == y[list(rows)].tolist()
            assert 0.0 <= xs.min() and xs.max() <= 1.0
        assert set(t.y_train.tolist()) == set(range(t.n_classes))  # every class trained on
        assert len(t.y_val) > 0 and len(t.y_test) > 0
    json.dumps(seq.describe())


def test_split_proportions(digits):
    seq = make_sequence("digits-writers", n_tasks=14)
    full = [t for t in seq.tasks if np.bincount(torch.cat([t.y_train, t.y_val, t.y_test])).tolist() == [13] * 10]
    assert len(full) == 8 and all(t.describe()["sizes"] == {"train": 80, "val": 20, "test": 30} for t in full)
    pair = make_sequence("digits-classes").tasks[0]
    sizes = pair.describe()["sizes"]
    total = sum(sizes.values())
    assert abs(sizes["train"] / total - 0.6) < 0.02 and abs(sizes["test"] / total - 0.2) < 0.02


def test_writer_tasks_are_disjoint_and_class_tasks_cover_disjoint_classes(digits):
    _, _, forms = digits
    writers = make_sequence("digits-writers", n_tasks=14, seed=1).tasks
    rows = [set(sum(t.rows, ())) for t in writers]
    assert sum(len(r) for r in rows) == len(set().union(*rows)) == 1797
    assert sorted(len(r) for r in rows) == sorted(len(f) for f in forms)
    classes = make_sequence("digits-classes", seed=1).tasks
    covered = [c for t in classes for c in t.classes]
    assert sorted(covered) == list(range(10))
    assert all(t.classes[1] == t.classes[0] + 1 for t in classes)


def test_same_seed_same_tensors_different_seed_different_order():
    for name in [n for n in data.SEQUENCES if n.startswith("digits-")]:  # others: tests/test_datasets_*.py
        a, b = make_sequence(name, seed=7), make_sequence(name, seed=7)
        assert [t.name for t in a.tasks] == [t.name for t in b.tasks]
        for ta, tb in zip(a.tasks, b.tasks):
            for part in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
                assert torch.equal(getattr(ta, part), getattr(tb, part))
        orders = {tuple(t.name for t in make_sequence(name, seed=s).tasks) for s in range(4)}
        assert len(orders) > 1
    # the split itself also depends on the seed
    w0 = make_sequence("digits-writers", seed=0, n_tasks=14)
    w1 = make_sequence("digits-writers", seed=1, n_tasks=14)
    by_name = {t.name: t for t in w1.tasks}
    assert any(t.rows != by_name[t.name].rows for t in w0.tasks)


@pytest.mark.parametrize(
    "name, n, expected",
    [
        ("digits-classes", 1, {"classes": 1}),
        ("digits-classes", 5, {"classes": 5}),
        ("digits-writers", 1, {"writers": 1}),
        ("digits-writers", 14, {"writers": 14}),
        ("digits-mixed", 2, {"classes": 1, "writers": 1}),
        ("digits-mixed", 7, {"classes": 4, "writers": 3}),
        ("digits-mixed", 12, {"classes": 5, "writers": 7}),
        ("digits-mixed", 19, {"classes": 5, "writers": 14}),
    ],
)
def test_n_tasks(name, n, expected):
    seq = make_sequence(name, n_tasks=n, seed=2)
    assert len(seq.tasks) == n
    counts = {}
    for t in seq.tasks:
        counts[t.family] = counts.get(t.family, 0) + 1
    assert counts == expected
    assert len({t.name for t in seq.tasks}) == n


@pytest.mark.parametrize(
    "name, n, message",
    [
        ("digits-classes", 0, "digits-classes takes n_tasks from 1 to 5"),
        ("digits-classes", 6, "from 1 to 5"),
        ("digits-writers", 15, "digits-writers takes n_tasks from 1 to 14"),
        ("digits-writers", -1, "from 1 to 14"),
        ("digits-mixed", 1, "digits-mixed takes n_tasks from 2 to 19"),
        ("digits-mixed", 20, "from 2 to 19"),
        ("digits-mixed", 2.5, "from 2 to 19"),
    ],
)
def test_bad_n_tasks_raise(name, n, message):
    with pytest.raises(DataError, match=message):
        make_sequence(name, n_tasks=n)


def test_unknown_name_lists_choices():
    with pytest.raises(DataError, match="digits-classes, digits-writers, digits-mixed"):
        make_sequence("mnist")
    assert issubclass(DataError, ValueError)


def test_mixed_interleaves_families_and_is_fast():
    make_sequence("digits-mixed")  # warm the cache
    start = time.perf_counter()
    seq = make_sequence("digits-mixed", seed=5)
    assert time.perf_counter() - start < 0.5
    families = [t.family for t in seq.tasks]
    assert set(families) == {"classes", "writers"}
    assert families != sorted(families)  # not simply one block then the other
    assert "seed=5" in seq.description and seq.describe()["n_tasks"] == 10
