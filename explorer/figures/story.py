"""Story: the five steps that tell what a run shows, each a chart and at most two short
sentences from data (the body), with the rest of what the data says as details.

A run is told next to its *siblings*: the runs of the same sequence, seed and task count with
the other methods (HAT, PRM, PRM+, PRM(T), NCL, STL, joint, and CAT where one is listed), as
``prm.analysis.siblings`` chooses them. Every builder here is pure: run states, runs or
catalogue rows in, a plotly figure, a DataFrame or Markdown sentences out (names from run
files escaped with ``md``/``plain``), so each number can be checked in a test. Step 5 is in
:mod:`explorer.figures.consequence`, which seed is told and the spread over seeds in
:mod:`explorer.figures.seeds` (computed by ``prm.analysis``).
"""

from __future__ import annotations

import math
import textwrap
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from explorer.figures.common import (DISSIMILAR_COLOUR, FONT, RIGHT_COLOUR, SIMILAR_COLOUR, WRONG_COLOUR, empty,
                                     family_colour, fmt, mark, md, method_colour, plain, short, style)
from explorer.figures.masks import THRESHOLD, relaxed_units, unit_counts, unit_sentence
from prm import methods
from prm.analysis import BASELINE, SINGLE_TASK, UPPER_BOUND, Listed, families, judged_right, run_seconds, true_groups
from prm.compare import DETECTION_PHASES
from prm.run import Run, RunState

STEP_2 = (BASELINE, SINGLE_TASK, UPPER_BOUND)
"""Step 2's runs: HAT, whose protection it shows, and the accuracies just after learning it is
set against (STL: each task alone; joint: all tasks together)."""
ABLATION_SOURCES = methods.dtd_sources()
"""DTD sources whose protected set is a fixed rule, not DTD's call (PRM(S), PRM(D), PRM(T))."""


def label(method: str | None) -> str:
    entry = methods.find(method)
    return entry.label if entry is not None else str(method)


@dataclass(frozen=True, kw_only=True)
class Size:
    """How large a Story chart is drawn. On the page each chart keeps its own height and the
    app's type, and wraps its title to fit a column of ~420 px; in lecture mode (a projector,
    1024x768 and up) every chart takes one height that leaves room on the screen for the step's
    title, its two sentences and the buttons, in type half as large again."""

    scale: float = 1.0
    height: int | None = None  # None: the builder's own height, from what it draws
    title_chars: int = 46  # a title line longer than this is wrapped (plotly never wraps one)
    side_legend: bool = False  # legends right of the plot: a projector is wide but short

    def legend(self, below: dict) -> dict:
        """The legend's place: ``below`` the plot on the page, at the side in lecture mode."""
        return dict(orientation="v", x=1.02, xanchor="left", y=0.45, yanchor="top") if self.side_legend else below

    def font(self, base: int = FONT) -> int:
        return round(base * self.scale)

    def wrap(self, text: str, *, chars: int | None = None) -> str:
        """Plain text (a run's names made literal) cut into lines of at most ``chars``."""
        return "<br>".join(textwrap.wrap(plain(text), chars or self.title_chars, break_long_words=False,
                                         break_on_hyphens=False))


PAGE = Size()
LECTURE = Size(scale=1.5, height=500, title_chars=78, side_legend=True)
"""Lecture mode's charts: 500 px high, so at 1024x768 the step's title above and its sentences
and buttons below fit without scrolling (tests/test_lecture.py measures it in a browser)."""


TITLE_PAD = 12
"""Pixels between a Story chart's title and its plot."""


def title_margin(text: str, *, size: Size = PAGE) -> int:
    """The top margin a wrapped title of ``text`` needs (plotly's lines are 1.3 em apart), for a
    chart drawn inside a collapsed expander (step 5's stability chart): it cannot measure its
    text, so automargin pushes nothing and the title sat above the picture's edge. Charts in
    view keep automargin alone, which also lifts the title over ticks drawn on top."""
    return math.ceil((text.count("<br>") + 1) * 1.3 * size.font(FONT + 3)) + TITLE_PAD


