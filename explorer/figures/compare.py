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
CELL_TEXT_UP_TO = 10
"""Matrices with more tasks carry their numbers in the hover only (a cell is too small for "0.95")."""
SD_TEXT_UP_TO = 6
"""Matrices with more tasks write a cell's mean without its "± 0.02" (that stays in the hover)."""
BAR_PX = 26
"""Pixels per bar (per line of its name) in :func:`bars`: room for every name on the y axis."""
METRIC_MEANING = {
    "Acc": "the test accuracy averaged over every task learnt, after the last",
    "BWT": "the mean change of each task's test accuracy from just after it was learnt to the end (negative: "
           "forgetting)",
    "FWT": "the mean test accuracy just after learning each task minus that of the STL run (one network per task) "
           "of the same seed (none without it)",
    "CT (s)": "the computation time: a run's wall-clock seconds from its start to its end (a run that did not end: "
              "the sum of its finished tasks' times)",
}
"""What each metric of ``prm.compare.METRICS`` is (``prm.analysis.run_metrics``), for the captions."""
TIME_AXES = {"x": "task learnt", "y": "seconds on that task", "y2": "seconds since T1 began"}
"""The time chart's axis titles (:func:`time_figure`), which its caption names (:func:`time_caption`)."""
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


def ranked(summary: pd.DataFrame) -> pd.DataFrame:
    """``summary`` (``prm.compare.per_method``) with the highest mean Acc first and groups
    without an Acc last: the order in which the summary answers "which does best here"."""
    acc = pd.to_numeric(summary["Acc"], errors="coerce").fillna(-np.inf)
    return summary.assign(_acc=-acc).sort_values("_acc", kind="stable").drop(columns="_acc").reset_index(drop=True)


