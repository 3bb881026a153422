"""Story: the run told in five numbered steps, next to its siblings (same sequence, seed and
task count with HAT, PRM, PRM+, PRM(T), NCL, STL, joint, and CAT where one is listed), after a
line on which seed it is and the spread over the listed seeds. Each step is one chart, at most
two short sentences computed from the data (a two-minute read in all), a "How to read this"
with the rest, and a button to the tab with the details; where a sibling is missing the step
says so and the page offers to train it."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import streamlit as st

from explorer import state as keys
from explorer.catalog import RunEntry
from explorer.figures import consequence, seeds
from explorer.figures import story as fig
from explorer.figures.common import TRUTH_RULE, md
from explorer.figures.story import PAGE, Size
from explorer.views import live
from explorer.views.common import Context, chart, goto, how_to_read, link, load, read_help, table
from prm import analysis
from prm.analysis import BASELINE, SINGLE_TASK, UPPER_BOUND
from prm.data import DataError, available_sequences
from prm.run import Run, RunFormatError

STEPS = ("1. The sequence and its families", "2. What HAT protects, and what that costs similar tasks",
         "3. What DTD decided, each call right or wrong", "4. The relaxed units of one task",
         "5. The consequence in accuracy")

INTRO_HELP = read_help("story")

HELP = (TRUTH_RULE, *(read_help(f"story-{step}") for step in range(2, 6)))
"""Each step's "How to read this", before the details the data gives."""


def _prefill(config: dict, method: str, seed: int) -> None:
    """Fill every field of the Train-live form from the open run's recorded ``config`` (tasks,
    epochs, DTD epochs, width, ...: what makes the new run a sibling the Story lists), with
    the missing ``method`` and ``seed``, then open that tab (a button callback)."""
    unmatched = live.prefill(config, method=method, seed=seed)
    if unmatched:
        st.toast(f"The form cannot set {md(', '.join(unmatched))} as the open run has it; the new run may not be "
                 "listed as its sibling.", icon=":material/warning:")
    goto(keys.LIVE)


def _offer_training(ctx: Context, absent: list[str]) -> None:
    entry = ctx.entry
    st.warning(fig.missing_sentence(entry, absent), icon=":material/group_off:")
    try:
        present = entry.sequence in available_sequences()
    except DataError:  # $PRM_DATA names a folder that cannot be read: the data is not here
        present = False
    if not present:
        st.caption(f"The data of {md(entry.sequence)} is not present here, so they cannot be trained in Train live.")
        return
    row = st.container(horizontal=True)  # a row that wraps: six buttons in equal columns cut their labels
    for method in absent:
        row.button(f"Train {fig.label(method)}", key=f"story-train-{method}", on_click=_prefill,
                   args=(ctx.run.state.config, method, int(entry.seed or 0)), icon=":material/model_training:",
                   help=f"fills the Train-live form with {md(entry.sequence)}, {method}, seed {entry.seed} and opens it")


def _load(ctx: Context, found: dict[str, RunEntry], methods: list[str]) -> dict[str, Run]:
    """The runs of ``methods`` that load (the open run for its own method)."""
    out = {}
    for method in methods:
        if found[method].key == ctx.entry.key:
            out[method] = ctx.run
            continue
        try:
            out[method] = load(found[method].path)
        except RunFormatError:
            continue
    return out


def _sentences(pair: tuple[str, str]) -> None:
    st.markdown(" ".join(s for s in pair if s))


def _more(step: int, *details: str):
    """The step's "How to read this": its help, then what the data says beyond the body."""
    return how_to_read(" ".join(t for t in (HELP[step], *details) if t))


@st.cache_data(max_entries=64, show_spinner=False)
def _chosen(entry: RunEntry, entries: tuple[RunEntry, ...]) -> tuple[dict[str, RunEntry], analysis.SeedSpread | None]:
    """The open run's siblings and its spread over seeds (``prm.analysis``), worked out once
    per listing rather than on every rerun of the page (each widget change reruns it)."""
    return analysis.siblings(entry, entries), analysis.spread_of(entry, entries)


def steps(ctx: Context) -> tuple[Callable[..., None], ...]:
    """The five steps of :data:`STEPS` for the open run, each drawn by calling it (with
    ``size=LECTURE`` for a lecture slide: the chart and its sentences, no details)."""
    method = ctx.run.meta["config"]["method"]
    found, _ = _chosen(ctx.entry, ctx.entries)
    runs = _load(ctx, found, analysis.told_with(method, found))
    dtd = analysis.dtd_sibling(method, runs)
    return (partial(_sequence, ctx), partial(_hat, ctx, runs), partial(_calls, ctx, runs, dtd),
            partial(_relaxed, ctx, runs, dtd), partial(_accuracy, ctx, runs, found, dtd))


