"""Compare: several runs side by side, with mean and spread over seeds, and the time per task of
every method on the open run's sequence.

A laptop screen shows the answer first: one table and one chart per group of like runs, best mean
Acc first; the per-run table, every metric's bars, the time chart and the matrices follow in tabs
(the page was over 4,000 pixels tall with everything in one column)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import streamlit as st

from explorer import catalog
from explorer import state as keys
from explorer.figures import compare as fig
from explorer.figures import tuning as tuning_fig
from explorer.figures.common import md, visible
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
    st.markdown(f"**Time per task and accumulated time**: every listed run of {md(current.sequence)} with "
                f"{current.n_tasks} tasks, whether picked above or not, finished or not")
    if split.comparable:
        timed = {n: (runs[n][0].state, runs[n][1]) for n in split.comparable}
        summary = tables.time_per_method(tables.task_times(timed))
        chart(fig.time_figure(summary), key="cmp-time", name="compare-time-per-task")
        st.caption(fig.time_caption(summary))
    st.caption(fig.engine_caption(split, what="The time chart"))


def _chip(entry, *, unique: bool) -> str:
    """A run as the picker names it, short enough for an 800-pixel page: its name (its key where
    another offered run has the same name), Acc, and how it ended unless it finished."""
    acc = "–" if entry.acc is None else f"{entry.acc:.3f}"
    return visible(f"{entry.name if unique else entry.key} · Acc {acc}"
                   + ("" if entry.status == "finished" else f" · {entry.status}"))


def _picked(readable, current) -> list:
    """The runs compared, picked in an expander (the open run and its like runs by default), so
    that the summary, not a box of thirty names, meets the eye."""
    with st.expander("Runs compared: the open run and its like runs, unless you pick others",
                     icon=":material/checklist:"):
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
        names = Counter(e.name for e in offered)
        chosen = st.multiselect("runs", list(by_key), key=keys.COMPARE_RUNS,
                                format_func=lambda k: _chip(by_key[k], unique=names[by_key[k].name] == 1),
                                help="finished runs, and unfinished ones when ticked above; the open run is picked "
                                     "first")
    return [by_key[k] for k in chosen]


def _summary(summary, per_run) -> None:
    """The answer first: per group of like runs, best mean Acc first, one table and one chart of Acc."""
    best = fig.ranked(summary)
    st.markdown("**Per method**, best mean Acc first. " + fig.best_sentence(best))
    table(fig.summary_table(summary), key="cmp-best", name="compare-best")
    st.caption(f"A row per group of like runs among the {len(per_run)} runs picked (the same sequence, method, "
               f"tasks learnt and configuration). Acc: {fig.METRIC_MEANING['Acc']}, the mean ± sd over the group's "
               "distinct seeds; Acc vs best: its mean minus the best group's. BWT, FWT, CT and PS: under All "
               "metrics.")
    chart(fig.bars(best, metrics=("Acc",)), key="cmp-acc", name="compare-acc")
    st.caption(fig.bars_caption(best, metrics=("Acc",)))


def _all_metrics(summary, split, notes) -> None:
    """Every metric per group: the full table, what each metric is, where PS and CT come from, the bars."""
    best = fig.ranked(summary)
    table(fig.shown(best), key="cmp-methods", name="compare-methods")
    st.caption("Each metric the mean ± sd over the group's distinct seeds. "
               + "; ".join(f"{label}: {fig.METRIC_MEANING[label]}" for label in fig.METRICS.values())
               + "; PS (parameter sensitivity): the sd of Acc over the complete trials of the group's tune study.")
    for note in [*notes, fig.engine_caption(split, what="CT")]:
        st.caption(note)
    chart(fig.bars(best), key="cmp-bars", name="compare-metrics")
    st.caption(fig.bars_caption(best))


def _matrices(groups: list[dict]) -> None:
    """A chart per group, as many to a row as ``fig.per_row`` says (the page's columns wrap to one
    on a narrow screen), all on one colour scale."""
    zrange, cols = fig.matrix_range(groups), fig.per_row(groups)
    for first in range(0, len(groups), cols):
        for n, (column, group) in enumerate(zip(st.columns(cols), groups[first:first + cols]), start=first):
            with column:
                chart(fig.matrix(group, zrange=zrange), key=f"cmp-matrix-{n}", name=f"compare-{group['title']}")
    st.caption(fig.matrices_caption(groups))


def render(*, entries, current_key: str | None, root: Path) -> None:
    readable = [e for e in entries if e.status != "unreadable" and e.tasks_done]
    if not readable:
        st.info("No run with a learnt task is listed.")
        return
    current = next((e for e in readable if e.key == current_key), readable[0])
    picked = _picked(readable, current)
    if not picked:
        st.info("Pick one or more runs.")
        return
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
    summary, notes = _ps(tables.per_method(per_run), root)
    _summary(summary, per_run)
    # the first tab is open on arrival: a chart, which fits any width (the tables scroll sideways at 800 px)
    times_tab, metrics_tab, runs_tab, matrices_tab = st.tabs(["Time per task", "All metrics", "Per run",
                                                              "Accuracy matrices"])
    with times_tab:
        _times(readable, current, reference)
    with metrics_tab:
        _all_metrics(summary, split, notes)
    with runs_tab:
        table(fig.shown(per_run), key="cmp-runs", name="compare-runs")
        st.caption("A row per run picked: Acc, BWT and FWT on its test split, CT its wall-clock seconds from start "
                   "to end. " + fig.engine_caption(split, what="CT"))
    with matrices_tab:
        _matrices(tables.group_matrices(per_run, {name: s for name, (s, _) in states.items()}))
    how_to_read(HELP)
