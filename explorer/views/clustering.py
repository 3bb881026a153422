"""Clustering, 'why together?': the rule that decided one task and layer (a PRM+ cosine rule's
tree and distances first, X-means' record after it for reference; or X-means' record alone for
PRM), and the evidence for any pair of tasks; for a CAT run, its transfer tests instead."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from explorer import catalog
from explorer import state as keys
from explorer.figures import clustering as fig
from explorer.figures import linkage
from explorer.figures.common import TRUTH_RULE, fmt, md, names, short
from explorer.figures.linkage import RuleStep
from explorer.views import whatif
from explorer.views.common import Context, chart, how_to_read, load, read_help, shown_frame, table, url_choice
from prm import analysis
from prm import methods
from prm.similarity import RULES, pairwise

HELP = read_help("clustering", truth=TRUTH_RULE)


CAT_HELP = read_help("clustering-cat", truth=TRUTH_RULE)


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


SPLIT_COLUMNS = {"cluster": st.column_config.NumberColumn(
                     width=60, help="X-means' own id of the cluster tried (as in the tree's hover); cN in the charts "
                                    "numbers the final clusters"),
                 "ΔBIC": st.column_config.TextColumn(width=70, help="whole-model BIC change; kept only when > 0"),
                 "kept": st.column_config.TextColumn(width=50), "reason": st.column_config.TextColumn(width="medium"),
                 "round": None, "BIC parent": None, "BIC children": None, "child A": None, "child B": None,
                 "members": None}
"""The table of splits shows the verdict (cluster, ΔBIC, kept, why), which fits a narrow column;
the rest is hidden, one click away in its column menu, in the CSV and in the tree's hover."""
PAIR_FOR = "cl-pair-for"  # the step the pair pickers were last set for: a new sidebar task resets them


def _calls(column, title: str, frame) -> None:
    """One list of calls (similar or dissimilar) with their right/wrong marks; the call itself is
    the list's title, so its column is left out and the list fits half of a narrow page."""
    column.markdown(title)
    if frame.empty:
        column.caption("none")
    else:
        column.dataframe(fig.calls_styled(shown_frame(frame.drop(columns="called"))), hide_index=True,
                         height=min(38 + 35 * len(frame), 320),
                         column_config={"": st.column_config.TextColumn(width=40, help="✓ right, ✗ wrong")})


def _step(ctx: Context, steps: list[int], what: str) -> int:
    """The sidebar's task when it has a decision to show, else the last one (and a caption
    saying so)."""
    step = ctx.task if ctx.task in steps else steps[-1]
    if step != ctx.task:
        why = "the first task has nothing to compare with" if ctx.task == 0 else "the run has not reached it"
        st.caption(f"{short(ctx.task)} has no {what} ({why}); showing {short(step)}. Pick the task in the sidebar.")
    return step


def _cat(ctx: Context) -> None:
    """A CAT run: the transfer tests of one step, its calls right or wrong, and every step."""
    state = ctx.run.state
    steps = sorted(state.transfer)
    if not steps:
        st.info("CAT has recorded no transfer test yet: its first comes when the second task arrives.")
        return
    step = _step(ctx, steps, "transfer test")
    test = state.transfer[step]
    shown = [md(n) for n in names(state.tasks)]
    st.markdown(f"#### {shown[step]} arrives · CAT's transfer tests: {step} earlier task"
                f"{'s' if step != 1 else ''} against a reference network")
    st.markdown(f"CAT calls an earlier task **similar** when a network reading its frozen masked features is strictly "
                f"more accurate on {short(step)}'s validation set than a network trained on {short(step)} from scratch "
                f"(the reference, here **{fmt(test.reference_acc)}**; a tie is dissimilar); the call holds for every "
                "layer.")
    calls = fig.transfer_calls(state.tasks, test)
    st.markdown(f"**{fig.count_line(calls)}** (✓ right, ✗ wrong against the truth; the rule is under "
                "\"How to read this\")")
    c1, c2 = st.columns(2)
    _calls(c1, ":green-background[**Similar (units it claimed first trainable)**]", calls[calls["called"] == "similar"])
    _calls(c2, ":red-background[**Dissimilar (protected)**]", calls[calls["called"] == "dissimilar"])
    chart(fig.transfer_figure(test, state.tasks), key="cl-transfer", name=f"cat-transfer-{short(step)}")
    st.caption(f"Transfer trainings took {fmt(test.seconds.get('transfer'), 2)} s ({sum(test.epochs)} epochs over "
               f"{step} networks), the reference {fmt(test.seconds.get('reference'), 2)} s ({test.reference_epochs} "
               "epochs).")
    st.markdown("#### Every transfer test of this run")
    table(fig.transfer_summary(state), key="cl-transfer-steps", name="cat-transfer-tests", height=300)
    whatif.render(ctx, step=step, layer=ctx.layer)
    how_to_read(CAT_HELP)


