"""Overview: headline metrics, the task strip, time per phase, DTD's (or CAT's) decisions per task."""

from __future__ import annotations

from collections import Counter

import streamlit as st

from explorer.figures import overview as fig
from explorer.figures.common import PHASE_HEADS, PHASE_LABELS, TRUTH_RULE, fmt, md
from explorer.views.common import Context, chart, how_to_read, read_help, table
from prm import analysis
from prm import methods

HELP = read_help("overview")
DECISION_COLUMNS = {"task": 104, "family": 58, "decision": 160, "calls right": 68, "source": 56}
"""px: together within a 466 px column (800 px window, sidebar open), so the decisions table never
scrolls sideways; a wider window shares the rest among the columns, and the decision wraps
(:data:`DECISION_ROW`)."""
DECISION_ROW = 96
"""px: four lines of a wrapped decision; a longer one shows whole when its cell is clicked."""


def render(ctx: Context) -> None:
    state = ctx.run.state
    method = state.config.get("method", "?")
    entry = methods.find(method)
    st.caption(f"**{md(method)}** — {entry.help if entry else ''}. Sequence **{md(state.sequence)}**, "
               f"{state.tasks_done} of {state.n_tasks} tasks learnt, status **{ctx.run.status}**.")
    stl = ctx.stl_state()
    m = analysis.run_metrics(state, stl=stl)
    cols = st.columns(4)
    cols[0].metric("Acc", fmt(m["acc"]), help="mean final test accuracy over the tasks learnt")
    cols[1].metric("BWT", fmt(m["bwt"], signed=True), help="mean change of each task's accuracy since it was learnt")
    # "n/a (no STL run)" was cut to "n/a (no ST…" in a quarter of the row: the reason goes in the help
    cols[2].metric("FWT", fmt(m["fwt"], signed=True) if stl is not None else "n/a",
                   help="mean of R[i,i] − STL_i, against the STL run of the same sequence and seed"
                        + ("" if stl is not None else " (n/a: no such STL run is listed)"))
    cols[3].metric("CT", "n/a" if m["ct"] is None else f"{m['ct']:.1f} s", help="wall time of the sequence")
    chart(fig.sequence_strip(state), key="overview-strip", name="sequence")
    left, right = st.columns([3, 2])
    with left:
        phases = fig.phase_seconds(state)
        chart(fig.phase_figure(phases), key="overview-phases", name="time-per-phase")
    with right:
        st.markdown("**Time per task and phase**")
        table(fig.phase_table(phases, cat=methods.get(state.config["method"]).transfer_tests), key="overview-phases",
              name="time-per-phase", height=320, column_config={
                  label: st.column_config.NumberColumn(PHASE_HEADS[phase], help=label, format="%.2f")
                  for phase, label in PHASE_LABELS.items()})
    if ctx.masked and state.calls():
        who = ("CAT's transfer tests judged similar** (one call for every layer" if not state.dtd
               else "DTD judged similar** (per masked layer")
        st.markdown(f"**Which earlier tasks {who}; ✓ right, ✗ wrong, see *How to read this*)")
        table(fig.similarity_summary(state), key="overview-dtd", name="dtd-decisions", row_height=DECISION_ROW,
              height=36 + 5 * DECISION_ROW,
              column_config={column: st.column_config.TextColumn(width=px) for column, px in DECISION_COLUMNS.items()})
    how_to_read(HELP.format(families=families(state), truth=TRUTH_RULE))


def families(state) -> str:
    """This run's task families with their task counts, as Markdown: "**classes** (5), ..."."""
    counts = Counter(task["family"] for task in state.tasks)  # in order of first appearance
    return ", ".join(f"**{md(f)}** ({n} task{'s' if n > 1 else ''})" for f, n in counts.items()) or "none"
