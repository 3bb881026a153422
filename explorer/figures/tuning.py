"""The Tuning view's tables and charts: one Optuna study (``prm.tune.Study``) in, a table or
a figure out.

A study keeps each trial's metrics in the storage itself, so everything here works on a
storage copied from another machine; only the run folders (``local``) depend on this one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from explorer.catalog import key_of
from explorer.figures.common import empty, fmt, md, plain, style
from explorer.figures.compare import zoomed_range
from prm.tune import Study, Trial, inside, relative_folder

VAL_COLOUR, TEST_COLOUR, BEST_COLOUR = "#5E3C99", "#E66101", "#1A9850"
"""This view's own meanings: validation Acc (the objective), test Acc (reported only), and the
best validation Acc so far."""
METRICS = {"val Acc": "val_acc", "test Acc": "test_acc", "BWT": "bwt", "CT (s)": "seconds"}
GRID = ("sequence", "method", "seed")
"""A compare study's parameters: one cell of its grid per trial."""


def param_names(study: Study) -> list[str]:
    """The tuned parameters, in the order the trials first drew them (the search space's)."""
    return list(dict.fromkeys(name for t in study.trials for name in t.params))


def _number(value) -> float:
    """A stored metric as a float, NaN where the trial has none (not finished, or pruned)."""
    return float(value) if value is not None and math.isfinite(float(value)) else math.nan


def _param(value):
    """A drawn value as shown: floats to four significant digits (the lr is drawn on a log
    scale, 0.0123 and 1234 both stay readable), other values (a grid's names, seeds) as drawn."""
    if isinstance(value, float):
        return float(f"{value:.4g}")
    return value


def folder_cell(trial: Trial, local: Path | None) -> str:
    """Where the trial's run is: its folder here (as the run picker names it), else as it was
    recorded: relative to the storage file (never the absolute path of the machine it was made
    on, where an earlier version recorded both), or absolute with its machine; nothing for a
    trial that never trained. A relative path that leaves the storage's folder is shown, never opened."""
    if local is not None:
        return key_of(local)
    relative = relative_folder(trial)
    if relative:
        where = "beside the storage file" if inside(relative) else "outside the storage file's folder: not opened"
        return f"{relative} ({where}; not on this machine)"
    if trial.run_dir:
        return f"{trial.run_dir} (on {trial.host or 'another machine'}; not on this machine)"
    return ""


def trials_table(study: Study, local: Mapping[int, Path | None]) -> pd.DataFrame:
    """One row per trial: number, state, each parameter as a column, val Acc (the objective),
    test Acc, BWT, CT, the note on why a trial failed, was pruned or is unreadable, and its run folder
    (``local``: trial number -> its folder on this machine, from ``tune.run_folder``).
    Metrics and parameters are numbers, NaN only where the trial has none (a trial that is
    still running, failed, or was pruned before drawing); the texts are never missing."""
    params = param_names(study)
    rows = []
    for t in study.trials:
        rows.append({"trial": t.number, "state": t.state,
                     **{p: _param(t.params[p]) if p in t.params else math.nan for p in params},
                     **{label: round(_number(getattr(t, field)), 4) for label, field in METRICS.items()},
                     "note": t.problem or t.note or "", "run folder": folder_cell(t, local.get(t.number))})
    return pd.DataFrame(rows, columns=["trial", "state", *params, *METRICS, "note", "run folder"])


TRIAL_PARTS = ("scores", "parameters", "run folders")


