"""The cosine rules that decide a PRM+ run (``PRMConfig.clustering`` = ``linkage`` or ``cut``), at one
DTD step, recomputed from what the run recorded: the cosine distances among the tasks, the
average-linkage tree cut at the threshold, each earlier task's distance to the new one, and the
rule's calls beside what X-means alone said (recorded with every step, though not used).

X-means' tree and BIC say nothing about a run that decided by a cosine rule, so the Clustering
view shows these first; the recomputation is checked against the recorded dissimilar set, so a
figure never explains a decision the run did not make.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from scipy.cluster.hierarchy import dendrogram

from explorer.figures.clustering import AXIS_CHARS, SMALL_FONT, below_legend, calls, count_line, titled
from explorer.figures.common import (DISSIMILAR_COLOUR, NARROW, RIGHT_COLOUR, SIMILAR_COLOUR, WRONG_COLOUR, fmt, mark,
                                     plain_names, short, task_ticks, wrap)
from prm.analysis import judged_right, true_groups
from prm.run import Run, RunState
from prm.similarity import RULES, average_linkage, cosine_distances, dissimilar_by_rule, features, linkage_merges

NEW_TASK_COLOUR = "black"
THRESHOLD_LINE = dict(color="black", dash="dash", width=2)


@dataclass(frozen=True, kw_only=True)
class RuleStep:
    """What a cosine rule saw and decided when ``task`` arrived (rows 0..task), for one layer."""

    rule: str  # linkage | cut
    threshold: float
    features: str  # prm.features: what the distances are measured on
    together: bool  # prm.layers = together: one decision from every layer's units side by side
    task: int
    distance: np.ndarray  # cosine distances among tasks 0..task
    labels: np.ndarray  # average-linkage clusters at the threshold (drawn for cut runs too)
    dissimilar: list[int]  # the rule recomputed from the recorded embeddings
    recorded: list[int]  # the dissimilar set the run used
    xmeans: list[int]  # what X-means alone said in this layer (recorded, not used)

    @property
    def reproduced(self) -> bool:
        """True when recomputing the rule gives the set the run recorded (it always should)."""
        return sorted(self.dissimilar) == sorted(self.recorded)


def rule_step(run: Run, step: int, layer: int) -> RuleStep | None:
    """The rule's view of ``step`` exactly as the engine computed it: the same features of the
    recorded DTD embeddings, of this layer or (``prm.layers = together``) of every layer side by
    side in layer order. None when a cosine rule did not decide this step or arrays are missing."""
    record = run.state.dtd.get(step)
    if record is None or record.source not in RULES:
        return None
    prm = run.state.config.get("prm", {})
    together = prm.get("layers") == "together"
    tables = [run.dtd_embeddings(step, n) for n in (range(run.n_layers) if together else [layer])]
    if any(t is None for t in tables):
        return None
    points = features(np.hstack([np.asarray(t, dtype=np.float64) for t in tables]), prm.get("features", "raw"))
    threshold = float(prm["threshold"])
    distance = cosine_distances(points)
    entry = record.layers[layer]
    return RuleStep(rule=record.source, threshold=threshold, features=prm.get("features", "raw"), together=together,
                    task=step, distance=distance, labels=average_linkage(distance, threshold),
                    dissimilar=dissimilar_by_rule(points, step, rule=record.source, threshold=threshold),
                    recorded=list(entry["dissimilar"]), xmeans=list(entry["dissimilar_xmeans"]))


def tree(distance: np.ndarray) -> np.ndarray:
    """scipy's linkage matrix of the engine's own merges (``prm.similarity.linkage_merges``, run
    to one cluster), so the drawn tree cut at the threshold is the rule's partition, ties and all:
    rows (id a, id b, height, size), a merged cluster taking id n + its row."""
    n = len(distance)
    ids, sizes, rows = list(range(n)), [1] * n, []
    for a, b, height in linkage_merges(distance):
        size = sizes[a] + sizes.pop(b)
        rows.append([ids[a], ids.pop(b), height, size])
        ids[a], sizes[a] = n + len(rows) - 1, size
    return np.array(rows, dtype=float).reshape(-1, 4)


CALL_LEGEND = (("called similar (relaxed)", SIMILAR_COLOUR), ("called dissimilar (protected)", DISSIMILAR_COLOUR),
               ("new task", NEW_TASK_COLOUR))


def _legend(fig: go.Figure, *, threshold: float) -> None:
    """Legend entries for the call colours, the new task and the threshold line."""
    for name, colour in CALL_LEGEND:
        fig.add_scatter(x=[None], y=[None], mode="markers", name=name,
                        marker=dict(symbol="square", size=12, color=colour, line=dict(color="#555", width=1)))
    fig.add_scatter(x=[None], y=[None], mode="lines", line=THRESHOLD_LINE, name=f"threshold {fmt(threshold, 2)}")


def _call_colour(step: RuleStep, i: int) -> str:
    return NEW_TASK_COLOUR if i == step.task else DISSIMILAR_COLOUR if i in step.recorded else SIMILAR_COLOUR


def _links(fig: go.Figure, shape: dict, threshold: float) -> None:
    """The tree's elbows, and a dot on each merge whose hover gives its height against the threshold."""
    xs, ys = [], []
    for ic, dc in zip(shape["icoord"], shape["dcoord"]):
        xs += [*ic, None]
        ys += [*dc, None]
    fig.add_scatter(x=xs, y=ys, mode="lines", line=dict(color="#555"), hoverinfo="skip", showlegend=False)
    heights = [dc[1] for dc in shape["dcoord"]]
    fig.add_scatter(x=[(ic[1] + ic[2]) / 2 for ic in shape["icoord"]], y=heights, mode="markers",
                    marker=dict(size=7, color="#555"), showlegend=False, hoverinfo="text",
                    hovertext=[f"merged at {fmt(h, 4)}: " + ("below the threshold, one cluster" if h < threshold
                                                            else "not below the threshold, apart") for h in heights])


