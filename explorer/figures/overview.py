"""Overview: the headline metrics, the task strip, time per phase and what DTD (or CAT) decided."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from explorer.figures.common import (MIN_CELL_FONT, PHASE_COLOURS, PHASE_LABELS, family_colour, legend_below, mark,
                                     names, plain, short, style, task_label)
from prm.analysis import judged_right, true_groups
from prm.run import RunState


def sequence_strip(state: RunState) -> go.Figure:
    """The sequence as a row of tiles, one per task, coloured by family."""
    fig = go.Figure()
    done = state.tasks_done
    for fam in dict.fromkeys(task["family"] for task in state.tasks):  # in order of first appearance
        colour = family_colour(fam)
        idx = [t for t, task in enumerate(state.tasks) if task["family"] == fam]
        hover = [f"<b>{plain(task_label(state.tasks, t))}</b><br>family: {plain(fam)}<br>digits: "
                 f"{', '.join(map(str, state.tasks[t]['classes']))}<br>train/val/test: "
                 f"{state.tasks[t]['sizes']['train']}/{state.tasks[t]['sizes']['val']}/"
                 f"{state.tasks[t]['sizes']['test']}<br>{'learnt' if t < done else 'not learnt yet'}"
                 for t in idx]
        fig.add_bar(x=[short(t) for t in idx], y=[1] * len(idx), name=plain(fam), marker_color=colour,
                    marker_opacity=[1.0 if t < done else 0.35 for t in idx],
                    text=[plain(state.tasks[t]["name"]) for t in idx], textposition="inside",
                    insidetextanchor="middle", hovertext=hover, hoverinfo="text")
    fig.update_xaxes(categoryorder="array", categoryarray=[short(t) for t in range(state.n_tasks)])
    fig.update_yaxes(visible=False)
    # a name is written in its tile where it fits at a legible size, else only in the hover
    fig.update_layout(bargap=0.05, uniformtext=dict(minsize=MIN_CELL_FONT, mode="hide"))
    return legend_below(style(fig, height=200), "tile colour = family:")  # the legend even for a single family


def phase_seconds(state: RunState) -> pd.DataFrame:
    """Seconds per task and phase: DTD's two optimisations (from the epoch records), the
    X-means step (DTD total minus its epochs), CAT's transfer and reference trainings,
    training and evaluation (from task ends)."""
    rows = []
    per_phase: dict[tuple[int, str], float] = {}
    for e in state.epochs:
        per_phase[(e.task, e.phase)] = per_phase.get((e.task, e.phase), 0.0) + e.seconds
    for t, record in sorted(state.task_ends.items()):
        sec = record.seconds
        dtd_epochs = per_phase.get((t, "dtd-head"), 0.0) + per_phase.get((t, "dtd"), 0.0)
        parts = {"dtd-head": per_phase.get((t, "dtd-head"), 0.0), "dtd": per_phase.get((t, "dtd"), 0.0),
                 "xmeans": max(sec.get("dtd", 0.0) - dtd_epochs, 0.0) if "dtd" in sec else 0.0,
                 "transfer": sec.get("transfer", 0.0), "reference": sec.get("reference", 0.0),
                 "train": sec.get("train", 0.0), "eval": sec.get("eval", 0.0)}
        for phase, value in parts.items():
            rows.append({"task": short(t), "name": state.tasks[t]["name"], "phase": PHASE_LABELS[phase],
                         "seconds": round(value, 4)})
    return pd.DataFrame(rows, columns=["task", "name", "phase", "seconds"])


DTD_PHASES, CAT_PHASES = ("dtd-head", "dtd", "xmeans"), ("transfer", "reference")
"""The two kinds of similarity detection's phases: PRM's DTD and CAT's transfer tests."""


