"""Masks: which units each task uses, what HAT would protect and what PRM (or CAT) relaxed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from explorer.figures.clustering import jaccard
from explorer.figures.accuracy import MAX_CELL_TEXT
from explorer.figures.common import FONT, empty, fmt, plain_names, short, style, task_colour
from prm.methods import STRATEGIES
from prm.runs import Run, RunState

RELAXED_COLOUR = "#C51B7D"
"""Magenta for relaxed units: not a method's, a family's or the right/wrong red."""
LAYER_LINES = ("solid", "dash", "dot", "dashdot")
"""Capacity lines tell layers apart by dash, in black: colours here belong to tasks only."""

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
    fig.update_xaxes(title=f"units of layer {layer} (ordered by the first task that used them; dark = used)",
                     showticklabels=False)
    return style(fig, title=f"Mask of every task, layer {layer}", height=min(560, 120 + 28 * len(tasks)))


def relaxed_units(run: Run, task: int, layer: int) -> dict[str, np.ndarray] | None:
    """HAT's accumulated mask a_<=t-1 and the mask that actually protected task t (PRM's
    relaxed p_<=t-1; CAT's a_<=t-1 without the units tasks it called similar claimed first;
    equal to a_<=t-1 for HAT); relaxed = used before and protected less than HAT would: freed
    (``prm.relax`` 1, the paper) or partly, gradients scaled by ``prm.relax``."""
    previous = run.accumulated(task - 1, layer) if task >= 1 else None
    if previous is None:
        return None
    accumulated = np.asarray(previous, dtype=float)
    protected = run.protected(task, layer)
    protected = accumulated if protected is None else np.asarray(protected, dtype=float)
    relaxed = (accumulated > THRESHOLD) & (protected < accumulated - RELAXED_BY)
    return {"accumulated": accumulated, "protected": protected, "relaxed": relaxed.astype(float)}


def row_labels(run: Run, task: int) -> list[str]:
    """The rows of :func:`relaxed_figure`. CAT protects by who claimed a unit first, not by
    which tasks use it (PRM): its rows say so."""
    if STRATEGIES[run.meta["config"]["method"]].cat:
        return ["HAT: every unit an earlier task used",
                f"CAT protected while learning {short(task)}:<br>claimed first by tasks it called dissimilar",
                "relaxed: claimed first<br>by tasks CAT called similar"]
    return ["HAT: every unit an earlier task used", "protected while learning " + short(task), "relaxed units"]


def relaxed_figure(run: Run, task: int, layer: int) -> go.Figure:
    parts = relaxed_units(run, task, layer)
    if parts is None:
        return empty("pick a task after the first one that has been learnt")
    order = np.lexsort((-parts["protected"], -parts["accumulated"]))
    rows = row_labels(run, task)
    z = np.stack([parts["accumulated"][order], parts["protected"][order], parts["relaxed"][order] * 2])
    n_rel = int(parts["relaxed"].sum())
    n_used = int((parts["accumulated"] > THRESHOLD).sum())
    fig = go.Figure(go.Heatmap(
        z=z, y=rows, colorscale=[[0, "#f7f7f7"], [0.5, "#636363"], [1, RELAXED_COLOUR]], zmin=0, zmax=2, showscale=False,
        customdata=np.tile(order, (3, 1)), hovertemplate="%{y}<br>unit %{customdata}<br>value %{z:.2f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(showticklabels=False, title=f"units of layer {layer}: {n_rel} of {n_used} used units relaxed "
                     f"(magenta: trainable again for {short(task)})")
    fig.update_yaxes(automargin=True)
    return style(fig, title=f"What HAT would protect vs what this run protected for {short(task)}, layer {layer}",
                 height=250)


def capacity_table(state: RunState) -> pd.DataFrame:
    rows = []
    for t, record in sorted(state.task_ends.items()):
        for layer, value in enumerate(record.capacity):
            rows.append({"after": short(t), "layer": f"l{layer}", "capacity used": value})
    return pd.DataFrame(rows, columns=["after", "layer", "capacity used"])


def capacity_figure(table: pd.DataFrame) -> go.Figure:
    """Share of units in use after each task, one black line per layer (told apart by dash)."""
    fig = go.Figure()
    for n, (layer, part) in enumerate(table.groupby("layer")):
        fig.add_scatter(x=part["after"], y=part["capacity used"], mode="lines+markers", name=f"layer {layer[1:]}",
                        line=dict(color="#333", dash=LAYER_LINES[n % len(LAYER_LINES)]),
                        hovertemplate="after %{x}: %{y:.1%} of units in use<extra>" + layer + "</extra>")
    fig.update_yaxes(title="share of units in use", range=[0, 1.02], tickformat=".0%")
    fig.update_xaxes(title="after learning task")
    return style(fig, title="Capacity in use", height=320)


def overlap_matrix(run: Run, layer: int) -> tuple[list[int], np.ndarray]:
    tasks, masks = task_masks(run, layer)
    n = len(tasks)
    out = np.ones((n, n))
    for a in range(n):
        for b in range(a + 1, n):
            out[a, b] = out[b, a] = jaccard(masks[a], masks[b], THRESHOLD)
    return tasks, out


def overlap_table(run: Run, layer: int) -> pd.DataFrame:
    """:func:`overlap_matrix` as shown: a row per task, its Jaccard overlap with every task."""
    tasks, matrix = overlap_matrix(run, layer)
    labels = [short(t) for t in tasks]
    return pd.DataFrame(matrix.round(3), columns=labels).assign(task=labels)[["task", *labels]]


def overlap_figure(run: Run, layer: int) -> go.Figure:
    tasks, matrix = overlap_matrix(run, layer)
    if not tasks:
        return empty("no masks recorded")
    labels = plain_names(run.state.tasks)
    ticks = [short(t) for t in tasks]
    n = len(tasks)
    hover = [[f"{labels[a]}<br>{labels[b]}<br>Jaccard {matrix[x, y]:.2f}" for y, b in enumerate(tasks)]
             for x, a in enumerate(tasks)]
    text = [[fmt(v, 2) for v in row] for row in matrix] if n <= MAX_CELL_TEXT else None
    fig = go.Figure(go.Heatmap(z=matrix, x=ticks, y=ticks, zmin=0, zmax=1, colorscale="Purples",
                               colorbar=dict(title=dict(text="shared units<br>(Jaccard)", side="top")),
                               text=text, texttemplate="%{text}" if text else None, textfont=dict(size=FONT),
                               hovertext=hover, hoverinfo="text"))
    fig.update_yaxes(autorange="reversed")
    # tick labels in the task colours of the other views (coloured text, not a shape per task:
    # plotly validates every added shape, and 50 of them took most of a second)
    fig.update_xaxes(tickvals=ticks, ticktext=[f'<span style="color:{task_colour(t)}">■</span> {tick}'
                                               for t, tick in zip(tasks, ticks)])
    return style(fig, title=f"Mask overlap (Jaccard), layer {layer}", height=min(560, 170 + 34 * n))
