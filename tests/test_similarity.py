"""prm.similarity against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from prm.similarity import average_linkage, cosine_distances, dissimilar_by_rule, features

TABLE = np.array([[3.0, 4.0], [0.0, -2.0], [0.0, 0.0]])


def test_features_raw_is_the_table():
    assert np.array_equal(features(TABLE, "raw"), TABLE)


def test_features_binary_marks_positive_entries():
    assert np.array_equal(features(TABLE, "binary"), [[1, 1], [0, 0], [0, 0]])


def test_features_unit_scales_rows_to_length_one_and_keeps_a_zero_row():
    # |(3, 4)| = 5, |(0, -2)| = 2, the zero row has no direction and stays zero.
    assert np.allclose(features(TABLE, "unit"), [[0.6, 0.8], [0.0, -1.0], [0.0, 0.0]])


def test_features_standardised_z_scores_each_unit_over_the_tasks():
    # column 0: (3, 0, 0), mean 1, population variance (4 + 1 + 1) / 3 = 2
    # column 1: (4, -2, 0), mean 2/3, deviations (10/3, -8/3, -2/3), variance 168/27 = 56/9,
    #           std sqrt(56)/3 = 2 sqrt(14)/3, so z = (5, -4, -1) / sqrt(14)
    want = np.array([[2 / math.sqrt(2), 5 / math.sqrt(14)],
                     [-1 / math.sqrt(2), -4 / math.sqrt(14)],
                     [-1 / math.sqrt(2), -1 / math.sqrt(14)]])
    assert np.allclose(features(TABLE, "standardised"), want)


def test_features_standardised_leaves_a_constant_unit_at_zero():
    out = features(np.array([[1.0, 5.0], [2.0, 5.0]]), "standardised")
    assert np.allclose(out, [[-1.0, 0.0], [1.0, 0.0]])


def test_features_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown features"):
        features(TABLE, "polar")


def test_cosine_distances_by_hand():
    points = np.array([[3.0, 4.0], [0.0, -2.0], [0.0, 0.0], [4.0, 3.0]])
    d = cosine_distances(points)
    # cos(p0, p1) = -8 / 10, cos(p0, p3) = 24 / 25, cos(p1, p3) = -6 / 10
    assert d[0, 1] == pytest.approx(1.8)
    assert d[0, 3] == pytest.approx(0.04)
    assert d[1, 3] == pytest.approx(1.6)
    assert np.allclose(d[2, [0, 1, 3]], 1.0)  # a zero row is at distance 1 from every other row
    assert np.allclose(d, d.T)
    assert np.allclose(np.diag(d), 0.0)


def two_groups() -> np.ndarray:
    """Distances of two tight pairs {0, 1} and {2, 3}, far apart."""
    return np.array([[0.0, 0.1, 0.9, 0.9],
                     [0.1, 0.0, 0.9, 0.9],
                     [0.9, 0.9, 0.0, 0.1],
                     [0.9, 0.9, 0.1, 0.0]])


def test_average_linkage_finds_two_tight_groups():
    labels = average_linkage(two_groups(), 0.5)
    assert labels[0] == labels[1] and labels[2] == labels[3] and labels[0] != labels[2]


def test_average_linkage_threshold_above_everything_gives_one_cluster():
    assert len(set(average_linkage(two_groups(), 1.0))) == 1


def test_average_linkage_threshold_below_everything_gives_singletons():
    assert len(set(average_linkage(two_groups(), 0.05))) == 4


def test_average_linkage_uses_the_average_not_the_nearest_member():
    # 0-1 merge at 0.1; then {0, 1} to 2 is (0.9 + 0.3) / 2 = 0.6 >= 0.4: 2 stays apart,
    # although single linkage (0.3) would have merged it.
    d = np.array([[0.0, 0.1, 0.9], [0.1, 0.0, 0.3], [0.9, 0.3, 0.0]])
    labels = average_linkage(d, 0.4)
    assert labels[0] == labels[1] != labels[2]


# p0 = (1, 0), p1 = (0, 1), p2 = (2, 1), new task p3 = (1, 0). Cosine distances to p3:
# p0: 0, p1: 1, p2: 1 - 2/sqrt(5) = 0.1056. Between p1 and p2: 1 - 1/sqrt(5) = 0.553.
POINTS = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0], [1.0, 0.0]])


def test_cut_calls_dissimilar_at_or_beyond_the_threshold():
    assert dissimilar_by_rule(POINTS, 3, rule="cut", threshold=0.35) == [1]
    assert dissimilar_by_rule(POINTS, 3, rule="cut", threshold=0.1) == [1, 2]
    assert dissimilar_by_rule(POINTS, 3, rule="cut", threshold=1.5) == []


def test_linkage_calls_dissimilar_outside_the_new_tasks_cluster():
    # at 0.35: {0, 3} merge at 0, {0, 3} + 2 at 0.1056, then 1 is (1 + 1 + 0.553) / 3 = 0.85 away
    assert dissimilar_by_rule(POINTS, 3, rule="linkage", threshold=0.35) == [1]
    # at 0.1 only {0, 3} merges
    assert dissimilar_by_rule(POINTS, 3, rule="linkage", threshold=0.1) == [1, 2]


def test_rules_look_only_at_rows_up_to_the_task():
    # row 3 is ignored when judging task 2 against tasks 0 and 1
    assert dissimilar_by_rule(POINTS, 2, rule="cut", threshold=0.35) == [1]


def test_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="unknown rule"):
        dissimilar_by_rule(POINTS, 3, rule="xmeans", threshold=0.3)