def summary_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The answer in few columns, narrow enough for an 800-pixel page (about 460 px): per group,
    best mean Acc first (:func:`ranked`), its Acc as mean ± sd, how far its mean is behind the
    best's, its seeds and configuration; the sequence only where several are shown. The other
    metrics stay in the full table (:func:`shown`)."""
    best = ranked(summary)
    acc = pd.to_numeric(best["Acc"], errors="coerce")
    behind = ["best" if n == 0 else "n/a" if np.isnan(a) else fmt(a - acc.iloc[0], signed=True)
              for n, a in enumerate(acc)]
    table = shown(best).assign(**{"Acc vs best": behind})
    columns = ["sequence"] * (best["sequence"].nunique() > 1) + ["method", "Acc", "Acc vs best", "seeds", "config"]
    return table[columns]


def _names(summary: pd.DataFrame) -> list[str]:
    """A bar's name per row: its group (:func:`_groups`), the tasks learnt, and its sequence on a
    second line where several sequences are shown (plain text: it may hold a run's names)."""
    groups = _groups(summary)
    several = summary["sequence"].nunique() > 1
    return [f"{plain(groups[(m, c)][0])} · {t}" + (f"<br>{plain(s)}" if several else "")
            for m, c, s, t in zip(summary["method"], summary["config"], summary["sequence"], summary["tasks"])]


def bars(summary: pd.DataFrame, *, metrics: tuple[str, ...] = tuple(METRICS.values())) -> go.Figure:
    """One panel per metric of ``metrics`` (two to a row), a horizontal bar per group of like
    runs in ``summary``'s order from the top, in its method's colour with ±1 sd error bars over
    seeds; Acc on a zoomed axis (:func:`zoomed_range`). The names stand on the y axis, each on
    its own line of :data:`BAR_PX` pixels, every one labelled however narrow the page (as x
    ticks, plotly drops names that would touch). A method's groups of several configurations
    are named and patterned apart (:func:`_groups`)."""
    cols = min(2, len(metrics))
    rows = -(-len(metrics) // cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=list(metrics), shared_yaxes=True,
                        horizontal_spacing=0.06, vertical_spacing=0.3 / rows if rows > 1 else 0.0)
    groups = _groups(summary)
    pairs = list(zip(summary["method"], summary["config"]))
    names = _names(summary)
    marker = dict(color=[method_colour(m) for m, _ in pairs],
                  pattern=dict(shape=[PATTERNS[groups[k][1] % len(PATTERNS)] for k in pairs]))
    for n, label in enumerate(metrics):
        values = pd.to_numeric(summary[label], errors="coerce")
        sd = pd.to_numeric(summary[f"{label} sd"], errors="coerce").fillna(0)
        fig.add_bar(y=names, x=values, orientation="h", error_x=dict(type="data", array=sd, visible=True),
                    showlegend=False, marker=marker, customdata=summary["seeds"], row=n // cols + 1, col=n % cols + 1,
                    hovertemplate="%{y}<br>" + label + " %{x:.3f} (seeds: %{customdata})<extra></extra>")
        if label == "Acc":
            fig.update_xaxes(range=zoomed_range(summary["Acc"], summary["Acc sd"]), row=n // cols + 1,
                             col=n % cols + 1)
    fig.update_yaxes(autorange="reversed", tickmode="array", tickvals=names, ticktext=names, automargin=True,
                     tickfont=dict(size=12))
    fig.update_xaxes(automargin=True)
    fig.update_annotations(font_size=FONT)
    lines = 2 if summary["sequence"].nunique() > 1 else 1
    fig = style(fig, height=rows * (BAR_PX * lines * max(1, len(names)) + 50) + 40)
    fig.update_layout(margin=dict(t=30))  # room for the panel titles
    return fig


def _meaning(label: str) -> str:
    return f"{label}, {METRIC_MEANING[label]}"


def bars_caption(summary: pd.DataFrame, *, metrics: tuple[str, ...] = tuple(METRICS.values())) -> str:
    """What :func:`bars` of the same arguments draws: what a bar and its whisker are, each
    metric's meaning, and where the zoomed Acc axis starts (:func:`zoomed_range`: the value the
    figure uses), so nobody reads its bar lengths as proportions (Markdown)."""
    seeds = sorted({int(n) for n in pd.to_numeric(summary["seeds"], errors="coerce").dropna()})
    counted = "" if not seeds else f" ({seeds[0]} each)" if len(seeds) == 1 else f" ({seeds[0]} to {seeds[-1]})"
    text = (f"A bar per group of like runs ({len(summary)}; named method · tasks learnt, its configuration in the "
            f"table): the mean over its distinct seeds{counted}, the "
            "whisker ±1 sd over them (none for one seed); a group without a value has no bar. "
            + "; ".join(_meaning(label) for label in metrics) + ".")
    if "Acc" in metrics and len(summary):
        low = zoomed_range(summary["Acc"], summary["Acc sd"])[0]
        text += (f" The Acc axis starts at {fmt(low, 2)}, not 0 (just below the lowest mean − sd), so small "
                 "differences show: compare the bars' ends, not their lengths.")
    return text


def best_sentence(summary: pd.DataFrame) -> str:
    """Which group has the highest mean Acc, by how much it leads the next, and whether that
    lead is larger than the spread over seeds; then the lowest (Markdown)."""
    top = ranked(summary)
    top = top[pd.to_numeric(top["Acc"], errors="coerce").notna()]
    if top.empty:
        return "No group has an Acc yet."
    names = {k: md(v[0]) for k, v in _groups(top).items()}
    rows = [(names[(m, c)], float(a), _number(sd), int(n))
            for m, c, a, sd, n in zip(top["method"], top["config"], top["Acc"], top["Acc sd"], top["seeds"])]
    text = f"Highest mean Acc here: {_said(*rows[0])}"
    if len(rows) == 1:
        return text + "."
    lead, spread = rows[0][1] - rows[1][1], max(rows[0][2] or 0.0, rows[1][2] or 0.0)
    within = ("within one sd over seeds, so these seeds do not separate them" if lead <= spread else
              "more than one sd over seeds")
    return (f"{text}; {fmt(lead)} ahead of the next, {_said(*rows[1])} ({within})."
            + (f" Lowest: {_said(*rows[-1])}." if len(rows) > 2 else ""))


def _said(name: str, acc: float, sd: float | None, seeds: int) -> str:
    return f"**{name}** {fmt(acc)}" + (f" ± {fmt(sd)} over {seeds} seeds" if sd is not None else
                                       f" ({seeds} seed{'s' if seeds != 1 else ''})")


def wrap(text: str, width: int = TITLE_CHARS) -> list[str]:
    """Title lines of at most ``width`` characters, broken at spaces (a longer word is cut)."""
    return textwrap.wrap(text, width, break_on_hyphens=False) or [""]


def _cell_text(mean: np.ndarray, sd: np.ndarray | None) -> list[list[str]] | None:
    """The numbers written in a matrix's cells, as many as the cells hold at the narrowest width
    a matrix gets (about 420 px, one to a row on an 800-pixel page): "0.95<br>± 0.02" up to
    :data:`SD_TEXT_UP_TO` tasks, the mean alone up to :data:`CELL_TEXT_UP_TO`, none above (the
    hover always has mean and sd)."""
    size = len(mean)
    if size > CELL_TEXT_UP_TO:
        return None
    spread = sd is not None and size <= SD_TEXT_UP_TO
    return [["" if np.isnan(mean[a, b]) else fmt(mean[a, b], 2) + (
        f"<br>± {fmt(sd[a, b], 2)}" if spread and not np.isnan(sd[a, b]) else "") for b in range(size)]
        for a in range(size)]


def matrix_range(groups: list[dict]) -> tuple[float, float]:
    """The one colour scale of every matrix shown (``accuracy.colour_range``, as in the Accuracy
    view: 0.72 and 1.00 look different, where 0-1 would make both dark)."""
    return colour_range(np.concatenate([g["mean"].ravel() for g in groups])) if groups else (0.0, 1.0)


def per_row(groups: list[dict]) -> int:
    """Matrices to a row on a wide page: two, one where a matrix has more tasks than its cells can
    number (:data:`CELL_TEXT_UP_TO`); the page puts one to a row on a narrow screen anyway."""
    return 1 if len(groups) < 2 or max(len(g["mean"]) for g in groups) > CELL_TEXT_UP_TO else 2


def matrix(group: dict, *, zrange: tuple[float, float]) -> go.Figure:
    """One group's mean accuracy matrix (``prm.compare.group_matrices``) on the colour scale
    ``zrange`` shared by all (:func:`matrix_range`), cell text as :func:`_cell_text` allows, its
    colour bar under the plot (beside it, it would take a narrow column's width). One figure
    per group, so that the page sets two to a row on a wide screen and one on a narrow one."""
    mean, sd = group["mean"], group["sd"]
    ticks = [short(t) for t in range(len(mean))]
    text = _cell_text(mean, sd)
    title = "<br>".join(plain(line) for line in wrap(group["title"]))
    fig = go.Figure(go.Heatmap(
        z=mean, x=ticks, y=ticks, zmin=zrange[0], zmax=zrange[1], colorscale=SEQUENTIAL, xgap=1, ygap=1,
        colorbar=dict(title=dict(text="accuracy", side="top"), orientation="h", thickness=10, y=-0.2,
                      yanchor="top", len=1.0),
        text=text, texttemplate="%{text}" if text else None, textfont=dict(size=FONT - 2),
        customdata=np.full(mean.shape, np.nan) if sd is None else sd,
        hovertemplate=plain(group["title"]) + "<br>after %{y}, on %{x}: %{z:.3f}"
        + ("" if sd is None else " ± %{customdata:.3f}") + "<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title="after learning", automargin=True)
    fig.update_xaxes(title="tested on", automargin=True)
    lines = len(title.split("<br>"))
    style(fig, height=max(380, 120 + 30 * min(len(mean), 20)) + 20 * lines + 60)
    fig.update_layout(title=dict(text=title, x=0, xanchor="left", font=dict(size=FONT)),
                      margin=dict(t=20 + 20 * lines, b=70))
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
    over how many). The right panel's axis stands on its right, so its title never lies over the
    left panel's lines on a narrow page."""
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
    fig.update_xaxes(title_text=TIME_AXES["x"], categoryorder="array", categoryarray=tasks, automargin=True)
    fig.update_yaxes(title_text=TIME_AXES["y"], rangemode="tozero", automargin=True, row=1, col=1)
    fig.update_yaxes(title_text=TIME_AXES["y2"], type="log", automargin=True, side="right", row=1, col=2,
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
    """The time chart's caption, about what :func:`time_figure` draws of ``summary``: its axes
    (:data:`TIME_AXES`, its axis titles), what a line and a point are, what the seconds cover
    (similarity detection named only for the methods drawn that run one), how the accumulated time
    relates to CT; why CAT's time per task grows where a CAT line is drawn and why PRM's should
    stay flat where a line of a PRM variant (every one runs DTD) is; then :func:`time_sentence`'s
    numbers (Markdown)."""
    drawn = sorted({m for m in summary["method"] if m in methods.REGISTRY}, key=str)
    cat = [md(m) for m in drawn if methods.get(m).transfer_tests]
    prm = [md(m) for m in drawn if methods.get(m).runs_dtd]
    detection = ([f"DTD for {', '.join(prm)}"] if prm else []) + (
        [f"transfer and reference trainings for {', '.join(cat)}"] if cat else [])
    covers = "its training epochs and its evaluation on every task learnt so far" + (
        f", and the similarity detection before it ({'; '.join(detection)})" if detection else "")
    what = [f"Left: {TIME_AXES['y']} (y) per {TIME_AXES['x']} (x, T1 first), a line per method (a method's "
            "second configuration dashed); a point is the mean, over the seeds that reached that task, of the "
            f"wall-clock seconds of that task: {covers}.",
            f"Right, on a log axis: {TIME_AXES['y2']} (y), the running sum of the left's points; at the last task "
            "it is a little under CT, which also counts the setup before the first task and what is written "
            "between tasks."]
    if cat:
        what.append("CAT's time per task grows with the number of earlier tasks, because before each new task it "
                    "trains one transfer network per earlier task.")
    if prm:
        what.append(f"PRM's ({', '.join(prm)}) should stay about flat: one DTD pass per task, "
                    "whatever the number of earlier tasks.")
    return " ".join([*what, time_sentence(summary)])


def matrices_caption(groups: list[dict]) -> str:
    """What :func:`matrix` draws of each of ``groups``: what a matrix, a row, a column, a colour and a
    cell's text are, the shared colour scale's ends (``accuracy.colour_range``, as the figure
    uses them) and where the numbers went when the cells are too small (Markdown)."""
    if not groups:
        return "No group of runs to draw."
    lo, hi = matrix_range(groups)
    size = max(len(g["mean"]) for g in groups)
    several = sum(g["sd"] is not None for g in groups)
    return (f"A matrix per group of like runs ({len(groups)}, titled by method · sequence · tasks, or by the run "
            "where it is one seed): row *j* is after learning task *j* (T1 at the top), column *i* the task tested "
            "on, the colour its test accuracy"
            + (f", the mean over the group's seeds ({several} of the groups have several)" if several else "")
            + f"; one colour scale, {fmt(lo, 2)} to {fmt(hi, 2)}, spans every matrix shown. "
            + _cell_words(size, several=bool(several)) + " Cells above the diagonal (tasks not yet learnt) are blank.")


def _cell_words(size: int, *, several: bool) -> str:
    """What :func:`_cell_text` writes in the cells of a matrix of ``size`` tasks."""
    if size > CELL_TEXT_UP_TO:
        return f"With {size} tasks the cells are too small for text: hover over a cell for its value."
    if not several:
        return "Each cell's text is its accuracy."
    return ("Each cell's text is its accuracy ± its sd over seeds." if size <= SD_TEXT_UP_TO else
            "Each cell's text is its accuracy; hover over it for its sd over seeds.")
