"""Tests for prm.xmeans (X-means with the per-dimension Pelleg & Moore BIC)."""
import json
import math
import warnings

import numpy as np
import pytest

from prm.xmeans import SplitAttempt, XMeansResult, bic, cluster_of, dissimilar_to, dtd_call, undecided, xmeans


def blobs(sizes, M, *, sep=10.0, noise=1.0, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(sizes), M)) * sep
    X = np.vstack([centres[i] + noise * rng.normal(size=(n, M)) for i, n in enumerate(sizes)])
    truth = np.repeat(np.arange(len(sizes)), sizes)
    return X, truth


def same_partition(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return all((a[i] == a[j]) == (b[i] == b[j]) for i in range(len(a)) for j in range(len(a)))


def check_valid(res, R, M):
    assert res.labels.shape == (R,) and res.centers.shape == (res.k, M)
    assert sorted(set(res.labels.tolist())) == list(range(res.k))
    assert res.labels[0] == 0
    assert math.isfinite(res.bic) and np.all(np.isfinite(res.centers))
    for a in res.attempts:
        for v in (a.parent_bic, a.children_bic):
            assert v is None or math.isfinite(v)
    json.dumps(res.to_dict(), allow_nan=False)


@pytest.mark.parametrize("M", [2, 500])
def test_three_blobs(M):
    X, truth = blobs([10, 10, 10], M)
    res = xmeans(X, seed=0)
    assert res.k == 3
    assert same_partition(res.labels, truth)


def test_one_tight_blob():
    X, _ = blobs([20], 50, noise=0.1)
    assert xmeans(X).k == 1


def test_two_blobs_50_points_2000_dims():
    X, truth = blobs([25, 25], 2000, sep=1.0, seed=3)
    res = xmeans(X)
    assert res.k == 2 and same_partition(res.labels, truth)


def test_prm_like_embeddings():
    rng = np.random.default_rng(7)
    X = np.vstack([3 + 0.5 * rng.normal(size=(5, 256)), -3 + 0.5 * rng.normal(size=(5, 256))])
    res = xmeans(X)
    assert res.k == 2 and same_partition(res.labels, [0] * 5 + [1] * 5)
    assert dissimilar_to(res, -1) == [0, 1, 2, 3, 4]
    assert xmeans(rng.normal(size=(10, 256))).k == 1


def test_pure_noise_not_split():
    rng = np.random.default_rng(11)
    for R, M in [(10, 256), (20, 64), (50, 2000)]:
        assert xmeans(rng.normal(size=(R, M))).k == 1


def test_bic_hand_computed_1d():
    # x = 0, 2 | 10, 12 ; centres 1, 11; R=4, M=1, k=2
    X = np.array([[0.0], [2.0], [10.0], [12.0]])
    labels = np.array([0, 0, 1, 1])
    centers = np.array([[1.0], [11.0]])
    # SSE = 1+1+1+1 = 4; sigma2 = 4 / (1 * (4 - 2)) = 2
    # each cluster: R_n log(R_n/R) = 2 log(1/2); -(R_n M / 2) log(2 pi sigma2) = -log(4 pi); -SSE_n/(2 sigma2) = -2/4
    per_cluster = 2 * math.log(0.5) - math.log(4 * math.pi) - 0.5
    # p = (k-1) + M k + 1 = 1 + 2 + 1 = 4 -> penalty 4/2 log 4
    expected = 2 * per_cluster - 2 * math.log(4)
    # = -8 log 2 - 2 log(4 pi) - 1 = -5.545177 - 5.062049 - 1
    assert expected == pytest.approx(-11.607226, abs=1e-6)
    assert bic(X, labels, centers) == pytest.approx(expected, rel=1e-12)


def test_bic_hand_computed_2d_one_cluster():
    # square corners, one centre (1, 1); R=4, M=2, k=1
    X = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])
    # SSE = 4 * 2 = 8; sigma2 = 8 / (2 * 3) = 4/3
    # loglik = 4 log 1 - (4*2/2) log(2 pi 4/3) - 8 / (2 * 4/3) = -4 log(8 pi / 3) - 3
    # p = 0 + 2 + 1 = 3 -> penalty 1.5 log 4
    expected = -4 * math.log(8 * math.pi / 3) - 3 - 1.5 * math.log(4)
    assert bic(X, np.zeros(4, dtype=int), np.array([[1.0, 1.0]])) == pytest.approx(expected, rel=1e-12)


def test_bic_zero_variance_is_finite():
    X = np.ones((4, 3))
    v = bic(X, np.zeros(4, dtype=int), np.ones((1, 3)))
    assert math.isfinite(v)


