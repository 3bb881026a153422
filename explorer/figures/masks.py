"""Masks: which units each task uses, what HAT would protect and what PRM (or CAT) relaxed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from explorer.figures.common import (FONT, colour_bar, empty, fmt, legend_below, plain_names, short, style,
                                     task_colour, task_grid, task_ticks, wrap)
from prm.analysis import jaccard
from prm import methods
from prm.run import Run, RunState

RELAXED_COLOUR = "#C51B7D"
"""Magenta for free units: not a method's, a family's or the right/wrong red."""
PARTIAL_COLOUR = "#F1B6DA"
"""Light magenta for partially relaxed units: the same hue as free, less of it."""
LAYER_LINES = ("solid", "dash", "dot", "dashdot")
"""Capacity lines tell layers apart by dash, in black: colours here belong to tasks only."""

THRESHOLD = 0.5
"""Masks are recorded at s = smax, so they are almost binary; 0.5 splits used / free."""
RELAXED_BY = 0.05
"""A used unit counts as relaxed when its protection is this much below HAT's: a partial
relaxation (``PRMConfig.relax`` 0.3 protects similar tasks' units at 0.7) shows, rounding does not.
It is free (fully trainable again) when its protection is below this: the paper's PRM
(``PRMConfig.relax`` 1) frees the units only similar tasks use; PRM+ (0.3) relaxes them partially."""


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
    """Every task's mask, a row per task; rows too low for a label each are labelled at
    :func:`~explorer.figures.common.task_ticks` (the hover names every row)."""
    tasks, masks = task_masks(run, layer)
    if not tasks:
        return empty("this run has no masks (unmasked method or no task learnt yet)")
    order = unit_order(masks)
    labels = plain_names(run.state.tasks)
    y = [labels[t] for t in tasks]
    height = min(560, 130 + 28 * len(tasks))
    fig = go.Figure(go.Heatmap(z=masks[:, order], y=y, colorscale="Greys", zmin=0, zmax=1, showscale=False,
                               customdata=np.tile(order, (len(tasks), 1)),
                               hovertemplate="%{y}<br>unit %{customdata}<br>mask %{z:.2f}<extra></extra>"))
    shown = task_ticks(len(tasks), most=max(2, (height - 130) // (FONT + 6)))
    fig.update_yaxes(autorange="reversed", tickmode="array", tickvals=[y[r] for r in shown], automargin=True)
    fig.update_xaxes(title=wrap(f"units of layer {layer} (dark = used), ordered by the first task that used them", width=42),
                     showticklabels=False, automargin=True)
    return style(fig, title=f"Mask of every task, layer {layer}", height=height)


def relaxed_units(run: Run, task: int, layer: int) -> dict[str, np.ndarray] | None:
    """HAT's accumulated mask a_<=t-1 and the mask that actually protected task t (PRM's
    relaxed p_<=t-1; CAT's a_<=t-1 without the units tasks it called similar claimed first;
    equal to a_<=t-1 for HAT); relaxed = used before and protected less than HAT would, split
    into ``free`` (protection about 0: ``PRMConfig.relax`` 1, the paper) and ``partial`` (protection
    between: with ``PRMConfig.relax`` r < 1 a unit only similar tasks use is protected at 1 − r, so
    its bias keeps a fraction r of its gradient). A unit counted here as protected is
    protected as under HAT; one still 0.7 protected is never counted beside the free ones."""
    previous = run.accumulated(task - 1, layer) if task >= 1 else None
    if previous is None:
        return None
    accumulated = np.asarray(previous, dtype=float)
    protected = run.protected(task, layer)
    protected = accumulated if protected is None else np.asarray(protected, dtype=float)
    relaxed = (accumulated > THRESHOLD) & (protected < accumulated - RELAXED_BY)
    free = relaxed & (protected < RELAXED_BY)
    return {"accumulated": accumulated, "protected": protected, "relaxed": relaxed.astype(float),
            "free": free.astype(float), "partial": (relaxed & ~free).astype(float)}


def unit_counts(parts: dict[str, np.ndarray]) -> dict[str, int]:
    """The units earlier tasks used (``used``, what HAT protects), in three groups that add up
    to it: ``protected`` as under HAT, ``partial`` (partially relaxed) and ``free``."""
    used = parts["accumulated"] > THRESHOLD
    counts = {name: int(parts[name].sum()) for name in ("partial", "free")}
    return {"used": int(used.sum()), "protected": int((used & (parts["relaxed"] == 0)).sum()), **counts}


def kept_gradient(parts: dict[str, np.ndarray]) -> float | None:
    """The median share of its gradient a partially relaxed unit keeps (1 − its protection:
    ``PRMConfig.relax`` as recorded in the masks); None without such a unit."""
    partial = parts["partial"] > 0
    return float(np.median(1.0 - parts["protected"][partial])) if partial.any() else None


def unit_sentence(parts: dict[str, np.ndarray], task: int, *, layer: int, who: str = "this run") -> str:
    """'While learning T10, HAT would protect the 209 units of layer 0 that earlier tasks used;
    this run kept 186 protected, relaxed 23 partially (to 0.30 of the gradient) and
    freed 0.' (Markdown: ``who`` is escaped by the caller)."""
    counts, kept = unit_counts(parts), kept_gradient(parts)
    return (f"While learning {short(task)}, HAT would protect the {counts['used']} units of layer {layer} that earlier "
            f"tasks used; {who} kept {counts['protected']} protected, relaxed {counts['partial']} partially"
            + (f" (to {fmt(kept, 2)} of the gradient)" if kept is not None else "") + f" and freed {counts['free']}.")


