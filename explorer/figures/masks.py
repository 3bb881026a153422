"""Masks: which units each task uses, what HAT would protect and what PRM relaxed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from explorer.figures.clustering import jaccard
from explorer.figures.common import empty, plain_names, short, style, task_colour
from prm.runs import Run, RunState

THRESHOLD = 0.5
"""Masks are recorded at s = smax, so they are almost binary; 0.5 splits used / free."""
RELAXED_BY = 0.05
"""A used unit counts as relaxed when its protection is this much below HAT's: a partial
relaxation (``prm.relax`` 0.3 protects similar tasks' units at 0.7) shows, rounding does not."""


def task_masks(run: Run, layer: int) -> tuple[list[int], np.ndarray]:
    """Tasks that have a recorded mask for ``layer`` and their masks stacked (tasks, units)."""
    tasks = run.learnt(layer)
    if not tasks:
        return [], np.zeros((0, 0))
    return tasks, np.stack([run.mask(t, layer) for t in tasks]).astype(float)


def unit_order(masks: np.ndarray) -> np.ndarray:
    """Units sorted by the first task that used them (unused units last), then by how many
    tasks use them, so each task's new units form a visible block."""
    used = masks > THRESHOLD
    first = np.where(used.any(axis=0), used.argmax(axis=0), len(masks))
    return np.lexsort((-used.sum(axis=0), first))


def mask_heatmap(run: Run, layer: int) -> go.Figure:
    tasks, masks = task_masks(run, layer)
    if not tasks:
        return empty("this run has no masks (unmasked method or no task learnt yet)")
    order = unit_order(masks)
    labels = plain_names(run.state.tasks)
    y = [labels[t] for t in tasks]
    fig = go.Figure(go.Heatmap(z=masks[:, order], y=y, colorscale="Greys", zmin=0, zmax=1, showscale=False,
                               customdata=np.tile(order, (len(tasks), 1)),
                               hovertemplate="%{y}<br>unit %{customdata}<br>mask %{z:.2f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(title=f"units of layer {layer} (ordered by the first task that used them)", showticklabels=False)
    return style(fig, title=f"Mask of every task, layer {layer}", height=120 + 28 * len(tasks))


def relaxed_units(run: Run, task: int, layer: int) -> dict[str, np.ndarray] | None:
    """HAT's accumulated mask a_<=t-1 and the mask that actually protected task t (PRM's
    relaxed p_<=t-1; equal to a_<=t-1 for HAT); relaxed = used before and protected less than
    HAT would: freed (``prm.relax`` 1, the paper) or partly, gradients scaled by ``prm.relax``."""
    previous = run.accumulated(task - 1, layer) if task >= 1 else None
    if previous is None:
        return None
    accumulated = np.asarray(previous, dtype=float)
    protected = run.protected(task, layer)
    protected = accumulated if protected is None else np.asarray(protected, dtype=float)
    relaxed = (accumulated > THRESHOLD) & (protected < accumulated - RELAXED_BY)
    return {"accumulated": accumulated, "protected": protected, "relaxed": relaxed.astype(float)}


def relaxed_figure(run: Run, task: int, layer: int) -> go.Figure:
    parts = relaxed_units(run, task, layer)
    if parts is None:
        return empty("pick a task after the first one that has been learnt")
    order = np.lexsort((-parts["protected"], -parts["accumulated"]))
    rows = ["HAT: a_<=t-1 (all earlier tasks)", "protected while learning " + short(task), "relaxed units"]
    z = np.stack([parts["accumulated"][order], parts["protected"][order], parts["relaxed"][order] * 2])
    n_rel = int(parts["relaxed"].sum())
    n_used = int((parts["accumulated"] > THRESHOLD).sum())
    fig = go.Figure(go.Heatmap(
        z=z, y=rows, colorscale=[[0, "#f7f7f7"], [0.5, "#636363"], [1, "#d62728"]], zmin=0, zmax=2, showscale=False,
        customdata=np.tile(order, (3, 1)), hovertemplate="%{y}<br>unit %{customdata}<br>value %{z:.2f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(showticklabels=False, title=f"units of layer {layer}: {n_rel} of {n_used} used units relaxed "
                     f"(red: trainable again for {short(task)})")
    return style(fig, title=f"Accumulated vs partially relaxed mask for {short(task)}, layer {layer}", height=230)


def capacity_table(state: RunState) -> pd.DataFrame:
    rows = []
    for t, record in sorted(state.task_ends.items()):
        for layer, value in enumerate(record.capacity):
            rows.append({"after": short(t), "layer": f"l{layer}", "capacity used": value})
    return pd.DataFrame(rows, columns=["after", "layer", "capacity used"])


def capacity_figure(table: pd.DataFrame) -> go.Figure:
    fig = go.Figure()
    for layer, part in table.groupby("layer"):
        fig.add_scatter(x=part["after"], y=part["capacity used"], mode="lines+markers", name=layer,
                        hovertemplate="after %{x}: %{y:.1%} of units used<extra>" + layer + "</extra>")
    fig.update_yaxes(title="fraction of units used (a_<=t > 0.5)", range=[0, 1.02], tickformat=".0%")
    fig.update_xaxes(title="after learning task")
    return style(fig, title="Capacity in use", height=300)


def overlap_matrix(run: Run, layer: int) -> tuple[list[int], np.ndarray]:
    tasks, masks = task_masks(run, layer)
    n = len(tasks)
    out = np.ones((n, n))
    for a in range(n):
        for b in range(a + 1, n):
            out[a, b] = out[b, a] = jaccard(masks[a], masks[b], THRESHOLD)
    return tasks, out


def overlap_figure(run: Run, layer: int) -> go.Figure:
    tasks, matrix = overlap_matrix(run, layer)
    if not tasks:
        return empty("no masks recorded")
    labels = plain_names(run.state.tasks)
    ticks = [short(t) for t in tasks]
    hover = [[f"{labels[a]}<br>{labels[b]}<br>Jaccard {matrix[x, y]:.2f}" for y, b in enumerate(tasks)]
             for x, a in enumerate(tasks)]
    fig = go.Figure(go.Heatmap(z=matrix, x=ticks, y=ticks, zmin=0, zmax=1, colorscale="Purples",
                               text=np.round(matrix, 2), texttemplate="%{text}", hovertext=hover, hoverinfo="text"))
    fig.update_yaxes(autorange="reversed")
    for n, t in enumerate(tasks):  # tick colours match the task colours of the other views
        fig.add_shape(type="rect", x0=n - 0.5, x1=n + 0.5, y0=-0.9, y1=-0.6, fillcolor=task_colour(t),
                      line_width=0, xref="x", yref="y")
    return style(fig, title=f"Mask overlap (Jaccard), layer {layer}", height=420)
