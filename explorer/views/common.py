"""What every view shares: cached run loading, charts with PNG export, tables with CSV."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from explorer import catalog
from explorer import state as keys
from explorer.figures import embeddings as emb
from explorer.figures.common import md, short, visible
from prm.analysis import SINGLE_TASK
from prm.run import Run, list_runs, load_run


@st.cache_data(max_entries=64, show_spinner=False)
def _load(path: str, stamp: tuple) -> Run:  # noqa: ARG001 - stamp is the cache key
    return load_run(path)


def load(path: Path) -> Run:
    """Load a run, cached on its fingerprint (event-log size and time, summary, writer alive),
    so a live run is re-read as soon as it writes and a recorded one only once."""
    return _load(str(path), catalog.fingerprint(path))


@st.cache_data(max_entries=256, show_spinner=False)
def _describe(path: str, stamp: tuple) -> catalog.RunEntry:  # noqa: ARG001
    return catalog.describe(Path(path))


def entries(roots: list[Path]) -> list[catalog.RunEntry]:
    """The picker's rows: the user's runs first, then the samples, each newest first."""
    out = []
    for root in roots:
        for folder in list_runs(root):
            out.append(_describe(str(folder), catalog.fingerprint(folder)))
    return out


@st.cache_data(max_entries=64, show_spinner=False)
def _computed_projection(path: str, stamp: tuple, layer: int, method: str) -> emb.Projection:  # noqa: ARG001
    run = load_run(path)
    return emb.compute(run, layer, method, seed=run.meta.get("seed", 0) or 0)


def projection(run: Run, layer: int, method: str) -> emb.Projection:
    """The run's stored projection when it fits; otherwise computed once (with a spinner,
    since UMAP's first fit compiles for seconds) and cached."""
    stored = emb.precomputed(run, layer, method)
    if stored is not None:
        return stored
    with st.spinner(f"Computing the {method.upper()} projection (cached afterwards)…"):
        return _computed_projection(str(run.path), catalog.fingerprint(run.path), layer, method)


def chart(fig: go.Figure, *, key: str, name: str) -> None:
    """A plotly chart whose camera button saves a PNG named after the chart (``name`` may hold a
    run's name: made visible, since the browser shows it when saving)."""
    st.plotly_chart(fig, key=key, config={"displaylogo": False, "toImageButtonOptions": {
        "format": "png", "filename": visible(name), "scale": 2}})


def shown_frame(df: pd.DataFrame) -> pd.DataFrame:
    """The table as it may be shown: every text cell and column name through :func:`visible`
    (table cells are plain text, so a run's names could otherwise carry bidi overrides into
    them); numbers and other values stay as they are."""
    out = df.rename(columns=lambda c: visible(c) if isinstance(c, str) else c)
    for n in range(out.shape[1]):
        if not pd.api.types.is_numeric_dtype(out.iloc[:, n]):
            out.isetitem(n, out.iloc[:, n].map(lambda v: visible(v) if isinstance(v, str) else v))
    return out


def table(df: pd.DataFrame, *, key: str, name: str, **kwargs) -> None:
    """A table with a CSV download of exactly what is shown (its text made visible)."""
    df = shown_frame(df)
    st.dataframe(df, hide_index=True, key=f"df-{key}", **kwargs)
    st.download_button("Download CSV", df.to_csv(index=False).encode(), file_name=f"{visible(name)}.csv", mime="text/csv",
                       key=f"csv-{key}", on_click="ignore", icon=":material/download:")


def url_choice(key: str, options: list[str], default: str, *, what: str, whose: str = "this run") -> None:
    """Seed the widget keyed ``key`` (whose query parameter has the same name): its value is
    kept if still valid, else taken from the URL (a shared link or a reload), else ``default``.
    A URL value that is not one of ``options`` is reported in a warning (``what`` names the
    setting, ``whose`` what lacks it) rather than silently dropped. The caller draws the widget with ``key=key`` and then
    writes its value back with ``st.query_params[key] = value``. Used instead of ``bind`` for
    widgets whose shown label differs from their value, since a bound widget writes its label."""
    if st.session_state.get(key) in options:
        return
    url = st.query_params.get(key)
    if url is not None and url not in options:
        link_warning(url, what=what, whose=whose, options=options, default=default)
    st.session_state[key] = url if url in options else default


