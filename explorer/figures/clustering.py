"""'Why together?': the X-means decision record of one DTD step and the evidence behind it,
and for CAT runs, which decide by transfer tests instead, each step's tests and calls."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from pandas.io.formats.style import Styler
from sklearn.metrics import adjusted_rand_score

from explorer.figures.common import (DISSIMILAR_COLOUR, DIVERGING, RIGHT_COLOUR, SEQUENTIAL, SIMILAR_COLOUR,
                                     WRONG_COLOUR, cluster_colour, colour_bar, fmt, mark, plain_names, short, style,
                                     task_grid, task_label, wrap)
from prm.analysis import judged_right, true_groups
from prm.events import DTDResult, TransferTest
from prm.run import RunState

SMALL_FONT = 12
"""The smallest text any chart here uses, legible on a 1280x720 projector."""
ROW_PX = 26
"""Vertical room per leaf of the X-means tree: more than a line of SMALL_FONT-sized text, so leaf
labels never overlap however many clusters there are."""
AXIS_CHARS = 30
"""Characters of an axis title's line: a y title runs along a plot about 250 px high at the
narrowest, an x title under a narrow chart."""

TITLE_CHARS = 40
"""Characters of a chart title's line: the title's 18 px font fits about this many across the
narrowest chart (``common.NARROW``), so a longer title is wrapped rather than cut."""


def titled(fig: go.Figure, title: str, *, height: int) -> go.Figure:
    """``common.style`` with the title wrapped to lines of :data:`TITLE_CHARS` and the top margin
    grown to hold every line (plotly centres the title in it): the one way every chart of the Task
    embeddings and Clustering views gets its title, so none is cut at the right edge of a narrow chart."""
    style(fig, title=title, height=height)
    text = wrap(title, width=TITLE_CHARS)
    return fig.update_layout(title_text=text, margin_t=22 + 24 * (text.count("<br>") + 1))


def below_legend(fig: go.Figure) -> go.Figure:
    """The legend in rows under the chart, below the axis and its labels: beside the plot it took
    half of a narrow chart; under it, it takes as many rows as the width needs, and the plot
    keeps the whole width."""
    return fig.update_layout(legend=dict(orientation="h", x=0, xanchor="left", yref="container", y=0,
                                         yanchor="bottom", groupclick="toggleitem", tracegroupgap=12))


REASONS = {"bic-improved": "BIC rose", "bic-not-improved": "BIC did not rise",
           "too-few-points": "too few points to split (fewer than 3)", "zero-variance": "all points identical",
           "k-max": "k reached its maximum"}
"""X-means' recorded reasons for keeping or refusing a split, in words."""


def _members(ids) -> str:
    return ", ".join(short(int(i)) for i in ids)


def calls(tasks, *, task: int, dissimilar) -> pd.DataFrame:
    """Each earlier task's call when ``task`` arrived, the truth beside it and the mark
    (``prm.analysis.judged_right``: the one rule every view judges by)."""
    groups = true_groups(tasks)
    right = judged_right(groups=groups, task=task, dissimilar=dissimilar)
    called = set(dissimilar)
    return pd.DataFrame([{"": mark(right[i]), "task": task_label(tasks, i),
                          "called": "dissimilar" if i in called else "similar",
                          "truly": "similar" if groups[i] == groups[task] else "dissimilar"} for i in range(task)],
                        columns=["", "task", "called", "truly"])


def calls_styled(frame: pd.DataFrame, marks: tuple[str, ...] = ("",)) -> Styler:
    """The calls with their marks (the columns ``marks``) in the right/wrong colours."""
    colours = {mark(True): RIGHT_COLOUR, mark(False): WRONG_COLOUR}
    return frame.style.map(lambda v: f"color: {colours[v]}; font-weight: bold" if v in colours else "",
                           subset=list(marks))


def count_line(frame: pd.DataFrame) -> str:
    """"7 of 9 calls right": the one-line score of a :func:`calls` table."""
    return f"{(frame[''] == mark(True)).sum()} of {len(frame)} calls right"


def _bic_text(value: float | None, *, signed: bool = False) -> str:
    return "—" if value is None else fmt(value, 1, signed=signed)


