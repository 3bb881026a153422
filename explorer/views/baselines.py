"""The Masks and Task embeddings views of runs without HAT's masks: each baseline where its
own idea shows (``explorer.figures.baselines``). Which part is drawn follows the arrays the
run's method records, so a new method with the same kind of record is drawn the same way."""

from __future__ import annotations

import streamlit as st

from explorer.figures import baselines as fig
from explorer.views.common import Context, chart, how_to_read, load, read_help, table
from prm import analysis


def render_masks(ctx: Context) -> bool:
    """The Masks view's part for a run whose method protects old tasks by other means than
    HAT's masks; False when its method records nothing of the kind."""
    run = ctx.run
    if fig.keeps(run, fig.SUPERMASK):
        _supermasks(ctx)
    elif fig.keeps(run, fig.PATH):
        chart(fig.path_figure(run), key="own-paths", name="paths")
        left, right = st.columns(2)
        with left:
            table(fig.path_table(run), key="own-paths", name="paths", height=240)
        with right:
            chart(fig.fitness_figure(run), key="own-fitness", name="fitness")
        how_to_read(read_help("masks-paths"))
    elif fig.keeps(run, fig.PARTS):
        frame = fig.parts_frame(run)
        chart(fig.parts_figure(run), key="own-parts", name="parts")
        st.caption(fig.parts_sentence(frame))
        how_to_read(read_help("masks-parts"))
    else:
        return False
    return True


def _hat_sibling(ctx: Context):
    """The HAT run of the same sequence, seed and set-up (network, optimiser, data) among the
    listed runs, or None: a HAT run of another width would compare other weights."""
    entry = analysis.siblings(ctx.entry, ctx.entries).get(analysis.BASELINE)
    return None if entry is None or entry.setup != ctx.entry.setup else load(entry.path)


def _supermasks(ctx: Context) -> None:
    run = ctx.run
    layers = list(range(len(run.meta["config"]["model"]["hidden"])))
    layer = st.segmented_control("hidden layer", layers, default=0, key="own-supermask-layer", required=True,
                                 format_func=lambda l: f"layer {l}",
                                 help="the hidden layer whose weight masks are compared") if len(layers) > 1 else 0
    tasks, matrix, density = fig.supermask_overlap(run, layer)
    hat = _hat_sibling(ctx)
    left, right = st.columns(2)
    with left:
        chart(fig.overlap_heatmap(run, tasks, matrix, title=f"Supermask overlap, layer {layer}"),
              key="own-supermask", name=f"supermask-overlap-l{layer}")
    with right:
        if hat is None:
            st.info("No HAT run of this sequence, seed and set-up is listed: train one (Train live, method HAT) "
                    "to set its weight overlap beside these supermasks.")
        else:
            hat_tasks, hat_matrix = fig.hat_weight_overlap(hat, layer)
            chart(fig.overlap_heatmap(hat, hat_tasks, hat_matrix, title=f"HAT's weight overlap, layer {layer}"),
                  key="own-supermask-hat", name=f"hat-weight-overlap-l{layer}")
    st.caption(fig.overlap_sentence(matrix, density))
    how_to_read(read_help("masks-supermasks"))


def render_embeddings(ctx: Context) -> bool:
    """The Task embeddings view's part for a run whose method learns one embedding per task
    outside HAT's masks (HyperNet's); False when it records none."""
    run = ctx.run
    if not fig.keeps(run, fig.TASK_EMBEDDING):
        return False
    chart(fig.embedding_figure(run), key="own-embedding", name="task-embeddings")
    st.caption(fig.embedding_sentence(run))
    how_to_read(read_help("embeddings-hypernet"))
    return True
