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

from prm import methods

from prm.text import terminal

TASK_COLOURS = qualitative.D3 + qualitative.Dark24
FAMILY_COLOURS = {"classes": "#4C78A8", "writers": "#F58518", "people": "#54A24B", "style-A": "#E45756",
                  "style-B": "#72B7B2", "style-C": "#B279A2", "permuted": "#9D755D", "rotated-90": "#BAB0AC"}
FAMILY_SYMBOLS = {"classes": "circle", "writers": "diamond", "people": "hexagon", "style-A": "square",
                  "style-B": "triangle-up", "style-C": "star", "permuted": "x", "rotated-90": "cross"}
_SPARE_SYMBOLS = ("pentagon", "triangle-down", "star-square", "hourglass", "bowtie", "circle-x")
CLUSTER_COLOURS = qualitative.Set2 + qualitative.Pastel1
DIVERGING = "RdBu"
SEQUENTIAL = "Viridis"

# One meaning per palette: families (above), clusters (pastel Set2), tasks (D3), methods and
# phases each have their own, and right/wrong calls two fixed colours. The method palette
# (``Method.colour``) shares no colour with the task palette and keeps clear of the right/wrong
# green and red: HAT in blue and CAT, built on HAT, in cyan; PRM and its variants in purples,
# oranges and browns; the baselines in teal, ochre, grey and black.
METHOD_COLOURS = {m.name: m.colour for m in methods.REGISTRY.values()}
PHASE_COLOURS = {"dtd-head": "#C6DBEF", "dtd": "#6BAED6", "xmeans": "#08519C", "transfer": "#BCBDDC",
                 "reference": "#756BB1", "train": "#FDAE6B", "eval": "#BDBDBD"}
SIMILAR_COLOUR, DISSIMILAR_COLOUR = "#FDD49E", "#C6DBEF"
"""A call, not its judgement: called similar (warm, units shared) or dissimilar (cool, protected);
whether the call was right is the ✓/✗ in the right/wrong colours."""
RIGHT_COLOUR, WRONG_COLOUR = "#1A9850", "#D73027"
RIGHT_MARK, WRONG_MARK = "✓", "✗"

FONT = 13
"""Base font size of every chart (``style`` sets it; cell texts use it too): legible on a
1280x720 projector."""

TRUTH_RULE = ("Two tasks are truly similar when they share a family *and* a label set (two writers of the "
              "same ten digits, two tasks of one image style); a digit-pair task is dissimilar to every other "
              "task. A call is right (✓) when DTD called an earlier task similar exactly when it truly is, "
              "wrong (✗) otherwise.")
"""The truth every right/wrong mark is judged against (``prm.analysis.judged_right``), stated
once for every view's help text."""

PHASE_LABELS = {
    "dtd-head": "DTD 1st opt. (head only)",
    "dtd": "DTD 2nd opt. (whole model)",
    "xmeans": "X-means",
    "transfer": "CAT transfer tests",
    "reference": "CAT reference",
    "train": "training (LwPRM for PRM)",
    "eval": "evaluation",
}


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")
"""Control characters (Unicode category Cc: C0, DEL and C1), which break or erase lines."""
def visible(text: Any) -> str:
    """Text from a run file as it may be shown anywhere (Markdown, widget options, table cells,
    plotly): every control character, or run of them, becomes one space, and every character
    that draws nothing yet changes how text reads (a right-to-left override that turns
    'run\\u202egpj.exe' into 'runexe.jpg', an isolate, a zero-width joiner, a line separator)
    becomes its visible escape, ``\\u202e``. Letters, digits and emoji of every script stay
    as they are. Idempotent, so a string may pass through it twice (``task_label``, then ``md``)."""
    return terminal(_CONTROL.sub(" ", str(text)))  # prm's rule for the rest: one rule, app and CLI


def md(text: Any) -> str:
    """Text from a run file, made literal for Streamlit Markdown (st.markdown, captions,
    alerts, labels, toasts): :func:`visible` first, then every ASCII punctuation mark is
    backslash-escaped, so no link, image, emphasis, heading, HTML, LaTeX ($), colour or icon
    directive (:red[..], :material/..:) can start inside it."""
    return "".join("\\" + c if c in string.punctuation else c for c in visible(text))


def plain(text: Any) -> str:
    """Text from a run file, made literal for plotly (titles, hover, legend, tick and bar
    texts render a subset of HTML): :func:`visible` first, then <, > and & become entities,
    and % one too, so a name cannot open a %{...} template field where it ends up in a
    hovertemplate."""
    return html.escape(visible(text), quote=False).replace("%", "&#37;")


def family_colour(family: str) -> str:
    """A family's colour: fixed for the known families, a stable pick for any other name."""
    return FAMILY_COLOURS.get(family) or qualitative.Dark24[zlib.crc32(family.encode()) % len(qualitative.Dark24)]


def family_symbol(family: str) -> str:
    return FAMILY_SYMBOLS.get(family) or _SPARE_SYMBOLS[zlib.crc32(family.encode()) % len(_SPARE_SYMBOLS)]


def method_colour(method: Any) -> str:
    """A method's colour: fixed for the engine's methods, a stable pick for any other name
    (a damaged run's method may be missing: it gets a colour too)."""
    name = str(method)
    return METHOD_COLOURS.get(name) or qualitative.Dark24[zlib.crc32(name.encode()) % len(qualitative.Dark24)]


def mark(right: bool | None) -> str:
    """✓ for a right call, ✗ for a wrong one, nothing where there is no truth to judge by."""
    return "" if right is None else RIGHT_MARK if right else WRONG_MARK


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
    """"T3 writer 02": the task's number and its name as it may be shown (:func:`visible`), so
    the task pickers' options, which are plain text, cannot be spoofed either."""
    if task < len(tasks):
        return f"{short(task)} {visible(tasks[task]['name'])}"
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
        font=dict(size=FONT),
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


MINUS = "\u2212"
"""The minus sign (U+2212) of every number shown to users: as wide as "+", never read as a hyphen."""


def fmt(value: float | None, digits: int = 3, *, signed: bool = False) -> str:
    """A number as shown: "n/a" for a missing one, never "−0.000" (a value that rounds to zero
    is shown as 0), negative with the minus sign :data:`MINUS`, and with an explicit + when
    ``signed`` (changes, BWT, FWT)."""
    if value is None or (isinstance(value, (float, np.floating)) and np.isnan(value)):
        return "n/a"
    value = float(value)
    if round(value, digits) == 0:
        value = 0.0
    text = f"{value:+.{digits}f}" if signed and value else f"{value:.{digits}f}"
    return text.replace("-", MINUS)
