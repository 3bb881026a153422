"""Masks: every task's units, HAT's accumulated mask against PRM's (or CAT's) relaxed one, capacity."""

from __future__ import annotations

import streamlit as st

from explorer.figures import masks as fig
from explorer.figures.common import md, short
from explorer.views import baselines
from explorer.views.common import Context, chart, how_to_read, read_help, start_from_task, table

HELP = read_help("masks")

STEP = "mask-task"


def render(ctx: Context) -> None:
    run = ctx.run
    if not ctx.masked:
        if not baselines.render_masks(ctx):
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
        table(fig.overlap_table(run, layer), key="mask-overlap", name=f"mask-overlap-l{layer}", height=200,
              column_config={"shared units (Jaccard)": st.column_config.NumberColumn(format="%.3f")})
    how_to_read(HELP)
