"""What every view shares: cached run loading, charts with PNG export, tables with CSV."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from explorer import catalog
from explorer.figures import embeddings as emb
from prm.runs import Run, list_runs, load_run


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
    """A plotly chart whose camera button saves a PNG named after the chart."""
    st.plotly_chart(fig, key=key, config={"displaylogo": False, "toImageButtonOptions": {
        "format": "png", "filename": name, "scale": 2}})


def table(df: pd.DataFrame, *, key: str, name: str, **kwargs) -> None:
    """A table with a CSV download of exactly what is shown."""
    st.dataframe(df, hide_index=True, key=f"df-{key}", **kwargs)
    st.download_button("Download CSV", df.to_csv(index=False).encode(), file_name=f"{name}.csv", mime="text/csv",
                       key=f"csv-{key}", on_click="ignore", icon=":material/download:")


def how_to_read(text: str) -> None:
    with st.expander("How to read this", icon=":material/school:"):
        st.markdown(text)


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
            if (e.method == "stl" and e.sequence == self.run.state.sequence and e.seed == self.run.meta.get("seed")
                    and e.n_tasks == self.run.state.n_tasks and e.status != "unreadable"):
                return load(e.path).state
        return None