def projector(fig: go.Figure, *, title: str, height: int, size: Size = PAGE) -> go.Figure:
    """The common look at ``size``: type scaled, the title larger, wrapped and pushing the top
    margin as far as its lines need, and every axis given the room its labels need."""
    style(fig, height=size.height or height)
    text = size.wrap(title)
    fig.update_layout(title=dict(text=text, x=0, xanchor="left", y=1, yanchor="bottom", yref="paper", pad_b=TITLE_PAD,
                                 automargin=True, font_size=size.font(FONT + 3)),
                      font_size=size.font(), legend=dict(font_size=size.font(), title_font_size=size.font()),
                      margin_t=10)
    axes = dict(automargin=True, tickfont_size=size.font(), title_font_size=size.font())  # over Streamlit's theme
    fig.update_xaxes(**axes)
    fig.update_yaxes(**axes)
    return fig


# ----------------------------------------------------------------------------- siblings

def missing_sentence(entry: Listed, absent: Sequence[str]) -> str:
    """'No HAT or STL run of <sequence> seed 4 (10 tasks) is listed.' (Markdown)."""
    names = [label(m) for m in absent]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
    return (f"No {md(listed)} run of {md(entry.sequence)} seed {entry.seed} ({entry.n_tasks} tasks) is listed; "
            "the steps that need one say so.")


# ----------------------------------------------------------------------------- step 1

def similar_groups(state: RunState) -> list[list[int]]:
    """The groups of truly similar tasks (two or more tasks each), in order of first task."""
    members: dict[int, list[int]] = {}
    for t, g in enumerate(true_groups(state.tasks)):
        members.setdefault(g, []).append(t)
    return [m for m in members.values() if len(m) > 1]


TILE_TEXT_UP_TO = 12
"""Tasks up to which each tile of step 1 says "T3 / group A": ~45 px a tile in a ~560 px column."""
TILE_LETTER_UP_TO = 24
"""Tasks up to which a tile still shows its group's letter alone (~23 px a tile); beyond, tiles
are too narrow for any text and the group is in the hover only."""


def tile_text(task: int, letter: str | None, *, n_tasks: int) -> str:
    """A tile's text, thinned by the number of tasks so neighbouring texts never overlap:
    "T3<br>group A" (or "alone"), then the letter only, then nothing (the hover says it all)."""
    if n_tasks <= TILE_TEXT_UP_TO:
        return f"{short(task)}<br>{'group ' + letter if letter else 'alone'}"
    return (letter or "") if n_tasks <= TILE_LETTER_UP_TO else ""


