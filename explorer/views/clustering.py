"""Clustering, 'why together?': X-means' decision record for one task and layer, and the
evidence for any pair of tasks."""

from __future__ import annotations

import streamlit as st

from explorer.figures import clustering as fig
from explorer.figures.common import md, names, short
from explorer.views.common import Context, chart, how_to_read, table
from prm.similarity import RULES

HELP = """
When task *t* arrives, PRM clusters the embeddings of tasks 1..t with **X-means**: start with one cluster,
try to split each cluster in two (a local 2-means) and **keep a split only if the Bayesian information
criterion (BIC) of the whole model rises** (ΔBIC > 0). BIC rewards fitting the points tightly and charges
for every extra centre (a centre costs one number per unit, so splits must buy a lot of tightness).
The table lists every split tried; the tree draws the kept ones.

Tasks outside the new task's cluster form the **dissimilar set**: their masks protect weights while
task *t* is learnt, as in HAT. Tasks inside it are **similar**: the units only they use are *relaxed*
(trainable again), which is how PRM transfers knowledge cheaply.

**Agreement with the truth**: two tasks are truly similar when they share a family *and* a label set
(two writers of the same ten digits; two tasks of one image style); each digit-pair task is dissimilar
to every other task. "Calls right" is the fraction of earlier tasks X-means judged correctly at that
step; the adjusted Rand index (ARI) scores the whole clustering against the true groups (1 = exactly,
0 = chance level). With only 2 tasks X-means cannot split at all (a 2-point cluster has no meaningful
split): PRM then protects the first task as HAT would, and the step is marked *undecided*.

**Other rules** (config `prm.clustering`): besides X-means (the paper), a run may decide with **cut** (an
earlier task is similar when its cosine distance to the new task is below `prm.threshold`) or **linkage**
(average-linkage clusters on cosine distance, merged while nearer than `prm.threshold`; similar = in the
new task's cluster). X-means is still run and recorded next to them: the tree, the table, "calls right" and
the pair evidence below are X-means' own, while the similar/dissimilar sets above are what the rule decided
and what protected the weights. `prm.features` says what was clustered (raw embeddings, their signs, each
unit standardised, or each row scaled to length 1).

For a **pair** of tasks: their distance compared with how spread the clusters are, the overlap of their
final binarised masks (Jaccard: shared units / units either uses), and how the BIC would change if
X-means separated them (when together) or merged their clusters (when apart) — negative means X-means'
choice was the better one by its own criterion.
"""


def _rule_text(source: str, prm: dict) -> str:
    """What decided the dissimilar sets, in words (``source`` of the DTD record)."""
    threshold, what = prm.get("threshold"), prm.get("features", "raw")
    at = f"{threshold:g}" if isinstance(threshold, (int, float)) else md(threshold)
    on = f" (of the '{md(what)}' features, prm.features)" if what != "raw" else ""
    if source == "cut":
        return (f"the 'cut' rule: an earlier task is dissimilar when its cosine distance{on} to the new task "
                f"is at least {at}")
    if source == "linkage":
        return (f"the 'linkage' rule: average-linkage clusters on cosine distance{on}, cut at {at}; "
                "dissimilar = outside the new task's cluster")
    return f"the '{md(source)}' rule"


