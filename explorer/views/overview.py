"""Overview: headline metrics, the task strip, time per phase, DTD's (or CAT's) decisions per task."""

from __future__ import annotations

from collections import Counter

import streamlit as st

from explorer.figures import overview as fig
from explorer.figures.common import PHASE_LABELS, TRUTH_RULE, fmt, md
from explorer.views.common import Context, chart, how_to_read, table
from prm.config import METHOD_HELP
from prm.methods import STRATEGIES

HELP = """
**Acc** is the mean test accuracy over all tasks after the last one was learnt (the last row of the
accuracy matrix). **BWT** (backward transfer) is how much each task's accuracy changed between just
after it was learnt and the end: negative means forgetting. HAT's hard masks keep BWT near 0; PRM can
make it *positive* when a later similar task improves shared units. **FWT** (forward transfer) compares
each task's accuracy right after learning it with a network trained on that task alone (the STL run of
the same sequence and seed). **CT** is the wall time of the whole sequence.

The strip shows the order of the tasks, one tile per task coloured by its family (the legend names the
colours); this run's families: {families}. Faded tiles are tasks not learnt yet. The time chart has a
colour per phase (named in its legend); the table gives the same seconds, 0 where a task skipped a phase
(only PRM and its ablations run DTD; CAT's columns appear for CAT runs only).

PRM spends extra time per task on **dissimilar-task detection (DTD)**: a throw-away training pass whose only
product is the new task's embedding, which X-means then clusters with the earlier tasks' embeddings
(or, where the *source* column says *cut* or *linkage*, a cosine-distance rule decides; see Clustering).
The table below says, per masked layer (l0, l1, ...), which earlier tasks were treated as *similar* (their
units stay trainable) and which as *dissimilar* (protected, as in HAT), and marks each call: {truth}
**calls right** counts the right calls per layer (e.g. 7/9: seven of the nine earlier tasks judged right).
Where a variant overrides X-means (PRM(T), PRM(S), PRM(D)), the calls judged are the ones it used, and the
line notes what X-means said.

**CAT** decides by training instead: before each new task, one **transfer** network per earlier task (that
task's frozen masked features with a new head) and one **reference** network from scratch; an earlier task is
similar when its transfer network beats the reference on the new task's validation set. Its time chart shows
these two phases, and the transfer phase grows with every task learnt (one more training per earlier task).
Its calls (source *cat*) are one set for every layer, judged by the same rule.
"""


def render(ctx: Context) -> None:
    state = ctx.run.state
    method = state.config.get("method", "?")
    st.caption(f"**{md(method)}** — {METHOD_HELP.get(method, '')}. Sequence **{md(state.sequence)}**, "
               f"{state.tasks_done} of {state.n_tasks} tasks learnt, status **{ctx.run.status}**.")
    stl = ctx.stl_state()
    m = fig.run_metrics(state, stl=stl)
    cols = st.columns(4)
    cols[0].metric("Acc", fmt(m["acc"]), help="mean final test accuracy over the tasks learnt")
    cols[1].metric("BWT", fmt(m["bwt"], signed=True), help="mean change of each task's accuracy since it was learnt")
    cols[2].metric("FWT", fmt(m["fwt"], signed=True) if stl is not None else "n/a (no STL run)",
                   help="mean of R[i,i] − STL_i, against the STL run of the same sequence and seed")
    cols[3].metric("CT", "n/a" if m["ct"] is None else f"{m['ct']:.1f} s", help="wall time of the sequence")
    chart(fig.sequence_strip(state), key="overview-strip", name="sequence")
    left, right = st.columns([3, 2])
    with left:
        phases = fig.phase_seconds(state)
        chart(fig.phase_figure(phases), key="overview-phases", name="time-per-phase")
    with right:
        st.markdown("**Time per task and phase**")
        table(fig.phase_table(phases, cat=STRATEGIES[state.config["method"]].cat), key="overview-phases", name="time-per-phase", height=320,
              column_config={phase: st.column_config.NumberColumn(format="%.2f") for phase in PHASE_LABELS.values()})
    if ctx.masked and state.calls():
        who = ("CAT's transfer tests judged similar** (one call for every layer" if not state.dtd
               else "DTD judged similar** (per masked layer")
        st.markdown(f"**Which earlier tasks {who}; ✓ right, ✗ wrong, see *How to read this*)")
        table(fig.similarity_summary(state), key="overview-dtd", name="dtd-decisions")
    how_to_read(HELP.format(families=families(state), truth=TRUTH_RULE))


def families(state) -> str:
    """This run's task families with their task counts, as Markdown: "**classes** (5), ..."."""
    counts = Counter(task["family"] for task in state.tasks)  # in order of first appearance
    return ", ".join(f"**{md(f)}** ({n} task{'s' if n > 1 else ''})" for f, n in counts.items()) or "none"