def _rule(ctx: Context, rule: RuleStep, layer: int) -> None:
    """A step a cosine rule decided: its tree and distances, then its calls beside X-means' own."""
    state, step = ctx.run.state, rule.task
    if not rule.reproduced:
        st.warning(f"Recomputing the '{rule.rule}' rule from the recorded embeddings gives dissimilar = "
                   f"{', '.join(short(i) for i in rule.dissimilar) or 'none'}, not the recorded "
                   f"{', '.join(short(i) for i in rule.recorded) or 'none'}: the charts show the recomputation.")
    units = "every layer's units side by side (prm.layers = together)" if rule.together else f"layer {layer}'s units"
    st.caption(f"Cosine distance between the tasks' '{md(rule.features)}' embeddings over {units}, recomputed from "
               f"the record; threshold {fmt(rule.threshold, 2)} (prm.threshold).")
    left, right = st.columns(2)
    with left:
        chart(linkage.dendrogram_figure(rule, state.tasks), key="cl-dendrogram", name=f"linkage-tree-{short(step)}")
    with right:
        chart(linkage.distance_figure(rule, state.tasks), key="cl-distance", name=f"cosine-to-new-{short(step)}")
    st.caption("**The tree decided**: the tasks in the new task's cluster below the dashed line are similar; a bar "
               "above the line can still be similar when its task joined the cluster through its neighbours (linkage "
               "compares cluster averages)." if rule.rule == "linkage" else
               "**The bars decided**: an earlier task at or above the dashed line is dissimilar. The tree shows how "
               "the tasks group among themselves, which the cut rule does not use.")
    st.markdown("#### The rule's calls against X-means alone")
    frame = linkage.two_calls(state.tasks, task=step, xmeans=rule.xmeans, rule=rule.recorded, name=rule.rule)
    st.markdown(" · ".join(f"**{md(name)}: {count}**" for name, count in linkage.two_counts(frame).items())
                + " (X-means is recorded at every step but did not decide)")
    m1, m2 = st.columns([3, 2])
    with m1:
        chart(fig.pairwise_figure(rule.distance, state.tasks, metric="cosine distance", labels=list(rule.labels),
                                  grouped_by="linkage"), key="cl-cosine", name=f"cosine-distance-{short(step)}")
    with m2:
        marks = tuple(c for c in frame.columns if c.endswith("✓✗"))
        st.dataframe(fig.calls_styled(shown_frame(frame.assign(task=[short(i) for i in range(step)])), marks=marks),
                     hide_index=True, height=min(38 + 35 * len(frame), 320),
                     column_config={"task": st.column_config.TextColumn(help="the names are in the lists above"),
                                    **{c: st.column_config.TextColumn("✓✗", width=40, help="✓ right, ✗ wrong")
                                       for c in marks}})
        table(linkage.steps_right(state, layer), key="cl-rule-steps", name=f"rule-vs-xmeans-l{layer}", height=240)
    st.markdown("#### X-means, for reference only: not the rule this run used")


