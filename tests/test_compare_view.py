"""Compare on a laptop screen: the answer first (one table, one chart, best mean Acc on top), the
detail in tabs; every bar named however many methods; and each caption saying what its chart
draws, read from the figure it describes rather than from a constant (issue 23, bug 7)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from explorer import state as keys
from explorer.figures import compare
from explorer.figures.common import fmt
from prm import methods

APP = str(Path(__file__).resolve().parents[1] / "explorer" / "app.py")
NINE = [m for m in methods.REGISTRY][:10]


def _summary(accs: list[float], *, method_names: list[str] | None = None, seeds: int = 3) -> pd.DataFrame:
    """A ``prm.compare.per_method`` table: one group per method, Acc as given, sd 0.01."""
    names = method_names or NINE[: len(accs)]
    n = len(names)
    metrics = {label: [0.1] * n for label in compare.METRICS.values()}
    return pd.DataFrame({"sequence": ["s"] * n, "method": names, "tasks": ["3/3"] * n,
                         "config": [f"c{i}" for i in range(n)], "runs": [seeds] * n, "seeds": [seeds] * n,
                         **metrics, "Acc": accs,
                         **{f"{label} sd": [0.01] * n for label in compare.METRICS.values()}})


def _times(*drawn: str) -> pd.DataFrame:
    """A ``prm.compare.time_per_method`` table: three tasks per method."""
    return pd.DataFrame([{"method": m, "config": "a", "task": t, "seeds": 2, "seconds": t + 1.0, "detection": 0.5,
                          "accumulated": [1.0, 3.0, 6.0][t]} for m in drawn for t in range(3)])


def _titles(fig, *axes: str) -> list[str]:
    return [fig.layout[axis].title.text for axis in axes]


# ----------------------------------------------------------------------------- captions say what is drawn


@pytest.mark.parametrize("drawn", [("prm", "cat"), ("hat",)])
def test_time_caption_names_the_charts_own_axes_and_what_its_seconds_cover(drawn):
    """Bug 7: the caption names each axis by the title the figure gives it, the unit, what a
    point is and what its seconds cover; similarity detection only where a drawn method runs one."""
    summary = _times(*drawn)
    fig = compare.time_figure(summary)
    text = compare.time_caption(summary)
    for title in _titles(fig, "xaxis", "yaxis", "yaxis2"):
        assert title and title in text, title
    assert "wall-clock seconds" in text and "training" in text and "evaluation" in text
    assert "mean, over the seeds that reached that task" in text and "log axis" in text and "CT" in text
    assert ("DTD for prm" in text) == ("prm" in drawn)
    assert ("transfer and reference trainings for cat" in text) == ("cat" in drawn)
    assert ("similarity detection" in text) == (drawn != ("hat",))


def test_bars_caption_says_what_a_bar_is_and_where_the_acc_axis_starts():
    summary = _summary([0.91, 0.95, 0.88])
    for metrics in (("Acc",), tuple(compare.METRICS.values())):
        fig = compare.bars(summary, metrics=metrics)
        text = compare.bars_caption(summary, metrics=metrics)
        assert f"starts at {fmt(fig.layout.xaxis.range[0], 2)}, not 0" in text  # the figure's own axis start
        assert f"A bar per group of like runs ({len(fig.data[0].y)};" in text and "±1 sd" in text
        assert "(3 each)" in text
        for panel in fig.layout.annotations:  # every panel's metric is explained
            assert f"{panel.text}, " in text and compare.METRIC_MEANING[panel.text] in text


def test_ct_is_the_computation_time_in_every_caption_that_shows_it():
    assert "computation time" in compare.METRIC_MEANING["CT (s)"]
    assert "wall-clock seconds from its start to its end" in compare.METRIC_MEANING["CT (s)"]


@pytest.mark.parametrize("size", [3, 8, 14])
def test_matrices_caption_names_the_figures_colour_scale_and_where_the_numbers_are(size):
    rng = np.random.default_rng(0)
    mean = np.tril(0.6 + 0.4 * rng.random((size, size)))
    mean[np.triu_indices(size, 1)] = np.nan
    groups = [{"title": "prm · s · mean of 2 seeds", "mean": mean, "sd": np.zeros_like(mean)},
              {"title": "hat-s0", "mean": mean * 0.9, "sd": None}]
    figs = [compare.matrix(g, zrange=compare.matrix_range(groups)) for g in groups]
    text = compare.matrices_caption(groups)
    for fig in figs:  # the scale the figures use, one for all
        assert f"{fmt(fig.data[0].zmin, 2)} to {fmt(fig.data[0].zmax, 2)}" in text
    assert "row *j* is after learning task *j*" in text and "column *i* the task tested on" in text
    assert ("hover over a cell" in text) == (figs[0].data[0].text is None)
    assert ("± its sd" in text) == ("<br>±" in str(figs[0].data[0].text))
    assert "(1 of the groups have several)" in text


# ----------------------------------------------------------------------------- every bar labelled


def test_every_bar_is_named_on_its_axis_with_ten_methods():
    """At 800 px plotly drew 5 of 9 names as x ticks; names on the y axis, listed as its ticks,
    each with its own line of BAR_PX pixels, are all drawn whatever the width."""
    summary = _summary([0.8 + 0.01 * i for i in range(len(NINE))])
    assert len(summary) >= 9
    for metrics in (("Acc",), tuple(compare.METRICS.values())):
        fig = compare.bars(summary, metrics=metrics)
        rows = -(-len(metrics) // 2)
        assert all(bar.orientation == "h" for bar in fig.data)
        for bar in fig.data:
            axis = fig.layout["yaxis" + bar.yaxis[1:]]
            assert axis.tickmode == "array" and list(axis.tickvals) == list(bar.y) == list(axis.ticktext)
        assert fig.layout.height >= rows * compare.BAR_PX * len(summary)


def test_the_best_mean_acc_comes_first_and_the_lead_is_weighed_against_the_spread():
    summary = _summary([0.90, 0.95, None, 0.945], method_names=["hat", "prm", "ncl", "cat"])
    assert list(compare.ranked(summary)["method"]) == ["prm", "cat", "hat", "ncl"]  # no Acc: last
    text = compare.best_sentence(summary)
    assert text.startswith("Highest mean Acc here: **prm** 0.950 ± 0.010 over 3 seeds; 0.005 ahead of the next, "
                           "**cat** 0.945")
    assert "within one sd over seeds" in text and "Lowest: **hat** 0.900" in text
    table = compare.summary_table(summary)
    assert list(table["method"]) == ["prm", "cat", "hat", "ncl"]
    assert list(table["Acc vs best"]) == ["best", "−0.005", "−0.050", "n/a"]
    assert list(table["Acc"])[:2] == ["0.950 ± 0.010", "0.945 ± 0.010"] and "sequence" not in table
    assert "sequence" in compare.summary_table(summary.assign(sequence=["a", "b", "a", "b"]))
    wide = compare.best_sentence(_summary([0.90, 0.95], method_names=["hat", "prm"]))
    assert "more than one sd over seeds" in wide and "Lowest" not in wide
    assert compare.best_sentence(_summary([0.9], method_names=["hat"], seeds=1).assign(**{"Acc sd": [None]})) == (
        "Highest mean Acc here: **hat** 0.900 (1 seed).")


# ----------------------------------------------------------------------------- the view: the answer first


def _walk(node):
    yield node
    for child in getattr(node, "children", {}).values():
        yield from _walk(child)


def _number(cell: str) -> float:
    return float(re.match(r"[−+-]?[0-9.]+", cell).group().replace("−", "-"))


def test_compare_puts_one_table_and_one_chart_first_and_the_detail_in_tabs(tmp_path):
    at = AppTest.from_file(APP, default_timeout=90)
    at.session_state[keys.RUNS_DIR] = str(tmp_path)  # only the samples
    at.query_params[keys.VIEW] = keys.COMPARE
    at.run()
    assert not at.exception
    view = next(t for t in at.tabs if t.label == keys.COMPARE)
    top = [n for n in view.children.values() if getattr(n, "type", None) in ("dataframe", "plotly_chart",
                                                                              "tab_container", "expander")]
    kinds = [n.type for n in top]
    assert kinds[:4] == ["expander", "dataframe", "plotly_chart", "tab_container"], kinds  # picker, then the answer
    assert kinds.count("dataframe") == 1 and kinds.count("plotly_chart") == 1  # one table, one chart
    summary, acc = top[1].value, json.loads(top[2].proto.spec)
    assert list(summary.columns) == ["method", "Acc", "Acc vs best", "seeds", "config"]  # narrow: fits 800 px
    accs = [_number(c) for c in summary["Acc"]]
    assert accs == sorted(accs, reverse=True) and len(summary) >= 6  # best first
    assert [a["text"] for a in acc["layout"]["annotations"]] == ["Acc"]
    assert len(acc["data"][0]["y"]) == len(summary) == len(acc["layout"]["yaxis"]["tickvals"])
    tabs = {t.label: t for t in top[3].children.values()}
    assert list(tabs) == ["Time per task", "All metrics", "Per run", "Accuracy matrices"]
    assert {"BWT", "FWT", "CT (s)", "PS"} <= set(tabs["All metrics"].dataframe[0].value.columns)  # moved, not lost
    assert "run" in tabs["Per run"].dataframe[0].value.columns
    specs = {label: [json.loads(c.proto.spec) for c in tab.get("plotly_chart")] for label, tab in tabs.items()}
    assert len(specs["All metrics"][0]["layout"]["annotations"]) == len(compare.METRICS)
    assert any("accumulated time" in a["text"] for a in specs["Time per task"][0]["layout"]["annotations"])
    assert [s["data"][0]["type"] for s in specs["Accuracy matrices"]] == ["heatmap"] * len(summary)
    for tab in tabs.values():  # every chart and table of the detail is explained under it
        nodes = [n for n in _walk(tab) if getattr(n, "type", None) in ("plotly_chart", "dataframe", "caption")]
        shown = [i for i, n in enumerate(nodes) if n.type != "caption"]
        assert shown and all(any(n.type == "caption" for n in nodes[i + 1:]) for i in shown)
