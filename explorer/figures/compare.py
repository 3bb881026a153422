"""Several runs side by side: metrics per run, mean and spread per method, their matrices.

Only like runs are averaged: the same sequence, method, tasks learnt out of how many, and
configuration apart from the seed; the spread is over distinct seeds (copies of one seed
count once), so a stopped 2-of-10 run or a 3-task run never blurs a finished 10-task one.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from explorer.catalog import config_key
from explorer.figures.common import plain, short, style
from explorer.figures.overview import run_metrics
from prm.runs import RunState

METRICS = {"acc": "Acc", "bwt": "BWT", "fwt": "FWT", "ct": "CT (s)"}
METHOD_COLOURS = {"prm": "#4C78A8", "prm+": "#1b3a6b", "prm-s": "#9ecae9", "prm-d": "#72b7b2", "prm-t": "#54a24b",
                  "hat": "#f58518", "ncl": "#e45756", "ewc": "#b279a2", "stl": "#bab0ac", "joint": "#9d755d"}


def stl_for(state: RunState, seed: int | None, others: dict[str, tuple[RunState, int | None]]) -> RunState | None:
    """The STL run of the same sequence, seed and task count: the reference FWT needs."""
    for other, other_seed in others.values():
        if (other.config.get("method") == "stl" and other.sequence == state.sequence and other_seed == seed
                and other.n_tasks == state.n_tasks):
            return other
    return None


def config_id(config: dict) -> str:
    """A short name for a configuration apart from its seed: equal ids, same experiment."""
    return hashlib.sha1(config_key(config).encode()).hexdigest()[:6]


GROUP = ["sequence", "method", "tasks", "config"]
"""What makes runs alike enough to average: everything but the seed."""


def per_run(runs: dict[str, tuple[RunState, int | None]]) -> pd.DataFrame:
    """One row per run: sequence, method, seed, tasks learnt of all, how it ended, its
    configuration id and the four metrics (FWT None without STL)."""
    rows = []
    for name, (state, seed) in runs.items():
        values = run_metrics(state, stl=stl_for(state, seed, runs))
        rows.append({"run": name, "sequence": state.sequence, "method": state.config.get("method"), "seed": seed,
                     "tasks": f"{values['tasks_done']}/{state.n_tasks}",
                     "ended": state.end.status if state.end is not None else "not ended",
                     "config": config_id(state.config), **{label: values[key] for key, label in METRICS.items()}})
    return pd.DataFrame(rows, columns=["run", "sequence", "method", "seed", "tasks", "ended", "config",
                                       *METRICS.values()])


def per_method(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over distinct seeds for each group of like runs (GROUP);
    copies of one seed are averaged first and count as one seed."""
    rows = []
    for group, part in table.groupby(GROUP, sort=False, dropna=False):
        row = {**dict(zip(GROUP, group)), "runs": len(part), "seeds": part["seed"].nunique(dropna=False)}
        by_seed = part.assign(seed=part["seed"].fillna(-1)).groupby("seed")
        for label in METRICS.values():
            values = by_seed[label].apply(lambda v: pd.to_numeric(v, errors="coerce").mean()).dropna()
            row[label] = float(values.mean()) if len(values) else None
            row[f"{label} sd"] = float(values.std(ddof=0)) if len(values) > 1 else None
        rows.append(row)
    return pd.DataFrame(rows, columns=[*GROUP, "runs", "seeds", *(f"{label}{sd}" for label in METRICS.values()
                                                                   for sd in ("", " sd"))])


def bars(summary: pd.DataFrame) -> go.Figure:
    """One panel per metric, a bar per group of like runs with ±1 sd error bars over seeds."""
    labels = list(METRICS.values())
    fig = make_subplots(rows=1, cols=len(labels), subplot_titles=labels)
    names = [f"{plain(s)}<br>{plain(m)} · {t} · {c}" for s, m, t, c in
             zip(summary["sequence"], summary["method"], summary["tasks"], summary["config"])]
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
    fig = make_subplots(rows=1, cols=n, subplot_titles=[plain(name) for name in states] or [""],
                        horizontal_spacing=0.04)
    for col, (name, state) in enumerate(states.items(), start=1):
        R = state.accuracy_matrix("test")
        ticks = [short(t) for t in range(state.n_tasks)]
        fig.add_heatmap(z=R, x=ticks, y=ticks, zmin=0, zmax=1, colorscale="Blues", showscale=col == n,
                        text=np.where(np.isnan(R), "", np.round(R, 2).astype(str)), texttemplate="%{text}",
                        hovertemplate=plain(name) + "<br>after %{y}, on %{x}: %{z:.3f}<extra></extra>", row=1, col=col)
        fig.update_yaxes(autorange="reversed", row=1, col=col)
    fig.update_annotations(font_size=11)
    return style(fig, height=360)
