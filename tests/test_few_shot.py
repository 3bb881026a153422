"""Few-shot (-few) sequences: the writer/style tasks keep only ``shots`` training images per
class, everything else (class-pair tasks, validation, test) is the base sequence's."""

from __future__ import annotations

import functools
from collections import Counter

import numpy as np
import pytest
import torch

from prm.config import ConfigError, ModelConfig, OptimConfig, PRMConfig, RecordConfig, RunConfig
from prm.data import DEFAULT_N_TASKS, DEFAULT_SHOTS, MAX_SHOTS, SEQUENCES, DataError, make_sequence
from prm.engine import train_sequence
from prm.events import RunStarted
from tests.test_cli_hardening import one_error

FEW = ("digits-writers-few", "digits-mixed-few", "mnist5k-styles-few", "mnist5k-mixed-few")


@functools.cache
def build(name: str, seed: int = 0, shots: int | None = None, n_tasks: int | None = None):
    return make_sequence(name, seed=seed, shots=shots, n_tasks=n_tasks)


def base_of(name: str) -> str:
    return name.removesuffix("-few")


def base(name: str, seed: int = 0):
    """The base sequence with as many tasks as the few-shot one (its default may differ)."""
    return build(base_of(name), seed, n_tasks=DEFAULT_N_TASKS[name])


def test_the_few_shot_sequences_are_listed_with_their_defaults():
    binary = {"digits-writers-binary", "digits-mixed-binary", "mnist5k-styles-binary", "mnist5k-mixed-binary"}
    assert set(DEFAULT_SHOTS) == set(FEW) | binary  # the binary ones are few-shot too (tests/test_binary.py)
    assert all(name in SEQUENCES and base_of(name) in SEQUENCES for name in FEW)
    assert all(isinstance(k, int) and 1 <= k <= MAX_SHOTS for k in DEFAULT_SHOTS.values())


@pytest.mark.parametrize("name", FEW)
@pytest.mark.parametrize("shots", [None, 2, 4])
def test_writer_and_style_tasks_keep_shots_images_per_class_class_pairs_keep_all(name, shots):
    few, full = build(name, shots=shots), base(name)
    k = DEFAULT_SHOTS[name] if shots is None else shots
    assert len(few.tasks) == len(full.tasks) == DEFAULT_N_TASKS[name] and few.input_dim == full.input_dim
    reduced = 0
    for t, b in zip(few.tasks, full.tasks):
        assert (t.name, t.family, t.classes, t.n_classes) == (b.name, b.family, b.classes, b.n_classes)
        if t.family == "classes":  # the dissimilar tasks under test keep their full training set
            assert torch.equal(t.x_train, b.x_train) and torch.equal(t.y_train, b.y_train)
            assert t.rows[0] == b.rows[0]
            continue
        reduced += 1
        have = Counter(b.y_train.tolist())
        assert all(have[c] >= k for c in range(b.n_classes)), "every class of the base task has enough images"
        assert Counter(t.y_train.tolist()) == {c: k for c in range(t.n_classes)}
        assert len(t.y_train) == k * t.n_classes == t.describe()["sizes"]["train"]
    assert reduced >= 1


@pytest.mark.parametrize("name", FEW)
def test_validation_and_test_sets_are_the_base_sequences(name):
    few, full = build(name), base(name)
    for t, b in zip(few.tasks, full.tasks):
        for part in ("x_val", "y_val", "x_test", "y_test"):
            assert torch.equal(getattr(t, part), getattr(b, part)), (t.name, part)
        assert t.rows[1:] == b.rows[1:]


@pytest.mark.parametrize("name", FEW)
def test_training_rows_are_a_subset_of_the_base_tasks_rows_with_their_images(name):
    few, full = build(name), base(name)
    for t, b in zip(few.tasks, full.tasks):
        assert len(t.rows[0]) == len(t.y_train) > 0 and len(set(t.rows[0])) == len(t.rows[0])
        assert set(t.rows[0]) <= set(b.rows[0])
        where = {row: n for n, row in enumerate(b.rows[0])}
        picked = torch.tensor([where[row] for row in t.rows[0]])
        assert torch.equal(t.x_train, b.x_train[picked]) and torch.equal(t.y_train, b.y_train[picked])


def test_a_writer_keeps_the_same_images_in_every_sequence_it_is_in():
    for seed in (0, 1):
        writers = {t.name: t for t in build("digits-writers-few", seed, shots=2).tasks}
        shared = [t for t in build("digits-mixed-few", seed, shots=2).tasks if t.name in writers]
        assert shared, "the two sequences should share writers"
        for t in shared:
            assert t.rows[0] == writers[t.name].rows[0]
            assert torch.equal(t.x_train, writers[t.name].x_train)


@pytest.mark.parametrize("name", FEW)
def test_deterministic_for_a_seed(name):
    one, two = make_sequence(name, seed=3, shots=2), make_sequence(name, seed=3, shots=2)
    for a, b in zip(one.tasks, two.tasks):
        assert a.rows == b.rows and torch.equal(a.x_train, b.x_train) and torch.equal(a.y_train, b.y_train)


def test_numpy_integer_shots_are_accepted():
    seq = make_sequence("digits-writers-few", seed=0, n_tasks=2, shots=np.int64(2))
    assert all(len(t.y_train) == 2 * t.n_classes for t in seq.tasks)


@pytest.mark.parametrize("name, shots", [
    ("digits-writers", 3), ("digits-mixed", 3), ("mnist5k-styles", 3), ("digits-classes", 1),
    ("digits-writers-few", 0), ("digits-writers-few", -1), ("digits-writers-few", True), ("digits-writers-few", False),
    ("mnist5k-styles-few", 2.0), ("mnist5k-styles-few", 2.5), ("digits-mixed-few", "3"),
    ("digits-mixed-few", MAX_SHOTS + 1),
])
def test_bad_shots_are_refused_naming_shots(name, shots):
    with pytest.raises(DataError, match="shots") as info:
        make_sequence(name, seed=0, shots=shots)
    assert repr(shots) in str(info.value)


@pytest.mark.parametrize("shots", [0, -2, True, 2.0, "3"])
def test_run_config_refuses_bad_shots(shots):
    with pytest.raises(ConfigError, match="shots"):
        RunConfig(shots=shots)


def test_run_config_shots_round_trip_and_reach_the_sequence():
    cfg = RunConfig(sequence="digits-writers-few", n_tasks=2, shots=2, method="stl", seed=0,
                    model=ModelConfig(hidden=(16, 16)), optim=OptimConfig(max_epochs=2, patience=2),
                    prm=PRMConfig(dtd_epochs=2, head_epochs=1), record=RecordConfig(projections=("pca",)))
    assert RunConfig.from_dict(cfg.to_dict()) == cfg and RunConfig().shots is None
    events = []
    train_sequence(cfg, emit=events.append)
    (started,) = [e for e in events if isinstance(e, RunStarted)]
    assert [t["sizes"]["train"] for t in started.tasks] == [20, 20]


@pytest.mark.parametrize("argv", [
    ["--sequence", "digits-writers", "--shots", "3"],
    ["--sequence", "digits-writers-few", "--shots", "0"],
    ["--sequence", "digits-writers-few", "--shots", str(MAX_SHOTS + 1)],
])
def test_cli_refuses_bad_shots_with_one_error_line(argv, tmp_path, capsys):
    out = tmp_path / "run"
    err = one_error(["run", *argv, "--method", "stl", "--no-umap", "--quiet", "--out", str(out)], capsys)
    assert "shots" in err
    assert not out.exists()