def test_decision_record_agrees_with_labels():
    for sizes, M in [([10, 10, 10], 2), ([3, 4, 5, 6], 64), ([25, 25], 2000)]:
        X, _ = blobs(sizes, M, sep=3.0, seed=5)
        res = xmeans(X)
        kept = [a for a in res.attempts if a.kept]
        assert res.k == res.k_init + len(kept)
        alive = set(range(res.k_init))
        for a in kept:  # replay in record order
            assert a.parent in alive and a.reason == "bic-improved"
            assert a.children is not None and sorted(a.children[0] + a.children[1]) == sorted(a.members)
            alive.remove(a.parent)
            alive.update(a.child_ids)
        assert alive == set(res.cluster_ids) and len(res.cluster_ids) == res.k
        for a in res.attempts:
            assert not a.kept or a.children_bic > a.parent_bic


def test_deterministic():
    X, _ = blobs([7, 8, 9], 300, sep=2.0, seed=2)
    a, b = xmeans(X, seed=4), xmeans(X, seed=4)
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.centers, b.centers)
    assert a.bic == b.bic and a.attempts == b.attempts and a == b


@pytest.mark.parametrize(
    "X, k, reasons",
    [
        (np.zeros((1, 5)), 1, []),
        (np.array([[0.0, 1.0], [5.0, 6.0]]), 1, ["too-few-points"]),
        (np.full((6, 4), 2.5), 1, ["zero-variance"]),
        (np.array([[0.0, 0.0], [0.0, 0.0], [5.0, 5.0], [5.0, 5.0]]), 2,
         ["bic-improved", "too-few-points", "too-few-points"]),
        (np.array([[0.0], [0.1], [100.0]]), 2, ["bic-improved", "too-few-points", "too-few-points"]),
    ],
)
def test_degenerate_cases(X, k, reasons):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = xmeans(X)
    check_valid(res, *X.shape)
    assert res.k == k
    assert [a.reason for a in res.attempts] == reasons


def test_more_dims_than_points_and_duplicates_no_warnings():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(3, 400))
    X = np.vstack([base[0], base[0], base[0], base[1], base[1], base[2] * 0 + base[1]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for data in (rng.normal(size=(3, 400)), X, rng.normal(size=(5, 1000))):
            res = xmeans(data, k_min=3)
            check_valid(res, *data.shape)
        res = xmeans(X, k_min=5)  # only 2 distinct rows: k_min clamped
        assert res.k_init == 2


def test_k_max_respected():
    X, _ = blobs([5, 5, 5, 5], 64, seed=1)
    assert xmeans(X, k_max=2).k == 2
    res = xmeans(X, k_max=3)
    assert res.k == 3
    assert any(a.reason == "k-max" for a in res.attempts)


def test_cluster_of_and_dissimilar_to():
    X, _ = blobs([4, 4], 32, seed=9)
    res = xmeans(X)
    assert cluster_of(res, -1) == cluster_of(res, 7) == res.labels[7]
    assert dissimilar_to(res, -1) == [0, 1, 2, 3]
    assert dissimilar_to(res, 0) == [4, 5, 6, 7]
    with pytest.raises(IndexError):
        cluster_of(res, 8)


def test_round_trip_json():
    X, _ = blobs([4, 5, 6], 16, sep=4.0, seed=8)
    res = xmeans(X)
    d = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    back = XMeansResult.from_dict(d)
    assert back == res
    assert np.array_equal(back.labels, res.labels) and np.array_equal(back.centers, res.centers)
    assert back.attempts == res.attempts and isinstance(back.attempts[0], SplitAttempt)
    assert back.bic == res.bic and back.variant == res.variant == "pm-perdim"


def test_undecided_and_dtd_call():
    two = xmeans(np.array([[0.0, 0.0], [5.0, 5.0]]))  # a 2-point cluster cannot be split
    assert undecided(two) and two.k == 1
    assert dtd_call(two, 1, when_undecided="dissimilar") == [0]
    assert dtd_call(two, 1, when_undecided="similar") == []
    X, _ = blobs([4, 4], 8, seed=2)
    res = xmeans(X)
    assert not undecided(res) and res.k == 2
    assert dtd_call(res, 7, when_undecided="dissimilar") == dissimilar_to(res, 7) == [0, 1, 2, 3]


def test_all_lists_exactly_the_public_functions_and_classes():
    import inspect

    import prm.xmeans as mod

    defined = {name for name, obj in vars(mod).items()
               if not name.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj))
               and obj.__module__ == mod.__name__}
    assert sorted(mod.__all__) == sorted(defined)