def decision_table(record: DTDResult, layer: int) -> pd.DataFrame:
    """Every split X-means tried at this step, the verdict first: the cluster, the whole-model
    BIC change of splitting it (ΔBIC; a split is kept only when it is positive), kept or not and
    why, then the BIC values, the two proposed halves and the cluster's members last (the long
    lists). Splits refused without a 2-means have no BIC: "—", and the reason says why."""
    rows = []
    for a in record.layers[layer]["xmeans"]["attempts"]:
        tried = a["children_bic"] is not None
        rows.append({
            "cluster": a["parent"], "ΔBIC": _bic_text(a["children_bic"] - a["parent_bic"] if tried else None,
                                                      signed=True),
            "kept": "yes" if a["kept"] else "no", "reason": REASONS.get(a["reason"], a["reason"]), "round": a["round"],
            "BIC parent": _bic_text(a["parent_bic"]), "BIC children": _bic_text(a["children_bic"]),
            "child A": "—" if a["children"] is None else _members(a["children"][0]),
            "child B": "—" if a["children"] is None else _members(a["children"][1]),
            "members": _members(a["members"]),
        })
    return pd.DataFrame(rows, columns=["cluster", "ΔBIC", "kept", "reason", "round", "BIC parent", "BIC children",
                                       "child A", "child B", "members"])


def _leaf_text(name: str, members: list[int]) -> str:
    """A leaf's label: its name and, for up to three tasks, the tasks; else their count (the
    hover lists them), so a label stays short enough for its row."""
    return f"{name} · {_members(members)}" if len(members) <= 3 else f"{name} · {len(members)} tasks"


def decision_tree(record: DTDResult, layer: int) -> go.Figure:
    """The same record as a tree, root on the left: every cluster X-means split branches into
    its two kept halves; the leaves are the final clusters, labelled cN (as in the distance
    matrix) with their tasks or their count. Each leaf has a row of its own (the height grows
    with the number of clusters, the width with the depth), so labels never collide, up to 50
    tasks and beyond. Refused splits are in the hover of the cluster they were tried on and in
    the table."""
    xm = record.layers[layer]["xmeans"]
    labels = np.asarray(xm["labels"])
    final = {int(c): n for n, c in enumerate(xm["cluster_ids"])}  # stable id -> label cN
    last = {a["parent"]: a for a in xm["attempts"]}  # a cluster retried after moves: its last test counts
    children = {p: [int(c) for c in a["child_ids"]] for p, a in last.items() if a["kept"]}
    depth: dict[int, int] = {}
    ypos: dict[int, float] = {}
    order: list[int] = []

    def place(node: int, level: int) -> float:  # leaves top to bottom, parents beside their children
        depth[node] = level
        if node in children:
            ypos[node] = float(np.mean([place(c, level + 1) for c in children[node]]))
        else:
            ypos[node] = -float(len(order))
            order.append(node)
        return ypos[node]

    for root in range(xm["k_init"]):
        place(root, 0)
    fig = go.Figure()
    ex, ey = [], []
    for parent, kids in children.items():
        for kid in kids:  # elbow: across from the parent, down to the child's row, across to it
            mid = depth[parent] + 0.5
            ex += [depth[parent], mid, mid, depth[kid], None]
            ey += [ypos[parent], ypos[parent], ypos[kid], ypos[kid], None]
    fig.add_scatter(x=ex, y=ey, mode="lines", line=dict(color="#555"), hoverinfo="skip", showlegend=False)

    def hover(node: int, members: list[int]) -> str:
        a = last.get(node)
        tried = "" if a is None else "<br>split tested: " + REASONS.get(a["reason"], a["reason"]) + (
            "" if a["children_bic"] is None else f" (ΔBIC {fmt(a['children_bic'] - a['parent_bic'], 1, signed=True)})")
        return f"members: {_members(members)}{tried}"

    inner = [n for n in depth if n not in final]  # split clusters (and any a later refit emptied)
    fig.add_scatter(x=[depth[n] for n in inner], y=[ypos[n] for n in inner], mode="markers", showlegend=False,
                    marker=dict(size=14, color="#bbbbbb", line=dict(width=1, color="#555")), hoverinfo="text",
                    hovertext=[f"X-means cluster {n}, " + ("split<br>" if n in children else "emptied by the refit<br>")
                               + hover(n, last[n]["members"] if n in last else []) for n in inner])
    leaves = [n for n in order if n in final]
    members = {n: list(np.flatnonzero(labels == final[n])) for n in leaves}
    fig.add_scatter(x=[depth[n] for n in leaves], y=[ypos[n] for n in leaves], mode="markers+text",
                    showlegend=False, cliponaxis=False, textposition="middle right", textfont=dict(size=SMALL_FONT + 1),
                    text=[" " + _leaf_text(f"c{final[n]}", members[n]) for n in leaves],
                    marker=dict(size=16, color=[cluster_colour(final[n]) for n in leaves], line=dict(width=1, color="#555")),
                    hoverinfo="text", hovertext=[f"final cluster c{final[n]}<br>" + hover(n, members[n]) for n in leaves])
    deepest = max(depth.values(), default=0)
    fig.update_xaxes(visible=False, range=[-0.3, deepest + 1.8])
    fig.update_yaxes(visible=False, range=[-len(order) + 0.4, 0.6])
    return titled(fig, "X-means splits: final clusters cN on the right (hover for tests)",
                  height=max(220, 80 + ROW_PX * (len(order) + 1)))


