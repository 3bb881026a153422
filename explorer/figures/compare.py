"""Several runs side by side, drawn: the tables of :mod:`prm.compare` as shown (one text cell
per metric, "0.912 ± 0.013"), bars per group of like runs, their mean matrices and the time
per task (the paper's Figure 3), with the captions that say what the times cover.
"""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from explorer.figures.accuracy import colour_range
from explorer.figures.common import FONT, SEQUENTIAL, fmt, md, method_colour, plain, short, style
from prm import methods
from prm.compare import METRICS, EngineSplit

CT = METRICS["ct"]
SIGNED = ("BWT", "FWT")
"""Metrics that are changes: shown with their sign."""
TITLE_CHARS = 44
"""Longest line of a matrix title: fits half of a 1280-pixel page at FONT (about 7.5 px a character)."""
CELL_TEXT_UP_TO = 12
"""Matrices with more tasks carry their numbers in the hover only (cells too small for "0.95 ± 0.02")."""
NOT_TIMED = "–"
"""A CT cell of a run whose engine version differs from the open run's (``prm.compare.split_by_engine``)."""
DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
PATTERNS = ("", "/", "x", ".", "\\", "+")
"""A method's first, second, ... configuration: same colour (the method's), its own line dash
(time chart) or bar pattern (metric bars), so two experiments of one method never look alike."""


def _engine(version: str | None) -> str:
    return "an engine that did not record its version" if version is None else f"engine {md(version)}"


def engine_caption(split: EngineSplit, *, what: str) -> str:
    """What ``what`` (the times shown: "CT", "The time chart") covers under ``prm.compare.split_by_engine``:
    the open run's engine version, and each run left out by name with the engine that recorded it
    (Markdown)."""
    if split.reference is None:
        return (f"{what}: none shown. The open run was recorded by {_engine(None)}, so no run's seconds are "
                "known to compare with its own.")
    text = f"{what}: only runs recorded by {_engine(split.reference)}, as the open run was"
    if not split.left_out:
        return text + "."
    return (text + "; another engine's steps may be faster or slower. Left out: "
            + ", ".join(f"{md(name)} (recorded by {_engine(v)})" for name, v in sorted(split.left_out.items()))
            + ".")


def shown(table: pd.DataFrame) -> pd.DataFrame:
    """A ``prm.compare.per_run`` or ``per_method`` table as shown: each metric as one text cell,
    "0.912 ± 0.013" where there is a spread over seeds, BWT and FWT signed, "n/a" for a
    missing value (FWT without an STL run), never "None" or "-0.000"; CT "–" where it is not
    compared (:data:`NOT_TIMED`); PS (``prm.compare.with_ps``) "–" where no tune study gives one."""
    out = table.drop(columns=[c for c in table.columns if c.endswith(" sd")])
    for label in METRICS.values():
        digits = 1 if label == CT else 3
        signed = label in SIGNED
        sds = table[f"{label} sd"] if f"{label} sd" in table else [None] * len(table)
        out[label] = [NOT_TIMED if label == CT and _number(v) is None else
                      fmt(_number(v), digits, signed=signed) + ("" if _number(sd) is None else
                                                                f" ± {fmt(_number(sd), digits)}")
                      for v, sd in zip(table[label], sds)]
    if "PS" in out:
        out["PS"] = ["–" if _number(v) is None else fmt(_number(v), 3) for v in table["PS"]]
    if "seed" in out:
        out["seed"] = ["n/a" if _number(v) is None else str(int(v)) for v in out["seed"]]
    return out


def _number(value) -> float | None:
    value = pd.to_numeric(value, errors="coerce")
    return None if pd.isna(value) else float(value)


def zoomed_range(mean, sd) -> list[float]:
    """A y range for accuracies that shows their differences: from a little below the lowest
    mean - sd to a little above the highest mean + sd (at most 1), not 0-1, on which 0.90
    and 0.93 look alike."""
    mean = pd.to_numeric(pd.Series(mean), errors="coerce")
    sd = pd.to_numeric(pd.Series(sd), errors="coerce").fillna(0)
    lows, highs = (mean - sd).dropna(), (mean + sd).dropna()
    if lows.empty:
        return [0.0, 1.0]
    pad = max(0.02, 0.15 * float(highs.max() - lows.min()))
    return [max(0.0, float(lows.min()) - pad), min(1.0, float(highs.max())) + pad / 2]


