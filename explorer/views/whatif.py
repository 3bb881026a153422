"""What if DTD had decided otherwise? The bottom of the Clustering view (``prm.whatif``).

For the DTD step shown, the user picks the earlier tasks to call similar and trains that
what-if in the background (``explorer.live``: ``python -m prm whatif``; it shows in the Train
live tab). Children of the open run found in the run list, or the open run's own parent,
are compared with it: the decision forced, Acc and BWT, and child minus parent accuracy.
"""

from __future__ import annotations

import streamlit as st

from explorer import catalog, live
from explorer import state as keys
from explorer.figures import whatif as fig
from explorer.figures.common import md, names, short
from explorer.views.common import Context, chart, load, table
from prm import methods
from prm.run import RunParent

EXPLAIN = ("A what-if re-learns this run from the chosen task with DTD's decision replaced: the tasks you pick are "
           "called similar (their units stay trainable), every other earlier task dissimilar (protected), in every "
           "masked layer. It starts from the checkpoint saved when that task began, so everything else is exactly "
           "this run's; later tasks decide as usual. With DTD's own decision it reproduces this run exactly, so any "
           "difference below is what the decision cost or gained.")


def _children(ctx: Context) -> list[fig.Pair]:
    """What-if runs among the listed runs whose parent is the open run."""
    return [fig.Pair(name=e.name, link=e.parent, child=load(e.path).state, parent=ctx.run.state)
            for e in ctx.entries if e.parent is not None and e.status != "unreadable"
            and not catalog.same_folder(e.path, ctx.run.path) and catalog.same_folder(e.parent.run, ctx.run.path)]


def _own_parent(ctx: Context, link: RunParent) -> fig.Pair | None:
    """The open run against the parent it names, when that parent is among the listed runs (a
    path written in a run file is never opened unless the run list holds it)."""
    for entry in ctx.entries:
        if entry.status != "unreadable" and catalog.same_folder(link.run, entry.path):
            return fig.Pair(name=ctx.run.name, link=link, child=ctx.run.state, parent=load(entry.path).state)
    return None


def _compare(pairs: list[fig.Pair], ctx: Context, layer: int, *, key: str) -> None:
    table(fig.summary_table(pairs, layer=layer), key=f"{key}-table", name=f"whatif-{ctx.run.name}")
    st.caption("Acc and BWT after the last task both runs learnt; a change above 0 means the what-if did better.")
    for n, pair in enumerate(pairs):
        chart(fig.difference_figure(pair, ctx.run.state.tasks, layer=layer), key=f"{key}-diff-{n}",
              name=f"whatif-diff-{pair.name}")


def _train(ctx: Context, step: int, layer: int) -> None:
    record = ctx.run.state.dtd[step]
    dissimilar = record.layers[layer]["dissimilar"]
    label_names = names(ctx.run.state.tasks)
    options = list(range(step))
    chosen = st.multiselect(f"Call these tasks similar when {short(step)} arrives (the rest dissimilar)", options,
                            default=[i for i in options if i not in dissimilar], format_func=lambda t: label_names[t],
                            key=f"wi-similar-{step}-{layer}",
                            help=f"Pre-filled with DTD's decision for {short(step)} in layer {layer}.")
    per_layer = {tuple(entry["dissimilar"]) for entry in record.layers}
    if len(per_layer) > 1:
        st.caption(f"DTD's layers disagreed at {short(step)}; a what-if forces one set on every layer, so even the "
                   f"pre-filled choice (layer {layer}'s) differs from this run's decision and will not reproduce it.")
    if st.button("Train this what-if", key=f"wi-train-{step}", icon=":material/play_arrow:"):
        root = keys.runs_root(st.session_state.get(keys.RUNS_DIR, keys.DEFAULT_RUNS_DIR), catalog.ROOT)
        problem = catalog.runs_folder_problem(root)
        if problem:
            st.error(f"Cannot start: {md(problem)}. Change 'Your runs folder' in the sidebar.")
            return
        try:
            folder = live.start(live.WhatIfOptions(parent=ctx.run.path, task=step, similar=tuple(sorted(chosen))),
                                root=root)
        except OSError as exc:
            st.error(f"Cannot start the what-if in {md(root)}: {md(exc.strerror or exc)}.")
            return
        st.session_state.setdefault(keys.LIVE_STARTED, []).append(str(folder))
        st.success(f"Started {md(folder.name)}: follow it in the Train live tab; it appears below when it has "
                   "learnt a task.")


def render(ctx: Context, *, step: int, layer: int) -> None:
    """The what-if panel for DTD step ``step`` (0-based) and masked layer ``layer``."""
    method = ctx.run.meta["config"]["method"]
    if methods.get(method).transfer_tests:
        st.markdown("#### What if CAT had decided otherwise?")
        st.info("CAT has no what-if: a what-if replaces DTD's decision and re-learns from the checkpoint saved when "
                "that task began, and CAT has no DTD decision and keeps no checkpoints (they would lack its "
                "attention and its calls, so a CAT run cannot be resumed).")
        return
    if not methods.get(method).runs_dtd or step not in ctx.run.state.dtd:
        return
    st.markdown("#### What if DTD had decided otherwise?")
    st.caption(EXPLAIN)
    link = ctx.run.parent
    if link is not None:
        st.info(f"This run is a what-if of **{md(link.name)}**: {md(fig.decision(link, layer))} (layer {layer}).")
        pair = _own_parent(ctx, link)
        if pair is None:
            st.caption(f"Its parent ({md(link.run)}) is not among the listed runs, so child minus parent cannot be "
                       "shown.")
        else:
            _compare([pair], ctx, layer, key="wi-parent")
    if ctx.run.has_checkpoint(step):
        _train(ctx, step, layer)
    else:
        st.info(f"What-if is not available for this run: it has no checkpoint for the start of {short(step)}. "
                "Runs keep one per task unless recorded with --no-checkpoints (of the bundled samples only the "
                "default run, the paper's PRM on digits-writers-binary, keeps them, to keep the repository small); "
                "record a run with checkpoints (python -m prm run, or the Train live tab) to ask what-if questions.")
    children = _children(ctx)
    if children:
        st.markdown("##### This run's what-if children: child minus parent")
        _compare(children, ctx, layer, key="wi-children")