def cluster_order(labels) -> list[int]:
    """Tasks grouped by their cluster (cluster 0 first), in task order within a cluster."""
    return sorted(range(len(labels)), key=lambda i: (int(labels[i]), i))


METRIC_TITLES = {"euclidean": "Euclidean distance", "cosine": "Cosine similarity",
                 "cosine distance": "Cosine distance"}
"""What :func:`pairwise_figure` draws: X-means' measure, the cosine similarity beside it, and
the cosine distance the linkage and cut rules decide by (``prm.similarity.cosine_distances``)."""


def ordered(matrix: np.ndarray, labels) -> tuple[list[int], np.ndarray]:
    """The matrix with rows and columns in :func:`cluster_order` and the diagonal blank (a
    task's distance to itself says nothing and would stretch the colour range)."""
    order = cluster_order(labels)
    out = np.asarray(matrix, dtype=float)[np.ix_(order, order)].copy()
    np.fill_diagonal(out, np.nan)
    return order, out


def pairwise_figure(matrix: np.ndarray, tasks, *, metric: str, labels: list[int],
                    grouped_by: str = "X-means") -> go.Figure:
    """The distances (or cosine similarities) among the step's tasks, grouped by the clusters
    ``labels`` (X-means', or the linkage rule's) with the cluster boundaries drawn; bright =
    close in every measure (:data:`METRIC_TITLES`), the colours spanning only the off-diagonal
    values. Laid out as every task grid (``common.task_grid``): numbers in the cells only where
    they fit, tick labels thinned to what a narrow chart holds; the hover names every pair."""
    order, z = ordered(matrix, labels)
    n = len(order)
    full = plain_names(tasks, n)
    ticks = [f"{short(i)} c{labels[i]}" for i in order]
    hover = [["" if a == b else f"{full[a]}<br>{full[b]}<br>{metric}: {fmt(matrix[a, b])}" for b in order]
             for a in order]
    digits = 0 if metric == "euclidean" else 2  # distances run to tens: whole numbers fit a cell, decimals do not
    text = [["" if np.isnan(v) else fmt(v, digits) for v in row] for row in z]
    fig = go.Figure(go.Heatmap(z=z, x=ticks, y=ticks, text=text, hovertext=hover, hoverinfo="text",
                               xgap=1, ygap=1, colorscale=SEQUENTIAL, reversescale=metric != "cosine",
                               colorbar=colour_bar("cosine" if metric == "cosine" else "distance")))
    sorted_labels = [labels[i] for i in order]
    for b in (b for b in range(1, n) if sorted_labels[b] != sorted_labels[b - 1]):
        for line in (dict(x0=b - 0.5, x1=b - 0.5, y0=-0.5, y1=n - 0.5), dict(x0=-0.5, x1=n - 0.5, y0=b - 0.5, y1=b - 0.5)):
            fig.add_shape(type="line", line=dict(color="black", width=2), **line)
    return _grid(fig, ticks, title=f"{METRIC_TITLES[metric]} by {grouped_by} cluster cN")


def _grid(fig: go.Figure, ticks: list[str], *, title: str) -> go.Figure:
    """A task-by-task heatmap of this view laid out by ``common.task_grid``, its title wrapped as
    :func:`titled` wraps it, each line past the first adding to the room above the top axis."""
    text = wrap(title, width=TITLE_CHARS)
    fig = task_grid(style(fig, title=title), ticks, titled=True, ticktext=ticks)
    return fig.update_layout(title_text=text, margin_t=fig.layout.margin.t + 24 * text.count("<br>"))


