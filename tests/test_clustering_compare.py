"""Clustering and Compare, checked by hand: right/wrong marks, the cluster-ordered distance
matrix, oracle transfer against chance, a 50-task X-means tree without label collisions, mean
and spread of accuracy matrices over seeds, the zoomed Acc axis, and both views in AppTest."""

from __future__ import annotations

import itertools
import json
import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from explorer import catalog
from explorer import state as keys
from explorer.figures import clustering, common, compare
from explorer.figures.common import RIGHT_COLOUR, WRONG_COLOUR
from prm import compare as compare_tables
from prm.events import DTDResult
from prm.xmeans import xmeans
from tests.test_app import APP, charts, texts

DIGITS = list(range(10))


def _task(name: str, family: str, classes: list[int]) -> dict:
    return {"name": name, "family": family, "classes": classes}


def test_calls_are_marked_against_the_truth():
    """T4 (a writer of the ten digits) arrives; T1 and T3 are writers too (truly similar), T2 is
    a digit pair (truly dissimilar). DTD called T2 and T3 dissimilar: T1 ✓, T2 ✓, T3 ✗."""
    tasks = [_task("w1", "writers", DIGITS), _task("0-1", "classes", [0, 1]), _task("w2", "writers", DIGITS),
             _task("w3", "writers", DIGITS)]
    frame = clustering.calls(tasks, task=3, dissimilar=[1, 2])
    assert list(frame[""]) == ["✓", "✓", "✗"]
    assert list(frame["called"]) == ["similar", "dissimilar", "dissimilar"]
    assert list(frame["truly"]) == ["similar", "dissimilar", "similar"]
    assert clustering.count_line(frame) == "2 of 3 calls right"
    css = clustering.calls_styled(frame).to_html().split("</style>")[0]
    rules = {colour: re.search(r"([^{}]*)\{\s*color: " + colour, css).group(1) for colour in (RIGHT_COLOUR, WRONG_COLOUR)}
    assert re.findall(r"row(\d)_col0", rules[RIGHT_COLOUR]) == ["0", "1"]
    assert re.findall(r"row(\d)_col0", rules[WRONG_COLOUR]) == ["2"]


def test_distance_matrix_is_ordered_by_cluster_with_a_blank_diagonal():
    labels = [1, 0, 1, 0]
    d = np.array([[0, 5, 1, 6], [5, 0, 7, 2], [1, 7, 0, 8], [6, 2, 8, 0]], dtype=float)
    order, z = clustering.ordered(d, labels)
    assert order == [1, 3, 0, 2]
    assert np.isnan(np.diag(z)).all()
    assert z[0, 1] == 2 and z[2, 3] == 1 and z[0, 2] == 5 and z[1, 3] == 8  # T2-T4, T1-T3, T2-T1, T4-T3
    tasks = [_task(f"t{i}", "writers", DIGITS) for i in range(4)]
    fig = clustering.pairwise_figure(d, tasks, metric="euclidean", labels=labels)
    heat = fig.data[0]
    ticks = ["T2 c0", "T4 c0", "T1 c1", "T3 c1"]  # rows are categories named as shown: the y axis needs no ticktext
    assert list(fig.layout.xaxis.ticktext) == list(fig.layout.yaxis.tickvals) == list(heat.y) == ticks
    assert heat.zmin is None and heat.zmax is None  # the scale spans the off-diagonal values only
    assert np.nanmin(np.asarray(heat.z, dtype=float)) == 1 and np.nanmax(np.asarray(heat.z, dtype=float)) == 8
    lines = {(s.x0, s.x1, s.y0, s.y1) for s in fig.layout.shapes}
    assert lines == {(1.5, 1.5, -0.5, 3.5), (-0.5, 3.5, 1.5, 1.5)}  # one boundary, both axes


