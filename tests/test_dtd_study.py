"""scripts/dtd_study.py: its pure scoring functions on hand-made tables, and one real run."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_runs" / "digits-classes-prm-s0"


def _load_script():
    spec = importlib.util.spec_from_file_location("dtd_study", ROOT / "scripts" / "dtd_study.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["dtd_study"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


ds = _load_script()

# Four tasks in two families, A B A B, far apart: A on units 0-1, B on units 2-3.
GROUPS = [0, 1, 0, 1]
ROWS = np.array([[1.0, 0.1, 0.0, 0.0],
                 [0.0, 0.0, 1.0, 0.1],
                 [0.9, 0.2, 0.0, 0.0],
                 [0.0, 0.0, 0.9, 0.2]])
STEPS = [ds.Step(task=t, table=ROWS[: t + 1]) for t in (1, 2, 3)]


def score(rule, kind="unit"):
    return ds.score_run(STEPS, GROUPS, smax=400.0, seed=0, representations=[kind], clusterings=[rule])


def test_all_dissimilar_gets_the_share_worked_out_by_hand():
    # t=1: task 0 is another family, called dissimilar: 1 of 1 right
    # t=2: task 0 same family (wrong), task 1 other (right): 1 of 2
    # t=3: tasks 0 and 2 other (right), task 1 same (wrong): 2 of 3
    # over the 1 + 2 + 3 = 6 (step, earlier task) pairs: 4 / 6
    right, ari = score("all-dissimilar")[("-", "all-dissimilar")]
    assert right == pytest.approx(4 / 6)
    assert ari is None
    assert score("all-similar")[("-", "all-similar")][0] == pytest.approx(2 / 6)


@pytest.mark.parametrize("rule", ["cut-cos@0.3", "linkage-cos@0.3", "linkage-jac@0.5"])
def test_separated_families_are_called_right_every_time(rule):
    right, ari = score(rule)[("unit", rule)]
    assert right == pytest.approx(1.0)
    assert ari is None if rule.startswith("cut") else ari == pytest.approx(1.0)


def test_nearest_calls_only_the_nearest_earlier_task_similar():
    # t=1: task 0 (other family) called similar: 0 of 1; t=2 and t=3: all right. (0+2+3)/6
    assert score("nearest")[("unit", "nearest")][0] == pytest.approx(5 / 6)


def test_xmeans_with_two_tasks_calls_the_earlier_one_dissimilar():
    dissimilar, labels = ds.cluster(ROWS[:2], "xmeans", seed=0)
    assert dissimilar == [0] and list(labels) == [0, 1]
    dissimilar, _ = ds.cluster(ROWS[:2], "xmeans", seed=0, undecided="similar")
    assert dissimilar == []


def test_clusterings_that_split_find_two_clear_groups():
    rng = np.random.default_rng(0)
    points = np.vstack([rng.normal(3, 0.1, (4, 64)), rng.normal(-3, 0.1, (4, 64))])
    for rule in ("xmeans", "xmeans-pc", "kmeans-sil"):
        dissimilar, labels = ds.cluster(points, rule, seed=0)
        assert dissimilar == [0, 1, 2, 3], rule  # the new task is the last row
        assert adjusted_rand_score([0] * 4 + [1] * 4, labels) == pytest.approx(1.0), rule


def test_xmeans_pc_keeps_noise_in_one_cluster_and_leaves_two_points_undecided():
    noise = np.random.default_rng(0).normal(size=(10, 64))
    assert set(ds.xmeans_pc(noise, seed=0)) == {0}
    assert ds.xmeans_pc(noise[:2], seed=0) is None


def test_kmeans_silhouette_uses_one_cluster_below_three_points():
    assert list(ds.kmeans_silhouette(ROWS[:2], seed=0)) == [0, 0]


def test_bic_per_cluster_by_hand():
    # (0), (2) as one cluster: R=2, M=1, k=1, SSE=2, sigma2=2/(2-1)=2, p=2
    # l = 2 log 1 - log(2 pi) - log 2 - 1/2;  BIC = l - (2/2) log 2
    one = ds.bic_per_cluster(np.array([[0.0], [2.0]]), np.array([0, 0]), var_floor=1e-12)
    assert one == pytest.approx(-math.log(2 * math.pi) - 2 * math.log(2) - 0.5)
    # (0, 1), (10, 11): R=4, k=2, SSE=1, sigma2=1/2, p=4; each cluster (n=2):
    # 2 log(1/2) - log(2 pi) - log(1/2) - 0 - (4/2) log 4, the penalty once per cluster
    two = ds.bic_per_cluster(np.array([[0.0], [1.0], [10.0], [11.0]]), np.array([0, 0, 1, 1]), var_floor=1e-12)
    assert two == pytest.approx(2 * (math.log(0.5) - math.log(2 * math.pi) - 2 * math.log(4)))


def test_representations():
    e = np.array([[0.0, 0.01, -1.0], [2.0, -0.5, 0.0]])
    mask = ds.represent(e, "mask", smax=400.0)
    assert mask[0, 0] == pytest.approx(0.5) and mask[0, 1] == pytest.approx(1 / (1 + math.exp(-4)))
    assert mask[0, 2] == pytest.approx(0.0, abs=1e-12)
    delta = ds.represent(e, "delta", smax=400.0, delta=np.array([1.0, 2.0, 3.0]))
    assert np.array_equal(delta, [[0.0, 0.01, -1.0], [1.0, 2.0, 3.0]])  # earlier rows stay raw
    with pytest.raises(ValueError):
        ds.represent(e, "delta", smax=400.0)
    with pytest.raises(ValueError):
        ds.represent(e, "polar", smax=400.0)


def test_delta_is_left_out_without_a_trajectory():
    out = ds.score_run(STEPS, GROUPS, smax=400.0, seed=0, representations=["raw", "delta"],
                       clusterings=["cut-cos@0.3"])
    assert list(out) == [("raw", "cut-cos@0.3")]


def test_jaccard_distances_by_hand():
    on = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 0], [0, 0, 0]], dtype=bool)
    d = ds.jaccard_distances(on)
    assert d[0, 1] == pytest.approx(0.5)  # 1 shared of 2 in either
    assert d[0, 2] == pytest.approx(1.0)
    assert d[2, 3] == 0.0  # two empty sets are the same set
    assert np.allclose(np.diag(d), 0.0)


def test_unknown_clustering_is_refused():
    with pytest.raises(ValueError, match="unknown clustering"):
        ds.cluster(ROWS, "dbscan", seed=0)


def test_aggregate_and_table():
    runs = [("s", {("-", "all-dissimilar"): (0.5, None), ("raw", "xmeans"): (0.6, 0.2)}),
            ("s", {("-", "all-dissimilar"): (0.7, None), ("raw", "xmeans"): (1.0, 0.4)})]
    sequences, table = ds.aggregate(runs)
    assert sequences == ["s"]
    assert list(table) == [("raw", "xmeans"), ("-", "all-dissimilar")]  # baselines last
    mean, std, ari, n = table[("raw", "xmeans")]["s"]
    assert (mean, std, ari, n) == pytest.approx((0.8, 0.2, 0.3, 2))
    text = ds.format_table(sequences, table, markdown=True, layer="0")
    assert "| 0 | raw | xmeans | 0.800 ± 0.200 | 0.300 | +0.200 |" in text
    assert "| 0 | - | all-dissimilar | 0.600 ± 0.100 | - | +0.000 |" in text


def test_overrides():
    base = {"seed": 0, "prm": {"embedding_init": "normal", "dtd_epochs": 40}, "model": {"hidden": [256, 256]}}
    out = ds.apply_overrides(base, ["prm.embedding_init=zeros", "prm.dtd_epochs=2", "model.hidden=[64, 64]"])
    assert out == {"seed": 0, "prm": {"embedding_init": "zeros", "dtd_epochs": 2}, "model": {"hidden": [64, 64]}}
    assert base["prm"]["dtd_epochs"] == 40  # not changed in place
    for bad in ("prm.nope=1", "nope.x=1", "prm.dtd_epochs"):
        with pytest.raises(ValueError):
            ds.apply_overrides(base, [bad])


needs_sample = pytest.mark.skipif(not SAMPLE.is_dir(), reason=f"{SAMPLE} is missing")


@needs_sample
def test_raw_xmeans_reproduces_the_engines_recorded_decision():
    from prm.run import load_run

    run = load_run(SAMPLE)
    for layer in range(run.n_layers):
        for step in ds.run_steps(run, (layer,)):
            dissimilar, _ = ds.cluster(ds.represent(step.table, "raw", smax=400.0), "xmeans", seed=run.config.seed)
            assert dissimilar == run.state.dtd[step.task].layers[layer]["dissimilar_xmeans"]


@needs_sample
def test_analyse_a_recorded_run():
    text = ds.analyse([str(SAMPLE)], layers="together", markdown=True)
    rows = [line.split(" | ") for line in text.splitlines()[2:]]
    found = {(r[1], r[2]) for r in rows}
    want = {(k, c) for k in ds.REPRESENTATIONS for c in ds.CLUSTERINGS if c not in ds.BASELINES}
    assert want | {("-", c) for c in ds.BASELINES} == found
    assert all(r[0] == "| 0+1" for r in rows)
    for r in rows:
        right = float(r[3].split(" ± ")[0])
        assert 0.0 <= right <= 1.0
        assert r[4] == "-" or -1.0 <= float(r[4]) <= 1.0
