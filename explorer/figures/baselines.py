"""Where each baseline's own idea is visible: SupSup's supermasks, PathNet's paths, ACL's
shared and private parts, HyperNet's task embeddings.

Each chart is drawn from an array the method records beyond HAT's (``Method.arrays``), so a
view asks which arrays a run's method keeps, never which method it is. The numbers behind
the charts (overlaps, reuse, agreement) are :mod:`prm.analysis`'s.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from explorer.figures import masks
from explorer.figures.common import (FONT, empty, family_colour, family_symbol, fmt, legend_below, plain_names, short,
                                     style, task_colour)
from prm import analysis, methods
from prm.projection import project
from prm.run import Run

SUPERMASK, PATH, FITNESS, PARTS, TASK_EMBEDDING = "supermask", "path", "fitness", "parts", "task_embedding"
"""The per-task arrays the charts here read (the names their methods record them under)."""
PART_NAMES = ("both parts", "shared only", "private only")
"""The columns of ACL's ``parts``: a task's test accuracy with both modules' features, with
its private features zeroed, with the shared ones zeroed."""
PART_COLOURS = ("#4D4D4D", "#4393C3", "#D6604D")


def keeps(run: Run, name: str) -> bool:
    """Does the run's method record the array ``name`` (so the chart from it applies)?"""
    method = methods.find(run.meta["config"].get("method"))
    return method is not None and name in method.arrays


def _tasks_with(run: Run, name: str, layer: int | None = None) -> list[int]:
    return sorted(t for (kind, t) in run.arrays if kind == "task" and run.own(t, name, layer) is not None)


# ----------------------------------------------------------------------------- SupSup

def layer_shape(run: Run, layer: int) -> tuple[int, int] | None:
    """(outputs, inputs) of hidden layer ``layer``'s weight matrix; None without the run's input size."""
    widths = list(run.meta["config"]["model"]["hidden"])
    inputs = run.state.started.input_dim if run.state.started is not None else None
    if inputs is None:
        return None
    return widths[layer], (inputs if layer == 0 else widths[layer - 1])


def supermask_overlap(run: Run, layer: int) -> tuple[list[int], np.ndarray, float]:
    """(tasks, their pairwise Jaccard overlap of kept weights, the mean fraction kept)."""
    tasks, shape = _tasks_with(run, SUPERMASK, layer), layer_shape(run, layer)
    if not tasks or shape is None:
        return [], np.zeros((0, 0)), 0.0
    masks = [analysis.unpack_mask(run.own(t, SUPERMASK, layer), shape).ravel() for t in tasks]
    n = len(tasks)
    out = np.ones((n, n))
    for a in range(n):
        for b in range(a + 1, n):
            union = np.count_nonzero(masks[a] | masks[b])
            out[a, b] = out[b, a] = np.count_nonzero(masks[a] & masks[b]) / union if union else 0.0
    return tasks, out, float(np.mean([m.mean() for m in masks]))


def hat_weight_overlap(run: Run, layer: int) -> tuple[list[int], np.ndarray]:
    """A masked run's pairwise Jaccard overlap of the weights its tasks use (from their unit
    masks, :func:`prm.analysis.unit_edge_jaccard`): HAT's side of the supermask comparison."""
    # a task whose mask of the layer below was dropped on reading (damaged) cannot say which inputs it uses
    tasks = [t for t in run.learnt(layer) if layer == 0 or run.mask(t, layer - 1) is not None]
    if not tasks:
        return [], np.zeros((0, 0))
    units = {t: run.mask(t, layer) > 0.5 for t in tasks}
    inputs = {t: (np.ones(1, dtype=bool) if layer == 0 else run.mask(t, layer - 1) > 0.5) for t in tasks}
    n = len(tasks)
    out = np.ones((n, n))
    for x, a in enumerate(tasks):
        for y in range(x + 1, n):
            b = tasks[y]
            out[x, y] = out[y, x] = analysis.unit_edge_jaccard(units[a], units[b], inputs[a], inputs[b])
    return tasks, out


def overlap_heatmap(run: Run, tasks: list[int], matrix: np.ndarray, *, title: str) -> go.Figure:
    """A task x task heatmap of weight overlaps (SupSup's supermasks, or HAT's weights)."""
    if not tasks:
        return empty("no masks recorded for this layer")
    return masks.jaccard_heatmap(run, tasks, matrix, title=title, what="shared weights (Jaccard)")


