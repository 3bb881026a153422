"""Sizing rules of the Accuracy matrix, Masks and Overview figures (issue 23, layouts that never
overlap): each figure chooses its cell text, tick density, legend place and margins from what it
knows (the number of tasks, the length of its labels), so that it reads from a 420 px chart up.
Pure: no browser; ``explorer.layout`` measures the drawn pages."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from explorer.figures import accuracy, masks, overview
from explorer.figures.common import (FONT, GRID_FRAME, MAX_TICKS, MIN_CELL_FONT, NARROW, TEXT_EM, cell_font,
                                     task_ticks, wrap)
from prm.run import load_run

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_runs" / "digits-writers-binary-prm-s2"


def _matrix(n: int, seed: int = 0) -> np.ndarray:
    R = 0.6 + 0.4 * np.random.default_rng(seed).random((n, n))
    R[np.triu_indices(n, 1)] = np.nan
    return R


def _tasks(n: int) -> list[dict]:
    return [{"name": f"writer {t:02d} >=5?", "family": "writers"} for t in range(n)]


def _state(n: int) -> SimpleNamespace:
    return SimpleNamespace(n_tasks=n, tasks=_tasks(n), accuracy_matrix=lambda split="test": _matrix(n))


def _shown_text(trace) -> list[str]:
    return [t for row in (trace.text or ()) for t in row if t] if trace.texttemplate else []


def test_task_ticks_label_every_task_up_to_twelve_then_round_steps():
    assert task_ticks(10) == list(range(10))
    assert [t + 1 for t in task_ticks(50)] == [1, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50]
    assert [t + 1 for t in task_ticks(20)] == [1, 3, 5, 7, 9, 11, 13, 15, 17, 19]  # never T1 beside T2
    for n in (13, 24, 50, 100, 500):
        assert 2 <= len(task_ticks(n)) <= MAX_TICKS and task_ticks(n)[0] == 0
    assert len(task_ticks(10, most=4)) <= 4  # a short axis gets fewer


def test_cell_font_shrinks_then_gives_up_rather_than_touching():
    assert cell_font(chars=4, across=40, down=40) == FONT
    smaller = cell_font(chars=5, across=30, down=40)
    assert smaller is not None and MIN_CELL_FONT <= smaller < FONT and 5 * TEXT_EM * smaller + 4 <= 30
    assert cell_font(chars=4, across=12, down=40) is None  # too narrow
    assert cell_font(chars=4, across=40, down=10) is None  # too low


def test_a_50_task_matrix_has_no_cell_text_and_at_most_twelve_labels_a_side():
    fig = accuracy.heatmap(_matrix(50), _tasks(50), title="Test accuracy R[j, i] after T50")
    trace = fig.data[0]
    assert _shown_text(trace) == [] and "after learning" in trace.hovertext[49][3]  # the value stays in the hover
    assert len(fig.layout.xaxis.tickvals) <= MAX_TICKS and len(fig.layout.yaxis.tickvals) <= MAX_TICKS
    assert fig.layout.height <= 700


@pytest.mark.parametrize("diverging", [False, True])
def test_a_10_task_matrix_keeps_its_values_and_they_fit_a_420_px_chart(diverging):
    R = _matrix(10) - (0.8 if diverging else 0)
    fig = accuracy.heatmap(R, _tasks(10), diverging=diverging, title="t")
    trace = fig.data[0]
    assert len(_shown_text(trace)) == 55 and len(fig.layout.xaxis.tickvals) == 10
    size, chars = trace.textfont.size, max(len(t) for t in _shown_text(trace))
    assert size >= 12 and chars * TEXT_EM * size + 4 <= (NARROW - GRID_FRAME) / 10  # cell width at 420 px


def test_the_colour_bar_lies_below_the_matrix_with_its_title_under_its_numbers():
    bar = accuracy.heatmap(_matrix(4), _tasks(4), title="t").data[0].colorbar
    assert bar.orientation == "h" and bar.yref == "container" and bar.title.side == "bottom"
    assert "colours" in bar.title.text and "<br>" not in bar.title.text


def test_a_small_live_matrix_drops_text_its_rows_cannot_hold():
    fig = accuracy.heatmap(_matrix(10), _tasks(10), title="accuracy matrix", height=320)
    rows = (320 - fig.layout.margin.t - fig.layout.margin.b) / 10
    assert not _shown_text(fig.data[0]) or fig.data[0].textfont.size + 4 <= rows
    assert len(fig.layout.yaxis.tickvals) * (FONT + 6) <= rows * 10  # row labels that do not touch
    narrow = accuracy.heatmap(_matrix(10), _tasks(10), room=260)  # a caller that knows its chart is narrow
    assert _shown_text(narrow.data[0]) == [] and len(narrow.layout.xaxis.tickvals) < 10


def test_curves_put_a_legend_below_and_none_for_fifty_lines():
    few = accuracy.curves(_state(10))
    assert few.layout.legend.orientation == "h" and few.layout.legend.yref == "container"
    assert accuracy.curves(_state(50)).layout.showlegend is False  # the hover names each line


def test_the_tables_keep_their_columns_whatever_the_number_of_tasks():
    assert list(accuracy.matrix_table(_state(50)).columns) == list(accuracy.matrix_table(_state(3)).columns)
    assert len(accuracy.matrix_table(_state(50))) == 50 * 51 // 2
    run = load_run(SAMPLE)
    table = masks.overlap_table(run, 0)
    assert list(table.columns) == ["task", "other task", "shared units (Jaccard)"] and len(table) == 45


def _mask_run(n: int, units: int = 64) -> SimpleNamespace:
    rng = np.random.default_rng(1)
    stack = (rng.random((n, units)) > 0.5).astype(float)
    return SimpleNamespace(learnt=lambda layer: list(range(n)), mask=lambda t, layer: stack[t],
                           state=SimpleNamespace(tasks=_tasks(n)))


def test_mask_rows_are_labelled_only_as_densely_as_they_can_be_read():
    assert len(masks.mask_heatmap(_mask_run(10), 0).layout.yaxis.tickvals) == 10
    fig = masks.mask_heatmap(_mask_run(50), 0)
    shown = fig.layout.yaxis.tickvals
    assert len(shown) <= MAX_TICKS and len(shown) * (FONT + 6) <= fig.layout.height - 130
    lines = fig.layout.xaxis.title.text.split("<br>")
    assert len(lines) == 2 and max(map(len, lines)) <= 42  # wraps inside a 420 px chart


def test_overlap_matrix_of_many_tasks_thins_its_coloured_labels():
    fig = masks.overlap_figure(_mask_run(50), 0)
    assert _shown_text(fig.data[0]) == [] and len(fig.layout.xaxis.tickvals) <= MAX_TICKS
    assert len(fig.layout.xaxis.ticktext) == len(fig.layout.xaxis.tickvals)
    assert fig.data[0].colorbar.orientation == "h"
    ten = masks.overlap_figure(_mask_run(10), 0)
    assert len(_shown_text(ten.data[0])) == 100  # ten tasks keep their numbers


def test_relaxed_strip_titles_fit_a_narrow_chart():
    fig = masks.relaxed_figure(load_run(SAMPLE), 9, 0)
    assert len(fig.layout.title.text) <= 50 and len(fig.layout.xaxis.title.text) <= 30


def test_overview_legends_lie_below_and_tile_names_hide_rather_than_shrink():
    state = load_run(SAMPLE).state
    strip = overview.sequence_strip(state)
    assert strip.layout.legend.orientation == "h" and strip.layout.legend.yref == "container"
    assert strip.layout.uniformtext.mode == "hide" and strip.layout.uniformtext.minsize >= MIN_CELL_FONT
    phases = overview.phase_figure(overview.phase_seconds(state))
    assert phases.layout.legend.orientation == "h" and phases.layout.legend.yref == "container"


def test_wrap_breaks_long_titles_and_keeps_them_literal():
    text = wrap("units of <b>layer</b> 0 (dark = used), ordered by the first task that used them", width=30)
    assert "<b>" not in text and "&lt;b&gt;" in text
    assert all(len(re.sub(r"&\w+;", "x", line)) <= 30 for line in text.split("<br>"))
