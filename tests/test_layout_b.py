"""Sizing rules of the Task embeddings and Clustering charts (issue 23, "layouts that never
overlap"): each builder decides its labels, ticks, legend and title from what it knows (the
number of tasks, the texts), so the chart reads from the narrowest width up. Pure: figures
only, no browser (explorer/layout.py checks the drawn page)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from explorer.figures import clustering
from explorer.figures import embeddings as emb
from explorer.figures import linkage
from explorer.figures.common import MAX_TICKS, RIGHT_COLOUR, WRONG_COLOUR, plain
from prm.run import load_run

SAMPLE = "sample_runs/digits-writers-binary-prm-s2"
DIGITS = list(range(10))


def _tasks(n: int) -> list[dict]:
    return [{"name": f"writer {i:02d}", "family": "writers", "classes": DIGITS} for i in range(n)]


def _distance(n: int, seed: int = 0) -> np.ndarray:
    points = np.random.default_rng(seed).normal(size=(n, 8))
    return np.linalg.norm(points[:, None] - points[None], axis=-1)


def test_a_50_task_distance_matrix_drops_its_cell_text_and_thins_its_ticks():
    fig = clustering.pairwise_figure(_distance(50), _tasks(50), metric="euclidean", labels=[i % 3 for i in range(50)])
    heat = fig.data[0]
    assert heat.texttemplate is None  # the numbers are in the hover only
    assert "euclidean:" in heat.hovertext[0][1]
    assert 2 <= len(fig.layout.xaxis.tickvals) <= MAX_TICKS and 2 <= len(fig.layout.yaxis.tickvals) <= MAX_TICKS
    assert fig.layout.xaxis.tickangle is None  # plotly may turn the labels it keeps


def test_a_10_task_distance_matrix_keeps_its_values_and_every_tick():
    fig = clustering.pairwise_figure(_distance(10), _tasks(10), metric="euclidean", labels=[0] * 10)
    heat = fig.data[0]
    assert heat.texttemplate == "%{text}" and heat.text[0][1] != ""
    assert len(fig.layout.yaxis.tickvals) == 10 and len(fig.layout.xaxis.tickvals) >= 5  # across: every other
    assert fig.data[0].colorbar.orientation == "h"  # below the grid, not beside it


def test_the_oracle_matrix_follows_the_same_rule():
    oracle = np.full((50, 50), 0.5) + 0.4 * np.eye(50)
    tasks = _tasks(50)
    big = clustering.oracle_figure(oracle, tasks, step=49, labels=[0] * 50)
    small = clustering.oracle_figure(oracle, tasks, step=5, labels=[0] * 6)
    assert big.data[0].texttemplate is None and len(big.layout.xaxis.tickvals) <= MAX_TICKS
    assert small.data[0].texttemplate == "%{text}" and len(small.layout.xaxis.tickvals) == 6


def test_titles_wrap_to_lines_a_narrow_chart_holds():
    fig = clustering.decision_tree(load_run(SAMPLE).state.dtd[9], 0)
    lines = fig.layout.title.text.split("<br>")
    assert len(lines) == 2 and all(len(line) <= clustering.TITLE_CHARS for line in lines)
    assert fig.layout.margin.t >= 22 + 24 * len(lines)  # the margin holds every line
    short = clustering.titled(go.Figure(), "a <b>", height=100)
    assert short.layout.title.text == plain("a <b>")  # still plain text: no HTML from a run's names


def test_place_labels_never_lets_two_labels_touch_and_keeps_the_first_in_priority():
    rng = np.random.default_rng(1)
    px = rng.uniform(0, 200, size=(40, 2))  # 40 points crowded into a small plot
    texts = [f"T{i + 1} ✓" for i in range(40)]
    priority = [39, *range(39)]
    where = emb.place_labels(px, texts, priority, radius=[8] * 40, size=(200, 200))
    assert where[39] is not None  # the first in priority (the new task) is always labelled here
    assert 0 < sum(w is not None for w in where) < 40  # the rest: only where they fit
    boxes = [emb._label_box(*px[n], len(texts[n]) * emb.CHAR_PX + 4, w, 10) for n, w in enumerate(where) if w]
    assert not any(emb._overlaps(a, b) for a, b in itertools.combinations(boxes, 2))
    assert all(b[0] >= 0 and b[1] >= 0 and b[2] <= 200 and b[3] <= 200 for b in boxes)


def test_point_labels_are_thinned_by_the_figure_not_dropped_from_the_hover():
    run = load_run(SAMPLE)
    frame = emb.step_frame(run, 1, emb.precomputed(run, 1, "pca"), "T10")  # T2/T3 and T5/T7 lie close together
    fig = emb.figure(frame, title="Layer 1 · PCA · X-means when T10 arrived")
    points = [t for t in fig.data if t.customdata is not None]
    shown = {c: text for t in points for c, text in zip(t.customdata, t.text)}
    assert set(shown) == set(frame["task"]) and shown["T10"] == "T10"  # the new task is always named
    hovers = [h for t in points for h in t.hovertext]
    assert len(hovers) == len(frame) and all("nearest" in h for h in hovers)
    assert fig.layout.legend.orientation == "h" and fig.layout.legend.yref == "container"  # below, not beside


def test_many_colours_get_one_legend_entry():
    frame = pd.DataFrame({"task": [f"T{i + 1}" for i in range(30)], "name": [f"T{i + 1} w" for i in range(30)],
                          "family": ["writers"] * 30, "kind": ["final embedding"] * 30, "cluster": [""] * 30,
                          "relation": [""] * 30, "call": [""] * 30, "x": np.arange(30.0), "y": np.arange(30.0) % 7,
                          "nearest": ["-"] * 30, "task_index": range(30), "is_dtd": [False] * 30, "group": [-1] * 30,
                          "grouping": [""] * 30})
    fig = emb.figure(frame, title="t")
    colours = [t for t in fig.data if t.legendgroup not in ("families", "outlines") and t.showlegend is not False]
    assert len(colours) == 1 and "hover a point" in colours[0].name


def test_a_50_leaf_tree_names_few_leaves_and_moves_the_marks_to_the_outlines():
    n = 50
    step = linkage.RuleStep(rule="linkage", threshold=0.3, features="raw", together=False, task=n - 1,
                            distance=_distance(n) / 10, labels=np.arange(n), dissimilar=list(range(n - 1)),
                            recorded=list(range(n - 1)), xmeans=[])
    fig = linkage.dendrogram_figure(step, _tasks(n))
    leaves = fig.data[2]
    assert len(fig.layout.xaxis.tickvals) <= MAX_TICKS + 1 and any("(new)" in t for t in fig.layout.xaxis.ticktext)
    assert not any(leaves.text)  # no marks to collide; right/wrong in the outline and the hover
    assert set(leaves.marker.line.color) <= {RIGHT_COLOUR, WRONG_COLOUR, "#555"}
    assert fig.layout.xaxis.tickangle is None


def test_leaf_ticks_keep_the_new_task_and_nothing_next_to_it():
    assert linkage.leaf_ticks(8, 3) == list(range(8))
    shown = linkage.leaf_ticks(50, 17)
    assert 17 in shown and len(shown) <= MAX_TICKS + 1
    assert all(p == 17 or abs(p - 17) >= 5 for p in shown)


def test_the_new_leafs_wide_name_keeps_its_neighbours_names_off_it():
    n, new = 50, 17  # "T50 (new)" is three times as wide as "T15": five leaves apart they touched
    leaf_px = linkage.TREE_PX / n
    for p in linkage.leaf_ticks(n, new):
        if p != new:
            assert abs(p - new) * leaf_px >= (len("T50 (new)") + len("T15")) / 2 * linkage.TICK_CHAR_PX


def test_the_plot_keeps_the_height_its_labels_were_placed_for_however_the_legend_wraps():
    run = load_run(SAMPLE)
    frame = emb.step_frame(run, 1, emb.precomputed(run, 1, "pca"), "T10")
    alone = emb.step_frame(run, 1, emb.precomputed(run, 1, "pca"), "T10", dissimilar=[])
    for fig, above in ((emb.figure(frame, title="t"), 0),
                       (emb.comparison_figure([("a", frame), ("b", alone)], title="t"), emb.PANEL_TITLE_PX)):
        stacked = emb._legend_px(fig)  # every legend group in a row of its own: the most it takes
        assert stacked >= emb.LEGEND_LINE_PX * 8
        plot = fig.layout.height - fig.layout.margin.t - stacked - fig.layout.margin.b
        assert plot >= emb.PLOT_PX[1] and fig.layout.margin.t >= 22 + above