def sequence_figure(state: RunState, *, size: Size = PAGE) -> go.Figure:
    """One tile per task coloured by family; the tile's text says which true group it is in
    (:func:`tile_text`: less of it the more tasks)."""
    groups = true_groups(state.tasks)
    sizes = Counter(groups)
    letters = {g: chr(ord("A") + n % 26) for n, g in enumerate(g for g in dict.fromkeys(groups) if sizes[g] > 1)}
    fig = go.Figure()
    for fam, tasks in families(state.tasks).items():
        text = [tile_text(t, letters.get(groups[t]), n_tasks=state.n_tasks) for t in tasks]
        hover = [f"{short(t)} {plain(state.tasks[t]['name'])}<br>family {plain(fam)}<br>"
                 + ("truly similar to " + ", ".join(short(o) for o in range(state.n_tasks)
                                                    if groups[o] == groups[t] and o != t)
                    if groups[t] in letters else "similar to no other task") for t in tasks]
        fig.add_bar(x=[short(t) for t in tasks], y=[1] * len(tasks), name=f"family: {plain(fam)}",
                    marker_color=family_colour(fam), text=text, textposition="inside", insidetextanchor="middle",
                    textangle=0, textfont=dict(size=size.font()), hovertext=hover, hoverinfo="text")
    fig.update_xaxes(categoryorder="array", categoryarray=[short(t) for t in range(state.n_tasks)],
                     showticklabels=False)
    fig.update_yaxes(visible=False)
    # the legend sits at the picture's foot in a margin kept for it: one pushed by the legend
    # instead takes the room the wrapped title pushes for, and the title lands on the tiles
    fig.update_layout(bargap=0.05, showlegend=True, uniformtext=dict(mode="show", minsize=size.font(9)),
                      legend=dict(orientation="h", x=0, y=0, yanchor="bottom", yref="container", title_text="colour:"))
    lettered = "lettered by true group" if state.n_tasks <= TILE_LETTER_UP_TO else "true groups in the hover"
    projector(fig, title=f"The sequence in the order learnt: tasks coloured by family, {lettered}",
              height=280, size=size)
    return fig.update_layout(margin_b=size.font(44) * (1 + len(families(state.tasks)) // 4))


def sequence_sentences(state: RunState) -> tuple[str, str]:
    fams = families(state.tasks)
    first = (f"The sequence {md(state.sequence)} has {state.n_tasks} task{'s' if state.n_tasks != 1 else ''} "
             f"in {len(fams)} famil{'ies' if len(fams) != 1 else 'y'}: "
             + ", ".join(f"{md(f)} ({len(ts)})" for f, ts in fams.items()) + ".")
    groups = similar_groups(state)
    alone = state.n_tasks - sum(len(g) for g in groups)
    if not groups:
        return first, "No two tasks are truly similar."
    if alone == 0 and len(groups) == 1:  # listing every task would say less in more words
        return first, f"All {state.n_tasks} tasks are truly similar."
    return first, ("Truly similar: " + "; ".join(", ".join(short(t) for t in g) for g in groups)
                   + (f"; the other {alone} {'are' if alone != 1 else 'is'} alone." if alone else "."))


# ----------------------------------------------------------------------------- step 2

def protection_table(hat: RunState, *, layer: int, stl: RunState | None = None,
                     joint: RunState | None = None) -> pd.DataFrame:
    """Per task HAT learnt: its family, the share of ``layer``'s units HAT's accumulated mask
    held when it arrived (the capacity after the task before; 0 for the first), and its
    accuracy just after learning under HAT, STL and joint (NaN where a run lacks it)."""
    diag = {label(method): np.diag(s.accuracy_matrix("test")) if s is not None else None
            for method, s in zip(STEP_2, (hat, stl, joint))}
    rows = []
    for t in sorted(hat.task_ends):
        before = hat.task_ends.get(t - 1)
        share = 0.0 if t == 0 else (before.capacity[layer] if before is not None and layer < len(before.capacity)
                                    else np.nan)
        row = {"task": short(t), "family": hat.tasks[t]["family"], "protected on arrival": share}
        for name, d in diag.items():
            row[name] = float(d[t]) if d is not None and t < len(d) else np.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=["task", "family", "protected on arrival", *diag])


_PATTERNS = ("", "/", ".", "x", "\\", "+", "-", "|")
"""Bar patterns, one per family in order of appearance, for charts where colour means method."""


def protection_figure(table: pd.DataFrame, *, layer: int, size: Size = PAGE) -> go.Figure:
    if table.empty:
        return empty("HAT has learnt no task yet")
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.1, row_heights=[0.4, 0.6])
    for n, (fam, part) in enumerate(table.groupby("family", sort=False)):
        # grey bars told apart by pattern: colour in this chart means method (the lines)
        fig.add_bar(x=part["task"], y=part["protected on arrival"], name=f"family: {plain(fam)}",
                    marker=dict(color="#BDBDBD", pattern_shape=_PATTERNS[n % len(_PATTERNS)],
                                pattern_fgcolor="#636363"),
                    legendgroup="family", legendgrouptitle_text="bars (pattern = family)",
                    hovertemplate="%{x}: %{y:.0%} of units protected on arrival<extra></extra>", row=1, col=1)
    for method in STEP_2:
        name = label(method)
        if table[name].notna().any():
            fig.add_scatter(x=table["task"], y=table[name], mode="lines+markers", name=name,
                            line=dict(color=method_colour(method)), marker=dict(size=9), legendgroup="method",
                            legendgrouptitle_text="lines: method",
                            hovertemplate="%{x}: " + name + " %{y:.3f}<extra></extra>", row=2, col=1)
    fig.update_yaxes(title_text=f"layer {layer}<br>protected", tickformat=".0%", range=[0, 1.02], row=1, col=1)
    fig.update_yaxes(title_text="accuracy just<br>after learning", row=2, col=1)
    fig.update_xaxes(categoryorder="array", categoryarray=list(table["task"]))
    fig.update_xaxes(title_text="task", row=2, col=1)
    fig.update_layout(legend=size.legend(dict(orientation="h", x=0, y=-0.2, yanchor="top")))
    return projector(fig, title="What HAT protects when each task arrives, and the task's accuracy", height=500,
                     size=size)