def normalised_transfer(oracle, tasks, n: int) -> np.ndarray:
    """The oracle transfer among the first ``n`` tasks on one scale for 2-way and 10-way
    tasks: (acc(a->b) - chance_b) / (acc(b->b) - chance_b), chance_b = 1 / classes of b.
    0 = chance on b, 1 = as good as b's own classifier (the diagonal), negative = worse than
    chance. Blank where b's own classifier is no better than chance (nothing to compare to)."""
    raw = np.asarray(oracle, dtype=float)[:n, :n]
    chance = np.array([1.0 / len(tasks[b]["classes"]) for b in range(n)])
    own = np.diag(raw) - chance
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(own > 0, (raw - chance) / np.where(own > 0, own, 1), np.nan)


def oracle_figure(oracle, tasks, *, step: int, labels: list[int]) -> go.Figure:
    """The measured transfer among tasks 1..step+1, recorded with sequences that measure it
    (mnist5k-*): a simple classifier trained on task a (row), tested on task b (column), as
    :func:`normalised_transfer` (diverging around chance; raw accuracy, chance and b's own
    accuracy in the hover). High entries are what "similar" means in data; X-means sees only
    embeddings."""
    n = step + 1
    raw = np.asarray(oracle, dtype=float)[:n, :n]
    z = normalised_transfer(oracle, tasks, n)
    ticks = [f"{short(i)} c{labels[i]}" for i in range(n)]
    full = plain_names(tasks, n)
    hover = [[f"trained on {full[a]}<br>tested on {full[b]}<br>accuracy {fmt(raw[a, b])} (chance "
              f"{fmt(1 / len(tasks[b]['classes']))}, its own classifier {fmt(raw[b, b])})<br>"
              f"normalised {fmt(z[a, b], 2, signed=True)}" for b in range(n)] for a in range(n)]
    text = [["" if np.isnan(v) else fmt(v, 2) for v in row] for row in z]
    fig = go.Figure(go.Heatmap(z=z, x=ticks, y=ticks, text=text, hovertext=hover, hoverinfo="text", xgap=1, ygap=1,
                               colorscale=DIVERGING, zmid=0, zmin=-1, zmax=1,
                               colorbar=colour_bar("0 = chance on the column task, 1 = its own")))
    fig.update_yaxes(title="trained on")
    fig.update_xaxes(title="tested on")
    return _grid(fig, ticks, title="Measured transfer (oracle)")


def agreement(state: RunState) -> pd.DataFrame:
    """How well each DTD step matches the truth (``prm.analysis.true_groups``: same family and
    same label set): the adjusted Rand index between X-means clusters and the true groups
    (1 = exactly the groups, about 0 = chance, negative = worse than chance) and how many
    earlier tasks X-means called right (similar or dissimilar)."""
    groups = true_groups(state.tasks)
    rows = []
    for t, record in sorted(state.dtd.items()):
        for layer, entry in enumerate(record.layers):
            labels = entry["xmeans"]["labels"]
            right = sum(judged_right(groups=groups, task=t, dissimilar=entry["dissimilar_xmeans"]).values())
            rows.append({"step": short(t), "layer": f"l{layer}", "k": entry["xmeans"]["k"],
                         "ARI": adjusted_rand_score(groups[: len(labels)], labels), "right": right, "earlier": t,
                         "calls right": right / t})
    return pd.DataFrame(rows, columns=["step", "layer", "k", "ARI", "right", "earlier", "calls right"])