def overlap_sentence(matrix: np.ndarray, density: float) -> str:
    """What the supermask overlap says against chance."""
    n = len(matrix)
    if n < 2:
        return "One task so far: overlaps need two."
    pairs = matrix[np.triu_indices(n, 1)]
    return (f"Mean overlap between two tasks' supermasks: {fmt(float(pairs.mean()), 3)} (range {fmt(float(pairs.min()), 3)}"
            f" to {fmt(float(pairs.max()), 3)}); each keeps {fmt(100 * density, 1)} % of the weights, and two "
            f"independent masks that dense would share {fmt(analysis.chance_jaccard(density), 3)} on average.")


# ----------------------------------------------------------------------------- PathNet

def path_grid(run: Run) -> tuple[list[int], np.ndarray]:
    """(tasks, cells task x layer x module): 0 off the task's path, 1 on it and trained by it
    (new), 2 on it but frozen by an earlier task's path (reused)."""
    tasks = _tasks_with(run, PATH)
    if not tasks:
        return [], np.zeros((0, 0, 0))
    paths = [run.own(t, PATH).astype(bool) for t in tasks]
    frozen = np.zeros_like(paths[0])
    cells = []
    for on in paths:
        cells.append(np.where(on & frozen, 2, np.where(on, 1, 0)))
        frozen = frozen | on
    return tasks, np.stack(cells)


PATH_COLOURS = ((0.0, "#F7F7F7"), (0.33, "#F7F7F7"), (0.34, "#E6AB02"), (0.66, "#E6AB02"), (0.67, "#5E3C99"),
                (1.0, "#5E3C99"))
"""Off the path (pale), on it and new (gold), on it and reused from an earlier task (violet)."""


