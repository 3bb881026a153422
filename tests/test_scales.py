"""Issue 9, items 2-4 for the Overview, Accuracy matrix, Task embeddings and Masks views:
right/wrong marks against the truth, colour ranges that separate 0.72 from 1.00, a diverging
"change since learnt" view, tables without None/nan cells, the default projection and the
sidebar task as the start of every view's own slider. Values below are worked out by hand."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from streamlit.testing.v1 import AppTest

from explorer import state as keys
from explorer.figures import accuracy, embeddings, masks, overview
from explorer.figures.common import RIGHT_COLOUR, TRUTH_RULE, WRONG_COLOUR, md
from explorer.views.accuracy import default_other
from prm.run import load_run
from tests.test_app import APP, SAMPLE, charts, open_app, texts

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = sorted(p.name for p in (ROOT / "sample_runs").iterdir() if (p / "run.json").exists())
pytestmark = pytest.mark.skipif(not (ROOT / SAMPLE / "run.json").exists(), reason=f"{SAMPLE} is missing")

WRITER = {"family": "writers", "classes": list(range(10))}


def _task(name: str, **kind) -> dict:
    return {"name": name, **kind, "sizes": {"train": 1, "val": 1, "test": 1}}


def _layer(dissimilar: list[int], xmeans: list[int] | None = None) -> dict:
    return {"dissimilar": dissimilar, "dissimilar_xmeans": dissimilar if xmeans is None else xmeans}


def _decisions(dtd: dict[int, list[dict]]) -> SimpleNamespace:
    """Four tasks: writer, digit pair 0-1, writer, writer. Truly similar: T1, T3, T4 (one family
    and label set); T2 is dissimilar to all of them."""
    tasks = [_task("writer 00", **WRITER), _task("classes 0-1", family="classes", classes=[0, 1]),
             _task("writer 01", **WRITER), _task("writer 02", **WRITER)]
    return SimpleNamespace(tasks=tasks, n_tasks=4, tasks_done=4,
                           dtd={t: SimpleNamespace(layers=layers, source="xmeans") for t, layers in dtd.items()},
                           calls=lambda layer=-1: {t: ("xmeans", layers[layer]["dissimilar"]) for t, layers in dtd.items()})


def test_overview_marks_each_call_against_the_truth():
    state = _decisions({1: [_layer([]), _layer([0])],
                        3: [_layer([1]), _layer([0, 2], xmeans=[0])]})
    table = overview.similarity_summary(state).set_index("task")
    # T2 (digit pair) called T1 (writer) similar in l0: wrong; dissimilar in l1: right
    assert table.loc["T2 classes 0-1", "decision"] == "l0: similar T1 ✗; dissimilar ∅ | l1: similar ∅; dissimilar T1 ✓"
    assert table.loc["T2 classes 0-1", "calls right"] == "l0 0/1, l1 1/1"
    # T4 (writer): l0 all three right; l1 writers T1, T3 called dissimilar (wrong), T2 similar (wrong)
    row = table.loc["T4 writer 02"]
    assert row["decision"].startswith("l0: similar T1 ✓, T3 ✓; dissimilar T2 ✓ | ")
    assert "l1: similar T2 ✗; dissimilar T1 ✗, T3 ✗ (X-means said dissimilar T1)" in row["decision"]
    assert row["calls right"] == "l0 3/3, l1 0/3"
    assert table.loc["T1 writer 00", "decision"].startswith("first task")
    assert table.loc["T3 writer 01", "decision"] == "no DTD recorded" and table.loc["T3 writer 01", "source"] == ""


def test_one_layer_counts_calls_without_a_layer_prefix():
    state = _decisions({3: [_layer([0, 1])]})  # T4: writer T1 wrongly dissimilar, T2 rightly, T3 rightly similar
    row = overview.similarity_summary(state).iloc[3]
    assert row["decision"] == "l0: similar T3 ✓; dissimilar T1 ✗, T2 ✓" and row["calls right"] == "2/3"


def test_accuracy_colours_span_the_data_and_separate_072_from_1():
    R = np.array([[1.0, np.nan, np.nan], [0.98, 0.93, np.nan], [0.72, 0.95, 1.0]])
    assert accuracy.colour_range(R) == (0.7, 1.0)
    trace = accuracy.heatmap(R, [], title="R").data[0]
    assert (trace.zmin, trace.zmax) == (0.7, 1.0)
    assert "0.70 to 1.00" in trace.colorbar.title.text
    # on the colour scale 0.72 sits at 7 % and 1.00 at 100 %: far apart (a fixed 0-1 scale put them at 72 %)
    assert (0.72 - trace.zmin) / (trace.zmax - trace.zmin) == pytest.approx(0.0667, abs=1e-3)
    assert accuracy.colour_range(np.array([[0.31, 0.58]])) == (0.3, 0.6)
    assert accuracy.colour_range(np.array([[0.7]])) == (0.6, 0.7)  # never an empty range
    assert accuracy.colour_range(np.full((2, 2), np.nan)) == (0.0, 1.0)


def test_change_since_learnt_is_diverging_symmetric_and_signed():
    R = np.array([[0.9, np.nan, np.nan], [0.8, 0.95, np.nan], [0.72, 1.0, 0.85]])
    change = accuracy.change_since_learnt(R)
    expected = np.array([[0.0, np.nan, np.nan], [-0.1, 0.0, np.nan], [-0.18, 0.05, 0.0]])
    assert np.allclose(change, expected, equal_nan=True)
    trace = accuracy.heatmap(change, [], diverging=True, what="change since learnt").data[0]
    assert trace.zmid == 0 and trace.zmin == -trace.zmax == pytest.approx(-0.18)
    assert [list(row) for row in trace.text] == [["0.00", "", ""], ["−0.10", "0.00", ""], ["−0.18", "+0.05", "0.00"]]
    assert trace.textfont.size >= 12


def test_difference_heatmap_text_is_signed_and_never_minus_zero():
    diff = np.array([[0.05, np.nan], [-0.0004, -0.17]])
    trace = accuracy.heatmap(diff, [], diverging=True, what="difference").data[0]
    assert [list(row) for row in trace.text] == [["+0.05", ""], ["0.00", "−0.17"]]
    assert trace.zmin == -trace.zmax == pytest.approx(-0.17) and trace.colorscale
    assert "difference: 0.000" in trace.hovertext[1][0]


def test_accuracy_table_lists_only_learnt_pairs_never_minus_zero():
    # one row per learnt pair (issue 23: a column per task scrolled sideways); the unlearnt pair is no row
    state = SimpleNamespace(n_tasks=2, accuracy_matrix=lambda split="test": np.array([[0.9, np.nan], [-0.00001, 1.0]]))
    table = accuracy.matrix_table(state)
    assert table.values.tolist() == [["T1", "T1", "0.900", "0.000"], ["T2", "T1", "0.000", "−0.900"],
                                     ["T2", "T2", "1.000", "0.000"]]


def _no_missing(frame) -> list[str]:
    """Columns of ``frame`` with a missing value or a cell that reads None / nan."""
    return [c for c in frame.columns if frame[c].isna().any() or frame[c].astype(str).str.lower().isin(
        ["none", "nan", "<na>"]).any() or frame[c].astype(str).str.startswith("-0.000").any()]


@pytest.mark.parametrize("name", SAMPLES)
def test_no_none_or_nan_in_any_table_of_a_sample_run(name):
    run = load_run(ROOT / "sample_runs" / name)
    state = run.state
    frames = {"decisions": overview.similarity_summary(state), "phases": overview.phase_table(overview.phase_seconds(state)),
              "matrix": accuracy.matrix_table(state), "capacity": masks.capacity_table(state)}
    if run.n_layers:
        frames["overlap"] = masks.overlap_table(run, 0)
        proj = embeddings.compute(run, 0, "pca")
        frames |= {f"points {s}": embeddings.step_frame(run, 0, proj, s) for s in embeddings.steps(run)}
    bad = {what: _no_missing(frame) for what, frame in frames.items() if _no_missing(frame)}
    assert not bad
    if state.config.get("method") == "hat":  # HAT has no DTD: its phases are 0 s, not blank
        assert (frames["phases"]["X-means"] == 0).all()


def test_no_formula_labels_and_legible_fonts_in_the_mask_figures():
    run = load_run(ROOT / SAMPLE)
    figures = [masks.relaxed_figure(run, 4, 0), masks.capacity_figure(masks.capacity_table(run.state)),
               masks.mask_heatmap(run, 0), masks.overlap_figure(run, 0)]
    for fig in figures:
        spec = fig.to_json()
        assert "a_<=" not in spec and "p_<=" not in spec and "≤t" not in spec
        assert fig.layout.font.size >= 12
    assert list(figures[0].data[0].y) == ["HAT: every unit an earlier task used", "protected while learning T5",
                                          "relaxed: magenta free,<br>light magenta partially"]
    assert figures[1].layout.yaxis.title.text == "share of units in use"


def test_phase_chart_uses_the_phase_palette_and_the_strip_names_its_families():
    from explorer.figures.common import PHASE_COLOURS, PHASE_LABELS, family_colour

    state = load_run(ROOT / SAMPLE).state
    fig = overview.phase_figure(overview.phase_seconds(state))
    assert {bar.name: bar.marker.color for bar in fig.data} == {PHASE_LABELS[p]: PHASE_COLOURS[p] for p in PHASE_COLOURS
                                                                if p not in overview.CAT_PHASES}  # a PRM run
    strip = overview.sequence_strip(state)
    assert strip.layout.showlegend and "family" in strip.layout.legend.title.text
    assert {bar.name: bar.marker.color for bar in strip.data} == {"writers": family_colour("writers"),
                                                                  "classes": family_colour("classes")}


def test_embedding_points_are_outlined_by_their_call():
    run = load_run(ROOT / SAMPLE)  # T10 (digit pair 0-1): l0 called T3, T5, T8, T9 dissimilar (right), the rest
    frame = embeddings.step_frame(run, 0, embeddings.compute(run, 0, "pca"), "T10")  # similar (wrong)
    assert frame.set_index("task")["call"].to_dict() == {
        "T1": "✗", "T2": "✗", "T3": "✓", "T4": "✗", "T5": "✓", "T6": "✗", "T7": "✗", "T8": "✓", "T9": "✓", "T10": ""}
    fig = embeddings.figure(frame, title="t")
    outline = {}
    for trace in fig.data:
        if trace.text is not None:
            outline |= {text.split()[0]: colour for text, colour in zip(trace.text, trace.marker.line.color)}
    assert outline["T5"] == RIGHT_COLOUR and outline["T1"] == WRONG_COLOUR and outline["T10"] == "black"
    legend = {t.name for t in fig.data if t.showlegend is not False}
    assert {"call right ✓", "call wrong ✗", "new task", "writers", "classes"} <= legend
    titles = {t.legendgrouptitle.text for t in fig.data if t.legendgrouptitle and t.legendgrouptitle.text}
    assert titles == {"colour = X-means cluster", "symbol = family", "outline = DTD's call"}


def test_default_projection_is_pca_below_twelve_tasks():
    assert embeddings.default_projection(11) == "pca" and embeddings.default_projection(12) == "umap"
    at = open_app(keys.EMBEDDINGS, run="sample_runs/digits-mixed-hat-s0")  # 10 tasks, 10 points: PCA
    assert at.segmented_control(key=keys.PROJECTION).value == "pca" and at.query_params[keys.PROJECTION] == "pca"
    at = open_app(keys.EMBEDDINGS)  # 10 tasks, 19 points (9 DTD steps too): the rule counts tasks, so PCA
    assert at.segmented_control(key=keys.PROJECTION).value == "pca"
    assert "fewer than 12 tasks" in texts(at)


def test_an_invalid_projection_in_the_url_is_reported():
    at = AppTest.from_file(APP, default_timeout=30)
    at.query_params[keys.VIEW] = keys.EMBEDDINGS
    at.query_params[keys.RUN] = "sample_runs/digits-mixed-hat-s0"
    at.query_params[keys.PROJECTION] = "bogus"
    at.run()
    assert not at.exception
    warned = [w.value for w in at.warning if "projection" in w.value]
    assert warned and md("bogus") in warned[0] and "showing pca" in warned[0]
    assert at.segmented_control(key=keys.PROJECTION).value == "pca"


def test_every_views_slider_starts_from_the_sidebar_task():
    at = open_app(keys.ACCURACY, task="T3")
    assert at.slider(key="acc-upto").value == 3 and "after T3" in charts(at)[0].proto.spec
    at.sidebar.selectbox(key=keys.TASK).set_value("T6").run()
    assert at.slider(key="acc-upto").value == 6  # the sidebar task drives the slider
    at.slider(key="acc-upto").set_value(8).run()
    assert at.slider(key="acc-upto").value == 8  # and the slider is still free to move
    at = open_app(keys.EMBEDDINGS, task="T3", projection="pca")
    assert at.select_slider(key=keys.STEP).value == "T3"
    at = open_app(keys.MASKS, task="T3")
    assert at.select_slider(key="mask-task").value == "T3" and "protected while learning T3" in charts(at)[1].proto.spec


def test_accuracy_view_change_since_learnt_and_hat_of_the_same_seed():
    at = open_app(keys.ACCURACY)
    assert at.selectbox(key="acc-other").value == "sample_runs/digits-mixed-hat-s0"
    assert '"zmid":0' in charts(at)[-1].proto.spec.replace(" ", "")
    at.segmented_control(key="acc-show").set_value("change since learnt").run()
    assert not at.exception
    assert json.loads(charts(at)[0].proto.spec)["layout"]["title"]["text"].startswith("Change since learnt, R[j, i] − R[i, i], after")
    entries = [SimpleNamespace(method="prm-s", seed=0), SimpleNamespace(method="hat", seed=1),
               SimpleNamespace(method="hat", seed=0)]
    assert default_other(entries, seed=0) == 2 and default_other(entries, seed=5) == 1
    assert default_other(entries[:1], seed=0) == 0


def test_overview_shows_marks_calls_right_and_the_truth_once():
    at = open_app(keys.OVERVIEW)
    decisions = next(df.value for df in at.dataframe if "calls right" in df.value.columns)
    assert decisions.set_index("task").loc["T3 writer 00", "calls right"] == "l0 2/2, l1 2/2"
    assert texts(at).count(TRUTH_RULE) == 1
    phases = next(df.value for df in at.dataframe if "X-means" in df.value.columns)
    assert not phases.isna().any().any()
