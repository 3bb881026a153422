"""The accuracy matrix R[j, i] (test accuracy on task i after learning task j) and its uses."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from explorer.figures.common import (DIVERGING, MAX_TICKS, NARROW, colour_bar, fmt, legend_below, plain_names, short,
                                     style, task_colour, task_grid)
from prm.run import RunState

STEP = 0.1
"""The accuracy colour range is widened to multiples of this, so its ends are round numbers."""


def matrix_table(state: RunState, split: str = "test") -> pd.DataFrame:
    """R as shown in a table: one row per learnt pair (after task j, tested on task i ≤ j) with
    its accuracy and its change since task i was learnt, three decimals. Long, not square: a
    column per task made a 10-task table scroll sideways at 800 px and a 50-task one
    everywhere, while rows sort (which task lost the most?) and scroll down."""
    R = state.accuracy_matrix(split)
    change = change_since_learnt(R)
    rows = [{"after": short(j), "tested on": short(i), "accuracy": fmt(R[j, i]),
             "change since learnt": fmt(change[j, i], signed=True)}
            for j in range(state.n_tasks) for i in range(j + 1) if not np.isnan(R[j, i])]
    return pd.DataFrame(rows, columns=["after", "tested on", "accuracy", "change since learnt"])


def colour_range(R: np.ndarray) -> tuple[float, float]:
    """The accuracy colours' range: from the lowest learnt value rounded down to a multiple of
    ``STEP`` to the highest rounded up, so 0.72 and 1.00 get clearly different colours
    (a fixed 0-1 range paints every cell of a good run the same dark blue)."""
    values = np.asarray(R, dtype=float)
    values = values[np.isfinite(values)]
    if not values.size:
        return 0.0, 1.0
    low = max(0.0, math.floor(round(values.min() / STEP, 9)) * STEP)
    high = min(1.0, math.ceil(round(values.max() / STEP, 9)) * STEP)
    if high - low < STEP:
        low, high = (max(0.0, high - STEP), high) if high >= STEP else (low, low + STEP)
    return round(low, 6), round(high, 6)


def change_since_learnt(R: np.ndarray) -> np.ndarray:
    """R[j, i] − R[i, i]: how much task i's accuracy moved since just after it was learnt
    (negative = forgetting, positive = backward transfer); blank above the diagonal."""
    R = np.asarray(R, dtype=float)
    out = R - np.diag(R)[None, :]
    out[np.triu_indices(len(R), k=1)] = np.nan
    return out


def heatmap(R: np.ndarray, tasks, *, upto: int | None = None, title: str | None = None,
            diverging: bool = False, what: str = "accuracy", height: int | None = None, room: int = NARROW) -> go.Figure:
    """Heatmap of R with its values written in where the cells have room for them
    (:func:`~explorer.figures.common.task_grid`; ``room``: the narrowest width the caller
    draws it at); rows after ``upto`` are blanked (the slider over j), so a student sees the
    matrix fill in one learnt task at a time.

    Accuracies get a colour range from the data (:func:`colour_range`, stated on the colour
    bar); a difference (``diverging``) gets a red-blue scale centred on 0 with a symmetric
    range and signed cell text, so a loss and a gain of the same size look equally strong.
    ``what`` names the value in the hover and on the colour bar."""
    R = np.array(R, dtype=float)
    if upto is not None:
        R[upto + 1:, :] = np.nan
    n = R.shape[0]
    labels = plain_names(tasks, n)
    text = [["" if np.isnan(v) else fmt(v, 2, signed=diverging) for v in row] for row in R]
    hover = [[f"after learning {labels[j]}<br>tested on {labels[i]}<br>{what}: " +
              fmt(R[j, i], 3, signed=diverging) for i in range(n)] for j in range(n)]
    if diverging:
        bound = max(float(np.nanmax(np.abs(R))) if np.isfinite(R).any() else 0.0, 0.05)
        bound = math.ceil(round(bound * 100, 6)) / 100  # two decimals, as the cells; float noise ignored
        scale = dict(colorscale=DIVERGING, zmid=0.0, zmin=-bound, zmax=bound,
                     colorbar=colour_bar(f"{what}: −{bound:.2f} to +{bound:.2f}"))
    else:
        low, high = colour_range(R)
        scale = dict(colorscale="Blues", zmin=low, zmax=high, colorbar=colour_bar(f"{what}: colours {low:.2f} to {high:.2f}"))
    ticks = [short(i) for i in range(n)]
    fig = go.Figure(go.Heatmap(z=R, x=ticks, y=ticks, text=text, hovertext=hover, hoverinfo="text",
                               xgap=1, ygap=1, **scale))
    fig.update_yaxes(title="after learning task j")
    fig.update_xaxes(title="tested on task i")
    style(fig, title=title)
    return task_grid(fig, ticks, titled=bool(title), height=height, room=room)


def difference(a: RunState, b: RunState) -> np.ndarray:
    """R_a - R_b over the tasks both runs share (same sequence and order assumed by caller)."""
    n = min(a.n_tasks, b.n_tasks)
    return a.accuracy_matrix("test")[:n, :n] - b.accuracy_matrix("test")[:n, :n]


def curves(state: RunState) -> go.Figure:
    """Accuracy of each task i over time: R[j, i] for j >= i; a falling line is forgetting,
    a rising one backward transfer."""
    R = state.accuracy_matrix("test")
    labels = plain_names(state.tasks)
    fig = go.Figure()
    for i in range(state.n_tasks):
        js = [j for j in range(i, state.n_tasks) if not np.isnan(R[j, i])]
        if not js:
            continue
        fig.add_scatter(x=[short(j) for j in js], y=[R[j, i] for j in js], mode="lines+markers", name=labels[i],
                        line=dict(color=task_colour(i)),
                        hovertemplate=f"{labels[i]}<br>after %{{x}}: %{{y:.3f}}<extra></extra>")
    fig.update_xaxes(title="after learning task j", categoryorder="array",
                     categoryarray=[short(j) for j in range(state.n_tasks)])
    low = float(np.nanmin(R)) if np.isfinite(R).any() else 0.0
    fig.update_yaxes(title="test accuracy", range=[max(0.0, low - 0.05), 1.02])
    style(fig, title="Accuracy of each task over time", height=min(620, 170 + 34 * state.n_tasks))
    if state.n_tasks > MAX_TICKS:  # a legend of 50 names would take the chart's height: the hover names each line
        return fig.update_layout(showlegend=False)
    return legend_below(fig, "line colour = task:")