def path_figure(run: Run) -> go.Figure:
    """One heatmap per layer, side by side: a row per task, a column per module."""
    tasks, cells = path_grid(run)
    if not tasks:
        return empty("no paths recorded yet")
    labels, names = [short(t) for t in tasks], plain_names(run.state.tasks)
    kinds = ("off the path", "on the path, new", "on the path, reused (frozen by an earlier task)")
    fig = go.Figure()
    n_layers = cells.shape[1]
    for layer in range(n_layers):
        hover = [[f"{names[t]}<br>layer {layer}, module {m}<br>{kinds[int(v)]}" for m, v in enumerate(row)]
                 for t, row in zip(tasks, cells[:, layer, :])]
        fig.add_trace(go.Heatmap(z=cells[:, layer, :], x=list(range(cells.shape[2])), y=labels, zmin=0, zmax=2,
                                 colorscale=[list(c) for c in PATH_COLOURS], showscale=False, xgap=2, ygap=2,
                                 hovertext=hover, hoverinfo="text", xaxis=f"x{layer + 1 if layer else ''}"))
    domains = np.linspace(0, 1, n_layers + 1)
    for layer in range(n_layers):
        axis = f"xaxis{layer + 1 if layer else ''}"
        fig.update_layout({axis: dict(domain=[domains[layer] + (0.04 if layer else 0), domains[layer + 1]],
                                      title=f"layer {layer}: module", dtick=max(1, cells.shape[2] // 8))})
    fig.update_yaxes(autorange="reversed", title="task")
    height = min(640, 150 + 26 * len(tasks))
    style(fig, title="Each task's path (gold: trained by it, violet: reused, frozen)", height=height)
    return fig


def fitness_figure(run: Run) -> go.Figure:
    """How each task's tournament converged: the elite's validation loss after every generation."""
    tasks = _tasks_with(run, FITNESS)
    if not tasks:
        return empty("no tournament recorded yet")
    names = plain_names(run.state.tasks)
    fig = go.Figure()
    for t in tasks:
        loss = run.own(t, FITNESS)
        fig.add_trace(go.Scatter(x=list(range(1, len(loss) + 1)), y=loss, mode="lines+markers", name=short(t),
                                 line=dict(color=task_colour(t)), marker=dict(size=5),
                                 hovertemplate=f"{names[t]}<br>generation %{{x}}<br>validation loss %{{y:.3f}}<extra></extra>"))
    fig.update_xaxes(title="generation", dtick=max(1, max(len(run.own(t, FITNESS)) for t in tasks) // 10))
    fig.update_yaxes(title="elite's validation loss")
    style(fig, title="Tournament: best path's val. loss", height=360)
    return legend_below(fig, "task:")


def path_table(run: Run) -> pd.DataFrame:
    tasks = _tasks_with(run, PATH)
    reuse = analysis.path_reuse([run.own(t, PATH) for t in tasks])
    names = plain_names(run.state.tasks)
    return pd.DataFrame([{"task": names[t], **r} for t, r in zip(tasks, reuse)],
                        columns=["task", "modules", "reused", "new"])


# ----------------------------------------------------------------------------- ACL

def parts_frame(run: Run) -> pd.DataFrame:
    """Every task's test accuracy with both modules, shared only and private only, as the
    last recorded task left them (one row per task and part)."""
    tasks = _tasks_with(run, PARTS)
    if not tasks:
        return pd.DataFrame(columns=["task", "part", "accuracy"])
    last = run.own(tasks[-1], PARTS)
    names = plain_names(run.state.tasks)
    return pd.DataFrame([{"task": names[i], "part": part, "accuracy": float(last[i, k])}
                         for i in range(len(last)) for k, part in enumerate(PART_NAMES)])


def parts_figure(run: Run) -> go.Figure:
    frame = parts_frame(run)
    if frame.empty:
        return empty("no parts recorded yet")
    fig = go.Figure()
    for part, colour in zip(PART_NAMES, PART_COLOURS):
        rows = frame[frame["part"] == part]
        fig.add_trace(go.Bar(x=rows["task"], y=rows["accuracy"], name=part, marker_color=colour,
                             hovertemplate="%{x}<br>" + part + ": %{y:.3f}<extra></extra>"))
    fig.update_layout(barmode="group", bargap=0.25)
    fig.update_yaxes(title="test accuracy", range=[0, 1])
    fig.update_xaxes(tickangle=-45 if len(frame) > 24 else 0, automargin=True)
    style(fig, title="Each task's accuracy from its shared and private parts", height=380)
    return legend_below(fig, "features used:")


def parts_sentence(frame: pd.DataFrame) -> str:
    if frame.empty:
        return ""
    wide = frame.pivot_table(index="task", columns="part", values="accuracy", sort=False)
    gap = wide[PART_NAMES[0]] - wide[PART_NAMES[1]]
    return (f"Zeroing the private features costs {fmt(float(gap.mean()), 3)} accuracy on average (most: "
            f"{fmt(float(gap.max()), 3)}); private features alone reach {fmt(float(wide[PART_NAMES[2]].mean()), 3)}, "
            f"shared alone {fmt(float(wide[PART_NAMES[1]].mean()), 3)}, both {fmt(float(wide[PART_NAMES[0]].mean()), 3)}.")


# ----------------------------------------------------------------------------- HyperNet

def task_embeddings(run: Run) -> tuple[list[int], np.ndarray]:
    tasks = _tasks_with(run, TASK_EMBEDDING)
    if not tasks:
        return [], np.zeros((0, 0))
    return tasks, np.stack([run.own(t, TASK_EMBEDDING) for t in tasks]).astype(np.float64)


def embedding_figure(run: Run) -> go.Figure:
    """The task embeddings projected to 2-D by PCA, marked by family."""
    tasks, vectors = task_embeddings(run)
    if not tasks:
        return empty("no task embeddings recorded yet")
    coords, _ = project(vectors, method="pca")
    names = plain_names(run.state.tasks)
    fams = [run.state.tasks[t]["family"] for t in tasks]
    fig = go.Figure()
    for fam in dict.fromkeys(fams):
        idx = [i for i, f in enumerate(fams) if f == fam]
        fig.add_trace(go.Scatter(
            x=coords[idx, 0], y=coords[idx, 1], mode="markers+text", name=fam, text=[short(tasks[i]) for i in idx],
            textposition="top center", textfont=dict(size=FONT - 1),
            marker=dict(size=12, color=family_colour(fam), symbol=family_symbol(fam), line=dict(width=1, color="white")),
            hovertext=[names[tasks[i]] for i in idx], hoverinfo="text"))
    fig.update_xaxes(title="PC 1", zeroline=False)
    fig.update_yaxes(title="PC 2", zeroline=False, scaleanchor="x", scaleratio=1)
    style(fig, title="Task embeddings (PCA)", height=460)
    return legend_below(fig, "family:")


def embedding_sentence(run: Run) -> str:
    """Do the embeddings group the families (and the truly similar tasks)?"""
    tasks, vectors = task_embeddings(run)
    if len(tasks) < 3:
        return "Fewer than three task embeddings: nothing to group yet."
    fams = [run.state.tasks[t]["family"] for t in tasks]
    groups = [analysis.true_groups(run.state.tasks)[t] for t in tasks]
    parts = []
    for what, labels in (("family", fams), ("truly similar group", groups)):
        hits, asked, chance = analysis.neighbour_agreement(vectors, labels)
        if asked:
            parts.append(f"{hits} of {asked} tasks have a nearest embedding (cosine) from their own {what} "
                         f"(a random neighbour: {fmt(chance, 1)})")
    return "; ".join(parts) + "." if parts else "No two tasks share a family or a group: nothing to group."