def row_labels(run: Run, task: int) -> list[str]:
    """The rows of :func:`relaxed_figure`. CAT protects by who claimed a unit first, not by
    which tasks use it (PRM): its rows say so."""
    if methods.get(run.meta["config"]["method"]).transfer_tests:
        return ["HAT: every unit an earlier task used",
                f"CAT protected while learning {short(task)}:<br>claimed first by tasks it called dissimilar",
                "relaxed: claimed first<br>by tasks CAT called similar"]
    return ["HAT: every unit an earlier task used", "protected while learning " + short(task),
            "relaxed: magenta free,<br>light magenta partially"]


def relaxed_figure(run: Run, task: int, layer: int) -> go.Figure:
    parts = relaxed_units(run, task, layer)
    if parts is None:
        return empty("pick a task after the first one that has been learnt")
    order = np.lexsort((-parts["protected"], -parts["accumulated"]))
    rows = row_labels(run, task)
    # protection spans z 0-1 (white to grey, a full 1 still grey); the third row is 1.5 (partial) or 2 (free)
    relaxed = parts["partial"] * 1.5 + parts["free"] * 2
    z = np.stack([parts["accumulated"][order], parts["protected"][order], relaxed[order]])
    fig = go.Figure(go.Heatmap(
        z=z, y=rows, zmin=0, zmax=2, showscale=False,
        colorscale=[[0, "#f7f7f7"], [0.5, "#636363"], [0.51, "#636363"], [0.51, PARTIAL_COLOUR], [0.875, PARTIAL_COLOUR],
                    [0.875, RELAXED_COLOUR], [1, RELAXED_COLOUR]],
        customdata=np.tile(order, (3, 1)), hovertemplate="%{y}<br>unit %{customdata}<br>value %{z:.2f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", automargin=True)
    # the counts are in the caption below (unit_sentence): a longer axis title, centred on the
    # narrow strip beside the row labels, ran out of a 420 px chart
    fig.update_xaxes(showticklabels=False, automargin=True, title=f"units of layer {layer}")
    return style(fig, title=f"HAT's protection vs this run's, {short(task)}, layer {layer}", height=270)


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
    return legend_below(style(fig, title="Capacity in use", height=340), "line dash = layer:")


def overlap_matrix(run: Run, layer: int) -> tuple[list[int], np.ndarray]:
    tasks, masks = task_masks(run, layer)
    n = len(tasks)
    out = np.ones((n, n))
    for a in range(n):
        for b in range(a + 1, n):
            out[a, b] = out[b, a] = jaccard(masks[a], masks[b], THRESHOLD)
    return tasks, out


def overlap_table(run: Run, layer: int) -> pd.DataFrame:
    """:func:`overlap_matrix` as shown: a row per pair of tasks, their Jaccard overlap. Long,
    not square: a column per task scrolled sideways beside a chart (50 tasks: everywhere),
    while rows sort (which tasks share the most units?) and scroll down."""
    tasks, matrix = overlap_matrix(run, layer)
    rows = [{"task": short(a), "other task": short(b), "shared units (Jaccard)": round(float(matrix[x, y]), 3)}
            for x, a in enumerate(tasks) for y, b in enumerate(tasks) if y > x]
    return pd.DataFrame(rows, columns=["task", "other task", "shared units (Jaccard)"])


def overlap_figure(run: Run, layer: int) -> go.Figure:
    tasks, matrix = overlap_matrix(run, layer)
    if not tasks:
        return empty("no masks recorded")
    return jaccard_heatmap(run, tasks, matrix, title=f"Mask overlap (Jaccard), layer {layer}",
                           what="shared units (Jaccard)")


def jaccard_heatmap(run: Run, tasks: list[int], matrix: np.ndarray, *, title: str, what: str) -> go.Figure:
    """A task x task heatmap of overlaps in [0, 1] (``what`` they share: HAT's units, or the
    weights of SupSup's supermasks), laid out as the other task grids."""
    labels = plain_names(run.state.tasks)
    ticks = [short(t) for t in tasks]
    hover = [[f"{labels[a]}<br>{labels[b]}<br>Jaccard {matrix[x, y]:.2f}" for y, b in enumerate(tasks)]
             for x, a in enumerate(tasks)]
    fig = go.Figure(go.Heatmap(z=matrix, x=ticks, y=ticks, zmin=0, zmax=1, colorscale="Purples",
                               colorbar=colour_bar(what), text=[[fmt(v, 2) for v in row] for row in matrix],
                               hovertext=hover, hoverinfo="text"))
    style(fig, title=title)
    # tick labels in the task colours of the other views (coloured text, not a shape per task:
    # plotly validates every added shape, and 50 of them took most of a second)
    return task_grid(fig, ticks, titled=True, ticktext=[f'<span style="color:{task_colour(t)}">■</span> {tick}'
                                                        for t, tick in zip(tasks, ticks)])