def protection_sentences(table: pd.DataFrame, *, layer: int, state: RunState) -> tuple[str, str]:
    """The body of step 2: the share HAT held when the last task arrived, and what the truly
    similar tasks (all tasks where none is) scored just after learning under HAT and STL."""
    shares = table["protected on arrival"].dropna()
    if table.empty or shares.empty:
        return "HAT has learnt no task with a recorded capacity.", ""
    first = f"When the last task arrived, HAT protected {fmt(shares.iloc[-1] * 100, 0)}% of layer {layer}'s units."
    similar = [t for g in similar_groups(state) for t in g if t < len(table)]
    part = table.iloc[similar] if similar else table
    who = "the similar tasks" if similar else "the tasks"
    hat, stl = part["HAT"].mean(), part["STL"].mean()
    if np.isnan(stl):
        return first, f"Just after learning, {who} scored {fmt(hat)} under HAT; no STL run is listed to compare."
    return first, (f"Just after learning, {who} scored {fmt(hat)} under HAT against {fmt(stl)} when learnt "
                   f"alone (STL): {fmt(hat - stl, signed=True)}.")


def protection_details(table: pd.DataFrame, *, state: RunState) -> str:
    """Step 2's details: the mean share on arrival and each family's accuracy just after learning."""
    if table.empty:
        return ""
    similar = {state.tasks[g[0]]["family"] for g in similar_groups(state)}
    hat, stl, joint = (label(m) for m in STEP_2)
    parts = []
    for fam, part in sorted(table.groupby("family", sort=False), key=lambda kv: kv[0] not in similar):
        text = f"{md(fam)}{' (similar tasks)' if fam in similar else ''}: {hat} {fmt(part[hat].mean())}"
        if part[stl].notna().any():
            text += (f" against {stl} {fmt(part[stl].mean())} "
                     f"({fmt(part[hat].mean() - part[stl].mean(), signed=True)})")
        if part[joint].notna().any():
            text += f", {joint} {fmt(part[joint].mean())}"
        parts.append(text)
    return (f"Mean share protected on arrival: {fmt(table['protected on arrival'].mean() * 100, 0)}%. "
            "Mean accuracy just after learning, by family: " + "; ".join(parts) + ".")


# ----------------------------------------------------------------------------- step 3

def calls_table(state: RunState, *, layer: int) -> pd.DataFrame:
    """One row per similarity call on ``layer`` (``RunState.calls``): the new task (step), the
    earlier task, whether it was called similar, and whether that was right (``judged_right``).
    DTD's call is the set the run used (X-means, or the configured linkage or cut rule); in the
    ablations, whose set comes from a fixed rule (all similar, all dissimilar, the truth), it is
    what X-means said. CAT's is its transfer tests' (one set for every layer)."""
    groups = true_groups(state.tasks)
    if not 0 <= layer < len(state.config.get("model", {}).get("hidden", ())):
        return pd.DataFrame(columns=["step", "earlier", "family", "similar", "right"])
    rows = []
    for t, (source, dissimilar) in state.calls(layer).items():
        if source in ABLATION_SOURCES:
            dissimilar = state.dtd[t].layers[layer]["dissimilar_xmeans"]
        for i, right in judged_right(groups=groups, task=t, dissimilar=dissimilar).items():
            rows.append({"step": t, "earlier": i, "family": state.tasks[t]["family"],
                         "similar": i not in set(dissimilar), "right": right})
    return pd.DataFrame(rows, columns=["step", "earlier", "family", "similar", "right"])


MARKS_PX = 400
"""Width of step 3's grid in the narrowest column a page gives it (a 1024 px window): the ✓ and ✗
marks are sized to fit a column of it, so 49 columns of marks do not overlap."""