MARKS_UP_TO = 18
"""Leaves of the tree that each get a ✓/✗ above them: more, and at the narrowest chart
(``common.NARROW``) the marks would touch; the leaves' outlines then carry right and wrong."""


TREE_PX = NARROW - 130
"""The tree's plot width in the narrowest chart, less its axis title, ticks and margins (measured:
295 px of a 402 px chart, the Clustering view's column at a 1280 px window)."""
TICK_CHAR_PX = 0.6 * SMALL_FONT
"""A leaf name's widest character ("(new)" is wider than digits) at the tick font, in px."""


def leaf_ticks(n: int, new: int) -> list[int]:
    """The leaf positions (0..n-1, left to right) that get a name under them: those
    ``common.task_ticks`` labels on an axis of ``n``, with the new task's always and none so close
    to it that the two would touch: "T50 (new)" is three times as wide as "T15", so the leaves
    kept off it are counted in px at :data:`TREE_PX`, not in ticks. Every leaf's hover names it."""
    shown = task_ticks(n)
    gap = shown[2] - shown[1] if len(shown) > 2 and len(shown) < n else 1
    reach = ((len(f"T{n} (new)") + len(f"T{n}")) / 2 * TICK_CHAR_PX + 6) / (TREE_PX / n) if gap > 1 else 1
    return sorted({new, *(p for p in shown if p == new or abs(p - new) >= max(gap, reach))})


def dendrogram_figure(step: RuleStep, tasks) -> go.Figure:
    """Average linkage on the cosine distance, leaves at the bottom, each merge drawn at the
    average distance between the two clusters it joins; the dashed line is the threshold: the
    merges below it are the linkage rule's clusters. Each leaf is coloured by the call the run
    used and judged against the truth (a ✓/✗ above it, or, past :data:`MARKS_UP_TO` leaves, a
    green/red outline); the new task is black. Leaves are named at :func:`leaf_ticks`."""
    shape = dendrogram(tree(step.distance), no_plot=True)
    right = judged_right(groups=true_groups(tasks), task=step.task, dissimilar=step.recorded)
    names = plain_names(tasks, step.task + 1)
    fig = go.Figure()
    _links(fig, shape, step.threshold)
    leaves = [int(i) for i in shape["leaves"]]
    x = [5 + 10 * n for n in range(len(leaves))]  # where scipy puts the leaves
    hover = [f"{names[i]}<br>linkage cluster c{step.labels[i]}" + ("" if i == step.task else (
        f"<br>cosine distance to {short(step.task)}: {fmt(step.distance[step.task, i], 3)}<br>call "
        + ("right " if right[i] else "wrong ") + mark(right[i]))) for i in leaves]
    marks = len(leaves) <= MARKS_UP_TO
    judged = [RIGHT_COLOUR if right.get(i) else WRONG_COLOUR for i in leaves]
    fig.add_scatter(x=x, y=[0] * len(leaves), mode="markers+text", showlegend=False, cliponaxis=False,
                    marker=dict(size=min(16, max(6, (NARROW - 80) / len(leaves))),
                                color=[_call_colour(step, i) for i in leaves],
                                line=dict(color="#555" if marks else [c if i != step.task else "#555" for c, i in
                                                                      zip(judged, leaves)], width=1 if marks else 2)),
                    text=[mark(right.get(i)) if marks else "" for i in leaves], textposition="top center",
                    textfont=dict(size=SMALL_FONT + 4, color=judged), hoverinfo="text", hovertext=hover)
    fig.add_hline(y=step.threshold, line=THRESHOLD_LINE)
    _legend(fig, threshold=step.threshold)
    top = max([step.threshold, *(dc[1] for dc in shape["dcoord"])])
    named = leaf_ticks(len(leaves), leaves.index(step.task))
    fig.update_xaxes(tickvals=[x[p] for p in named], range=[0, 10 * len(leaves)], tickfont=dict(size=SMALL_FONT),
                     ticktext=[short(leaves[p]) + (" (new)" if leaves[p] == step.task else "") for p in named])
    fig.update_yaxes(title=wrap("cosine distance (average between clusters)", width=AXIS_CHARS),
                     range=[-0.02, top * 1.12])
    return below_legend(titled(fig, f"Average-linkage tree, cut at {fmt(step.threshold, 2)} (dashed)", height=480))


