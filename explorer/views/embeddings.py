"""Task embeddings: a 2-D projection per masked layer, clusters, families, trajectories."""

from __future__ import annotations

import streamlit as st

from explorer import state as keys
from explorer.figures import embeddings as emb
from explorer.figures.common import short
from explorer.views.common import Context, chart, how_to_read, projection, table

HELP = """
Each task *t* owns one real number per unit of a masked layer: its **embedding** e_t. HAT turns it into
the mask a_t = sigmoid(s · e_t), so two tasks with similar embeddings use similar units. PRM exploits this:
before learning a new task it trains a throw-away copy of the network on it (DTD), takes the new task's
embedding and clusters it with the earlier ones using **X-means** (k-means that keeps splitting while
the BIC improves, so no k is given).

Each point is one embedding squeezed to 2-D (UMAP by default; PCA keeps distances most faithfully, t-SNE
and UMAP keep neighbourhoods). **Colour** = X-means cluster, **symbol** = the true family (circle = class
task, diamond = writer task), the **ringed** point is the new task. Move "after task" to see the
clustering PRM actually used when that task arrived; tasks in the new task's cluster are *similar* (their
units become trainable again), all others *dissimilar* (protected). 2-D distances are only a sketch: the
Clustering tab shows the real distances X-means used. Trajectories show where each embedding travelled
during training (one dot every few epochs).
"""


def render(ctx: Context) -> None:
    run = ctx.run
    if not ctx.masked:
        st.info(f"{run.state.config.get('method')} is an unmasked method: it has no task embeddings.")
        return
    steps = emb.steps(run)
    c1, c2, c3 = st.columns([2, 3, 2])
    method = c1.segmented_control("projection", ["umap", "pca", "tsne"], default="umap", key=keys.PROJECTION,
                                  format_func=str.upper, required=True)
    default_step = short(ctx.task) if short(ctx.task) in steps else steps[-1]
    if st.session_state.get(keys.STEP) not in steps:
        st.session_state[keys.STEP] = default_step
    step = c2.select_slider("after task", steps, key=keys.STEP,
                            format_func=lambda s: "end of run (final embeddings)" if s == emb.END else f"{s} arrives")
    show_paths = c3.toggle("per-epoch trajectories", key=keys.TRAJECTORIES,
                           help="drawn in PCA coordinates fitted on the points and their trajectories")
    cols = st.columns(max(ctx.n_layers, 1))
    shown = None
    for layer, col in enumerate(cols):
        with col:
            proj = projection(run, layer, method)
            if len(proj.tasks) == 0:
                st.info("No embedding recorded yet for this layer.")
                continue
            frame = emb.step_frame(run, layer, proj, step)
            paths = None
            used = proj.method.upper()
            if show_paths:
                frame, paths = emb.trajectory_projection(run, layer, frame)
                used = "PCA with trajectories"
            title = f"Layer {layer} · {used} · " + (
                "final embeddings" if step == emb.END else f"X-means when {step} arrived")
            chart(emb.figure(frame, title=title, paths=paths), key=f"emb-{layer}", name=f"embeddings-l{layer}")
            note = "stored with the run" if proj.source == "precomputed" else "computed here"
            fallback = "" if proj.method == method else f" ({method.upper()} needs ≥ 4 points: PCA used)"
            st.caption(f"Projection {note}{fallback}.")
            if layer == ctx.layer:
                shown = frame.drop(columns=["task_index", "is_dtd"])
    if shown is not None:
        st.markdown(f"**Points of layer {ctx.layer}** (choose the layer in the sidebar)")
        table(shown, key="emb-points", name=f"embeddings-{step}-l{ctx.layer}",
              column_config={"x": st.column_config.NumberColumn(format="%.2f"),
                             "y": st.column_config.NumberColumn(format="%.2f")})
    how_to_read(HELP)