def _xmeans(ctx: Context, step: int, layer: int) -> None:
    """X-means' record of the step: its tree and table of splits, the distances it saw."""
    run, entry = ctx.run, ctx.run.state.dtd[step].layers[layer]
    left, right = st.columns([3, 2])
    with left:
        chart(fig.decision_tree(run.state.dtd[step], layer), key="cl-tree", name=f"xmeans-tree-{short(step)}-l{layer}")
        table(fig.decision_table(run.state.dtd[step], layer), key="cl-table", name=f"xmeans-{short(step)}-l{layer}",
              column_config=SPLIT_COLUMNS)
        st.caption(f"BIC variant {md(entry['xmeans']['variant'])} (see docs/xmeans.md); splits need ≥ 3 points; "
                   "— = no BIC (the split was refused before a 2-means, see the reason). The round, both BICs, the "
                   "halves and the members are under the table's column menu and in the CSV.")
    with right:
        url_choice(keys.MEASURE, list(keys.MEASURES), "euclidean", what="distance measure")
        metric = st.segmented_control("measure", list(keys.MEASURES), key=keys.MEASURE, required=True)
        st.query_params[keys.MEASURE] = metric
        points = run.dtd_embeddings(step, layer)
        chart(fig.pairwise_figure(pairwise(points, metric), ctx.run.state.tasks, metric=metric,
                                  labels=entry["xmeans"]["labels"]),
              key="cl-pairwise", name=f"pairwise-{metric}-{short(step)}-l{layer}")
        st.caption("Tasks grouped by X-means cluster (black lines between clusters); the diagonal is blank so "
                   "the colours span only the values between different tasks.")
    st.markdown("#### Agreement with the truth" + (" (X-means')" if run.state.dtd[step].source in RULES else ""))
    ari = fig.agreement(run.state)
    a1, a2 = st.columns([3, 2])
    with a1:
        chart(fig.agreement_figure(ari), key="cl-ari", name="ari-per-step")
    with a2:
        table(fig.agreement_shown(ari), key="cl-ari", name="ari-per-step", height=300)


@st.cache_data(max_entries=64, show_spinner=False)
def _evidence(path: str, stamp: tuple, step: int, layer: int, i: int, j: int) -> dict:  # noqa: ARG001
    """``prm.analysis.pair_evidence``, cached on the run's fingerprint: it fits a 2-means and two
    BICs, and the page reruns on every widget change while the pair stays the same."""
    return analysis.pair_evidence(load(Path(path)), step, layer, i, j)


def _pair(ctx: Context, step: int, layer: int) -> None:
    """Why two tasks ended together or apart in X-means' clusters."""
    label_names = names(ctx.run.state.tasks)  # plain text, for the pickers
    st.markdown("#### Why is this pair together (or apart)?" + (
        " (in X-means' clusters)" if ctx.run.state.dtd[step].source in RULES else ""))
    p1, p2 = st.columns(2)
    options = list(range(step + 1))
    session = st.session_state
    if session.get(PAIR_FOR) != step or session.get("cl-a") not in options or session.get("cl-b") not in options:
        session["cl-a"], session["cl-b"] = max(step - 1, 0), step  # the sidebar task and the one before it
    session[PAIR_FOR] = step
    i = p1.selectbox("task A", options, format_func=lambda t: label_names[t], key="cl-a")
    j = p2.selectbox("task B", options, format_func=lambda t: label_names[t], key="cl-b")
    if i == j:
        st.info("Pick two different tasks.")
        return
    ev = _evidence(str(ctx.run.path), catalog.fingerprint(ctx.run.path), step, layer, i, j)
    verdict = "in the **same** cluster" if ev["together"] else "in **different** clusters"
    st.markdown(f"{short(i)} and {short(j)} are {verdict} at this step.")
    e1, e2 = st.columns(2)  # two a row: four labels side by side were cut beside the open sidebar
    e1.metric("their distance", fmt(ev["distance"], 2))
    e2.metric("cosine similarity", fmt(ev["cosine"], 2, signed=True))
    e3, e4 = st.columns(2)
    e3.metric("mean distance inside clusters", fmt(ev["within_mean"], 2))
    e4.metric("mean distance across clusters", fmt(ev["between_mean"], 2))
    j1, j2 = st.columns(2)
    j1.metric(f"BIC change if {'separated' if ev['together'] else 'joined'}", fmt(ev["bic_change"], 1, signed=True),
              help=f"The whole-model BIC change of {ev['change']}: X-means keeps a split only when the BIC rises "
                   "(positive change)")
    j2.markdown("**Mask overlap (Jaccard of final masks)**  \n" + "  \n".join(
        f"layer {k[1:]}: " + fmt(v, 2) for k, v in ev["jaccard"].items()))


