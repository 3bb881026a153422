"""Compare: several runs side by side, with mean and spread over seeds."""

from __future__ import annotations

import streamlit as st

from explorer.figures import compare as fig
from explorer.views.common import chart, how_to_read, load, table

HELP = """
One row per run, then one per method (mean and standard deviation over the seeds you picked; the error
bars are ±1 sd). **FWT** needs the STL run (one network per task) of the same sequence and seed; pick it too,
or it reads n/a. On *similar* tasks (writers) PRM should beat HAT in Acc and BWT, because it lets similar
tasks share and refine units; on *dissimilar* tasks (classes) it should match HAT, because it then protects
everything just as HAT does. NCL (plain fine-tuning) shows what forgetting looks like.
"""


def render(*, entries, current_key: str | None) -> None:
    readable = [e for e in entries if e.status != "unreadable" and e.tasks_done]
    if not readable:
        st.info("No run with a learnt task is listed.")
        return
    current = next((e for e in readable if e.key == current_key), readable[0])
    default = [e.key for e in readable if e.sequence == current.sequence][:6]
    chosen = st.multiselect("runs", [e.key for e in readable], default=default, key="cmp-runs",
                            format_func=lambda k: next(e.label for e in readable if e.key == k))
    if not chosen:
        st.info("Pick one or more runs.")
        return
    picked = [e for e in readable if e.key in chosen]
    states = {}
    for e in picked:  # titles by run name; the full key only where two names collide
        states[e.name if e.name not in states else e.key] = (load(e.path).state, e.seed)
    per_run = fig.per_run(states)
    st.markdown("**Per run**")
    table(per_run, key="cmp-runs", name="compare-runs")
    summary = fig.per_method(per_run)
    st.markdown("**Per method** (mean, sd over seeds)")
    table(summary, key="cmp-methods", name="compare-methods")
    chart(fig.bars(summary), key="cmp-bars", name="compare-metrics")
    chart(fig.matrices({name: s for name, (s, _) in states.items()}), key="cmp-matrices", name="compare-matrices")
    how_to_read(HELP)