def calls_figure(table: pd.DataFrame, *, n_tasks: int, layer: int, method: str, size: Size = PAGE) -> go.Figure:
    """The grid of :func:`calls_table`: new task by earlier task, coloured by the call, marked
    right or wrong; titled by who called (DTD of a PRM-family run, or CAT's transfer tests)."""
    cat = (entry := methods.find(method)) is not None and entry.transfer_tests
    if table.empty:
        return empty("no similarity call recorded for this layer")
    cells = n_tasks - 1
    z = np.full((cells, cells), np.nan)
    mark_size = min(size.font(FONT + 5), (size.height or 34 * cells + 200) // (cells + 6),  # within its row
                    round(MARKS_PX * size.scale) // cells)  # and its column
    for row in table.itertuples():
        z[row.step - 1, row.earlier] = 1.0 if row.similar else 0.0
    steps = [short(t) for t in range(1, n_tasks)]
    earlier = [short(t) for t in range(cells)]
    fig = go.Figure(go.Heatmap(z=z, x=earlier, y=steps, zmin=0, zmax=1, xgap=2, ygap=2, hoverinfo="skip",
                               colorscale=[[0, DISSIMILAR_COLOUR], [0.5, DISSIMILAR_COLOUR],
                                           [0.5, SIMILAR_COLOUR], [1, SIMILAR_COLOUR]],
                               colorbar=dict(tickvals=[0.25, 0.75], ticktext=["called dissimilar", "called similar"],
                                             len=0.5, y=0.75, thickness=14)))
    for right, colour in ((True, RIGHT_COLOUR), (False, WRONG_COLOUR)):
        part = table[table["right"] == right]
        fig.add_scatter(x=[short(i) for i in part["earlier"]], y=[short(t) for t in part["step"]], mode="text",
                        text=[mark(right)] * len(part), textfont=dict(size=mark_size, color=colour),
                        name=f"{mark(right)} {'right' if right else 'wrong'}",
                        hovertemplate="when %{y} arrived, %{x}: " + ("right" if right else "wrong") + "<extra></extra>")
    fig.update_yaxes(autorange="reversed", title="new task (transfer tests)" if cat else "new task (DTD step)",
                     categoryorder="array", categoryarray=steps)
    fig.update_xaxes(title="earlier task", categoryorder="array", categoryarray=earlier)
    fig.update_layout(legend=size.legend(dict(orientation="h", y=-0.18, x=0)))
    title = (f"{label(method)}'s transfer-test calls (every layer): each earlier task, right or wrong" if cat else
             f"DTD's calls of {label(method)}, layer {layer}: each earlier task, right or wrong")
    return projector(fig, title=title, height=max(360, 140 + 34 * cells), size=size)


FEATURES = {"raw": "raw", "binary": "binarised", "standardised": "standardised", "unit": "unit-length"}
FIXED_RULES = {"all-similar": "calling every earlier task similar", "all-dissimilar": "calling every earlier task "
               "dissimilar", "true": "the truth"}


def decider(state: RunState) -> str:
    """Who made the calls step 3 judges, naming the rule from the run's own configuration:
    X-means (the paper's PRM), the linkage or cut rule and its threshold (PRM+), CAT's transfer
    tests, or, in an ablation, the X-means calls its fixed rule overrode (Markdown)."""
    method = state.config.get("method")
    entry = methods.find(method)
    if entry is not None and entry.transfer_tests:
        return "CAT decided by transfer tests"
    if entry is not None and entry.hooks.source in FIXED_RULES:
        return f"{md(label(method))} protects by {FIXED_RULES[entry.hooks.source]}; judged here is its X-means"
    prm = state.config.get("prm", {})
    rule, features = prm.get("clustering", "xmeans"), FEATURES.get(prm.get("features", "raw"), "raw")
    how = ("X-means on the task embeddings" if rule == "xmeans" else
           f"average linkage on the cosine distance of {features} embeddings, cut at {prm.get('threshold')}"
           if rule == "linkage" else f"a cut at cosine distance {prm.get('threshold')} of {features} embeddings")
    return f"{md(label(method))}'s DTD decided by {how}"


def calls_sentences(table: pd.DataFrame, *, layer: int, who: str, cat: bool = False) -> tuple[str, str]:
    """Step 3's body: who decided by which rule (``who``, :func:`decider`) and how many calls
    were right; then what the wrong ones did. ``cat``: CAT's calls, one for every layer."""
    where = "every layer" if cat else f"layer {layer}"
    if table.empty:
        return f"{who}; no call was recorded for {where}.", ""
    n, right = len(table), int(table["right"].sum())
    first = f"{who}: on {where}, {right} of {n} calls were right ({fmt(100 * right / n, 0)}%)."
    if right == n:
        return first, ""
    false_similar = int((table["similar"] & ~table["right"]).sum())
    return first, (f"Of the {n - right} wrong, {false_similar} called a dissimilar task similar and "
                   f"{n - right - false_similar} missed a similar one.")


def calls_details(table: pd.DataFrame) -> str:
    """Step 3's details: right calls by the family of the new task."""
    per = [f"{md(fam)} tasks {int(part['right'].sum())} of {len(part)}"
           for fam, part in table.groupby("family", sort=False)]
    return "Right calls by the family of the new task: " + "; ".join(per) + "." if per else ""


def calls_side_by_side(states: Mapping[str, RunState], *, layer: int) -> pd.DataFrame:
    """One row per new task: the earlier tasks truly similar to it, and per method (a PRM-family
    run and CAT, say) how many of its calls were right and which tasks it called similar, each
    marked ✓/✗ (a truly similar task it missed is the one in "truly similar" it does not list)."""
    tables = {method: calls_table(state, layer=layer) for method, state in states.items()}
    steps = sorted({int(t) for table in tables.values() for t in table["step"]})
    tasks = next(iter(states.values())).tasks if states else ()
    groups = true_groups(tasks)
    rows = []
    for t in steps:
        row = {"new task": short(t), "truly similar": ", ".join(short(i) for i in range(t) if groups[i] == groups[t])
               or "none"}
        for method, table in tables.items():
            part = table[table["step"] == t]
            called = [f"{short(int(r.earlier))} {mark(bool(r.right))}" for r in part.itertuples() if r.similar]
            row[label(method)] = "not reached" if part.empty else (
                f"{int(part['right'].sum())}/{len(part)} right · similar: {', '.join(called) or '∅'}")
        rows.append(row)
    return pd.DataFrame(rows, columns=["new task", "truly similar", *(label(m) for m in states)])


def calls_right_sentence(states: Mapping[str, RunState], *, layer: int) -> str:
    """'Calls right: PRM+ 45 of 45 (100%), CAT 20 of 45 (44%).' and, per method, the seconds its
    similarity detection took (:data:`DETECTION_PHASES`) out of its CT (Markdown)."""
    scores, times = [], []
    for method, state in states.items():
        table = calls_table(state, layer=layer)
        n, right = len(table), int(table["right"].sum())
        scores.append(f"{md(label(method))} {right} of {n}" + (f" ({fmt(100 * right / n, 0)}%)" if n else ""))
        seconds = state.task_seconds()
        spent = float(sum(seconds[p].sum() for p in DETECTION_PHASES if p in seconds))
        ct = run_seconds(state)
        times.append(f"{md(label(method))} {fmt(spent, 1)} s of its CT {fmt(ct, 1)} s")
    return (f"Calls right: {', '.join(scores)}. Time spent deciding similarity (DTD, or CAT's transfer and reference "
            f"trainings): {'; '.join(times)}.")


# ----------------------------------------------------------------------------- step 4

def relaxed_counts(run: Run, *, layer: int) -> dict[int, int]:
    """Relaxed units of ``layer`` per learnt task, free or partially (as the Masks view counts
    them): the units each task could change that HAT would have frozen."""
    out = {}
    for t in range(1, run.state.tasks_done):
        parts = relaxed_units(run, t, layer)
        if parts is not None:
            out[t] = int(parts["relaxed"].sum())
    return out


def relaxed_choice(counts: Mapping[int, int], task: int) -> tuple[int | None, str]:
    """The task step 4 shows and why: the sidebar task if it has relaxed units, else the
    task with the most (the earliest among equals); None when no task has any."""
    if counts.get(task, 0) > 0:
        return task, f"{short(task)} is the task picked in the sidebar"
    best = max(counts, key=lambda t: (counts[t], -t), default=None)
    if best is None or counts[best] == 0:
        return None, "no task of this run has a relaxed unit"
    why = "the first task has nothing earlier to relax" if task == 0 else f"{short(task)}, the sidebar task, has none"
    return best, f"{why}, so this shows {short(best)}, the task with the most units relaxed ({counts[best]})"


def relaxed_figure(run: Run, *, task: int, layer: int, size: Size = PAGE) -> go.Figure:
    """Per unit of ``layer`` used by an earlier task: its protection under HAT (the accumulated
    mask) and under this run while ``task`` was learnt; free units first, then partially
    relaxed ones, each group shaded and counted apart."""
    parts = relaxed_units(run, task, layer)
    if parts is None:
        return empty("no masks recorded for this task")
    used = np.flatnonzero(parts["accumulated"] > THRESHOLD)
    order = used[np.lexsort((parts["protected"][used], -parts["partial"][used], -parts["free"][used]))]
    x = np.arange(len(order))
    counts = unit_counts(parts)
    method = run.meta["config"]["method"]
    fig = go.Figure()
    fig.add_scatter(x=x, y=parts["accumulated"][order], mode="lines", name="protected under HAT",
                    line=dict(color=method_colour(BASELINE), width=3), customdata=order,
                    hovertemplate="unit %{customdata}: HAT %{y:.2f}<extra></extra>")
    fig.add_scatter(x=x, y=parts["protected"][order], mode="markers", name=f"protected under {label(method)}",
                    marker=dict(color=method_colour(method), size=6), customdata=order,
                    hovertemplate="unit %{customdata}: this run %{y:.2f}<extra></extra>")
    start = 0
    for group, text, shade in (("free", "free", 0.2), ("partial", "partially relaxed", 0.1)):
        if counts[group]:
            fig.add_vrect(x0=start - 0.5, x1=start + counts[group] - 0.5, fillcolor="#999", opacity=shade,
                          line_width=0, annotation_text=f"{counts[group]} {text}", annotation_position="inside top left",
                          annotation_font_size=size.font())
        start += counts[group]
    fig.update_xaxes(title=size.wrap(f"units of layer {layer} used by an earlier task ({len(order)}): free, then "
                                     "partially relaxed, then protected", chars=56))
    fig.update_yaxes(title="protection (1 = frozen)", range=[-0.05, 1.12])
    fig.update_layout(legend=size.legend(dict(orientation="h", y=-0.3, x=0)))
    return projector(fig, title=f"Units protected while {short(task)} was learnt: HAT vs {label(method)}", height=380,
                     size=size)


def relaxed_sentences(run: Run, *, task: int, layer: int) -> tuple[str, str]:
    """Step 4's body: the used units in three groups (protected, partially relaxed, free:
    :func:`explorer.figures.masks.unit_sentence`), and the earlier tasks they belong to."""
    method = run.meta["config"]["method"]
    first = unit_sentence(relaxed_units(run, task, layer), task, layer=layer, who=md(label(method)))
    similar, _ = _split(run, task, layer)
    if similar is None:
        return first, "No DTD decision is recorded for this task."
    return first, f"They belong to {', '.join(similar) or 'no task'}, the tasks called similar."


def relaxed_details(run: Run, *, task: int, layer: int, why: str) -> str:
    """Step 4's details: why this task is shown, and which earlier tasks stayed protected."""
    _, kept = _split(run, task, layer)
    return f"{why[0].upper()}{why[1:]}." + (f" The units of {', '.join(kept) or 'no task'} (called dissimilar) "
                                           "stayed protected." if kept is not None else "")


def _split(run: Run, task: int, layer: int) -> tuple[list[str] | None, list[str] | None]:
    """The earlier tasks DTD called similar and dissimilar to ``task`` on ``layer`` (None, None
    without a recorded decision)."""
    record = run.state.dtd.get(task)
    if record is None or layer >= len(record.layers):
        return None, None
    dissimilar = set(record.layers[layer]["dissimilar"])
    return [short(i) for i in range(task) if i not in dissimilar], [short(i) for i in sorted(dissimilar)]
