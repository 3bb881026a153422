"""Story: the five steps that tell what a run shows, each a chart and two sentences from data.

A run is told next to its *siblings*: the runs of the same sequence, seed and task count with
the other methods (HAT, PRM, PRM+, PRM(T), NCL, STL, joint, and CAT where one is listed). Every
builder here is pure: run states, runs or catalogue rows in, a plotly figure, a DataFrame or
Markdown sentences out (names from run files escaped with ``md``/``plain``), so each number can
be checked in a test.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from explorer.catalog import RunEntry
from explorer.figures.accuracy import difference
from explorer.figures.common import (DETECTION_PHASES, DISSIMILAR_COLOUR, DIVERGING, FONT, RIGHT_COLOUR,
                                     SIMILAR_COLOUR, WRONG_COLOUR, empty, family_colour, fmt, mark, md, method_colour,
                                     plain, short, style)
from explorer.figures.masks import THRESHOLD, relaxed_units
from explorer.figures.overview import run_metrics
from prm import metrics
from prm.methods import STRATEGIES, judged_right, true_groups
from prm.runs import Run, RunState

SIBLING_METHODS = ("hat", "prm", "prm+", "prm-t", "ncl", "stl", "joint")
"""The methods a run is told next to (the ones the story's steps draw on)."""
DTD_PREFERENCE = ("prm+", "prm", "prm-t", "prm-s", "prm-d")
"""Which sibling's DTD decisions stand in for a run without DTD: the paper's method and its
variant first, the ablations (whose sets come from a fixed rule) last."""
LABELS = {"prm": "PRM", "prm+": "PRM+", "prm-s": "PRM(S)", "prm-d": "PRM(D)", "prm-t": "PRM(T)", "hat": "HAT",
          "cat": "CAT", "ncl": "NCL", "ewc": "EWC", "stl": "STL", "joint": "joint"}
CALL_METHODS = ("cat",)
"""Methods without DTD whose own similarity calls step 3 sets beside DTD's (CAT's transfer
tests): loaded when listed, never reported missing (CAT is slow to train, and the story is
complete without it)."""
ABLATION_SOURCES = tuple(s.similarity for s in STRATEGIES.values() if s.similarity not in (None, "xmeans"))
"""DTD sources whose protected set is a fixed rule, not DTD's call (PRM(S), PRM(D), PRM(T))."""


def label(method: str | None) -> str:
    return LABELS.get(method or "", str(method))


def _projector(fig: go.Figure, *, title: str, height: int) -> go.Figure:
    """The common look with a larger title and room for it on one line."""
    style(fig, title=title, height=height)
    fig.update_layout(title_font_size=FONT + 3, margin_t=60)
    return fig


# ----------------------------------------------------------------------------- siblings

def siblings(entry: RunEntry, entries: Sequence[RunEntry]) -> dict[str, RunEntry]:
    """Method -> the listed run of the same sequence, seed and task count (the open run for
    its own method), never a what-if run (its decision was forced). Preferred: the same
    set-up as the open run (network, optimiser, HAT's settings: ``RunEntry.setup``), then a
    finished run; among equals the first listed (the user's runs come before the samples)."""
    out: dict[str, RunEntry] = {}

    def rank(e: RunEntry) -> tuple[bool, bool]:
        return e.setup == entry.setup, e.status == "finished"

    for e in entries:
        if (e.status == "unreadable" or e.parent is not None or e.sequence != entry.sequence
                or e.seed != entry.seed or e.n_tasks != entry.n_tasks
                or e.method not in SIBLING_METHODS + DTD_PREFERENCE + CALL_METHODS):
            continue
        held = out.get(e.method)
        if held is None or rank(e) > rank(held):
            out[e.method] = e
    out[entry.method] = entry
    order = [entry.method, *SIBLING_METHODS, *DTD_PREFERENCE, *CALL_METHODS]
    return dict(sorted(out.items(), key=lambda kv: order.index(kv[0])))


def missing(entry: RunEntry, found: Mapping[str, RunEntry]) -> list[str]:
    """The sibling methods with no listed run, in the story's order."""
    return [m for m in SIBLING_METHODS if m not in found and m != entry.method]


def missing_sentence(entry: RunEntry, methods: Sequence[str]) -> str:
    """'No HAT or STL run of <sequence> seed 4 (10 tasks) is listed.' (Markdown)."""
    names = [label(m) for m in methods]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
    return (f"No {md(listed)} run of {md(entry.sequence)} seed {entry.seed} ({entry.n_tasks} tasks) is listed; "
            "the steps that need one say so.")


TOLD_WITH = ("hat", "stl", "ncl", "joint")
"""The siblings every story loads besides the open run and its DTD run: the references the
steps measure against. Other listed siblings (PRM beside PRM+, say) are named, not loaded,
which keeps the first render under a second."""


def told_with(method: str, found: Mapping[str, object]) -> list[str]:
    """The methods the story loads, in the order they are shown: the open run's, its DTD
    stand-in (:func:`dtd_sibling`), CAT (whose calls step 3 compares) and the reference
    siblings that are listed."""
    dtd = dtd_sibling(method, found)
    wanted = [method, *([dtd] if dtd else []), *CALL_METHODS, *TOLD_WITH]
    return [m for m in dict.fromkeys(wanted) if m in found]


def dtd_sibling(method: str, found: Mapping[str, object]) -> str | None:
    """The method whose DTD decisions the story shows: the open run's own when it runs DTD,
    else the first PRM-family sibling present (None: there is none)."""
    if STRATEGIES[method].runs_dtd:
        return method
    return next((m for m in DTD_PREFERENCE if m in found), None)


def like_runs(entry: RunEntry, entries: Sequence[RunEntry]) -> list[RunEntry]:
    """``entry`` and the finished runs of its sequence, method, task count and configuration
    with other seeds, one per distinct seed: what the seed spread is taken over."""
    out, seeds = [entry], {entry.seed}
    for e in entries:
        if (e.status == "finished" and e.seed not in seeds and e.sequence == entry.sequence
                and e.method == entry.method and e.n_tasks == entry.n_tasks and e.config == entry.config):
            out.append(e)
            seeds.add(e.seed)
    return out


def stl_of(entry: RunEntry, entries: Sequence[RunEntry]) -> RunEntry | None:
    """The finished STL run of ``entry``'s sequence, seed and task count (FWT's reference),
    one of the same set-up first."""
    found = [e for e in entries if e.method == "stl" and e.status == "finished" and e.sequence == entry.sequence
             and e.seed == entry.seed and e.n_tasks == entry.n_tasks]
    return next((e for e in found if e.setup == entry.setup), found[0] if found else None)


# ----------------------------------------------------------------------------- step 1

def _families(state: RunState) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for t, task in enumerate(state.tasks):
        out.setdefault(task["family"], []).append(t)
    return out


def similar_groups(state: RunState) -> list[list[int]]:
    """The groups of truly similar tasks (two or more tasks each), in order of first task."""
    members: dict[int, list[int]] = {}
    for t, g in enumerate(true_groups(state.tasks)):
        members.setdefault(g, []).append(t)
    return [m for m in members.values() if len(m) > 1]


def sequence_figure(state: RunState) -> go.Figure:
    """One tile per task coloured by family; the tile's text says which true group it is in."""
    groups = true_groups(state.tasks)
    sizes = Counter(groups)
    letters = {g: chr(ord("A") + n % 26) for n, g in enumerate(g for g in dict.fromkeys(groups) if sizes[g] > 1)}
    fig = go.Figure()
    for fam, tasks in _families(state).items():
        text = [f"{short(t)}<br>{'group ' + letters[groups[t]] if groups[t] in letters else 'alone'}" for t in tasks]
        hover = [f"{short(t)} {plain(state.tasks[t]['name'])}<br>family {plain(fam)}<br>"
                 + ("truly similar to " + ", ".join(short(o) for o in range(state.n_tasks)
                                                    if groups[o] == groups[t] and o != t)
                    if groups[t] in letters else "similar to no other task") for t in tasks]
        fig.add_bar(x=[short(t) for t in tasks], y=[1] * len(tasks), name=f"family: {plain(fam)}",
                    marker_color=family_colour(fam), text=text, textposition="inside", insidetextanchor="middle",
                    textfont=dict(size=FONT), hovertext=hover, hoverinfo="text")
    fig.update_xaxes(categoryorder="array", categoryarray=[short(t) for t in range(state.n_tasks)],
                     title="task, in the order learnt", showticklabels=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(bargap=0.05, legend=dict(orientation="h", y=1.0, yanchor="bottom", x=1, xanchor="right",
                                               title_text="colour:"))
    return _projector(fig, title="The sequence: tasks coloured by family, lettered by true group", height=230)


def sequence_sentences(state: RunState) -> tuple[str, str]:
    fams = _families(state)
    first = (f"The sequence {md(state.sequence)} has {state.n_tasks} task{'s' if state.n_tasks != 1 else ''} "
             f"in {len(fams)} famil{'ies' if len(fams) != 1 else 'y'}: "
             + ", ".join(f"{md(f)} ({len(ts)})" for f, ts in fams.items()) + ".")
    groups = similar_groups(state)
    alone = state.n_tasks - sum(len(g) for g in groups)
    if groups:
        second = ("Truly similar (same family and label set): "
                  + "; ".join(", ".join(short(t) for t in g) for g in groups)
                  + f"; {alone} task{'s are' if alone != 1 else ' is'} similar to no other task.")
    else:
        second = f"No two tasks share a family and a label set: all {state.n_tasks} are dissimilar to each other."
    return first, second


# ----------------------------------------------------------------------------- step 2

def protection_table(hat: RunState, *, layer: int, stl: RunState | None = None,
                     joint: RunState | None = None) -> pd.DataFrame:
    """Per task HAT learnt: its family, the share of ``layer``'s units HAT's accumulated mask
    held when it arrived (the capacity after the task before; 0 for the first), and its
    accuracy just after learning under HAT, STL and joint (NaN where a run lacks it)."""
    diag = {name: np.diag(s.accuracy_matrix("test")) if s is not None else None
            for name, s in (("HAT", hat), ("STL", stl), ("joint", joint))}
    rows = []
    for t in sorted(hat.task_ends):
        before = hat.task_ends.get(t - 1)
        share = 0.0 if t == 0 else (before.capacity[layer] if before is not None and layer < len(before.capacity)
                                    else np.nan)
        row = {"task": short(t), "family": hat.tasks[t]["family"], "protected on arrival": share}
        for name, d in diag.items():
            row[name] = float(d[t]) if d is not None and t < len(d) else np.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=["task", "family", "protected on arrival", "HAT", "STL", "joint"])


_PATTERNS = ("", "/", ".", "x", "\\", "+", "-", "|")
"""Bar patterns, one per family in order of appearance, for charts where colour means method."""


def protection_figure(table: pd.DataFrame, *, layer: int) -> go.Figure:
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
    for name, method in (("HAT", "hat"), ("STL", "stl"), ("joint", "joint")):
        if table[name].notna().any():
            fig.add_scatter(x=table["task"], y=table[name], mode="lines+markers", name=name,
                            line=dict(color=method_colour(method)), marker=dict(size=9), legendgroup="method",
                            legendgrouptitle_text="lines: method",
                            hovertemplate="%{x}: " + name + " %{y:.3f}<extra></extra>", row=2, col=1)
    fig.update_yaxes(title_text=f"layer {layer}<br>protected", tickformat=".0%", range=[0, 1.02], row=1, col=1)
    fig.update_yaxes(title_text="accuracy just<br>after learning", row=2, col=1)
    fig.update_xaxes(categoryorder="array", categoryarray=list(table["task"]))
    fig.update_xaxes(title_text="task", row=2, col=1)
    return _projector(fig, title="What HAT protects when each task arrives, and the task's accuracy", height=470)


def protection_sentences(table: pd.DataFrame, *, layer: int, state: RunState) -> tuple[str, str]:
    shares = table["protected on arrival"].dropna()
    if table.empty or shares.empty:
        return "HAT has learnt no task with a recorded capacity.", ""
    first = (f"When the last task arrived, HAT's accumulated mask already protected {fmt(shares.iloc[-1] * 100, 0)}% "
             f"of the units of layer {layer} (mean over tasks on arrival: {fmt(shares.mean() * 100, 0)}%).")
    similar = {state.tasks[g[0]]["family"] for g in similar_groups(state)}
    parts = []
    reference = "STL" if table["STL"].notna().any() else None
    for fam, part in sorted(table.groupby("family", sort=False), key=lambda kv: kv[0] not in similar):
        hat = part["HAT"].mean()
        text = f"{md(fam)}{' (similar tasks)' if fam in similar else ''}: HAT {fmt(hat)}"
        if reference:
            ref = part[reference].mean()
            text += f" against STL {fmt(ref)} ({fmt(hat - ref, signed=True)})"
        if part["joint"].notna().any():
            text += f", joint {fmt(part['joint'].mean())}"
        parts.append(text)
    second = "Mean accuracy just after learning, by family: " + "; ".join(parts) + "."
    if reference is None:
        second += " No STL run is listed, so the cost cannot be measured against a task learnt alone."
    return first, second


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


def calls_figure(table: pd.DataFrame, *, n_tasks: int, layer: int, method: str) -> go.Figure:
    """The grid of :func:`calls_table`: new task by earlier task, coloured by the call, marked
    right or wrong; titled by who called (DTD of a PRM-family run, or CAT's transfer tests)."""
    cat = STRATEGIES[method].cat if method in STRATEGIES else False
    if table.empty:
        return empty("no similarity call recorded for this layer")
    size = n_tasks - 1
    z = np.full((size, size), np.nan)
    for row in table.itertuples():
        z[row.step - 1, row.earlier] = 1.0 if row.similar else 0.0
    steps = [short(t) for t in range(1, n_tasks)]
    earlier = [short(t) for t in range(size)]
    fig = go.Figure(go.Heatmap(z=z, x=earlier, y=steps, zmin=0, zmax=1, xgap=2, ygap=2, hoverinfo="skip",
                               colorscale=[[0, DISSIMILAR_COLOUR], [0.5, DISSIMILAR_COLOUR],
                                           [0.5, SIMILAR_COLOUR], [1, SIMILAR_COLOUR]],
                               colorbar=dict(tickvals=[0.25, 0.75], ticktext=["called dissimilar", "called similar"],
                                             len=0.5, y=0.75, thickness=14)))
    for right, colour in ((True, RIGHT_COLOUR), (False, WRONG_COLOUR)):
        part = table[table["right"] == right]
        fig.add_scatter(x=[short(i) for i in part["earlier"]], y=[short(t) for t in part["step"]], mode="text",
                        text=[mark(right)] * len(part), textfont=dict(size=FONT + 5, color=colour),
                        name=f"{mark(right)} {'right' if right else 'wrong'}",
                        hovertemplate="when %{y} arrived, %{x}: " + ("right" if right else "wrong") + "<extra></extra>")
    fig.update_yaxes(autorange="reversed", title="new task (transfer tests)" if cat else "new task (DTD step)",
                     categoryorder="array", categoryarray=steps)
    fig.update_xaxes(title="earlier task", categoryorder="array", categoryarray=earlier)
    fig.update_layout(legend=dict(orientation="h", y=-0.18, x=0))
    title = (f"{label(method)}'s transfer-test calls (every layer): each earlier task, right or wrong" if cat else
             f"DTD's calls of {label(method)}, layer {layer}: each earlier task, right or wrong")
    return _projector(fig, title=title, height=max(340, 120 + 34 * size))


def calls_sentences(table: pd.DataFrame, *, layer: int, cat: bool = False) -> tuple[str, str]:
    """What :func:`calls_table` says, in two sentences; ``cat``: CAT's calls, one for every layer."""
    where = "every layer" if cat else f"layer {layer}"
    if table.empty:
        return f"No {'transfer-test' if cat else 'DTD'} call was recorded for {where}.", ""
    n, right = len(table), int(table["right"].sum())
    false_similar = int((table["similar"] & ~table["right"]).sum())
    first = f"On {where}, {right} of {n} calls were right ({fmt(100 * right / n, 0)}%)" + (
        "." if right == n else
        f"; of the {n - right} wrong ones, {false_similar} called a truly dissimilar task similar (its units "
        f"freed) and {n - right - false_similar} missed a truly similar one (its units kept protected).")
    per = [f"{md(fam)} tasks {int(part['right'].sum())} of {len(part)}"
           for fam, part in table.groupby("family", sort=False)]
    return first, "Right calls by the family of the new task: " + "; ".join(per) + "."


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
        ct = run_metrics(state)["ct"]
        times.append(f"{md(label(method))} {fmt(spent, 1)} s of its CT {fmt(ct, 1)} s")
    return (f"Calls right: {', '.join(scores)}. Time spent deciding similarity (DTD, or CAT's transfer and reference "
            f"trainings): {'; '.join(times)}.")


# ----------------------------------------------------------------------------- step 4

def relaxed_counts(run: Run, *, layer: int) -> dict[int, int]:
    """Relaxed units of ``layer`` per learnt task (as the Masks view counts them)."""
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
    return best, f"{why}, so this shows {short(best)}, the task with the most relaxed units ({counts[best]})"


def relaxed_figure(run: Run, *, task: int, layer: int) -> go.Figure:
    """Per unit of ``layer`` used by an earlier task: its protection under HAT (the accumulated
    mask) and under this run while ``task`` was learnt; relaxed units first, shaded."""
    parts = relaxed_units(run, task, layer)
    if parts is None:
        return empty("no masks recorded for this task")
    used = np.flatnonzero(parts["accumulated"] > THRESHOLD)
    order = used[np.lexsort((parts["protected"][used], -parts["relaxed"][used]))]
    x = np.arange(len(order))
    n_relaxed = int(parts["relaxed"].sum())
    method = run.meta["config"]["method"]
    fig = go.Figure()
    fig.add_scatter(x=x, y=parts["accumulated"][order], mode="lines", name="protected under HAT",
                    line=dict(color=method_colour("hat"), width=3), customdata=order,
                    hovertemplate="unit %{customdata}: HAT %{y:.2f}<extra></extra>")
    fig.add_scatter(x=x, y=parts["protected"][order], mode="markers", name=f"protected under {label(method)}",
                    marker=dict(color=method_colour(method), size=6), customdata=order,
                    hovertemplate="unit %{customdata}: this run %{y:.2f}<extra></extra>")
    if n_relaxed:
        fig.add_vrect(x0=-0.5, x1=n_relaxed - 0.5, fillcolor="#999", opacity=0.15, line_width=0,
                      annotation_text=f"{n_relaxed} relaxed", annotation_position="top left",
                      annotation_font_size=FONT)
    fig.update_xaxes(title=f"units of layer {layer} used by an earlier task ({len(order)}), relaxed first")
    fig.update_yaxes(title="protection (1 = frozen)", range=[-0.05, 1.12])
    fig.update_layout(legend=dict(orientation="h", y=-0.3, x=0))
    return _projector(fig, title=f"Units protected while {short(task)} was learnt: HAT vs {label(method)}", height=360)


def relaxed_sentences(run: Run, *, task: int, layer: int, why: str) -> tuple[str, str]:
    parts = relaxed_units(run, task, layer)
    n_used = int((parts["accumulated"] > THRESHOLD).sum())
    n_relaxed = int(parts["relaxed"].sum())
    first = (f"{why}: {n_relaxed} of the {n_used} units of layer {layer} that earlier tasks used were protected "
             f"less than HAT would protect them, so {short(task)} could change them.")
    record = run.state.dtd.get(task)
    if record is None or layer >= len(record.layers):
        return first, "No DTD decision is recorded for this task."
    dissimilar = set(record.layers[layer]["dissimilar"])
    similar = [short(i) for i in range(task) if i not in dissimilar]
    kept = [short(i) for i in sorted(dissimilar)]
    second = (f"They belong to {', '.join(similar) or 'no task'}, the earlier task{'s' if len(similar) != 1 else ''} "
              f"the run treated as similar to {short(task)}; the units of {', '.join(kept) or 'no task'} "
              f"(treated as dissimilar) stayed protected.")
    return first, second


# ----------------------------------------------------------------------------- step 5

def difference_figure(a: RunState, b: RunState, *, a_name: str, b_name: str) -> go.Figure:
    """R_a − R_b, diverging around 0 on a symmetric range, every known cell written out."""
    D = difference(a, b)
    n = len(D)
    if np.isnan(D).all():
        return empty("the two runs share no learnt task")
    bound = max(float(np.nanmax(np.abs(D))), 0.05)
    ticks = [short(t) for t in range(n)]
    text = [["" if np.isnan(v) else fmt(v, 2, signed=True) for v in row] for row in D]
    fig = go.Figure(go.Heatmap(z=D, x=ticks, y=ticks, zmin=-bound, zmax=bound, colorscale=DIVERGING, text=text,
                               texttemplate="%{text}", textfont=dict(size=FONT - 1), xgap=1, ygap=1,
                               colorbar=dict(title=dict(text=f"{a_name} − {b_name}", side="right")),
                               hovertemplate="after %{y}, on %{x}: %{z:+.3f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title="after learning task")
    fig.update_xaxes(title="tested on task")
    return _projector(fig, title=f"Accuracy of {a_name} minus {b_name} (red: {b_name} better, blue: {a_name} better)",
                      height=max(380, 150 + 34 * n))


def family_transfer(states: Mapping[str, RunState], stl: RunState | None) -> pd.DataFrame:
    """One row per method and family: BWT and FWT over that family's learnt tasks ("n/a" where
    a value cannot be computed: no STL run, or no task of that family learnt). Long, not wide,
    so the table fits a narrow column whatever the number of families."""
    rows = []
    stl_diag = None
    if stl is not None and metrics.completed_rows(stl.accuracy_matrix("test")):
        stl_diag = np.diag(stl.accuracy_matrix("test"))
    for method, state in states.items():
        R = state.accuracy_matrix("test")
        done = metrics.completed_rows(R)
        for fam, tasks in _families(state).items():
            learnt = [t for t in tasks if t < done]
            bwt = metrics.backward_transfer(R, tasks=learnt) if learnt else None
            known = [t for t in learnt if stl_diag is not None and t < len(stl_diag) and not np.isnan(stl_diag[t])]
            fwt = metrics.forward_transfer(R, stl_diag, tasks=known) if known else None
            rows.append({"method": label(method), "family": fam, "BWT": fmt(bwt, signed=True),
                         "FWT": fmt(fwt, signed=True)})
    return pd.DataFrame(rows, columns=["method", "family", "BWT", "FWT"])


def stability_points(groups: Mapping[str, Sequence[tuple[RunState, RunState | None]]]) -> pd.DataFrame:
    """Per method: mean and sd over its seeds of FWT (each seed against its own STL run) and
    BWT; seeds without an STL run count for BWT only."""
    rows = []
    for method, runs in groups.items():
        values = [run_metrics(state, stl=stl) for state, stl in runs]
        bwt = [v["bwt"] for v in values if v["bwt"] is not None]
        fwt = [v["fwt"] for v in values if v["fwt"] is not None]
        rows.append({"method": method, "seeds": len(values),
                     "BWT": float(np.mean(bwt)) if bwt else np.nan, "BWT sd": float(np.std(bwt)) if bwt else np.nan,
                     "FWT": float(np.mean(fwt)) if fwt else np.nan, "FWT sd": float(np.std(fwt)) if fwt else np.nan})
    return pd.DataFrame(rows, columns=["method", "seeds", "BWT", "BWT sd", "FWT", "FWT sd"])


def stability_figure(points: pd.DataFrame) -> go.Figure:
    """FWT (plasticity) against BWT (stability), a point per method with ±1 sd over seeds;
    the corners are named."""
    shown = points.dropna(subset=["BWT", "FWT"])
    if shown.empty:
        return empty("FWT needs an STL run of the same seed: none is listed")
    fig = go.Figure()
    for row in shown.to_dict("records"):
        spread = row["seeds"] > 1
        name = label(row["method"])
        fig.add_scatter(x=[row["FWT"]], y=[row["BWT"]], mode="markers+text", name=name, text=[name],
                        textposition="top center", textfont=dict(size=FONT),
                        marker=dict(color=method_colour(row["method"]), size=14, line=dict(color="white", width=1)),
                        error_x=dict(type="data", array=[row["FWT sd"] if spread else 0], visible=spread),
                        error_y=dict(type="data", array=[row["BWT sd"] if spread else 0], visible=spread),
                        hovertemplate=f"{name}: FWT %{{x:+.3f}}, BWT %{{y:+.3f}} "
                                      f"({row['seeds']} seed{'s' if row['seeds'] != 1 else ''})<extra></extra>")
    xs = np.concatenate([shown["FWT"] - shown["FWT sd"].fillna(0), shown["FWT"] + shown["FWT sd"].fillna(0), [0.0]])
    ys = np.concatenate([shown["BWT"] - shown["BWT sd"].fillna(0), shown["BWT"] + shown["BWT sd"].fillna(0), [0.0]])
    pad_x, pad_y = max(np.ptp(xs) * 0.25, 0.02), max(np.ptp(ys) * 0.25, 0.02)
    fig.update_xaxes(range=[xs.min() - pad_x, xs.max() + pad_x], zeroline=True, zerolinecolor="#999",
                     title="FWT: accuracy just after learning − STL (right: transfers)")
    fig.update_yaxes(range=[ys.min() - pad_y, ys.max() + pad_y], zeroline=True, zerolinecolor="#999",
                     title="BWT: final − just learnt (down: forgets)")
    for x, y, text, anchor in ((0.01, 0.99, "keeps, does not transfer", "left"),
                               (0.99, 0.99, "keeps and transfers", "right"),
                               (0.01, 0.01, "forgets, does not transfer", "left"),
                               (0.99, 0.01, "transfers but forgets", "right")):
        fig.add_annotation(x=x, y=y, xref="paper", yref="paper", text=text, showarrow=False, xanchor=anchor,
                           yanchor="top" if y > 0.5 else "bottom", font=dict(size=FONT, color="#666"))
    fig.update_layout(showlegend=False)
    return _projector(fig, title="Stability against plasticity: one point per method (±1 sd over seeds)", height=440)


def difference_sentence(a: RunState, b: RunState, *, a_name: str, b_name: str) -> str:
    """The last shared row of R_a − R_b: its mean, its lowest and its highest cell."""
    D = difference(a, b)
    done = min(metrics.completed_rows(a.accuracy_matrix("test")), metrics.completed_rows(b.accuracy_matrix("test")))
    if not done:
        return "The two runs share no learnt task."
    final = D[done - 1, :done]
    worst, best = int(np.nanargmin(final)), int(np.nanargmax(final))
    return (f"After {short(done - 1)}, {a_name} − {b_name} averages {fmt(float(np.nanmean(final)), signed=True)} "
            f"over {done} task{'s' if done != 1 else ''}, from {fmt(final[worst], signed=True)} on {short(worst)} "
            f"to {fmt(final[best], signed=True)} on {short(best)}.")


def stability_sentence(points: pd.DataFrame) -> str:
    """Each method's BWT and FWT (means over seeds), in the chart's order."""
    shown = points.dropna(subset=["BWT"])
    if shown.empty:
        return "No method has a learnt task to measure."
    return "Over all tasks: " + "; ".join(f"{label(r.method)} BWT {fmt(r.BWT, signed=True)}, FWT {fmt(r.FWT, signed=True)}"
                                          for r in shown.itertuples()) + "."
