"""Task embeddings in 2-D: where each task's embedding lies, and how the rule that decided
(X-means, or a cosine rule of PRM+) grouped them.

Coordinates come for the whole layer at once (every final embedding plus each DTD step's
new-task embedding, the rows of ``prm.run.embedding_points``), so all steps of a run share
one picture; a step then shows the subset DTD saw when that task arrived.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from sklearn.decomposition import PCA

from explorer.figures.clustering import below_legend, titled
from explorer.figures.common import (DISSIMILAR_COLOUR, NARROW, RIGHT_COLOUR, SIMILAR_COLOUR, WRONG_COLOUR, cluster_colour,
                                     family_symbol, mark, plain, short, task_colour, task_label, wrap)
from explorer.figures.linkage import rule_step
from prm.analysis import judged_right, true_groups
from prm.projection import project
from prm.run import Run, embedding_points

END = "end"
"""The step value for 'the final embeddings after the whole sequence'."""
FEW_TASKS = 12
"""Below this many tasks PCA is the default projection. The rule counts tasks, not points: a
run of n tasks projects up to 2n - 1 points (each task's embedding and its DTD copy), and
below 12 tasks UMAP's 15-neighbour graph spans nearly every point, so it tears one tight
cluster into scattered pieces instead of showing neighbourhoods."""
NEW_TASK_COLOUR = "black"
"""The ring of the task that just arrived (its own call is what the step decides)."""


def default_projection(n_tasks: int) -> str:
    """PCA for runs of fewer than ``FEW_TASKS`` tasks, UMAP otherwise."""
    return "pca" if n_tasks < FEW_TASKS else "umap"


@dataclass(frozen=True, kw_only=True)
class Projection:
    coords: np.ndarray  # (n, 2), rows as embedding_points
    tasks: np.ndarray
    is_dtd: np.ndarray
    method: str  # the method actually used
    source: str  # "precomputed" | "computed"


def steps(run: Run) -> list[str]:
    """Step choices: 'after T2' .. one per DTD step recorded, then the end of the run."""
    return [short(t) for t in run.dtd_steps()] + [END]


def precomputed(run: Run, layer: int, method: str) -> Projection | None:
    """The run's stored projection, if it has one for this layer and method covering every
    current point; rows are matched by (task, is-DTD), not by position."""
    found = run.stored_projection(method, layer)
    if found is None:
        return None
    _, tasks, is_dtd = embedding_points(run, layer)
    stored = {(int(t), bool(d)): n for n, (t, d) in enumerate(zip(found[0], found[1]))}
    wanted = [(int(t), bool(d)) for t, d in zip(tasks, is_dtd)]
    if len(stored) != len(wanted) or any(w not in stored for w in wanted):
        return None
    coords = np.asarray(found[2], dtype=float)[[stored[w] for w in wanted]]
    return Projection(coords=coords, tasks=tasks, is_dtd=is_dtd, method=method, source="precomputed")


def compute(run: Run, layer: int, method: str, seed: int = 0) -> Projection:
    points, tasks, is_dtd = embedding_points(run, layer)
    coords, used = project(points, method=method, seed=seed) if len(points) else (np.zeros((0, 2)), method)
    return Projection(coords=np.asarray(coords, dtype=float), tasks=tasks, is_dtd=is_dtd, method=used,
                      source="computed")


CALL = "call"
"""The grouping shown when no clustering implies the step's calls: called similar (with the new
task) or dissimilar."""
GROUPINGS = {"xmeans": "X-means cluster", "linkage": "linkage cluster"}
"""The DTD sources that decide by clusters, and the name their clusters go by."""


def colouring(run: Run, layer: int, task: int, dissimilar: list[int]) -> tuple[str, list[int]]:
    """(grouping, label per row 0..task) the colours show when ``task`` arrived: the clusters that
    decided (X-means' for an X-means step, the linkage rule's for a linkage step), when the tasks
    outside the new task's cluster are exactly the dissimilar set used; otherwise (a cut rule, an
    ablation, a what-if, X-means undecided, or a decision on all layers together that this layer's
    X-means clusters do not show) the call itself: 0 = similar, with the new task, 1 = dissimilar.
    So the colours never tell another story than the calls."""
    record = run.state.dtd[task]
    labels = None
    if record.source == "xmeans":
        labels = [int(v) for v in record.layers[layer]["xmeans"]["labels"]]
    elif record.source == "linkage":
        found = rule_step(run, task, layer)
        labels = None if found is None else [int(v) for v in found.labels]
    if labels is not None and {i for i in range(task) if labels[i] != labels[task]} == set(dissimilar):
        return GROUPINGS[record.source], labels
    return CALL, [int(i in set(dissimilar)) for i in range(task + 1)]


def _rows(run: Run, layer: int, step: str, dissimilar: list[int] | None = None):
    """(task, is_dtd) of the points shown at ``step``, their embeddings, the grouping and labels
    the colours show ("" and None at the end) and the dissimilar set shown for the new task: the
    one used, or ``dissimilar`` (another decision, shown by its call)."""
    if step == END:
        done = [t for t in sorted(t for kind, t in run.arrays if kind == "task") if run.embedding(t, layer) is not None]
        points = np.array([run.embedding(t, layer) for t in done]).reshape(len(done), -1)
        return [(t, False) for t in done], points, "", None, []
    t = int(step[1:]) - 1
    points = run.dtd_embeddings(t, layer)
    if dissimilar is None:
        dissimilar = list(run.state.dtd[t].layers[layer]["dissimilar"])
        grouping, labels = colouring(run, layer, t, dissimilar)
    else:
        grouping, labels = CALL, [int(i in set(dissimilar)) for i in range(t + 1)]
    return [(i, i == t) for i in range(t + 1)], points, grouping, labels, list(dissimilar)


def step_frame(run: Run, layer: int, projection: Projection, step: str,
               dissimilar: list[int] | None = None) -> pd.DataFrame:
    """One row per point shown at ``step``: coordinates, task, family, the cluster that decided
    (:func:`colouring`; blank at the end of the run, where none ran, and where the colours show
    the call), the call on each earlier task marked ✓/✗ against the truth
    (``prm.analysis.judged_right``; blank for the new task and at the end), nearest tasks.
    ``dissimilar`` shows another decision than the one used (X-means alone, beside a rule)."""
    shown, points, grouping, labels, dissimilar = _rows(run, layer, step, dissimilar)
    right = {} if step == END else judged_right(groups=true_groups(run.state.tasks), task=int(step[1:]) - 1,
                                                dissimilar=dissimilar)
    lookup = {(int(t), bool(d)): i for i, (t, d) in enumerate(zip(projection.tasks, projection.is_dtd))}
    tasks = run.state.tasks
    rows = []
    for n, (t, is_dtd) in enumerate(shown):
        xy = projection.coords[lookup[(t, is_dtd)]] if (t, is_dtd) in lookup else (np.nan, np.nan)
        dist = np.linalg.norm(points - points[n], axis=1)
        order = [m for m in np.argsort(dist) if m != n][:2]
        nearest = ", ".join(f"{short(shown[m][0])} ({dist[m]:.2f})" for m in order)
        new = step != END and is_dtd
        rows.append({
            "task": short(t), "name": task_label(tasks, t), "family": tasks[t]["family"] if t < len(tasks) else "?",
            "kind": "new task (DTD embedding)" if is_dtd else "final embedding",
            "cluster": "" if labels is None or grouping == CALL else str(labels[n]),
            "relation": "new task" if new else ("" if step == END else
                                                "dissimilar (protected)" if t in dissimilar else "similar (relaxed)"),
            "call": "" if new else mark(right.get(t)),
            "x": float(xy[0]), "y": float(xy[1]), "nearest": nearest or "-", "task_index": t, "is_dtd": is_dtd,
            "group": -1 if labels is None else labels[n], "grouping": grouping,
        })
    return pd.DataFrame(rows)


def trajectory_projection(run: Run, layer: int, frame: pd.DataFrame) -> tuple[pd.DataFrame, list[tuple[int, np.ndarray]]]:
    """PCA fitted on the shown embeddings and their per-epoch trajectories together, so a
    trajectory ends on its point; returns the frame with new x, y and each path (k, 2)."""
    paths = []
    for _, row in frame.iterrows():
        traj = run.trajectory(row["task_index"], layer, dtd=row["is_dtd"])
        paths.append(None if traj is None or traj.size == 0 else np.asarray(traj, dtype=float))
    finals = _rows(run, layer, _step_of(frame))[1]
    stacks = [finals] + [p for p in paths if p is not None]
    data = np.vstack(stacks)
    n_comp = min(2, data.shape[0], data.shape[1])
    pca = PCA(n_components=n_comp).fit(data)

    def tr(x: np.ndarray) -> np.ndarray:
        out = np.zeros((len(x), 2))
        out[:, :n_comp] = pca.transform(x)
        return out

    xy = tr(finals)
    frame = frame.assign(x=xy[:, 0], y=xy[:, 1])
    projected = [(int(row["task_index"]), np.vstack([tr(p), xy[n:n + 1]]))
                 for n, ((_, row), p) in enumerate(zip(frame.iterrows(), paths)) if p is not None]
    return frame, projected


def _step_of(frame: pd.DataFrame) -> str:
    new = frame[frame["is_dtd"]]
    return END if new.empty else short(int(new["task_index"].iloc[0]))


def _outline(row) -> tuple[str, int]:
    """A point's outline: black ring for the new task, green / red for a right / wrong call on
    an earlier task, thin white where nothing was decided (the end of the run)."""
    if row.is_dtd and row.relation == "new task":
        return NEW_TASK_COLOUR, 3
    if row.call:
        return (RIGHT_COLOUR if row.call == mark(True) else WRONG_COLOUR), 3
    return "white", 1


DECIDERS = {"xmeans": "X-means", "linkage": "linkage rule", "cut": "cut rule"}


def decided_by(run: Run, step: str) -> str:
    """Who decided the calls shown at ``step``, in words: X-means, a cosine rule, or the DTD source
    that replaced them (an ablation, a what-if)."""
    source = run.state.dtd[int(step[1:]) - 1].source
    return DECIDERS.get(source, f"DTD ({source})")


PANEL_TITLE_CHARS = 26
"""A panel title's line: half of a narrow chart (~190 px) holds about this many characters at 13 px."""
PANEL_TITLE_PX = 50
"""Room over the panels of :func:`comparison_figure` for their titles (two lines at 13 px)."""
CALL_NAMES = {0: ("called similar, with the new task", SIMILAR_COLOUR), 1: ("called dissimilar", DISSIMILAR_COLOUR)}