def _header(ctx: Context, step: int, layer: int, rule: RuleStep | None) -> None:
    """The step's title, its calls (similar, dissimilar) marked right or wrong, and what decided."""
    state = ctx.run.state
    record, entry = state.dtd[step], state.dtd[step].layers[layer]
    title = f"#### {md(names(state.tasks)[step])} arrives · layer {layer} · "
    st.markdown(title + (f"X-means found k = {entry['xmeans']['k']} cluster(s) among {step + 1} tasks" if rule is None
                         else f"decided by the '{rule.rule}' rule on cosine distance"))
    calls = fig.calls(state.tasks, task=step, dissimilar=entry["dissimilar"])
    st.markdown(f"**{fig.count_line(calls)}** (✓ right, ✗ wrong against the truth; the rule is under "
                "\"How to read this\")")
    c1, c2 = st.columns(2)
    _calls(c1, ":green-background[**Similar (relaxed)**]", calls[calls["called"] == "similar"])
    _calls(c2, ":red-background[**Dissimilar (protected)**]", calls[calls["called"] == "dissimilar"])
    decided = _rule_text(record.source, state.config.get("prm", {}))
    if entry.get("undecided"):
        if record.source == "xmeans":
            st.caption("Undecided: with two tasks X-means has no split it can test, so PRM protects the earlier "
                       "task as HAT would (config prm.undecided).")
        else:
            st.caption("Undecided: with two tasks X-means has no split it can test (its recorded call follows "
                       f"config prm.undecided); this run did not use it but decided by {decided}.")
    if set(entry["dissimilar_xmeans"]) != set(entry["dissimilar"]) or record.source in RULES:
        st.caption(f"This run decided by {decided}; X-means alone said dissimilar = "
                   f"{', '.join(short(i) for i in entry['dissimilar_xmeans']) or 'none'}.")


def render(ctx: Context) -> None:
    state, run = ctx.run.state, ctx.run
    if methods.get(run.meta["config"]["method"]).transfer_tests:
        _cat(ctx)
        return
    if not ctx.masked or not state.dtd:
        st.info("This run has no dissimilar-task detection (only PRM and its ablations cluster tasks, and CAT "
                "runs transfer tests).")
        return
    steps = run.dtd_steps()
    if not steps:
        st.warning("DTD records exist but their embedding arrays are missing.")
        return
    step, layer = _step(ctx, steps, "DTD step"), ctx.layer
    rule = linkage.rule_step(run, step, layer)
    _header(ctx, step, layer, rule)
    if rule is not None:
        _rule(ctx, rule, layer)
    _xmeans(ctx, step, layer)
    if state.oracle_transfer is not None:
        grouped = "X-means" if rule is None else "the linkage rule"
        labels = state.dtd[step].layers[layer]["xmeans"]["labels"] if rule is None else list(rule.labels)
        st.markdown("#### Measured transfer: the truth in data")
        chart(fig.oracle_figure(state.oracle_transfer, state.tasks, step=step, labels=labels), key="cl-oracle",
              name=f"oracle-{short(step)}")
        st.caption("A simple classifier trained on the row task, tested on the column task, scaled so that 0 = "
                   "chance on the column task (1 / its classes) and 1 = the column task's own classifier (the "
                   "diagonal); blue = transfers, red = worse than chance; raw accuracies in the hover. Tasks "
                   f"{grouped} put together (same cN) should transfer well to each other.")
    _pair(ctx, step, layer)
    whatif.render(ctx, step=step, layer=layer)
    how_to_read(HELP)