def phase_table(table: pd.DataFrame, *, cat: bool | None = None) -> pd.DataFrame:
    """:func:`phase_seconds` as shown: one row per task, one column per phase in the order the
    phases run; a phase a task did not go through (HAT has no DTD) is 0 s, not a blank. The
    similarity-detection columns are those of the run's kind: CAT's for a CAT run (``cat``;
    None: a run that spent time on them), DTD's for every other run (0 s in HAT's: it ran none)."""
    if cat is None:
        cat = bool(set(table.loc[table["seconds"] > 0, "phase"]) & {PHASE_LABELS[p] for p in CAT_PHASES})
    labels = [label for phase, label in PHASE_LABELS.items() if phase not in (DTD_PHASES if cat else CAT_PHASES)]
    columns = ["task", *labels]
    if table.empty:
        return pd.DataFrame(columns=columns)
    wide = table.pivot_table(index="task", columns="phase", values="seconds", sort=False, aggfunc="sum")
    wide = wide.reindex(columns=labels).fillna(0.0).rename_axis(columns=None)
    return wide.reset_index()[columns]


def phase_figure(table: pd.DataFrame) -> go.Figure:
    """Stacked seconds per task, one colour per phase (``PHASE_COLOURS``, a palette of its own)."""
    fig = go.Figure()
    for phase, label in PHASE_LABELS.items():
        part = table[table["phase"] == label]
        if part.empty or part["seconds"].sum() == 0:
            continue
        fig.add_bar(x=part["task"], y=part["seconds"], name=label, marker_color=PHASE_COLOURS[phase],
                    customdata=[plain(x) for x in part["name"]], hovertemplate="%{x} %{customdata}<br>" + label +
                    ": %{y:.2f} s<extra></extra>")
    fig.update_layout(barmode="stack", yaxis_title="seconds")
    return legend_below(style(fig, title="Time per task, by phase", height=400), "phase:")


def similarity_summary(state: RunState) -> pd.DataFrame:
    """One line per task: per masked layer, which earlier tasks were treated as similar and
    which as dissimilar, each call marked ✓/✗ against the truth (``prm.analysis.judged_right``),
    and how many calls were right. The set judged is the one actually used to protect units
    (it differs from X-means' in the ablations, which the line then notes). A CAT run's calls
    (``RunState.calls``, source "cat") are one set for every layer."""
    labels = names(state.tasks)
    groups = true_groups(state.tasks)
    calls = state.calls()
    rows = []
    for t in range(state.n_tasks):
        record = state.dtd.get(t)
        row: dict[str, Any] = {"task": labels[t], "family": state.tasks[t]["family"], "decision": "",
                               "calls right": "", "source": ""}
        if t == 0:
            row["decision"] = "first task: nothing to compare with"
        elif record is None and t in calls:  # CAT's transfer tests: one call for every layer
            source, dissimilar = calls[t]
            right = judged_right(groups=groups, task=t, dissimilar=dissimilar)
            similar = [i for i in range(t) if i not in set(dissimilar)]
            row.update(decision=f"every layer: similar {_marked(similar, right)}; dissimilar "
                                f"{_marked(sorted(dissimilar), right)}",
                       **{"calls right": f"{sum(right.values())}/{t}", "source": source})
        elif record is None:
            row["decision"] = "no DTD recorded" if t < state.tasks_done else "not reached"
        else:
            parts, scores = [], []
            for layer, entry in enumerate(record.layers):
                dissimilar = set(entry["dissimilar"])
                right = judged_right(groups=groups, task=t, dissimilar=sorted(dissimilar))
                similar = [i for i in range(t) if i not in dissimilar]
                by_x = set(entry["dissimilar_xmeans"])
                note = "" if by_x == dissimilar else f" (X-means said dissimilar {_list(sorted(by_x)) or '∅'})"
                parts.append(f"l{layer}: similar {_marked(similar, right)}; "
                             f"dissimilar {_marked(sorted(dissimilar), right)}{note}")
                scores.append(f"{sum(right.values())}/{t}")
            row["decision"] = " | ".join(parts)
            row["calls right"] = scores[0] if len(scores) == 1 else ", ".join(
                f"l{layer} {score}" for layer, score in enumerate(scores))
            row["source"] = record.source or ""
        rows.append(row)
    return pd.DataFrame(rows, columns=["task", "family", "decision", "calls right", "source"])


def _marked(tasks: list[int], right: dict[int, bool]) -> str:
    """"T2 ✓, T5 ✗": each task with the mark of its call, or ∅ for none."""
    return ", ".join(f"{short(i)} {mark(right[i])}" for i in tasks) or "∅"


def _list(items) -> str:
    return ", ".join(short(i) if isinstance(i, (int, np.integer)) else str(i) for i in items)