def trials_parts(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """:func:`trials_table` in three narrow tables, each numbered by trial: its scores, its
    drawn values, and its run folder with the note. Together they are 14 columns, too many to
    read (or to fit an 800 px window) side by side; apart each fits about 450 px."""
    parameters = [c for c in table.columns if c not in ("trial", "state", *METRICS, "note", "run folder")]
    return {"scores": table[["trial", "state", *METRICS]], "parameters": table[["trial", *parameters]],
            "run folders": table[["trial", "run folder", "note"]]}


def best_so_far(study: Study) -> pd.DataFrame:
    """The best validation Acc after each complete trial, in trial-number order: what the
    search had found by then (never falls)."""
    done = sorted(study.complete, key=lambda t: t.number)
    values = np.maximum.accumulate([t.val_acc for t in done]) if done else np.array([])
    return pd.DataFrame({"trial": [t.number for t in done], "best val Acc": values.astype(float)})


def _hover(trial: Trial) -> str:
    drawn = "<br>".join(f"{plain(k)} = {plain(_param(v))}" for k, v in trial.params.items())
    return f"trial {trial.number}" + (f"<br>{drawn}" if drawn else "")


def acc_figure(study: Study) -> go.Figure:
    """Validation Acc (the objective) and test Acc of every complete trial against its
    number; for a tune study also the best validation Acc so far, and the best trial
    ringed. Acc on a zoomed axis, as in Compare."""
    done = sorted(study.complete, key=lambda t: t.number)
    if not done:
        return empty("No trial has finished yet: nothing to plot.")
    fig = go.Figure()
    hover = [_hover(t) for t in done]
    x = [t.number for t in done]
    fig.add_scatter(x=x, y=[t.val_acc for t in done], mode="markers", name="val Acc (objective)",
                    marker=dict(color=VAL_COLOUR, size=9, symbol="circle"), hovertext=hover,
                    hovertemplate="%{hovertext}<br>val Acc %{y:.3f}<extra></extra>")
    tests = [_number(t.test_acc) for t in done]
    fig.add_scatter(x=x, y=tests, mode="markers", name="test Acc (reported, not optimised)",
                    marker=dict(color=TEST_COLOUR, size=9, symbol="diamond"), hovertext=hover,
                    hovertemplate="%{hovertext}<br>test Acc %{y:.3f}<extra></extra>")
    if study.kind == "tune":
        line = best_so_far(study)
        fig.add_scatter(x=line["trial"], y=line["best val Acc"], mode="lines", line_shape="hv",
                        name="best val Acc so far", line=dict(color=BEST_COLOUR, width=2),
                        hovertemplate="best val Acc after trial %{x}: %{y:.3f}<extra></extra>")
        best = study.best
        fig.add_scatter(x=[best.number], y=[best.val_acc], mode="markers", name=f"best trial ({best.number})",
                        marker=dict(color="rgba(0,0,0,0)", size=18, line=dict(color=BEST_COLOUR, width=2)),
                        hovertemplate="best trial %{x} (chosen by val Acc)<extra></extra>")
    values = [t.val_acc for t in done] + [v for v in tests if not math.isnan(v)]
    fig.update_yaxes(title="Acc", range=zoomed_range(values, [0.0] * len(values)))
    fig.update_xaxes(title="trial number", rangemode="tozero")
    fig.update_xaxes(automargin=True)
    fig.update_yaxes(automargin=True)
    style(fig, height=400)
    # below the plot, under the axis title: in a narrow column its four entries take rows
    fig.update_layout(legend=dict(orientation="h", yref="container", y=0, yanchor="bottom", x=0, xanchor="left"),
                      margin=dict(t=20, b=110))
    return fig


def importance_figure(importances: Mapping[str, float]) -> go.Figure:
    """Optuna's parameter importances as horizontal bars, the most important on top."""
    if not importances:
        return empty("Too few complete trials for importances (they need at least two).")
    ranked = sorted(importances.items(), key=lambda kv: kv[1])  # plotly draws the first bar at the bottom
    fig = go.Figure(go.Bar(x=[v for _, v in ranked], y=[plain(k) for k, _ in ranked], orientation="h",
                           marker_color=VAL_COLOUR, text=[f"{v:.2f}" for _, v in ranked], textposition="auto",
                           hovertemplate="%{y}: %{x:.3f} of val Acc's variance<extra></extra>"))
    fig.update_xaxes(title="importance (share of validation Acc's variance, fANOVA)", range=[0, 1])
    return style(fig, height=120 + 40 * len(ranked))


def cells_table(study: Study) -> pd.DataFrame:
    """A compare study's grid, one row per cell (sequence, method, seed) whether trained or
    not: its complete trial's metrics, else the state of its latest trial ("not started"
    where none took it yet)."""
    cells = [tuple(c) for c in study.attrs.get("cells", [])]
    by_cell: dict[tuple, Trial] = {}
    for t in sorted(study.trials, key=lambda t: t.number):
        cell = tuple(t.params.get(p) for p in GRID)
        held = by_cell.get(cell)
        if held is None or held.state != "complete":  # a complete trial stays; otherwise the latest
            by_cell[cell] = t
    cells += [c for c in by_cell if c not in cells and None not in c]
    rows = []
    for cell in cells:
        t = by_cell.get(cell)
        rows.append({**dict(zip(GRID, cell)), "state": t.state if t else "not started",
                     "trial": "" if t is None else str(t.number),
                     **{label: round(_number(getattr(t, field) if t else None), 4)
                        for label, field in METRICS.items()}})
    return pd.DataFrame(rows, columns=[*GRID, "state", "trial", *METRICS])


def headline(study: Study) -> str:
    """The study in one Markdown line. For a tune study: what was tuned, how many trials are
    complete, PS and the best trial, chosen by validation Acc. A compare study mixes
    methods, so neither a PS nor a best trial means anything there: it says how much of
    its grid is trained."""
    done, total = len(study.complete), len(study.trials)
    if study.kind == "compare":
        cells = len(study.attrs.get("cells", []))
        return (f"**compare** study · {done} of {cells} cells trained ({total} trials, counting pruned and failed "
                "ones) · PS and a best trial are per method: see the tune studies")
    parts = [f"**{md(study.kind)}** study", f"sequence **{md(study.sequence or '?')}**",
             f"method **{md(study.method or '?')}**", f"{done} of {total} trials complete",
             f"PS **{fmt(study.ps)}**" + ("" if study.ps is not None else " (needs two complete trials)")]
    best = study.best
    if best is not None:
        parts.append(f"best trial **{best.number}** (by validation Acc): val Acc **{fmt(best.val_acc)}**, "
                     f"its test Acc **{fmt(best.test_acc)}**")
    return " · ".join(parts)


MAX_PROBLEMS = 5
"""Problems of one study named in full; the rest are counted."""


def problems_line(study: Study) -> str:
    """What of ``study`` could not be read and is left out (Markdown): each unreadable trial
    with the field at fault, each dropped study attribute; empty when everything was read."""
    shown = [md(p) for p in study.problems[:MAX_PROBLEMS]]
    more = len(study.problems) - len(shown)
    return "; ".join(shown) + (f"; and {more} more" if more > 0 else "")


def ps_caption(pairs: Mapping[tuple[str, str], tuple[Study, str]]) -> str:
    """Which study each PS in Compare comes from: name, complete and all trials, task count,
    storage (Markdown)."""
    lines = []
    for (sequence, method), (study, where) in pairs.items():
        tasks = study.attrs.get("tasks")
        lines.append(f"{md(sequence)} · {md(method)}: study {md(study.name)}, {len(study.complete)} complete of "
                     f"{len(study.trials)} trials" + (f", {md(tasks)} tasks" if tasks else "") + f", in {md(where)}")
    return "; ".join(lines)