def test_oracle_transfer_is_measured_against_chance_and_the_tasks_own_accuracy():
    """T1 is 2-way (chance 0.5), T2 10-way (chance 0.1), T3 10-way with an own classifier at chance."""
    tasks = [_task("0-1", "classes", [0, 1]), _task("w", "writers", DIGITS), _task("bad", "writers", DIGITS)]
    oracle = [[0.9, 0.28, 0.1], [0.7, 0.82, 0.1], [0.5, 0.1, 0.1]]
    z = clustering.normalised_transfer(oracle, tasks, 3)
    assert z[0, 1] == pytest.approx((0.28 - 0.1) / (0.82 - 0.1))  # 0.25: a quarter of T2's own gain
    assert z[1, 0] == pytest.approx((0.7 - 0.5) / (0.9 - 0.5))  # 0.5
    assert z[2, 0] == pytest.approx(0.0) and z[2, 1] == pytest.approx(0.0)  # at chance
    assert z[0, 0] == pytest.approx(1) and z[1, 1] == pytest.approx(1)
    assert np.isnan(z[:, 2]).all()  # T3's own classifier is at chance: nothing to scale by
    fig = clustering.oracle_figure(oracle, tasks, step=1, labels=[0, 1])
    heat = fig.data[0]
    assert heat.zmid == 0 and heat.zmin == -1 and heat.zmax == 1
    assert "accuracy 0.280 (chance 0.100, its own classifier 0.820)" in heat.hovertext[0][1]


