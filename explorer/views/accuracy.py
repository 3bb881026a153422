"""Accuracy matrix: R[j, i] with a slider over j, a difference between runs, curves."""

from __future__ import annotations

import streamlit as st

from explorer.figures import accuracy as fig
from explorer.figures.common import short
from explorer.views.common import Context, chart, how_to_read, load, table

HELP = """
Row *j*, column *i* is the test accuracy on task *i* right after the network learnt task *j*. Only the
lower triangle exists (a task is tested once it has been learnt). Read **down a column** to follow one
task over time: a column that fades is forgetting. The **diagonal** is how well each task was learnt in
the first place — PRM's relaxed masks can raise it for a task similar to earlier ones (forward transfer),
because units those tasks trained stay trainable. Drag the slider to watch the matrix fill in.
For **joint** every row comes from a fresh network trained on tasks 1..j at once (for **STL**, column *i*
from the network of task *i* alone), so a changing column there is not forgetting.

The **difference** heatmap subtracts another run of the same sequence: red cells are where this run is
worse, blue where it is better (e.g. PRM − HAT: blue below the diagonal on writer tasks is backward transfer).
"""


def render(ctx: Context) -> None:
    state = ctx.run.state
    if not state.tasks_done:
        st.info("No task has been learnt yet: the matrix fills in as tasks finish.")
        return
    upto = state.tasks_done - 1
    if state.tasks_done > 1:
        upto = st.slider("after learning task j", 1, state.tasks_done, state.tasks_done, key="acc-upto",
                         format="T%d") - 1
    left, right = st.columns(2)
    with left:
        chart(fig.heatmap(state.accuracy_matrix("test"), state.tasks, upto=upto,
                          title=f"R[j, i] after {short(upto)}"), key="acc-matrix", name="accuracy-matrix")
    with right:
        chart(fig.curves(state), key="acc-curves", name="accuracy-curves")
    table(fig.matrix_table(state).reset_index(names="row"), key="acc-matrix", name="accuracy-matrix")
    st.subheader("Difference to another run")
    others = [e for e in ctx.entries if e.key != ctx.entry.key and e.sequence == state.sequence
              and e.n_tasks == state.n_tasks and e.status != "unreadable" and e.tasks_done]
    if not others:
        st.info("No other run of this sequence with the same number of tasks is listed.")
    else:
        keys = [e.key for e in others]
        default = next((i for i, e in enumerate(others) if e.method == "hat"), 0)
        other_key = st.selectbox("compare with", keys, index=default, key="acc-other",
                                 format_func=lambda k: next(e.label for e in others if e.key == k))
        other = load(next(e.path for e in others if e.key == other_key)).state
        diff = fig.difference(state, other)
        chart(fig.heatmap(diff, state.tasks, diverging=True,
                          title=f"{state.config.get('method')} − {other.config.get('method')}"),
              key="acc-diff", name="accuracy-difference")
    how_to_read(HELP)