def bars(summary: pd.DataFrame) -> go.Figure:
    """One panel per metric, a bar per group of like runs in its method's colour with ±1 sd
    error bars over seeds; Acc on a zoomed axis (:func:`zoomed_range`). A method's groups of
    several configurations are named and patterned apart (:func:`_groups`)."""
    labels = list(METRICS.values())
    fig = make_subplots(rows=1, cols=len(labels), subplot_titles=labels, horizontal_spacing=0.06)
    groups = _groups(summary)
    pairs = list(zip(summary["method"], summary["config"]))
    names = [f"{plain(groups[k][0])} · {t}" + (f"<br>{plain(s)}" if summary["sequence"].nunique() > 1 else "")
             for k, s, t in zip(pairs, summary["sequence"], summary["tasks"])]
    marker = dict(color=[method_colour(m) for m, _ in pairs],
                  pattern=dict(shape=[PATTERNS[groups[k][1] % len(PATTERNS)] for k in pairs]))
    for col, label in enumerate(labels, start=1):
        values = pd.to_numeric(summary[label], errors="coerce")
        sd = pd.to_numeric(summary[f"{label} sd"], errors="coerce").fillna(0)
        fig.add_bar(x=names, y=values, error_y=dict(type="data", array=sd, visible=True), showlegend=False,
                    marker=marker, customdata=summary["seeds"], row=1, col=col,
                    hovertemplate="%{x}<br>" + label + " %{y:.3f} (seeds: %{customdata})<extra></extra>")
    fig.update_yaxes(range=zoomed_range(summary["Acc"], summary["Acc sd"]), row=1, col=1)
    fig.update_annotations(font_size=FONT)
    fig.update_xaxes(tickfont=dict(size=12))
    return style(fig, height=400)


def wrap(text: str, width: int = TITLE_CHARS) -> list[str]:
    """Title lines of at most ``width`` characters, broken at spaces (a longer word is cut)."""
    return textwrap.wrap(text, width, break_on_hyphens=False) or [""]


def _cell(mean: float, sd: float | None) -> str:
    if np.isnan(mean):
        return ""
    return fmt(mean, 2) + ("" if sd is None or np.isnan(sd) else f"<br>± {fmt(sd, 2)}")


def matrices(groups: list[dict]) -> go.Figure:
    """The mean accuracy matrices of ``prm.compare.group_matrices``, two to a row (one when a matrix
    has more than :data:`CELL_TEXT_UP_TO` tasks), each cell "0.95 ± 0.02" where there is a
    spread over seeds, on one colour scale spanning the data (``accuracy.colour_range``, as in
    the Accuracy view: 0.72 and 1.00 look different, where 0-1 would make both dark)."""
    groups = groups or [{"title": "", "mean": np.full((1, 1), np.nan), "sd": None}]
    size = max(len(g["mean"]) for g in groups)
    cols = 1 if size > CELL_TEXT_UP_TO or len(groups) == 1 else 2
    rows = -(-len(groups) // cols)
    titles = ["<br>".join(plain(line) for line in wrap(g["title"])) for g in groups]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.12,
                        vertical_spacing=min(0.3, 0.5 / rows) if rows > 1 else 0.0)
    lo, hi = colour_range(np.concatenate([g["mean"].ravel() for g in groups]))
    for n, g in enumerate(groups):
        row, col = n // cols + 1, n % cols + 1
        mean, sd = g["mean"], g["sd"]
        ticks = [short(t) for t in range(len(mean))]
        text = [[_cell(mean[a, b], None if sd is None else sd[a, b]) for b in range(len(mean))]
                for a in range(len(mean))] if len(mean) <= CELL_TEXT_UP_TO else None
        hover_sd = np.full(mean.shape, np.nan) if sd is None else sd
        fig.add_heatmap(z=mean, x=ticks, y=ticks, zmin=lo, zmax=hi, colorscale=SEQUENTIAL, showscale=n == 0,
                        colorbar=dict(title=dict(text="accuracy")), text=text,
                        texttemplate="%{text}" if text else None, textfont=dict(size=FONT - 1),
                        customdata=hover_sd, xgap=1, ygap=1,
                        hovertemplate=plain(g["title"]) + "<br>after %{y}, on %{x}: %{z:.3f}"
                        + ("" if sd is None else " ± %{customdata:.3f}") + "<extra></extra>", row=row, col=col)
        fig.update_yaxes(autorange="reversed", title="after learning", row=row, col=col)
        fig.update_xaxes(title="tested on", row=row, col=col)
    fig.update_annotations(font_size=FONT)
    lines = max(len(t.split("<br>")) for t in titles)
    per_row = max(380, 120 + 34 * min(size, 20)) + 20 * lines
    fig = style(fig, height=per_row * rows)
    fig.update_layout(margin=dict(t=30 + 20 * lines))
    return fig


def _groups(summary: pd.DataFrame) -> dict[tuple, tuple[str, int]]:
    """Per (method, config), in order of appearance: its name (the method, with the config id
    only where one method has several configurations) and its rank among its method's
    configurations (0, 1, ...: picks its dash, :data:`DASHES`, or bar pattern, :data:`PATTERNS`)."""
    pairs = summary[["method", "config"]].drop_duplicates()
    rank = pairs.groupby("method", dropna=False).cumcount()
    several = pairs.groupby("method", dropna=False)["config"].transform("size") > 1
    return {(m, c): (f"{m} · {c}" if many else str(m), int(r))
            for m, c, many, r in zip(pairs["method"], pairs["config"], several, rank)}


