"""Binary sequences: every writer or style task asks one shared yes/no question ("is the digit
5 or more?") of its own images, few-shot; class-pair tasks are the base sequence's."""

from __future__ import annotations

import functools
from collections import Counter

import pytest
import torch

from prm.analysis import true_groups
from prm.data import DEFAULT_N_TASKS, DEFAULT_SHOTS, SEQUENCES, DataError, make_sequence
from prm.datasets.core import HIGH_DIGIT, Concept, make_task

BINARY = {"digits-writers-binary": "digits-writers", "digits-mixed-binary": "digits-mixed",
          "mnist5k-styles-binary": "mnist5k-styles", "mnist5k-mixed-binary": "mnist5k-mixed"}


@functools.cache
def build(name: str, seed: int = 0, shots: int | None = None):
    return make_sequence(name, seed=seed, shots=shots, n_tasks=DEFAULT_N_TASKS[name])


def test_a_concept_relabels_head_indices_by_hand():
    x = torch.zeros(10, 4).numpy()
    y = torch.arange(10).numpy()
    task = make_task(name="t", family="writers", classes=tuple(range(10)), parts=((x, y), (x[:3], y[:3]), (x, y[::-1])),
                     rows=(range(10), range(3), range(10)))
    b = HIGH_DIGIT.apply(task)
    assert (b.n_classes, b.classes, b.family, b.name) == (2, (0, 1), "writers", "t >=5?")
    assert b.y_train.tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
    assert b.y_val.tolist() == [0, 0, 0] and b.y_test.tolist() == [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    assert torch.equal(b.x_train, task.x_train) and b.rows == task.rows
    odd = Concept(name="odd?", question="is the digit odd?", positive=frozenset({1, 3, 5, 7, 9}))
    assert odd.apply(task).y_train.tolist() == [0, 1] * 5


def test_a_concept_refuses_a_task_with_too_few_classes():
    x = torch.zeros(2, 4).numpy()
    pair = make_task(name="classes 0-1", family="classes", classes=(0, 1), parts=(((x, [0, 1]),) * 3),
                     rows=((0, 1),) * 3)
    with pytest.raises(DataError, match="needs 10 classes; classes 0-1 has 2"):
        HIGH_DIGIT.apply(pair)


@pytest.mark.parametrize("name", list(BINARY))
def test_each_binary_task_is_its_base_task_asked_the_concept(name):
    binary, base = build(name), make_sequence(BINARY[name], seed=0, n_tasks=DEFAULT_N_TASKS[name])
    assert name in SEQUENCES and HIGH_DIGIT.question in SEQUENCES[name]
    k = DEFAULT_SHOTS[name]
    asked = 0
    for t, b in zip(binary.tasks, base.tasks):
        if b.family == "classes":  # the dissimilar digit pairs stay whole
            assert (t.name, t.classes) == (b.name, b.classes) and torch.equal(t.x_train, b.x_train)
            continue
        asked += 1
        assert (t.name, t.family, t.n_classes, t.classes) == (f"{b.name} >=5?", b.family, 2, (0, 1))
        for part in ("val", "test"):  # the identity's own images, relabelled
            assert torch.equal(getattr(t, f"x_{part}"), getattr(b, f"x_{part}"))
            assert getattr(t, f"y_{part}").tolist() == [int(c >= 5) for c in getattr(b, f"y_{part}").tolist()]
        assert Counter(t.y_train.tolist()) == {0: k, 1: k}
        where = {row: n for n, row in enumerate(b.rows[0])}
        picked = torch.tensor([where[row] for row in t.rows[0]])
        assert torch.equal(t.x_train, b.x_train[picked])
        assert t.y_train.tolist() == [int(c >= 5) for c in b.y_train[picked].tolist()]
    assert asked >= 1


def test_shots_counts_images_per_answer():
    seq = build("digits-writers-binary", shots=4)
    assert all(Counter(t.y_train.tolist()) == {0: 4, 1: 4} for t in seq.tasks)


def test_the_true_similarity_groups_every_binary_writer_and_keeps_pairs_apart():
    seq = build("digits-mixed-binary")
    groups = true_groups([t.describe() for t in seq.tasks])
    writers = {g for g, t in zip(groups, seq.tasks) if t.family == "writers"}
    pairs = [g for g, t in zip(groups, seq.tasks) if t.family == "classes"]
    assert len(writers) == 1 and len(set(pairs)) == len(pairs) and not writers & set(pairs)


def test_the_permuted_control_still_asks_a_different_question_of_the_same_images():
    seq = build("mnist5k-styles-binary")
    twin = next(t for t in seq.tasks if t.family == "permuted")
    source = next(t for t in seq.tasks if twin.name.startswith(f"permuted twin of {t.name.removesuffix(' >=5?')}"))
    assert torch.equal(twin.x_test, source.x_test)
    assert 0 < int((twin.y_test != source.y_test).sum()) < len(twin.y_test)
