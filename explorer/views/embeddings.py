"""Task embeddings: a 2-D projection per masked layer, clusters, families, trajectories."""

from __future__ import annotations

import streamlit as st

from explorer import state as keys
from explorer.figures import embeddings as emb
from explorer.figures.common import TRUTH_RULE, family_symbol, md, parse_short, short
from explorer.views import baselines
from explorer.views.common import Context, chart, how_to_read, projection, read_help, start_from_task, table, url_choice
from prm import methods
from prm.similarity import RULES

HELP = read_help("embeddings")

PROJECTION_HELP = (f"UMAP and t-SNE keep neighbourhoods, PCA keeps distances most faithfully; PCA is the default "
                   f"for runs of fewer than {emb.FEW_TASKS} tasks, where UMAP scatters one cluster")
POINT_COLUMNS = dict.fromkeys(("task", "family", "kind", "nearest", "x", "y"))
"""The points table shows name, cluster, relation and call, which fit a narrow column; the rest
is hidden (the name holds the task's number; the chart shows family and place), one click away
in the table's column menu and in the CSV."""
TRAJECTORY_LOCK = "Trajectories are drawn in PCA coordinates: turn them off to choose another projection"


def help_text(run) -> str:
    """What the chart encodes for this run: cluster or task colours, and its own families."""
    families = dict.fromkeys(task["family"] for task in run.state.tasks)
    symbols = ", ".join(f"{md(f)} = {family_symbol(f).replace('-', ' ')}" for f in families) or "none"
    rules = read_help("embeddings-rules") if any(r.source in RULES for r in run.state.dtd.values()) else ""
    colour = (read_help("embeddings-clusters", truth=TRUTH_RULE, rules=rules) if run.dtd_steps() else
              read_help("embeddings-cat" if methods.get(run.meta["config"]["method"]).transfer_tests else "embeddings-tasks"))
    return HELP.format(colour=colour, symbols=symbols, few=emb.FEW_TASKS)


def _projection_control(column, trajectories: bool, default: str) -> str:
    """The projection picker, seeded from the URL (an invalid value is reported) or
    ``default``, and kept in the URL. Trajectories force PCA: the control then shows PCA,
    disabled, and the user's own choice comes back (and stays in the URL) when they are off."""
    state = st.session_state
    url_choice(keys.PROJECTION, list(keys.PROJECTIONS), default, what="projection")
    if trajectories:
        state.setdefault(keys.PROJECTION_CHOSEN, state[keys.PROJECTION])
        state[keys.PROJECTION] = "pca"
    elif keys.PROJECTION_CHOSEN in state:
        state[keys.PROJECTION] = state.pop(keys.PROJECTION_CHOSEN)
    value = column.segmented_control("projection", list(keys.PROJECTIONS), key=keys.PROJECTION,
                                     format_func=str.upper, required=True, disabled=trajectories,
                                     help=TRAJECTORY_LOCK if trajectories else PROJECTION_HELP)
    st.query_params[keys.PROJECTION] = state.get(keys.PROJECTION_CHOSEN, value)
    return value


def render(ctx: Context) -> None:
    run = ctx.run
    if not ctx.masked:
        if not baselines.render_embeddings(ctx):
            st.info(f"{md(run.state.config.get('method'))} is an unmasked method: it has no task embeddings.")
        return
    steps = emb.steps(run)
    start_from_task(keys.STEP, short(ctx.task) if short(ctx.task) in steps else steps[-1], task=ctx.task,
                    options=steps)
    step = st.select_slider("after task", steps, key=keys.STEP, help="starts at the task chosen in the sidebar",
                            format_func=lambda s: "end of run (final embeddings)" if s == emb.END else f"{s} arrives")
    c1, c2 = st.columns(2)  # two controls a row: three did not fit beside the open sidebar at 800 px
    show_paths = c2.toggle("per-epoch trajectories", key=keys.TRAJECTORIES,
                           help="drawn in PCA coordinates fitted on the points and their trajectories")
    method = _projection_control(c1, show_paths, emb.default_projection(run.state.n_tasks))
    cols = st.columns(max(ctx.n_layers, 1))
    shown = None
    for layer, col in enumerate(cols):
        with col:
            proj = projection(run, layer, method)
            if len(proj.tasks) == 0:
                st.info("This layer's embedding arrays are missing (see the warning above)." if run.state.tasks_done
                        else "No embedding recorded yet for this layer.")
                continue
            frame = emb.step_frame(run, layer, proj, step)
            paths = None
            used = proj.method.upper()
            if show_paths:
                frame, paths = emb.trajectory_projection(run, layer, frame)
                used = "PCA with trajectories"
            title = f"Layer {layer} · {used} · " + (
                "final embeddings" if step == emb.END else f"{emb.decided_by(run, step)} when {step} arrived")
            chart(emb.figure(frame, title=title, paths=paths), key=f"emb-{layer}", name=f"embeddings-l{layer}")
            note = "stored with the run" if proj.source == "precomputed" else "computed here"
            fallback = "" if proj.method == method else f" ({method.upper()} needs ≥ 4 points: PCA used)"
            st.caption(f"Projection {note}{fallback}.")
            if layer == ctx.layer:
                shown = frame.drop(columns=["task_index", "is_dtd", "group", "grouping"])
    if shown is not None:
        st.markdown(f"**Points of layer {ctx.layer}** (choose the layer in the sidebar)")
        table(shown, key="emb-points", name=f"embeddings-{step}-l{ctx.layer}", column_config=POINT_COLUMNS)
        st.caption("More columns (family, kind, nearest tasks, coordinates) under the table's column menu and in "
                   "the CSV.")
    if step != emb.END and run.state.dtd[parse_short(step)].source in RULES:
        _against_xmeans(ctx, step, method)
    how_to_read(help_text(run))


def _against_xmeans(ctx: Context, step: str, method: str) -> None:
    """The rule's calls beside X-means' own (recorded, not used), on the same points."""
    run, layer = ctx.run, ctx.layer
    proj = projection(run, layer, method)
    entry = run.state.dtd[parse_short(step)].layers[layer]
    if len(proj.tasks) == 0:
        return
    rule = emb.decided_by(run, step)
    st.markdown(f"#### X-means alone against the {rule}, layer {layer}")
    panels = [(name, emb.step_frame(run, layer, proj, step, dissimilar=entry[key]))
              for name, key in (("X-means alone (not used)", "dissimilar_xmeans"), (f"the {rule} (used)", "dissimilar"))]
    chart(emb.comparison_figure(panels, title=f"When {step} arrived: each decision's calls, ✓ right, ✗ wrong"),
          key="emb-against", name=f"xmeans-vs-rule-{step}-l{layer}")
    st.caption(f"The same {proj.method.upper()} coordinates in both panels; colour = each decision's call.")
