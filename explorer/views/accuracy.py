"""Accuracy matrix: R[j, i] with a slider over j, its change since learnt, a difference
between runs, curves."""

from __future__ import annotations

import streamlit as st

from explorer import catalog
from explorer.figures import accuracy as fig
from explorer.figures.common import short
from explorer.views.common import Context, chart, how_to_read, load, read_help, start_from_task, table
from prm.analysis import BASELINE

ACCURACY, CHANGE = "accuracy", "change since learnt"
SHOWS = (ACCURACY, CHANGE)

HELP = read_help("accuracy")
SLIDER_WIDTH = 420
"""px: room for 50 tasks' steps, and narrow enough to leave the show control beside it at 1280 px."""


def default_other(others: list[catalog.RunEntry], *, seed) -> int:
    """Index of the run to subtract by default: HAT of the same seed, else any HAT, else the first."""
    for wanted in (lambda e: e.method == BASELINE and e.seed == seed, lambda e: e.method == BASELINE):
        found = next((n for n, e in enumerate(others) if wanted(e)), None)
        if found is not None:
            return found
    return 0


def render(ctx: Context) -> None:
    state = ctx.run.state
    if not state.tasks_done:
        st.info("No task has been learnt yet: the matrix fills in as tasks finish.")
        return
    upto = state.tasks_done - 1
    # one row that wraps: side by side at 1280 px, the control below the slider at 800 px (two
    # columns cut "change since learnt" there)
    controls = st.container(horizontal=True, vertical_alignment="bottom", gap="medium")
    if state.tasks_done > 1:
        options = range(1, state.tasks_done + 1)
        start_from_task("acc-upto", min(ctx.task, state.tasks_done - 1) + 1, task=ctx.task, options=options)
        upto = controls.slider("after learning task j", 1, state.tasks_done, key="acc-upto", format="T%d",
                               help="starts at the task chosen in the sidebar", width=SLIDER_WIDTH) - 1
    show = controls.segmented_control("show", SHOWS, key="acc-show", default=ACCURACY, required=True,
                                      help="accuracy itself, or how far each task moved since it was learnt")
    R = state.accuracy_matrix("test")
    left, right = st.columns([3, 2])  # the matrix gets the room its cell numbers need at 1280 pixels
    with left:
        if show == CHANGE:
            figure = fig.heatmap(fig.change_since_learnt(R), state.tasks, upto=upto, diverging=True,
                                 what="change since learnt",
                                 title=f"Change since learnt, R[j, i] − R[i, i], after {short(upto)}")
        else:
            figure = fig.heatmap(R, state.tasks, upto=upto, title=f"Test accuracy R[j, i] after {short(upto)}")
        chart(figure, key="acc-matrix", name="accuracy-matrix")
    with right:
        chart(fig.curves(state), key="acc-curves", name="accuracy-curves")
    table(fig.matrix_table(state), key="acc-matrix", name="accuracy-matrix")
    st.subheader("Difference to another run")
    others = [e for e in ctx.entries if e.key != ctx.entry.key and e.sequence == state.sequence
              and e.n_tasks == state.n_tasks and e.status != "unreadable" and e.tasks_done]
    if not others:
        st.info("No other run of this sequence with the same number of tasks is listed.")
    else:
        keys = [e.key for e in others]
        if st.session_state.get("acc-other") not in keys:
            st.session_state["acc-other"] = keys[default_other(others, seed=ctx.run.meta.get("seed"))]
        other_key = st.selectbox("compare with", keys, key="acc-other",
                                 format_func=lambda k: next(e.label for e in others if e.key == k),
                                 help="by default the HAT run of the same sequence and seed")
        other = load(next(e.path for e in others if e.key == other_key)).state
        diff = fig.difference(state, other)
        chart(fig.heatmap(diff, state.tasks, diverging=True, what="difference",
                          title=f"{state.config.get('method')} − {other.config.get('method')}"),
              key="acc-diff", name="accuracy-difference")
    how_to_read(HELP)