URL_SHOWN = 200
"""Characters of a link's value repeated in a warning: a 100 kB value is cut, not echoed."""


def link_warning(url: str, *, what: str, whose: str, options: list[str], default: str) -> None:
    """Say that a link asks for a value ``whose`` owner does not have, and what is shown instead."""
    asked = url if len(url) <= URL_SHOWN else f"{url[:URL_SHOWN]}… ({len(url)} characters)"
    shown = ", ".join(options) if len(options) <= 10 else f"{options[0]} … {options[-1]}"
    st.warning(f"The link asks for {what} '{md(asked)}', which {whose} does not have ({md(shown)}); "
               f"showing {md(default)} instead.", icon=":material/link_off:")


def start_from_task(key: str, value, *, task: int, options) -> None:
    """Seed a view's own task slider keyed ``key`` with ``value`` (where the sidebar task puts
    it) on its first draw and whenever the sidebar task changed since, so the sidebar task
    drives every view while the slider stays free to move. A value no longer among
    ``options`` (another run) is reset too. Call before drawing the widget, without a default."""
    seeded = f"{key}:for-task"
    if st.session_state.get(seeded) != task or st.session_state.get(key) not in options:
        st.session_state[key] = value
        st.session_state[seeded] = task


def goto(view: str, task: int | None = None, layer: int | None = None) -> None:
    """Switch to ``view`` at ``task`` and ``layer`` (a button callback: it runs before the
    sidebar and the tabs are drawn, so the whole page, the URL included, follows)."""
    st.session_state[keys.VIEW] = view
    if task is not None:
        st.session_state[keys.TASK] = short(task)
    if layer is not None:
        st.session_state[keys.LAYER] = str(layer)


def link(label: str, *, view: str, task: int | None = None, layer: int | None = None, key: str) -> None:
    """A button that opens the detailed view behind a summary, at the same task and layer."""
    st.button(label, key=key, on_click=goto, args=(view, task, layer), icon=":material/arrow_forward:",
              type="tertiary")


HELP_DIR = Path(__file__).with_name("help")
"""The views' "How to read this" prose, one Markdown file each, so the views read as code."""


@functools.cache
def _help_file(name: str) -> str:
    """A help file's text, read once per process: the files ship with the app and do not change."""
    return (HELP_DIR / f"{name}.md").read_text(encoding="utf-8").rstrip("\n")


def read_help(name: str, **fields: object) -> str:
    """The help text ``help/<name>.md``, its ``{field}`` placeholders filled from ``fields``;
    with no fields, the text as written (a template its view fills per run)."""
    text = _help_file(name)
    return text.format(**fields) if fields else text


def how_to_read(text: str):
    """The expander every view explains itself in; returned, so a view can put more in it."""
    box = st.expander("How to read this", icon=":material/school:")
    box.markdown(text)
    return box


@dataclass(frozen=True, kw_only=True)
class Context:
    """What a view gets: the chosen run, task and layer, and the other runs for comparisons."""

    run: Run
    entry: catalog.RunEntry
    task: int
    layer: int
    entries: tuple[catalog.RunEntry, ...]

    @property
    def masked(self) -> bool:
        return self.n_layers > 0

    @property
    def n_layers(self) -> int:
        return self.run.n_layers

    def stl_state(self):
        """The STL run of the same sequence, seed and task count among the listed runs."""
        for e in self.entries:
            if (e.method == SINGLE_TASK and e.sequence == self.run.state.sequence
                    and e.seed == self.run.meta.get("seed") and e.n_tasks == self.run.state.n_tasks
                    and e.status != "unreadable"):
                return load(e.path).state
        return None
