"""Task naming and colours shared by every view, so task 3 looks the same everywhere."""

from __future__ import annotations

import html
import re
import string
import textwrap
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

PHASE_HEADS = {"dtd-head": "DTD 1st", "dtd": "DTD 2nd", "xmeans": "X-means", "transfer": "transfers",
               "reference": "reference", "train": "training", "eval": "evaluation"}
"""The phases' names where a column head must be short (a table beside a chart at 800 px);
:data:`PHASE_LABELS` says them in full (the table's tooltips, legends)."""


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


NARROW = 420
"""The narrowest a chart is drawn: an 800 px window with the sidebar open leaves ~460 px of
main column, where rows of columns wrap (explorer/style.css). A builder cannot know the
browser's width, so it chooses its texts to read at this width; wider, they just get room."""
TEXT_EM = 0.46
"""Width of an average character of a number ("0.93", "−0.03") in the app's font, in em
(measured in the browser: "0.00" is 22.6 px and "−0.03" 29.1 px at 13 px)."""
MIN_CELL_FONT = 10
"""Below this a cell's number is not worth reading: it goes to the hover only."""
MAX_TICKS = 12
"""At most about this many labels on an axis of tasks; more would touch at :data:`NARROW`."""


def cell_font(*, chars: int, across: float, down: float) -> int | None:
    """The font for numbers of ``chars`` characters written in cells ``across`` x ``down`` px:
    :data:`FONT` where they fit with room to spare, smaller down to :data:`MIN_CELL_FONT`,
    None where even that would touch a neighbour (the value stays in the hover). One rule for
    every heatmap with numbers in its cells, so none prints "1.001.001.00"."""
    for size in range(FONT, MIN_CELL_FONT - 1, -1):
        if chars * TEXT_EM * size + 4 <= across and size + 4 <= down:
            return size
    return None


def task_ticks(n: int, *, most: int = MAX_TICKS) -> list[int]:
    """The tasks to label on an axis of ``n`` tasks: all of them up to ``most`` (never more
    than :data:`MAX_TICKS`, at least 2), else every other one (T1, T3, ...) or the first and
    every k-th (k of 5, 10, 20, 50, ...: round numbers a reader can count on)."""
    most = min(max(int(most), 2), MAX_TICKS)
    if n <= most:
        return list(range(n))
    step = next(k * 10 ** e for e in range(6) for k in (2, 5, 10) if n / (k * 10 ** e) <= most - 1)
    return list(range(0, n, step)) if step < 5 else [0, *range(step - 1, n, step)]


def colour_bar(title: str) -> dict[str, Any]:
    """A colour bar lying below the plot like an x axis: the bar, its numbers, then its title
    (beside the plot it took ~130 px of a narrow chart's width and its title sat on its top
    number; a title above a horizontal bar touches it)."""
    return dict(orientation="h", x=0, xanchor="left", y=0, yref="container", yanchor="bottom", len=0.6,
                lenmode="fraction", thickness=12, title=dict(text=title, side="bottom"), ypad=6)


def legend_below(fig: go.Figure, title: str) -> go.Figure:
    """A horizontal legend at the bottom of the chart, its entries wrapping into as many rows as
    the width needs (plotly grows the bottom margin for them): a legend beside the plot
    squeezed a 420 px chart to a strip, one above it sat on the title."""
    return fig.update_layout(showlegend=True, legend=dict(orientation="h", x=0, xanchor="left", y=0, yref="container",
                                                          yanchor="bottom", title_text=title))


COLOUR_BAR_ROOM = 76
"""Bottom margin, in px, that :func:`colour_bar` needs (title, bar and numbers)."""


_TAG = re.compile(r"<[^>]*>")
GRID_ROW, GRID_FRAME, GRID_MAX_HEIGHT = 34, 70, 700
"""A task-by-task heatmap: px per row while the height is free, px of its width that are not
cells (margins, row labels and their title) and the most it grows to (50 tasks: 10 px rows)."""


def task_grid(fig: go.Figure, labels: list[str], *, titled: bool, height: int | None = None, room: int = NARROW,
              ticktext: list[str] | None = None) -> go.Figure:
    """Lay out ``fig``, a heatmap over ``labels`` x ``labels`` (tasks; the accuracy matrix, the
    mask overlap), to read from ``room`` px wide up (the caller may know its chart is narrower
    than :data:`NARROW`, a third of a row): the task axis on top, labelled at :func:`task_ticks`
    (``ticktext``: their shown texts, one per label), the colour bar below (:func:`colour_bar`),
    and the cells' text in the font :func:`cell_font` allows, or none (the hover keeps it)."""
    n, trace = len(labels), fig.data[0]
    top, bottom = (110 if titled else 60), COLOUR_BAR_ROOM + 10
    height = height or min(GRID_MAX_HEIGHT, top + bottom + GRID_ROW * n)
    chars = max((len(t) for row in (trace.text or ()) for t in row if t), default=0)
    size = cell_font(chars=chars, across=(room - GRID_FRAME) / max(n, 1), down=(height - top - bottom) / max(n, 1))
    trace.update(text=trace.text if size else None, texttemplate="%{text}" if size else None,
                 textfont=dict(size=size or FONT))
    shown = ticktext or labels
    label_px = max((len(_TAG.sub("", t)) for t in shown), default=0) * TEXT_EM * FONT + 10  # with its gap
    across = task_ticks(n, most=int((room - GRID_FRAME) // label_px))
    down = task_ticks(n, most=(height - top - bottom) // (FONT + 6))
    fig.update_xaxes(side="top", tickmode="array", tickvals=[labels[t] for t in across],
                     ticktext=[shown[t] for t in across], automargin=True)
    fig.update_yaxes(autorange="reversed", tickmode="array", tickvals=[labels[t] for t in down], automargin=True)
    fig.update_layout(height=height, margin=dict(t=top, b=bottom))
    if titled:
        fig.update_layout(title=dict(y=0.98, yref="container", yanchor="top"))
    return fig


def wrap(text: Any, *, width: int = 50) -> str:
    """Plain text (:func:`plain`) broken into lines of at most ``width`` characters with
    plotly's <br>: an axis or chart title that stays inside a :data:`NARROW` chart."""
    return "<br>".join(plain(line) for line in textwrap.wrap(visible(text), width))


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
