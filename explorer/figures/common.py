"""Task naming and colours shared by every view, so task 3 looks the same everywhere."""

from __future__ import annotations

import html
import re
import string
import zlib
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative

TASK_COLOURS = qualitative.D3 + qualitative.Dark24
FAMILY_COLOURS = {"classes": "#4C78A8", "writers": "#F58518", "people": "#54A24B", "style-A": "#E45756",
                  "style-B": "#72B7B2", "style-C": "#B279A2", "permuted": "#9D755D", "rotated-90": "#BAB0AC"}
FAMILY_SYMBOLS = {"classes": "circle", "writers": "diamond", "people": "hexagon", "style-A": "square",
                  "style-B": "triangle-up", "style-C": "star", "permuted": "x", "rotated-90": "cross"}
_SPARE_SYMBOLS = ("pentagon", "triangle-down", "star-square", "hourglass", "bowtie", "circle-x")
CLUSTER_COLOURS = qualitative.Set2 + qualitative.Pastel1
DIVERGING = "RdBu"
SEQUENTIAL = "Viridis"

PHASE_LABELS = {
    "dtd-head": "DTD 1st opt. (head only)",
    "dtd": "DTD 2nd opt. (whole model)",
    "xmeans": "X-means",
    "train": "training (LwPRM for PRM)",
    "eval": "evaluation",
}


_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def md(text: Any) -> str:
    """Text from a run file, made literal for Streamlit Markdown (st.markdown, captions,
    alerts, labels, toasts): control characters become one space and every ASCII punctuation
    mark is backslash-escaped, so no link, image, emphasis, heading, HTML, LaTeX ($), colour
    or icon directive (:red[..], :material/..:) can start inside it."""
    flat = _CONTROL.sub(" ", str(text))
    return "".join("\\" + c if c in string.punctuation else c for c in flat)


def plain(text: Any) -> str:
    """Text from a run file, made literal for plotly (titles, hover, legend, tick and bar
    texts render a subset of HTML): <, > and & become entities, and % one too, so a name
    cannot open a %{...} template field where it ends up in a hovertemplate."""
    return html.escape(str(text), quote=False).replace("%", "&#37;")


def family_colour(family: str) -> str:
    """A family's colour: fixed for the known families, a stable pick for any other name."""
    return FAMILY_COLOURS.get(family) or qualitative.Dark24[zlib.crc32(family.encode()) % len(qualitative.Dark24)]


def family_symbol(family: str) -> str:
    return FAMILY_SYMBOLS.get(family) or _SPARE_SYMBOLS[zlib.crc32(family.encode()) % len(_SPARE_SYMBOLS)]


def task_colour(task: int) -> str:
    return TASK_COLOURS[task % len(TASK_COLOURS)]


def cluster_colour(cluster: int) -> str:
    return CLUSTER_COLOURS[cluster % len(CLUSTER_COLOURS)]


def short(task: int) -> str:
    """Tasks are shown 1-based (T1..TN), as in the paper; the engine counts from 0."""
    return f"T{task + 1}"


def parse_short(label: str) -> int:
    return int(label[1:]) - 1


def task_label(tasks: tuple[dict[str, Any], ...] | list[dict[str, Any]], task: int) -> str:
    if task < len(tasks):
        return f"{short(task)} {tasks[task]['name']}"
    return short(task)


def family(tasks, task: int) -> str:
    return tasks[task]["family"] if task < len(tasks) else "?"


def names(tasks, count: int | None = None) -> list[str]:
    n = len(tasks) if count is None else count
    return [task_label(tasks, t) for t in range(n)]


def plain_names(tasks, count: int | None = None) -> list[str]:
    """:func:`names` made literal for plotly's HTML (hover, ticks, legends)."""
    return [plain(name) for name in names(tasks, count)]


def style(fig: go.Figure, *, title: str | None = None, height: int | None = None) -> go.Figure:
    """One look for every chart: compact margins, title left, hover labels readable. The
    title is taken as plain text (it may hold a run's names), never as plotly's HTML."""
    fig.update_layout(
        title=dict(text=plain(title), x=0, xanchor="left") if title else None,
        margin=dict(l=10, r=10, t=40 if title else 10, b=10),
        hoverlabel=dict(namelength=-1),
        template="plotly_white",
    )
    if height:
        fig.update_layout(height=height)
    return fig


def empty(message: str, *, height: int = 200) -> go.Figure:
    """A blank chart carrying a sentence, for data a run does not have (yet)."""
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper",
                       font=dict(size=14, color="#666"))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return style(fig, height=height)


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"