def render(ctx: Context) -> None:
    state, run = ctx.run.state, ctx.run
    if not ctx.masked or not state.dtd:
        st.info("This run has no dissimilar-task detection (only PRM and its ablations cluster tasks).")
        return
    steps = run.dtd_steps()
    if not steps:
        st.warning("DTD records exist but their embedding arrays are missing.")
        return
    step = ctx.task if ctx.task in steps else steps[-1]
    if step != ctx.task:
        st.caption(f"{short(ctx.task)} has no DTD step (the first task has nothing to compare with); "
                   f"showing {short(step)}. Pick the task in the sidebar.")
    record = state.dtd[step]
    layer = ctx.layer
    entry = record.layers[layer]
    labels = entry["xmeans"]["labels"]
    label_names = names(state.tasks)  # plain text, for the pickers
    shown = [md(n) for n in label_names]  # Markdown-safe, for the text
    dissimilar = entry["dissimilar"]
    similar = [i for i in range(step) if i not in dissimilar]
    st.markdown(f"#### {shown[step]} arrives · layer {layer} · X-means found k = {entry['xmeans']['k']} "
                f"cluster(s) among {step + 1} tasks")
    c1, c2 = st.columns(2)
    c1.markdown(":green-background[**Similar (relaxed)**]  \n" + (", ".join(shown[i] for i in similar) or "none"))
    c2.markdown(":red-background[**Dissimilar (protected)**]  \n" +
                (", ".join(shown[i] for i in dissimilar) or "none"))
    rule = _rule_text(record.source, state.config.get("prm", {}))
    if entry.get("undecided"):
        if record.source == "xmeans":
            st.caption("Undecided: with two tasks X-means has no split it can test, so PRM protects the earlier "
                       "task as HAT would (config prm.undecided).")
        else:
            st.caption("Undecided: with two tasks X-means has no split it can test (its recorded call follows "
                       f"config prm.undecided); this run did not use it but decided by {rule}.")
    if set(entry["dissimilar_xmeans"]) != set(dissimilar) or record.source in RULES:
        st.caption(f"This run decided by {rule}; X-means alone said dissimilar = "
                   f"{', '.join(short(i) for i in entry['dissimilar_xmeans']) or 'none'}.")
    left, right = st.columns([3, 2])
    with left:
        chart(fig.decision_tree(record, layer), key="cl-tree", name=f"xmeans-tree-{short(step)}-l{layer}")
        table(fig.decision_table(record, layer), key="cl-table", name=f"xmeans-{short(step)}-l{layer}",
              column_config={c: st.column_config.NumberColumn(format="%.1f")
                             for c in ("BIC parent", "BIC children", "ΔBIC")})
        st.caption(f"BIC variant {md(entry['xmeans']['variant'])} (see docs/xmeans.md); splits need ≥ 3 points.")
    with right:
        metric = st.segmented_control("measure", ["euclidean", "cosine"], default="euclidean", key="cl-metric",
                                      required=True)
        points = run.dtd_embeddings(step, layer)
        chart(fig.pairwise_figure(fig.pairwise(points, metric), state.tasks, metric=metric, labels=labels),
              key="cl-pairwise", name=f"pairwise-{metric}-{short(step)}-l{layer}")
    st.markdown("#### Agreement with the truth (same family and label set)")
    ari = fig.agreement(state)
    a1, a2 = st.columns([3, 2])
    with a1:
        chart(fig.agreement_figure(ari), key="cl-ari", name="ari-per-step")
    with a2:
        table(ari, key="cl-ari", name="ari-per-step", height=260)
    if state.oracle_transfer is not None:
        st.markdown("#### Measured transfer: the truth in data")
        chart(fig.oracle_figure(state.oracle_transfer, state.tasks, step=step, labels=labels), key="cl-oracle",
              name=f"oracle-{short(step)}")
        st.caption("A simple classifier trained on the row task, tested on the column task (the diagonal is its "
                   "own accuracy). Tasks X-means put together (same cN) should transfer well to each other.")
    st.markdown("#### Why is this pair together (or apart)?")
    p1, p2 = st.columns(2)
    options = list(range(step + 1))
    i = p1.selectbox("task A", options, index=max(step - 1, 0), format_func=lambda t: label_names[t], key="cl-a")
    j = p2.selectbox("task B", options, index=step, format_func=lambda t: label_names[t], key="cl-b")
    if i == j:
        st.info("Pick two different tasks.")
    else:
        ev = fig.pair_evidence(run, step, layer, i, j)
        verdict = "in the **same** cluster" if ev["together"] else "in **different** clusters"
        st.markdown(f"{short(i)} and {short(j)} are {verdict} at this step.")
        e1, e2, e3, e4 = st.columns(4)
        e1.metric("their distance", f"{ev['distance']:.2f}")
        e2.metric("mean distance inside clusters", "n/a" if ev["within_mean"] is None else f"{ev['within_mean']:.2f}")
        e3.metric("mean distance across clusters", "n/a" if ev["between_mean"] is None else f"{ev['between_mean']:.2f}")
        e4.metric("cosine similarity", f"{ev['cosine']:.2f}")
        j1, j2 = st.columns(2)
        j1.metric(f"BIC change if {ev['change']}", f"{ev['bic_change']:+.1f}",
                  help="X-means keeps a split only when the whole-model BIC rises (positive change)")
        j2.markdown("**Mask overlap (Jaccard of final masks)**  \n" + "  \n".join(
            f"layer {k[1:]}: " + ("n/a" if v is None else f"{v:.2f}") for k, v in ev["jaccard"].items()))
    how_to_read(HELP)