LEGEND_COLOURS = 8
"""Above this many colours (tasks at the end of a long run, one linkage cluster per task) the
legend names none of them: one entry says what colour means, each point's hover names its own."""


def _colour_groups(frame: pd.DataFrame) -> tuple[str, list[tuple[str, str, pd.DataFrame]]]:
    """The colour legend's title and (name, colour, rows) per colour: the deciding clusters, the
    call (:data:`CALL`), or the task at the end of the run, where nothing was decided."""
    grouping = frame["grouping"].iloc[0]
    if not grouping:
        return "colour = task", [(plain(part["name"].iloc[0]), task_colour(int(t)), part)
                                 for t, part in frame.groupby("task_index", sort=True)]
    if grouping == CALL:
        return "colour = DTD's call", [(*CALL_NAMES[int(g)], part) for g, part in frame.groupby("group", sort=True)]
    return f"colour = {grouping}", [(f"{grouping} {g}" + (" (the new task's)" if part["is_dtd"].any() else ""),
                                     cluster_colour(int(g)), part) for g, part in frame.groupby("group", sort=True)]


def _hover(r) -> str:
    grouped = f"{r.grouping}: {r.cluster}<br>" if r.cluster else ""
    judged = f" ({'right' if r.call == mark(True) else 'wrong'} call {r.call})" if r.call else ""
    return (f"<b>{plain(r.name)}</b><br>family: {plain(r.family)}<br>{r.kind}<br>{grouped}"
            + (f"{r.relation}{judged}<br>" if r.relation else "") + f"nearest: {r.nearest}")