def agreement_shown(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`agreement` as shown: calls as "7 of 9", the ARI signed (it can fall below 0)."""
    return pd.DataFrame({"step": table["step"], "layer": table["layer"], "k": table["k"],
                         "calls right": [f"{r} of {e}" for r, e in zip(table["right"], table["earlier"])],
                         "ARI": [fmt(v, 2, signed=True) for v in table["ARI"]]})


def agreement_figure(table: pd.DataFrame) -> go.Figure:
    fig = go.Figure()
    for layer, part in table.groupby("layer"):
        for column, dash in (("calls right", "solid"), ("ARI", "dot")):
            fig.add_scatter(x=part["step"], y=part[column], mode="lines+markers", name=f"{layer} {column}",
                            line={"dash": dash}, customdata=part["k"],
                            hovertemplate="after %{x}<br>" + column + (" %{y:+.2f}" if column == "ARI" else " %{y:.0%}")
                            + "<br>k = %{customdata}<extra>" + layer + "</extra>")
    # a share (calls right) and a score that can dip below 0 (ARI) on one axis: plain ticks
    fig.update_yaxes(title="agreement", range=[-0.55, 1.05], tickformat=".1f")
    fig.update_xaxes(title="DTD step (new task)")
    return below_legend(titled(fig, "X-means against the truth: calls right (solid), ARI (dotted)", height=420))


# ----------------------------------------------------------------------------- CAT

def transfer_calls(tasks, test: TransferTest) -> pd.DataFrame:
    """:func:`calls` of one CAT transfer test (its dissimilar set: the earlier tasks whose
    transfer network did not beat the reference), each with its transfer accuracy."""
    frame = calls(tasks, task=test.task, dissimilar=test.dissimilar)
    return frame.assign(**{"transfer acc": [fmt(a) for a in test.transfer_acc]})


def transfer_figure(test: TransferTest, tasks) -> go.Figure:
    """Per earlier task, its transfer network's validation accuracy on the new task, a bar
    coloured by CAT's call (similar: above the reference) and marked ✓/✗ against the truth;
    the reference network's accuracy is the dashed line the bars are measured against. The
    axis is zoomed (accuracies near 1 differ in the second decimal)."""
    right = judged_right(groups=true_groups(tasks), task=test.task, dissimilar=test.dissimilar)
    names = plain_names(tasks, test.task)
    x = [short(j) for j in range(test.task)]
    similar = set(test.similar)
    fig = go.Figure()
    for called, colour in (("similar", SIMILAR_COLOUR), ("dissimilar", DISSIMILAR_COLOUR)):
        js = [j for j in range(test.task) if (j in similar) == (called == "similar")]
        fig.add_bar(x=[x[j] for j in js], y=[test.transfer_acc[j] for j in js], name=f"called {called}",
                    marker=dict(color=colour, line=dict(color="#555", width=1)),
                    text=[mark(right[j]) for j in js], textposition="outside", cliponaxis=False,
                    textfont=dict(size=SMALL_FONT + 4, color=[RIGHT_COLOUR if right[j] else WRONG_COLOUR for j in js]),
                    customdata=[[names[j], test.epochs[j], "right" if right[j] else "wrong"] for j in js],
                    hovertemplate="%{customdata[0]}<br>transfer accuracy %{y:.3f} after %{customdata[1]} epochs"
                                  f"<br>called {called}: %{{customdata[2]}}<extra></extra>")
    reference = dict(color="black", dash="dash", width=2)
    fig.add_hline(y=test.reference_acc, line=reference)
    fig.add_scatter(x=[None], y=[None], mode="lines", line=reference,  # the line's legend entry
                    name=f"reference network (from scratch) {fmt(test.reference_acc)}")
    low = min([*test.transfer_acc, test.reference_acc])
    bottom = max(0.0, low - max(0.05, 0.25 * (1 - low)))
    step = next(s for s in (0.01, 0.02, 0.05, 0.1, 0.2) if (1 - bottom) / s <= 6)
    fig.update_xaxes(title=wrap("earlier task (its frozen masked features, a new head)", width=AXIS_CHARS),
                     categoryorder="array",
                     categoryarray=x)
    fig.update_yaxes(title=wrap(f"validation accuracy on {short(test.task)}", width=AXIS_CHARS),
                     range=[bottom, 1.05],  # room for the marks
                     tickvals=[round(1 - k * step, 2) for k in range(int((1 - bottom) / step) + 1)])
    fig.update_layout(barmode="overlay")
    return below_legend(titled(fig, f"CAT's transfer tests when {short(test.task)} arrived: similar = above the "
                                    "reference", height=460))


def transfer_summary(state: RunState) -> pd.DataFrame:
    """One row per CAT transfer test: the tasks called similar, the calls right of all
    (``judged_right``), the reference's accuracy and the best transfer accuracy, and the
    seconds of the transfer trainings (one per earlier task) and of the reference."""
    groups = true_groups(state.tasks)
    rows = []
    for t, test in sorted(state.transfer.items()):
        right = sum(judged_right(groups=groups, task=t, dissimilar=test.dissimilar).values())
        rows.append({"step": short(t), "called similar": ", ".join(short(j) for j in test.similar) or "none",
                     "calls right": f"{right} of {t}", "reference acc": fmt(test.reference_acc),
                     "best transfer acc": fmt(max(test.transfer_acc)),
                     "transfer s": fmt(test.seconds.get("transfer"), 2),
                     "reference s": fmt(test.seconds.get("reference"), 2)})
    return pd.DataFrame(rows, columns=["step", "called similar", "calls right", "reference acc", "best transfer acc",
                                       "transfer s", "reference s"])
