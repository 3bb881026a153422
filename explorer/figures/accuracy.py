"""The accuracy matrix R[j, i] (test accuracy on task i after learning task j) and its uses."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from explorer.figures.common import DIVERGING, plain_names, short, style, task_colour
from prm.runs import RunState


def matrix_table(state: RunState, split: str = "test") -> pd.DataFrame:
    R = state.accuracy_matrix(split)
    labels = [short(t) for t in range(state.n_tasks)]
    return pd.DataFrame(R, index=[f"after {x}" for x in labels], columns=[f"on {x}" for x in labels])


def heatmap(R: np.ndarray, tasks, *, upto: int | None = None, title: str | None = None,
            diverging: bool = False, height: int = 420) -> go.Figure:
    """Heatmap of R with its values written in; rows after ``upto`` are blanked (the slider
    over j), so a student sees the matrix fill in one learnt task at a time."""
    R = np.array(R, dtype=float)
    if upto is not None:
        R[upto + 1:, :] = np.nan
    n = R.shape[0]
    labels = plain_names(tasks, n)
    text = [["" if np.isnan(v) else f"{v:+.2f}" if diverging else f"{v:.2f}" for v in row] for row in R]
    hover = [[f"after learning {labels[j]}<br>tested on {labels[i]}<br>" +
              ("difference" if diverging else "accuracy") + (": n/a" if np.isnan(R[j, i]) else f": {R[j, i]:.3f}")
              for i in range(n)] for j in range(n)]
    if diverging:
        bound = max(float(np.nanmax(np.abs(R))) if np.isfinite(R).any() else 0.0, 0.05)
        scale = dict(colorscale=DIVERGING, zmid=0.0, zmin=-bound, zmax=bound)
    else:
        scale = dict(colorscale="Blues", zmin=0.0, zmax=1.0)
    fig = go.Figure(go.Heatmap(z=R, x=[short(i) for i in range(n)], y=[short(j) for j in range(n)], text=text,
                               texttemplate="%{text}", hovertext=hover, hoverinfo="text", xgap=1, ygap=1, **scale))
    fig.update_yaxes(autorange="reversed", title="after learning task j")
    fig.update_xaxes(title="tested on task i", side="top")
    style(fig, title=title, height=height)
    fig.update_layout(margin=dict(t=90 if title else 50))  # room for the title above the top axis
    return fig


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
    return style(fig, title="Accuracy of each task over time", height=380)