def render(ctx: Context) -> None:
    method = ctx.run.meta["config"]["method"]
    found, spread = _chosen(ctx.entry, ctx.entries)
    runs = _load(ctx, found, analysis.told_with(method, found))
    absent = analysis.missing(ctx.entry, found)
    others = [fig.label(m) for m in found if m not in runs]
    st.caption(f"**{md(fig.label(method))}** on {md(ctx.entry.sequence)}, seed {ctx.entry.seed}, told with "
               f"{md(', '.join(fig.label(m) for m in runs if m != method)) or 'no sibling'}.")
    if spread is not None:
        st.markdown(seeds.seed_sentence(spread, method=method))
    how_to_read(INTRO_HELP + (f" Also listed, compared in the Compare tab: {md(', '.join(others))}." if others else ""))
    if absent:
        _offer_training(ctx, absent)
    for title, step in zip(STEPS, steps(ctx)):
        st.subheader(title)
        step()


def _sequence(ctx: Context, *, size: Size = PAGE) -> None:
    chart(fig.sequence_figure(ctx.run.state, size=size), key="story-sequence", name="story-sequence")
    _sentences(fig.sequence_sentences(ctx.run.state))
    if size is not PAGE:  # a slide: the chart and its sentences only
        return
    _more(0)
    link("Overview", view=keys.OVERVIEW, task=ctx.task, layer=ctx.layer, key="story-go-1")


def _hat(ctx: Context, runs: dict[str, Run], *, size: Size = PAGE) -> None:
    hat = runs.get(BASELINE)
    if hat is None:
        st.info(f"No HAT run of {md(ctx.entry.sequence)} seed {ctx.entry.seed} is listed, so what HAT protects "
                "cannot be shown.")
        return
    if ctx.layer >= hat.n_layers:
        st.info(f"The HAT run has {hat.n_layers} masked layer(s); pick a layer below that in the sidebar.")
        return
    stl, joint = runs.get(SINGLE_TASK), runs.get(UPPER_BOUND)
    data = fig.protection_table(hat.state, layer=ctx.layer, stl=stl.state if stl else None,
                                joint=joint.state if joint else None)
    chart(fig.protection_figure(data, layer=ctx.layer, size=size), key="story-hat", name="story-hat-protection")
    _sentences(fig.protection_sentences(data, layer=ctx.layer, state=hat.state))
    if size is not PAGE:  # a slide: the chart and its sentences only
        return
    _more(1, fig.protection_details(data, state=hat.state))
    link("Masks", view=keys.MASKS, task=ctx.task, layer=ctx.layer, key="story-go-2")


def _calls(ctx: Context, runs: dict[str, Run], dtd: str | None, *, size: Size = PAGE) -> None:
    method = ctx.run.meta["config"]["method"]
    cat = next((m for m in analysis.CALL_METHODS if m in runs), None)
    shown = dtd or cat  # DTD's calls; CAT's own where no PRM-family run is listed
    if shown is None:
        st.info(f"{md(fig.label(method))} runs no DTD, and no PRM-family run of {md(ctx.entry.sequence)} seed "
                f"{ctx.entry.seed} is listed whose decisions could stand in.")
        return
    run = runs[shown]
    if shown != method:
        st.caption(f"{md(fig.label(method))} runs no DTD; these are the decisions of its {md(fig.label(shown))} sibling"
                   + (", and CAT's own calls stand beside them in the details." if method == cat else "."))
    if ctx.layer >= run.n_layers:
        st.info(f"The {md(fig.label(shown))} run has {run.n_layers} masked layer(s); pick one of them in the sidebar.")
        return
    data = fig.calls_table(run.state, layer=ctx.layer)
    chart(fig.calls_figure(data, n_tasks=run.state.n_tasks, layer=ctx.layer, method=shown, size=size),
          key="story-calls", name="story-dtd-calls")
    first, second = fig.calls_sentences(data, layer=ctx.layer, who=fig.decider(run.state), cat=bool(run.state.transfer))
    borrowed = shown != method  # the caption is a sentence of the body: what the wrong calls did goes below
    _sentences((first, "" if borrowed else second))
    if size is not PAGE:
        return
    with _more(2, second if borrowed else "", fig.calls_details(data)):
        if cat is not None and shown != cat:
            _beside(ctx, {shown: run.state, cat: runs[cat].state})
    link("Clustering", view=keys.CLUSTERING, task=ctx.task, layer=ctx.layer, key="story-go-3")


