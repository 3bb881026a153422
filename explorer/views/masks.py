"""Masks: every task's units, HAT's accumulated mask against PRM's (or CAT's) relaxed one, capacity."""

from __future__ import annotations

import streamlit as st

from explorer.figures import masks as fig
from explorer.figures.common import md, short
from explorer.views.common import Context, chart, how_to_read, start_from_task, table

HELP = """
A **mask** says which units of a layer a task uses (recorded at s = smax, so practically 0 or 1). In the
top heatmap every row is a task and every column a unit, units sorted by the first task that used them:
each task's *new* units form a block, and dark cells left of it are units it *reuses*.

HAT protects every unit any earlier task used (the top row of the middle chart, *HAT: every unit an earlier
task used*). Weights into protected units cannot change, so there is no forgetting — and no backward
transfer. PRM protects only the units of the tasks DTD judged **dissimilar** (the second row, *protected
while learning* the chosen task). The difference, units used before that only similar tasks use, is counted
in three groups: **protected** as under HAT; **free** (magenta), fully trainable again, as in the paper's PRM
(`prm.relax` = 1); **partially relaxed** (light magenta), protected at 1 − r and so keeping only a fraction r
of their gradient, with `prm.relax` = r below 1 (PRM+ uses 0.3: protected at 0.7, trainable at 0.3 of the
gradient). A partially relaxed unit is never counted as free. For HAT (and PRM(D)) there are no magenta units.
The slider picks the task being learnt; it starts at the task chosen in the sidebar.

**CAT** relaxes by ownership instead: a unit belongs to the earlier task that *claimed it first*. While a new
task is learnt, the units claimed first by tasks CAT's transfer tests called **similar** are trainable (magenta),
and those claimed first by tasks it called **dissimilar** stay protected (the middle row), even where a similar
task uses them too. A weight moves only when both its units are free (or HAT would let it move), so a weight
from a free unit into a protected one stays protected.

**Capacity** is the share of units some task uses (one black line per layer, told apart by dash); once it
nears 100 % new tasks must share units. The **overlap** matrix gives, for each pair of tasks, the share of
units they both use (Jaccard).
"""

STEP = "mask-task"


def render(ctx: Context) -> None:
    run = ctx.run
    if not ctx.masked:
        st.info(f"{md(run.state.config.get('method'))} is an unmasked method: it has no masks.")
        return
    layer = ctx.layer
    if run.state.tasks_done and not run.learnt(layer):
        st.info("This run's mask arrays are missing (see the warning above): only the capacity it recorded "
                "can be shown.")
    chart(fig.mask_heatmap(run, layer), key="mask-heat", name=f"masks-l{layer}")
    choices = [short(t) for t in range(1, run.state.tasks_done)]  # every learnt task with an earlier one
    task = 1 if choices else 0  # the first task has nothing to compare with: the chart says so
    if len(choices) > 1:
        start_from_task(STEP, short(min(max(ctx.task, 1), run.state.tasks_done - 1)), task=ctx.task, options=choices)
        task = int(st.select_slider("while learning task", choices, key=STEP,
                                    help="the task whose protection is shown; starts at the sidebar task")[1:]) - 1
    chart(fig.relaxed_figure(run, task, layer), key="mask-relaxed", name=f"relaxed-{short(task)}-l{layer}")
    parts = fig.relaxed_units(run, task, layer)
    if parts is not None:
        st.caption(fig.unit_sentence(parts, task, layer=layer))
    left, right = st.columns(2)
    with left:
        capacity = fig.capacity_table(run.state)
        chart(fig.capacity_figure(capacity), key="mask-capacity", name="capacity")
        table(capacity, key="mask-capacity", name="capacity", height=200,
              column_config={"capacity used": st.column_config.NumberColumn(format="%.3f")})
    with right:
        chart(fig.overlap_figure(run, layer), key="mask-overlap", name=f"mask-overlap-l{layer}")
        table(fig.overlap_table(run, layer), key="mask-overlap", name=f"mask-overlap-l{layer}", height=200)
    how_to_read(HELP)
