"""Acc, BWT and FWT on hand-written accuracy matrices."""

import numpy as np
import pytest

from prm import metrics

nan = np.nan
R = np.array([
    [0.90, nan, nan],
    [0.80, 0.70, nan],
    [0.60, 0.70, 0.95],
])


def test_average_accuracy_is_the_mean_of_the_last_row():
    assert metrics.average_accuracy(R) == pytest.approx((0.60 + 0.70 + 0.95) / 3)


def test_backward_transfer_compares_final_with_just_learnt():
    assert metrics.backward_transfer(R) == pytest.approx(((0.60 - 0.90) + 0 + 0) / 3)


def test_forward_transfer_compares_just_learnt_with_single_task():
    stl = np.array([1.0, 0.8, 0.9])
    assert metrics.forward_transfer(R, stl) == pytest.approx(((0.9 - 1.0) + (0.7 - 0.8) + (0.95 - 0.9)) / 3)
    with pytest.raises(ValueError):
        metrics.forward_transfer(R, stl[:2])


def test_partial_matrix_uses_the_last_completed_row():
    partial = R.copy()
    partial[2] = nan
    assert metrics.completed_rows(partial) == 2
    assert metrics.average_accuracy(partial) == pytest.approx(0.75)
    assert metrics.backward_transfer(partial) == pytest.approx(((0.8 - 0.9) + 0) / 2)


def test_empty_matrix_is_an_error_not_a_nan():
    with pytest.raises(ValueError):
        metrics.average_accuracy(np.full((2, 2), nan))


def test_median_seed_is_the_middle_gain_lower_middle_for_an_even_count_ties_by_seed():
    from prm.metrics import median_seed

    assert median_seed({0: 0.02, 1: -0.01, 2: 0.05, 3: 0.00, 4: 0.03}) == 0  # -0.01, 0.00, [0.02], 0.03, 0.05
    assert median_seed({7: 0.1, 3: 0.2, 5: 0.3, 9: 0.4}) == 3  # lower middle of four
    assert median_seed({4: 0.1, 2: 0.1, 6: 0.1}) == 4  # all tied: ranked by seed 2, 4, 6
    assert median_seed({8: -0.5}) == 8
    with pytest.raises(ValueError):
        median_seed({})
