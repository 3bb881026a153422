"""Overview: the headline metrics, the task strip, time per phase and what DTD decided."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from explorer.figures.common import PHASE_LABELS, family_colour, names, plain, short, style, task_label
from prm import metrics
from prm.runs import RunState


def run_metrics(state: RunState, *, stl: RunState | None = None) -> dict[str, float | None]:
    """Acc, BWT, FWT (against the STL run of the same sequence and seed, if given) and CT.

    CT is the run's wall time when it has ended, else the time of its finished tasks so far.
    """
    R = state.accuracy_matrix("test")
    done = metrics.completed_rows(R)
    out: dict[str, float | None] = {"acc": None, "bwt": None, "fwt": None, "ct": None, "tasks_done": done}
    if done:
        out["acc"] = metrics.average_accuracy(R)
        out["bwt"] = metrics.backward_transfer(R)
        if stl is not None:
            stl_diag = np.diag(stl.accuracy_matrix("test"))
            if metrics.completed_rows(stl.accuracy_matrix("test")) >= done:
                out["fwt"] = metrics.forward_transfer(R, stl_diag)
    if state.end is not None and state.end.seconds is not None:
        out["ct"] = state.end.seconds
    elif state.task_ends:
        out["ct"] = float(sum(sum(r.seconds.values()) for r in state.task_ends.values()))
    return out


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
    fig.update_layout(bargap=0.05)
    style(fig, height=170)
    fig.update_layout(margin=dict(t=30), legend=dict(orientation="h", y=1.02, yanchor="bottom", x=1, xanchor="right"))
    return fig


def phase_seconds(state: RunState) -> pd.DataFrame:
    """Seconds per task and phase: DTD's two optimisations (from the epoch records), the
    X-means step (DTD total minus its epochs), training and evaluation (from task ends)."""
    rows = []
    per_phase: dict[tuple[int, str], float] = {}
    for e in state.epochs:
        per_phase[(e.task, e.phase)] = per_phase.get((e.task, e.phase), 0.0) + e.seconds
    for t, record in sorted(state.task_ends.items()):
        sec = record.seconds
        dtd_epochs = per_phase.get((t, "dtd-head"), 0.0) + per_phase.get((t, "dtd"), 0.0)
        parts = {"dtd-head": per_phase.get((t, "dtd-head"), 0.0), "dtd": per_phase.get((t, "dtd"), 0.0),
                 "xmeans": max(sec.get("dtd", 0.0) - dtd_epochs, 0.0) if "dtd" in sec else 0.0,
                 "train": sec.get("train", 0.0), "eval": sec.get("eval", 0.0)}
        for phase, value in parts.items():
            rows.append({"task": short(t), "name": state.tasks[t]["name"], "phase": PHASE_LABELS[phase],
                         "seconds": round(value, 4)})
    return pd.DataFrame(rows, columns=["task", "name", "phase", "seconds"])


def phase_figure(table: pd.DataFrame) -> go.Figure:
    fig = go.Figure()
    colours = {"DTD 1st opt. (head only)": "#9ecae1", "DTD 2nd opt. (whole model)": "#3182bd",
               "X-means": "#08519c", "training (LwPRM for PRM)": "#fd8d3c", "evaluation": "#bdbdbd"}
    for phase in PHASE_LABELS.values():
        part = table[table["phase"] == phase]
        if part.empty or part["seconds"].sum() == 0:
            continue
        fig.add_bar(x=part["task"], y=part["seconds"], name=phase, marker_color=colours[phase],
                    customdata=[plain(x) for x in part["name"]], hovertemplate="%{x} %{customdata}<br>" + phase +
                    ": %{y:.2f} s<extra></extra>")
    fig.update_layout(barmode="stack", yaxis_title="seconds", legend=dict(orientation="h", y=-0.2))
    return style(fig, title="Time per task, by phase", height=320)


def similarity_summary(state: RunState) -> pd.DataFrame:
    """One line per task: which earlier tasks DTD judged similar (same X-means cluster) per
    layer, and the dissimilar set actually used (differs from X-means in the ablations)."""
    labels = names(state.tasks)
    rows = []
    for t in range(state.n_tasks):
        record = state.dtd.get(t)
        row: dict[str, Any] = {"task": labels[t], "family": state.tasks[t]["family"]}
        if t == 0:
            row["decision"] = "first task: nothing to compare with"
        elif record is None:
            row["decision"] = "no DTD recorded" if t < state.tasks_done else "not reached"
        else:
            parts = []
            for layer, entry in enumerate(record.layers):
                dissimilar = set(entry["dissimilar"])
                similar = [short(i) for i in range(t) if i not in dissimilar]
                by_x = set(entry["dissimilar_xmeans"])
                note = "" if by_x == dissimilar else f" (X-means said dissimilar {_list(sorted(by_x))})"
                parts.append(f"l{layer}: similar {_list(similar) or '∅'}{note}")
            row["decision"] = "; ".join(parts)
            row["source"] = record.source
        rows.append(row)
    return pd.DataFrame(rows, columns=["task", "family", "decision", "source"])


def _list(items) -> str:
    return ", ".join(short(i) if isinstance(i, (int, np.integer)) else str(i) for i in items)