def _beside(ctx: Context, states: dict) -> None:
    """DTD's calls and CAT's side by side against the truth, with what deciding cost each."""
    st.markdown(f"**{' and '.join(md(fig.label(m)) for m in states)} against the truth**, per new task (CAT's "
                "call is one for every layer)")
    _sentences((fig.calls_right_sentence(states, layer=ctx.layer), ""))
    table(fig.calls_side_by_side(states, layer=ctx.layer), key="story-calls-beside", name="story-calls-beside")


def _relaxed(ctx: Context, runs: dict[str, Run], dtd: str | None, *, size: Size = PAGE) -> None:
    if dtd is None:
        cat = ctx.run.meta["config"]["method"] in analysis.CALL_METHODS
        st.info("This step shows the units PRM's DTD relaxed; no PRM-family run of this sequence and seed is listed"
                + (" (CAT's relaxed units are in the Masks view)." if cat else "."))
        return
    run = runs[dtd]
    if ctx.layer >= run.n_layers:
        st.info(f"The {md(fig.label(dtd))} run has no masked layer {ctx.layer}.")
        return
    task, why = fig.relaxed_choice(fig.relaxed_counts(run, layer=ctx.layer), ctx.task)
    if task is None:
        st.info(f"In the {md(fig.label(dtd))} run, {why} on layer {ctx.layer}: every task was protected as under HAT.")
        return
    chart(fig.relaxed_figure(run, task=task, layer=ctx.layer, size=size), key="story-relaxed",
          name="story-relaxed-units")
    _sentences(fig.relaxed_sentences(run, task=task, layer=ctx.layer))
    if size is not PAGE:  # a slide: the chart and its sentences only
        return
    _more(3, fig.relaxed_details(run, task=task, layer=ctx.layer, why=why))
    link("Masks", view=keys.MASKS, task=task, layer=ctx.layer, key="story-go-4")


def _stability_groups(ctx: Context, runs: dict[str, Run], found: dict[str, RunEntry]) -> dict[str, list]:
    """Per sibling method, (state, the STL state of the same seed) over its like runs of every
    seed; the open seed's runs are the siblings already loaded."""
    groups = {}
    for method, run in runs.items():
        pairs = [(run.state, runs[SINGLE_TASK].state if SINGLE_TASK in runs else None)]
        for entry in analysis.like_runs(found[method], ctx.entries)[1:]:
            reference = analysis.stl_of(entry, ctx.entries)
            try:
                pairs.append((load(entry.path).state, load(reference.path).state if reference is not None else None))
            except RunFormatError:
                continue
        groups[method] = pairs
    return groups


def _accuracy(ctx: Context, runs: dict[str, Run], found: dict[str, RunEntry], dtd: str | None, *,
              size: Size = PAGE) -> None:
    method = ctx.run.meta["config"]["method"]
    subject = dtd if method == BASELINE else method
    hat = runs.get(BASELINE)
    if hat is None or subject not in runs:
        st.info("The difference matrix needs a HAT run and another method of the same sequence and seed; "
                + ("no HAT run is listed." if hat is None else "no PRM-family run is listed beside this HAT run."))
    else:
        if subject != method:
            st.caption(f"This is the HAT run; the difference is taken with its {md(fig.label(subject))} sibling.")
        chart(consequence.difference_figure(runs[subject].state, hat.state, a_name=fig.label(subject), b_name="HAT",
                                            size=size), key="story-diff", name="story-difference")
        st.markdown(consequence.difference_sentence(runs[subject].state, hat.state, a_name=fig.label(subject),
                                                    b_name="HAT"))
    if size is not PAGE:
        return
    stl = runs.get(SINGLE_TASK)
    points = consequence.stability_points(_stability_groups(ctx, runs, found))
    with _more(4, consequence.stability_sentence(points)):
        st.markdown("**BWT and FWT per family** (FWT against the STL sibling"
                    + ("" if stl is not None else ": none listed, so n/a") + ")")
        table(consequence.family_transfer({m: r.state for m, r in runs.items() if m != SINGLE_TASK},
                                          stl.state if stl is not None else None),
              key="story-families", name="story-transfer-per-family")
        chart(consequence.stability_figure(points), key="story-stability", name="story-stability-plasticity")
    c1, c2 = st.columns(2)
    with c1:
        link("Accuracy matrix", view=keys.ACCURACY, task=ctx.task, layer=ctx.layer, key="story-go-5")
    with c2:
        link("Compare", view=keys.COMPARE, task=ctx.task, layer=ctx.layer, key="story-go-6")