def _colour_legend(fig: go.Figure, frame: pd.DataFrame) -> None:
    """Legend entries for the colours of ``frame`` (every panel's rows, where panels share them):
    one per colour up to :data:`LEGEND_COLOURS`, else one that sends the reader to the hover."""
    title, groups = _colour_groups(frame)
    if len(groups) > LEGEND_COLOURS:
        groups = [(f"{len(groups)} colours: hover a point for its {title.removeprefix('colour = ')}", "#888", frame)]
    for n, (name, colour, _) in enumerate(groups):
        fig.add_scatter(x=[None], y=[None], mode="markers", name=name, legendgroup=name,  # legend: colour only
                        legendgrouptitle_text=title if n == 0 else None,
                        marker=dict(symbol="square", color=colour, size=12))


PLOT_PX = (NARROW - 60, 280)
"""The plot area point labels are placed for (px across, down): the narrowest chart less its
margins (with 20 px to spare: a column can be a little narrower than ``NARROW``), and the least
height :func:`_sized` leaves the plot whatever the legend's rows. A larger plot only moves the
labels further apart, so labels placed for this size never overlap at any width."""
LEGEND_LINE_PX, LEGEND_GAP_PX = 21, 12
"""A legend line's height (an entry or a group's title) and the gap between groups, in px
(measured: 11 lines in two rows of groups took 236 px)."""
CHAR_PX, LINE_PX = 8.5, 17
"""A label's character width (the ✓ and ✗ are the widest) and line height at the 13 px font."""
POSITIONS = ("top center", "bottom center", "middle right", "middle left")