def _record_50(blobs: int) -> tuple[DTDResult, int]:
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 10, (blobs, 16))
    X = np.repeat(centres, -(-50 // blobs), axis=0)[:50] + rng.normal(0, 0.3, (50, 16))
    xm = xmeans(X, seed=0)
    layer = {"xmeans": xm.to_dict(), "dissimilar": [], "dissimilar_xmeans": [], "undecided": False}
    return DTDResult(task=49, layers=[layer], source="xmeans", seconds=0.0), xm.k


@pytest.mark.parametrize("blobs", [10, 16])
def test_a_50_task_tree_has_no_colliding_leaf_labels(blobs):
    """Leaf labels (text right of their marker) placed in pixels on a 600-pixel-wide chart at the
    figure's own height: two labels closer vertically than a line must be apart by more than the
    left one's text width."""
    record, k = _record_50(blobs)
    assert k >= 9
    fig = clustering.decision_tree(record, 0)
    leaves = fig.data[-1]
    assert len(leaves.text) == k and all(t.strip().startswith("c") for t in leaves.text)
    size = leaves.textfont.size
    assert size >= 12
    height = fig.layout.height - fig.layout.margin.t - fig.layout.margin.b
    (x0, x1), (y0, y1) = fig.layout.xaxis.range, fig.layout.yaxis.range
    px_x, px_y = 600 / (x1 - x0), height / (y1 - y0)
    boxes = [((x - x0) * px_x, (y - y0) * px_y, 0.62 * size * len(text)) for x, y, text in
             zip(leaves.x, leaves.y, leaves.text)]
    for (xa, ya, wa), (xb, yb, wb) in itertools.combinations(boxes, 2):
        assert abs(ya - yb) >= 1.2 * size or abs(xa - xb) >= (wa if xa < xb else wb), (xa, ya, xb, yb)
    assert all(x + w <= 600 + 10 for x, _, w in boxes), boxes  # the labels fit the chart's width
    table = clustering.decision_table(record, 0)
    assert list(table.columns[:3]) == ["cluster", "ΔBIC", "kept"] and table.columns[-1] == "members"
    assert not table.isna().any().any() and "None" not in table.to_string() and "nan" not in table.to_string()
    refused = table[table["kept"] == "no"]
    assert len(table[table["kept"] == "yes"]) == k - 1 and len(refused) >= 1
    assert all(not d.startswith("+") for d in refused["ΔBIC"])  # refused: the BIC did not rise, or "—"


def test_agreement_table_is_signed_and_has_no_none():
    table = pd.DataFrame({"step": ["T2", "T3"], "layer": ["l0", "l0"], "k": [1, 2], "ARI": [-0.25, 0.0],
                          "right": [1, 1], "earlier": [1, 2], "calls right": [1.0, 0.5]})
    shown = clustering.agreement_shown(table)
    assert list(shown["ARI"]) == ["−0.25", "0.00"] and list(shown["calls right"]) == ["1 of 1", "1 of 2"]


def _state(*, seed_acc: float, n_tasks: int = 3, method: str = "prm") -> SimpleNamespace:
    """A finished hand-made run: R[j, i] = seed_acc - 0.1 * (j - i) below the diagonal."""
    R = np.full((n_tasks, n_tasks), np.nan)
    for j in range(n_tasks):
        for i in range(j + 1):
            R[j, i] = seed_acc - 0.1 * (j - i)
    return SimpleNamespace(sequence="digits-writers", n_tasks=n_tasks, accuracy_matrix=lambda split="test": R.copy(),
                           config={"method": method, "sequence": "digits-writers", "n_tasks": n_tasks},
                           end=SimpleNamespace(status="finished", seconds=10.0), task_ends={})


def test_mean_and_sd_matrix_over_seeds():
    """Seeds 0, 1, 2 at 0.9, 0.8, 0.7 (plus a copy of seed 0, counted once): mean 0.8, sd
    sqrt(2/3) * 0.1 in every cell; a lone HAT run keeps its own matrix."""
    runs = {"s0": (_state(seed_acc=0.9), 0), "s0-copy": (_state(seed_acc=0.9), 0), "s1": (_state(seed_acc=0.8), 1),
            "s2": (_state(seed_acc=0.7), 2), "hat": (_state(seed_acc=0.6, method="hat"), 0)}
    table = compare_tables.per_run(runs)
    groups = compare_tables.group_matrices(table, {name: s for name, (s, _) in runs.items()})
    prm, hat = groups
    assert prm["seeds"] == 3 and "mean of 3 seeds" in prm["title"]
    assert prm["mean"][2, 0] == pytest.approx(0.6) and prm["mean"][0, 0] == pytest.approx(0.8)
    assert prm["sd"][1, 0] == pytest.approx(np.sqrt(2 / 3) * 0.1) and np.isnan(prm["mean"][0, 2])
    assert hat["sd"] is None and hat["title"] == "hat" and hat["mean"][1, 1] == pytest.approx(0.6)
    zrange = compare.matrix_range(groups)
    prm_fig, hat_fig = (compare.matrix(g, zrange=zrange) for g in groups)
    assert prm_fig.data[0].text[0][0] == "0.80<br>± 0.08" and hat_fig.data[0].text[0][0] == "0.60"
    for fig in (prm_fig, hat_fig):  # one scale for all: the data's range
        assert fig.data[0].zmin == pytest.approx(0.4) and fig.data[0].zmax == pytest.approx(0.8)
    summary = compare.shown(compare_tables.per_method(table)).set_index("method")
    assert summary.loc["prm", "Acc"] == f"0.700 ± {np.sqrt(2 / 3) * 0.1:.3f}" and summary.loc["prm", "FWT"] == "n/a"
    assert summary.loc["prm", "BWT"] == "−0.100 ± 0.000" and summary.loc["hat", "Acc"] == "0.500"


def test_matrix_titles_wrap_to_fit_their_subplot():
    long = "digits-mixed-few-prm+-s4-with-a-very-long-user-chosen-name-that-goes-on and more words here"
    assert all(len(line) <= compare.TITLE_CHARS for line in compare.wrap(long))
    assert " ".join(compare.wrap("a b c")) == "a b c"
    groups = [{"title": long, "mean": np.eye(3), "sd": None}, {"title": "short", "mean": np.eye(3), "sd": None}]
    fig = compare.matrix(groups[0], zrange=compare.matrix_range(groups))
    assert len(fig.layout.title.text.split("<br>")) >= 3
    assert all(len(line) <= compare.TITLE_CHARS for line in fig.layout.title.text.split("<br>"))
    assert fig.layout.title.font.size >= 12
    assert fig.layout.height >= 380 + 20 * 3


def test_acc_bars_use_a_zoomed_axis_and_method_colours():
    summary = pd.DataFrame({"sequence": ["s", "s"], "method": ["prm", "hat"], "tasks": ["3/3", "3/3"],
                            "config": ["a", "b"], "runs": [3, 3], "seeds": [3, 3], "Acc": [0.9, 0.95],
                            "Acc sd": [0.02, 0.01], "BWT": [-0.1, 0.0], "BWT sd": [0.0, 0.0], "FWT": [None, None],
                            "FWT sd": [None, None], "CT (s)": [1.0, 2.0], "CT (s) sd": [None, None]})
    assert compare.zoomed_range(summary["Acc"], summary["Acc sd"]) == pytest.approx([0.86, 0.97])
    fig = compare.bars(summary)
    assert list(fig.layout.xaxis.range) == pytest.approx([0.86, 0.97])  # horizontal bars: Acc on x
    assert list(fig.data[0].marker.color) == [common.METHOD_COLOURS["prm"], common.METHOD_COLOURS["hat"]]
    assert list(fig.data[0].error_x.array) == pytest.approx([0.02, 0.01])


def test_clustering_view_keeps_the_measure_in_the_url_and_warns_on_a_bad_one():
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params.update({keys.VIEW: keys.CLUSTERING, keys.RUN: "sample_runs/digits-mixed-prm-s0",
                            keys.TASK: "T5", keys.MEASURE: "bogus"})
    at.run()
    assert not at.exception
    assert any("distance measure" in w.value and "bogus" in w.value for w in at.warning)
    assert at.segmented_control(key=keys.MEASURE).value == "euclidean"
    assert at.selectbox(key="cl-a").value == 3 and at.selectbox(key="cl-b").value == 4  # from the sidebar task
    assert "calls right" in texts(at)
    at.segmented_control(key=keys.MEASURE).set_value("cosine").run()
    assert not at.exception and at.query_params[keys.MEASURE] == "cosine"
    assert "Cosine similarity" in charts(at)[1].proto.spec


def test_compare_view_on_the_default_sample_run(tmp_path):
    """The default run (no run in the URL) and all like runs of its sequence and task count are
    picked; the tables have no None; one matrix per group of like runs (the mean over its
    seeds), titles wrapped."""
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state[keys.RUNS_DIR] = str(tmp_path)  # only the samples
    at.query_params[keys.VIEW] = keys.COMPARE
    at.run()
    assert not at.exception
    found = [catalog.describe(p) for p in sorted(catalog.SAMPLES.iterdir()) if (p / "run.json").exists()]
    current = next(e for e in found if e.key == catalog.default_key(found))
    like = {e.key for e in found if e.sequence == current.sequence and e.n_tasks == current.n_tasks
            and e.status == "finished"}
    picked = at.multiselect(key=keys.COMPARE_RUNS).value
    assert picked[0] == current.key and set(picked) == like and len(like) >= 7
    for frame in at.dataframe[:2]:
        cells = frame.value.astype(str).to_numpy().ravel()
        assert not any(c in ("None", "nan", "<NA>") for c in cells)
    specs = [json.loads(c.proto.spec) for c in charts(at)]
    matrices = [s for s in specs if s["data"][0]["type"] == "heatmap"]  # one chart per group, the last ones
    assert matrices == specs[-len(matrices):]
    groups = {(e.method, e.config) for e in found if e.key in like}  # the bundled story: six methods of five seeds
    assert [[d["type"] for d in m["data"]] for m in matrices] == [["heatmap"]] * len(groups) and len(groups) < len(like)
    titles = [m["layout"]["title"]["text"] for m in matrices]
    assert sum("mean of 5 seeds" in t.replace("<br>", " ") for t in titles) == 6
    assert all(len(line) <= compare.TITLE_CHARS for t in titles for line in t.split("<br>"))
