"""Story, step 5: the consequence in accuracy, the run − HAT difference matrix (the step's
chart and sentence) and, among its details, BWT and FWT per family and a stability-plasticity
chart over the listed seeds. Pure builders, as in :mod:`explorer.figures.story`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from explorer.figures.accuracy import difference
from explorer.figures.common import DIVERGING, FONT, empty, fmt, method_colour, short
from explorer.figures.story import PAGE, Size, label, projector, title_margin
from prm import metrics
from prm.analysis import family_metrics, run_metrics
from prm.run import RunState


CELL_TEXT_UP_TO = 12
"""Tasks up to which every cell of the difference matrix is written out: "+0.05" needs ~35 px,
a cell's share of a ~420 px column at 12 tasks; beyond, the value is in the hover only."""


def difference_figure(a: RunState, b: RunState, *, a_name: str, b_name: str, size: Size = PAGE) -> go.Figure:
    """R_a − R_b, diverging around 0 on a symmetric range, every known cell written out where
    the cells are large enough (:data:`CELL_TEXT_UP_TO`)."""
    D = difference(a, b)
    n = len(D)
    if np.isnan(D).all():
        return empty("the two runs share no learnt task")
    bound = max(float(np.nanmax(np.abs(D))), 0.05)
    ticks = [short(t) for t in range(n)]
    text = [["" if np.isnan(v) or n > CELL_TEXT_UP_TO else fmt(v, 2, signed=True) for v in row] for row in D]
    fig = go.Figure(go.Heatmap(z=D, x=ticks, y=ticks, zmin=-bound, zmax=bound, colorscale=DIVERGING, text=text,
                               texttemplate="%{text}", textfont=dict(size=size.font(FONT - 2)), xgap=1, ygap=1,
                               colorbar=dict(title=dict(text=f"{a_name} − {b_name}", side="right"), thickness=14),
                               hovertemplate="after %{y}, on %{x}: %{z:+.3f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title="after learning task")
    fig.update_xaxes(title="tested on task")
    return projector(fig, title=f"Accuracy of {a_name} minus {b_name} (red: {b_name} better, blue: {a_name} better)",
                     height=max(400, 170 + 34 * n), size=size)


def family_transfer(states: Mapping[str, RunState], stl: RunState | None) -> pd.DataFrame:
    """One row per method and family: BWT and FWT over that family's learnt tasks
    (``prm.analysis.family_metrics``; "n/a" where a value cannot be computed: no STL run, or
    no task of that family learnt). Long, not wide, so the table fits a narrow column whatever
    the number of families."""
    rows = [{"method": label(method), "family": fam, "BWT": fmt(values["bwt"], signed=True),
             "FWT": fmt(values["fwt"], signed=True)}
            for method, state in states.items() for fam, values in family_metrics(state, stl=stl).items()]
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


CORNER_PX = 22
"""Room between the stability chart's title and its plot: one line of the corner names."""


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
                     title="FWT: just after learning − STL<br>(right: transfers)")
    fig.update_yaxes(range=[ys.min() - pad_y, ys.max() + pad_y], zeroline=True, zerolinecolor="#999",
                     title="BWT: final − just learnt<br>(down: forgets)")
    for x, y, text, anchor in ((0.01, 0.99, "keeps,<br>does not transfer", "left"),  # two short lines: the
                               (0.99, 0.99, "keeps and<br>transfers", "right"),  # corners stay apart in a
                               (0.01, 0.01, "forgets,<br>does not transfer", "left"),  # ~300 px plot
                               (0.99, 0.01, "transfers<br>but forgets", "right")):
        fig.add_annotation(x=x, y=y, xref="paper", yref="paper", text=text, showarrow=False, xanchor=anchor, align=anchor,
                           yanchor="top" if y > 0.5 else "bottom", font=dict(size=FONT, color="#666"))
    fig.update_layout(showlegend=False)
    projector(fig, title="Stability against plasticity: one point per method (±1 sd over seeds)", height=440)
    # drawn in a collapsed expander, so the margin is set, not measured: the title hangs from the
    # picture's top, and a line of room under it keeps the top tick label and corner names clear
    text = fig.layout.title.text  # plotly hangs a wrapped title by its first line: the rest is padded down
    extra_lines = title_margin(text) - title_margin(text.split("<br>")[0])
    return fig.update_layout(title=dict(yref="container", y=1, yanchor="top", pad_t=6 + extra_lines, automargin=False),
                             margin_t=title_margin(text) + CORNER_PX)


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
