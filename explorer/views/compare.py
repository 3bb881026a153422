"""Compare: several runs side by side, with mean and spread over seeds, and the time per task of
every method on the open run's sequence."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from explorer import catalog
from explorer import state as keys
from explorer.figures import compare as fig
from explorer.figures import tuning as tuning_fig
from explorer.figures.common import md
from explorer.views import tuning
from explorer.views.common import chart, how_to_read, load, read_help, table
from prm import compare as tables
from prm.run import RunFormatError

MAX_DEFAULT = 40
"""At most this many runs are picked for a new current run: the open run and its like runs (the
bundled story's six methods of five seeds fit, so its spread shows the moment Compare opens)."""

HELP = read_help("compare")


def _ps(summary, root: Path):
    """The summary with PS per group, and the captions saying where each PS comes from (or
    which storage could not be read, and which trials of a study were unreadable: Compare
    never fails on one)."""
    found, problems = tuning.tuned_pairs(root)
    pairs = {(s, m): found[(s, m)] for s, m in zip(summary["sequence"], summary["method"]) if (s, m) in found}
    notes = [f"PS: {tuning_fig.ps_caption(pairs)}." if pairs else
             "PS: no tune study of these sequences and methods was found (see the Tuning view)."]
    notes += [f"Could not read storage {md(p)}" for p in problems]
    notes += [f"PS of {md(s)} · {md(m)} leaves out what study {md(study.name)} ({md(where)}) holds unreadable: "
              f"{tuning_fig.problems_line(study)}" for (s, m), (study, where) in pairs.items() if study.problems]
    return tables.with_ps(summary, {pair: study.ps for pair, (study, _) in pairs.items()}), notes


def _alike(entry, current) -> bool:
    """A run told beside the open one: the same sequence and task count, not a what-if run
    (whose decision was forced; one is compared only when picked by hand)."""
    return entry.sequence == current.sequence and entry.n_tasks == current.n_tasks and entry.parent is None


def _times(readable, current, reference: str | None) -> None:
    """Time per task and accumulated time of every method with runs of the open run's
    sequence and task count, finished or not, recorded by the open run's engine version
    (``reference``)."""
    runs = {}
    for e in readable:
        if not _alike(e, current):
            continue
        try:
            run = load(e.path)
        except RunFormatError:  # became unreadable since it was listed: the others still count
            continue
        runs[e.name if e.name not in runs else e.key] = (run, e.seed)
    split = tables.split_by_engine({name: run.engine_version for name, (run, _) in runs.items()}, reference=reference)
    st.markdown(f"**Time per task and accumulated time** (runs of {md(current.sequence)} with "
                f"{current.n_tasks} tasks, finished or not; mean over seeds)")
    if split.comparable:
        timed = {n: (runs[n][0].state, runs[n][1]) for n in split.comparable}
        summary = tables.time_per_method(tables.task_times(timed))
        chart(fig.time_figure(summary), key="cmp-time", name="compare-time-per-task")
        st.caption(fig.time_caption(summary))
    st.caption(fig.engine_caption(split, what="The time chart"))


def render(*, entries, current_key: str | None, root: Path) -> None:
    readable = [e for e in entries if e.status != "unreadable" and e.tasks_done]
    if not readable:
        st.info("No run with a learnt task is listed.")
        return
    current = next((e for e in readable if e.key == current_key), readable[0])
    unfinished = st.checkbox("include unfinished runs", key=keys.COMPARE_UNFINISHED,
                             help="stopped, failed or running runs; they are grouped apart from finished ones")
    offered = [e for e in readable if e.key == current.key or unfinished or e.status == "finished"]
    by_key = {e.key: e for e in offered}
    like = [e.key for e in offered if e.key != current.key and _alike(e, current)]  # what-if runs only when picked
    state = st.session_state
    if keys.COMPARE_RUNS not in state or state.get(keys.COMPARE_FOR) != current.key:  # a new current run
        state[keys.COMPARE_RUNS] = [current.key, *like][:MAX_DEFAULT]
    else:  # keep the user's picks that are still offered
        state[keys.COMPARE_RUNS] = [k for k in state[keys.COMPARE_RUNS] if k in by_key]
    state[keys.COMPARE_FOR] = current.key
    chosen = st.multiselect("runs", list(by_key), key=keys.COMPARE_RUNS, format_func=lambda k: by_key[k].label,
                            help="finished runs, and unfinished ones when ticked above; the open run is picked first")
    if not chosen:
        st.info("Pick one or more runs.")
        return
    picked = [by_key[k] for k in chosen]
    states, variants, versions = {}, {}, {}
    for e in picked:  # titles by run name; the full key only where two names collide
        name = e.name if e.name not in states else e.key
        run = load(e.path)
        states[name], versions[name] = (run.state, e.seed), run.engine_version
        if e.parent is not None:
            variants[name] = catalog.whatif_tag(e.parent)
    reference = load(current.path).engine_version
    split = tables.split_by_engine(versions, reference=reference)
    per_run = tables.per_run(states, variants=variants, timed=split.comparable)
    st.markdown("**Per run**")
    table(fig.shown(per_run), key="cmp-runs", name="compare-runs")
    st.caption(fig.engine_caption(split, what="CT"))
    summary, notes = _ps(tables.per_method(per_run), root)
    st.markdown("**Per method** (groups of like runs: mean ± sd over distinct seeds; PS from the group's tune study)")
    table(fig.shown(summary), key="cmp-methods", name="compare-methods")
    for note in notes:
        st.caption(note)
    chart(fig.bars(summary), key="cmp-bars", name="compare-metrics")
    st.caption("Acc is drawn on a zoomed axis (from just below the lowest mean − sd), so its bars start below "
               "the axis; the error bars are ±1 sd over seeds.")
    _times(readable, current, reference)
    st.markdown("**Accuracy matrices** (a group of several seeds: their mean, each cell mean ± sd)")
    chart(fig.matrices(tables.group_matrices(per_run, {name: s for name, (s, _) in states.items()})),
          key="cmp-matrices", name="compare-matrices")
    how_to_read(HELP)