def time_figure(summary: pd.DataFrame) -> go.Figure:
    """The paper's Figure 3: time per task (left) and accumulated time (right, log axis: CAT's
    quadratic total and NCL's seconds fit one chart), a line per method in its colour (a
    method's second configuration dashed, :func:`_groups`), means over seeds (the hover says
    over how many)."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=["time per task (s)", "accumulated time (s, log scale)"])
    for (method, config), (name, rank) in _groups(summary).items():
        part = summary[(summary["method"] == method) & (summary["config"] == config)]
        line = dict(color=method_colour(method), dash=DASHES[rank % len(DASHES)])
        x = [short(t) for t in part["task"]]
        custom = np.column_stack([part["seeds"], part["detection"]])
        for col, column, what in ((1, "seconds", "took"), (2, "accumulated", "in all after")):
            fig.add_scatter(x=x, y=part[column], mode="lines+markers", name=plain(name), legendgroup=name,
                            showlegend=col == 1, line=line, customdata=custom,
                            hovertemplate=f"{plain(name)} {what} %{{x}}: %{{y:.2f}} s (similarity detection "
                                          "%{customdata[1]:.2f} s of that task; mean of %{customdata[0]} seed(s))"
                                          "<extra></extra>", row=1, col=col)
    tasks = [short(t) for t in range(int(summary["task"].max()) + 1)] if len(summary) else []
    fig.update_xaxes(title_text="task", categoryorder="array", categoryarray=tasks)
    fig.update_yaxes(title_text="seconds", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="seconds", type="log", row=1, col=2,
                     **log_ticks(summary["accumulated"]))
    fig.update_annotations(font_size=FONT)
    fig.update_layout(legend=dict(orientation="h", y=-0.25, x=0, title_text="method:"))
    style(fig, height=440)
    fig.update_layout(margin=dict(t=40))  # room for the panel titles
    return fig


def log_ticks(values) -> dict:
    """Ticks of a log axis at 1, 2 and 5 of each decade the values span, written as plain
    numbers (plotly's own minor labels crowd a span of two decades)."""
    values = pd.to_numeric(pd.Series(values), errors="coerce")
    values = values[np.isfinite(values) & (values > 0)]  # a damaged run's 1e308 + 1e308 is inf
    if values.empty:
        return {}
    low, high = int(np.floor(np.log10(values.min()))), int(np.ceil(np.log10(values.max())))
    ticks = [m * 10.0 ** e for e in range(low, high + 1) for m in (1, 2, 5)]
    ticks = [t for t in ticks if values.min() / 2 <= t <= values.max() * 2]
    return {"tickvals": ticks, "ticktext": [f"{t:g}" for t in ticks]}


def time_sentence(summary: pd.DataFrame) -> str:
    """Per line, its time per task at the second task (the first with an earlier task to test
    or cluster against) and at its last, and its accumulated time: what the chart's slope says,
    in numbers (Markdown)."""
    parts = []
    for (method, config), (name, _) in _groups(summary).items():
        part = summary[(summary["method"] == method) & (summary["config"] == config)].set_index("task")
        first, last = (1 if 1 in part.index else part.index[0]), part.index[-1]
        parts.append(f"{md(name)} {fmt(part.loc[first, 'seconds'], 1)} s at {short(first)}, "
                     f"{fmt(part.loc[last, 'seconds'], 1)} s at {short(last)} "
                     f"({fmt(part.loc[last, 'accumulated'], 1)} s in all)")
    return "Time per task: " + "; ".join(parts) + "." if parts else "No run of this sequence has learnt a task."


def time_caption(summary: pd.DataFrame) -> str:
    """The time chart's caption, about the lines it draws only: why CAT's time per task grows
    where a CAT line is drawn, why PRM's should stay flat where a line of a PRM variant (every
    one runs DTD) is, then :func:`time_sentence`'s numbers (Markdown)."""
    drawn = sorted({m for m in summary["method"] if m in methods.REGISTRY}, key=str)
    cat = [m for m in drawn if methods.get(m).transfer_tests]
    prm = [m for m in drawn if methods.get(m).runs_dtd]
    why = []
    if cat:
        why.append("CAT's time per task grows with the number of earlier tasks, because before each new task it "
                   "trains one transfer network per earlier task.")
    if prm:
        why.append(f"PRM's ({', '.join(md(m) for m in prm)}) should stay about flat: one DTD pass per task, "
                   "whatever the number of earlier tasks.")
    return " ".join([*why, "The accumulated time is on a log axis.", time_sentence(summary)])
