"""Several runs side by side: metrics per run, mean and spread per method, their matrices."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from explorer.figures.common import short, style
from explorer.figures.overview import run_metrics
from prm.runs import RunState

METRICS = {"acc": "Acc", "bwt": "BWT", "fwt": "FWT", "ct": "CT (s)"}
METHOD_COLOURS = {"prm": "#4C78A8", "prm-s": "#9ecae9", "prm-d": "#72b7b2", "prm-t": "#54a24b", "hat": "#f58518",
                  "ncl": "#e45756", "ewc": "#b279a2", "stl": "#bab0ac"}


def stl_for(state: RunState, seed: int | None, others: dict[str, tuple[RunState, int | None]]) -> RunState | None:
    """The STL run of the same sequence, seed and task count: the reference FWT needs."""
    for other, other_seed in others.values():
        if (other.config.get("method") == "stl" and other.sequence == state.sequence and other_seed == seed
                and other.n_tasks == state.n_tasks):
            return other
    return None


def per_run(runs: dict[str, tuple[RunState, int | None]]) -> pd.DataFrame:
    """One row per run: sequence, method, seed and the four metrics (FWT None without STL)."""
    rows = []
    for name, (state, seed) in runs.items():
        values = run_metrics(state, stl=stl_for(state, seed, runs))
        rows.append({"run": name, "sequence": state.sequence, "method": state.config.get("method"), "seed": seed,
                     "tasks": f"{values['tasks_done']}/{state.n_tasks}",
                     **{label: values[key] for key, label in METRICS.items()}})
    return pd.DataFrame(rows, columns=["run", "sequence", "method", "seed", "tasks", *METRICS.values()])


def per_method(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds for each (sequence, method)."""
    rows = []
    for (sequence, method), part in table.groupby(["sequence", "method"], sort=False):
        row = {"sequence": sequence, "method": method, "seeds": len(part)}
        for label in METRICS.values():
            values = pd.to_numeric(part[label], errors="coerce").dropna()
            row[label] = float(values.mean()) if len(values) else None
            row[f"{label} sd"] = float(values.std(ddof=0)) if len(values) > 1 else None
        rows.append(row)
    return pd.DataFrame(rows)


def bars(summary: pd.DataFrame) -> go.Figure:
    """One panel per metric, a bar per (sequence, method) with ±1 sd error bars over seeds."""
    labels = list(METRICS.values())
    fig = make_subplots(rows=1, cols=len(labels), subplot_titles=labels)
    names = [f"{s}<br>{m}" for s, m in zip(summary["sequence"], summary["method"])]
    for col, label in enumerate(labels, start=1):
        values = pd.to_numeric(summary[label], errors="coerce")
        sd = pd.to_numeric(summary[f"{label} sd"], errors="coerce").fillna(0)
        fig.add_bar(x=names, y=values, error_y=dict(type="data", array=sd, visible=True), showlegend=False,
                    marker_color=[METHOD_COLOURS.get(m, "#888") for m in summary["method"]], customdata=summary["seeds"], row=1, col=col,
                    hovertemplate="%{x}<br>" + label + " %{y:.3f} (seeds: %{customdata})<extra></extra>")
    return style(fig, height=360)


def matrices(states: dict[str, RunState]) -> go.Figure:
    """The accuracy matrices next to each other on one colour scale."""
    n = max(len(states), 1)
    fig = make_subplots(rows=1, cols=n, subplot_titles=list(states) or [""], horizontal_spacing=0.04)
    for col, (name, state) in enumerate(states.items(), start=1):
        R = state.accuracy_matrix("test")
        ticks = [short(t) for t in range(state.n_tasks)]
        fig.add_heatmap(z=R, x=ticks, y=ticks, zmin=0, zmax=1, colorscale="Blues", showscale=col == n,
                        text=np.where(np.isnan(R), "", np.round(R, 2).astype(str)), texttemplate="%{text}",
                        hovertemplate=name + "<br>after %{y}, on %{x}: %{z:.3f}<extra></extra>", row=1, col=col)
        fig.update_yaxes(autorange="reversed", row=1, col=col)
    fig.update_annotations(font_size=11)
    return style(fig, height=360)