def distance_figure(step: RuleStep, tasks) -> go.Figure:
    """Each earlier task's cosine distance to the new task, a bar coloured by the call the run
    used and marked ✓/✗, with the threshold line. The cut rule is exactly this chart (at or above
    the line = dissimilar); the linkage rule compares cluster averages, so a bar above the line can
    still be similar when the task joined the new task's cluster through its neighbours (the tree)."""
    right = judged_right(groups=true_groups(tasks), task=step.task, dissimilar=step.recorded)
    names = plain_names(tasks, step.task)
    fig = go.Figure()
    for called, colour in (("similar", SIMILAR_COLOUR), ("dissimilar", DISSIMILAR_COLOUR)):
        js = [j for j in range(step.task) if (j in step.recorded) == (called == "dissimilar")]
        fig.add_bar(x=[short(j) for j in js], y=[step.distance[step.task, j] for j in js], name=f"called {called}",
                    marker=dict(color=colour, line=dict(color="#555", width=1)),
                    text=[mark(right[j]) for j in js], textposition="outside", cliponaxis=False,
                    textfont=dict(size=SMALL_FONT + 4, color=[RIGHT_COLOUR if right[j] else WRONG_COLOUR for j in js]),
                    customdata=[[names[j], "right" if right[j] else "wrong"] for j in js],
                    hovertemplate="%{customdata[0]}<br>cosine distance %{y:.3f}<br>called " + called
                                  + ": %{customdata[1]}<extra></extra>")
    fig.add_hline(y=step.threshold, line=THRESHOLD_LINE)
    fig.add_scatter(x=[None], y=[None], mode="lines", line=THRESHOLD_LINE, name=f"threshold {fmt(step.threshold, 2)}")
    top = max([step.threshold, *step.distance[step.task, : step.task]])
    fig.update_xaxes(title="earlier task", categoryorder="array", categoryarray=[short(j) for j in range(step.task)])
    fig.update_yaxes(title=f"cosine distance to {short(step.task)}", range=[0, top * 1.18])
    fig.update_layout(barmode="overlay")
    return below_legend(titled(fig, f"Cosine distance of earlier tasks to {short(step.task)}", height=460))


def two_calls(tasks, *, task: int, xmeans, rule, name: str) -> pd.DataFrame:
    """Per earlier task, the truth, what X-means alone called and what the rule ``name`` called,
    each marked ✓/✗ (``prm.analysis.judged_right`` through ``clustering.calls``)."""
    a, b = calls(tasks, task=task, dissimilar=xmeans), calls(tasks, task=task, dissimilar=rule)
    return pd.DataFrame({"task": a["task"], "truly": a["truly"], "X-means alone": a["called"],
                         "X-means alone ✓✗": a[""], name: b["called"], f"{name} ✓✗": b[""]})


def two_counts(frame: pd.DataFrame) -> dict[str, str]:
    """"n of m calls right" for each decision of a :func:`two_calls` table, keyed by its column."""
    out = {}
    for column in (c for c in frame.columns if c.endswith(" ✓✗")):
        out[column[: -len(" ✓✗")]] = count_line(pd.DataFrame({"": frame[column]}))
    return out


def steps_right(state: RunState, layer: int) -> pd.DataFrame:
    """Every DTD step of a rule run: how many earlier tasks the rule (the set used) and X-means
    alone (recorded beside it) called right, one row per step of ``layer``."""
    groups = true_groups(state.tasks)
    rows = []
    for t, record in sorted(state.dtd.items()):
        entry = record.layers[layer]
        right = {what: sum(judged_right(groups=groups, task=t, dissimilar=entry[key]).values())
                 for what, key in (("rule", "dissimilar"), ("X-means alone", "dissimilar_xmeans"))}
        rows.append({"step": short(t), "rule": record.source, "rule right": f"{right['rule']} of {t}",
                     "X-means alone right": f"{right['X-means alone']} of {t}"})
    return pd.DataFrame(rows, columns=["step", "rule", "rule right", "X-means alone right"])