def _label_box(x: float, y: float, width: float, position: str, gap: float) -> tuple[float, float, float, float]:
    """(left, bottom, right, top) in px of a label ``width`` px wide at ``position`` of a point
    whose marker reaches ``gap`` px from its centre (y grows upwards)."""
    if position == "top center":
        return x - width / 2, y + gap, x + width / 2, y + gap + LINE_PX
    if position == "bottom center":
        return x - width / 2, y - gap - LINE_PX, x + width / 2, y - gap
    if position == "middle right":
        return x + gap, y - LINE_PX / 2, x + gap + width, y + LINE_PX / 2
    return x - gap - width, y - LINE_PX / 2, x - gap, y + LINE_PX / 2


def _overlaps(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_labels(px: np.ndarray, texts: list[str], priority: list[int], *, radius: list[float],
                 size: tuple[float, float] = PLOT_PX) -> list[str | None]:
    """Where each point's label goes (a plotly textposition), or None: its label is left to the
    hover. ``px``: the points in px of a plot ``size`` px large. Points take turns in ``priority``
    order; each takes the first of :data:`POSITIONS` where its label stays inside the plot and
    touches neither a label placed before it nor another point's marker. So a crowded cluster
    keeps the labels that matter (the new task, wrong calls, one per colour) and no two collide.
    The first point is always named (it may cover a marker: the step is about it)."""
    markers = [(x - r, y - r, x + r, y + r) for (x, y), r in zip(px, radius)]
    placed: list[tuple[float, float, float, float]] = []
    where: list[str | None] = [None] * len(texts)
    for n in priority:
        boxes = {p: _label_box(*px[n], len(texts[n]) * CHAR_PX + 4, p, radius[n] + 2) for p in POSITIONS}
        free = [p for p, box in boxes.items() if box[0] >= 0 and box[1] >= 0 and box[2] <= size[0]
                and box[3] <= size[1] and not any(_overlaps(box, b) for b in placed)]
        clear = [p for p in free if not any(_overlaps(boxes[p], m) for k, m in enumerate(markers) if k != n)]
        position = (clear or free or [POSITIONS[0]])[0] if n == priority[0] else next(iter(clear), None)
        if position is not None:
            placed.append(boxes[position])
            where[n] = position
    return where


def _priority(frame: pd.DataFrame) -> list[int]:
    """Rows in the order their labels are placed: the new task, the wrong calls, the first task of
    each colour, then the rest in task order."""
    rows = list(frame.itertuples())
    first = {r.group: r.Index for r in reversed(rows)}
    rank = [0 if r.relation == "new task" else 1 if r.call == mark(False) else 2 if first[r.group] == r.Index else 3
            for r in rows]
    return sorted(range(len(rows)), key=lambda n: (rank[n], rows[n].task_index))


def _ranges(frame: pd.DataFrame, paths) -> tuple[list[float], list[float]]:
    """Axis ranges holding every point and trajectory with a margin for markers and labels:
    fixed, so the labels can be placed for them (:func:`place_labels`)."""
    xs = np.concatenate([frame["x"].to_numpy(float), *[p[:, 0] for _, p in paths or []]])
    ys = np.concatenate([frame["y"].to_numpy(float), *[p[:, 1] for _, p in paths or []]])
    out = []
    for v in (xs[np.isfinite(xs)], ys[np.isfinite(ys)]):
        low, high = (float(v.min()), float(v.max())) if len(v) else (0.0, 1.0)
        pad = 0.12 * (high - low) or 1.0
        out.append([low - pad, high + pad])
    return out[0], out[1]


def _labels(frame: pd.DataFrame, ranges, size: tuple[float, float]) -> tuple[list[str], list[str]]:
    """(text, textposition) of every row: :func:`place_labels` for the figure's fixed ``ranges``."""
    (x0, x1), (y0, y1) = ranges
    px = np.column_stack([(frame["x"].to_numpy(float) - x0) / (x1 - x0) * size[0],
                          (frame["y"].to_numpy(float) - y0) / (y1 - y0) * size[1]])
    texts = [f"{r.task} {r.call}".strip() for r in frame.itertuples()]
    where = place_labels(np.nan_to_num(px, nan=-1e6), texts, _priority(frame),
                         radius=[10 if d else 7.5 for d in frame["is_dtd"]], size=size)
    return [t if w else "" for t, w in zip(texts, where)], [w or "top center" for w in where]


def _add_points(fig: go.Figure, frame: pd.DataFrame, *, ranges, size: tuple[float, float] = PLOT_PX,
                col: int | None = None) -> None:
    """One step's points, one meaning per visual channel: colour (:func:`_colour_groups`), symbol
    = true family, outline = the call on each earlier task (green right, red wrong, the mark
    beside the name too) with the new task ringed in black. Labels only where they fit
    (:func:`_labels`); every point's hover names it. ``col``: the panel of a subplot grid."""
    where = {} if col is None else dict(row=1, col=col)
    frame = frame.reset_index(drop=True)
    text, position = _labels(frame, ranges, size)
    for name, colour, part in _colour_groups(frame)[1]:
        outlines = [_outline(r) for r in part.itertuples()]
        fig.add_scatter(
            x=part["x"], y=part["y"], mode="markers+text", name=name, legendgroup=name, showlegend=False,
            text=[text[n] for n in part.index], textposition=[position[n] for n in part.index],
            customdata=part["task"], marker=dict(size=[20 if d else 15 for d in part["is_dtd"]], color=colour,
                                                 symbol=[family_symbol(f) for f in part["family"]],
                                                 line=dict(color=[c for c, _ in outlines], width=[w for _, w in outlines])),
            hovertext=[_hover(r) for r in part.itertuples()], hoverinfo="text", **where)


def _symbol_and_outline_legend(fig: go.Figure, frame: pd.DataFrame) -> None:
    for n, fam in enumerate(sorted(frame["family"].unique())):  # legend entries for the symbols
        fig.add_scatter(x=[None], y=[None], mode="markers", name=plain(fam), legendgroup="families",
                        legendgrouptitle_text="symbol = family" if n == 0 else None,
                        marker=dict(symbol=family_symbol(fam), color="#888", size=11))
    if frame["relation"].eq("new task").any():  # legend entries for the outlines
        for n, (name, colour) in enumerate([("new task", NEW_TASK_COLOUR), (f"call right {mark(True)}", RIGHT_COLOUR),
                                            (f"call wrong {mark(False)}", WRONG_COLOUR)]):
            fig.add_scatter(x=[None], y=[None], mode="markers", name=name, legendgroup="outlines",
                            legendgrouptitle_text="outline = DTD's call" if n == 0 else None,
                            marker=dict(symbol="circle-open", color=colour, size=13, line=dict(width=3)))


def figure(frame: pd.DataFrame, *, title: str, paths: list[tuple[int, np.ndarray]] | None = None) -> go.Figure:
    """Scatter of one step (:func:`_add_points`), each channel named in the legend below it, with
    each task's per-epoch trajectory dotted behind its point when ``paths`` are given."""
    fig = go.Figure()
    for task, path in paths or []:
        fig.add_scatter(x=path[:, 0], y=path[:, 1], mode="lines+markers", showlegend=False,
                        line=dict(color=task_colour(task), width=1, dash="dot"), marker=dict(size=4, opacity=0.5),
                        hovertemplate=f"{short(task)} epoch snapshot %{{pointNumber}}<extra></extra>")
    if frame.empty:
        return titled(fig, title, height=480)
    ranges = _ranges(frame, paths)
    _colour_legend(fig, frame)
    _add_points(fig, frame, ranges=ranges)
    _symbol_and_outline_legend(fig, frame)
    fig.update_xaxes(showticklabels=False, title=None, zeroline=False, range=ranges[0])
    fig.update_yaxes(showticklabels=False, title=None, zeroline=False, scaleanchor=None, range=ranges[1])
    return _sized(fig, title=title)


def _legend_px(fig: go.Figure) -> int:
    """The most height the legend below can take: every group in a row of its own, as where the
    chart is too narrow for two groups side by side."""
    shown = [t for t in fig.data if t.showlegend is not False]
    groups = len({t.legendgroup for t in shown})
    return LEGEND_LINE_PX * (len(shown) + groups) + LEGEND_GAP_PX * groups


def _sized(fig: go.Figure, *, title: str, above: int = 0) -> go.Figure:
    """``fig`` titled, its legend below and tall enough that the plot keeps at least
    :data:`PLOT_PX` down (``above``: px over the plot for panel titles) however many rows the
    legend wraps into: a fixed height let a wrapped legend squeeze the plot (264 px of 300), so
    labels placed for 300 px touched. Wider, the plot just gets taller."""
    fig = below_legend(titled(fig, title, height=PLOT_PX[1]))
    top = fig.layout.margin.t + above
    return fig.update_layout(height=top + PLOT_PX[1] + _legend_px(fig) + fig.layout.margin.b, margin_t=top)


def right_count(frame: pd.DataFrame) -> tuple[int, int]:
    """(calls right, earlier tasks) of a step's frame: its ✓ marks out of its marked calls."""
    marked = frame["call"].ne("")
    return int(frame.loc[marked, "call"].eq(mark(True)).sum()), int(marked.sum())


def comparison_figure(panels: list[tuple[str, pd.DataFrame]], *, title: str) -> go.Figure:
    """The same points side by side, one panel per decision (``(name, step_frame(...,
    dissimilar=its set))``), each coloured by its call and every earlier task marked ✓/✗; each
    panel's title says how many calls it got right (on a line of its own: half a narrow chart
    holds the decision's name or its count, not both).
    One colour legend serves every panel, since colour means the call in each."""
    titles = [f"{wrap(name + ':', width=PANEL_TITLE_CHARS)}<br>{right} of {total} right" for name, frame in panels
              for right, total in [right_count(frame)]]
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=titles, horizontal_spacing=0.04)
    fig.update_annotations(font_size=13)
    _colour_legend(fig, pd.concat([frame for _, frame in panels]))
    ranges = _ranges(pd.concat([frame for _, frame in panels]), None)
    size = ((PLOT_PX[0] - 20) / len(panels), PLOT_PX[1])
    for col, (_, frame) in enumerate(panels, start=1):
        _add_points(fig, frame, ranges=ranges, size=size, col=col)
    _symbol_and_outline_legend(fig, panels[0][1])
    fig.update_xaxes(showticklabels=False, title=None, zeroline=False, range=ranges[0])
    fig.update_yaxes(showticklabels=False, title=None, zeroline=False, range=ranges[1])
    return _sized(fig, title=title, above=PANEL_TITLE_PX)
