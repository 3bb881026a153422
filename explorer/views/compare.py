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
from explorer.views.common import chart, how_to_read, load, table
from prm.runs import RunFormatError

MAX_DEFAULT = 40
"""At most this many runs are picked for a new current run: the open run and its like runs (the
bundled story's six methods of five seeds fit, so its spread shows the moment Compare opens)."""

HELP = """
One row per run, then one per group of **like runs**: the same sequence, method, tasks learnt out of
how many, and configuration (the `config` id: every setting but the seed and what was written to disk;
a what-if run is a group of its own, its id naming the decision it forced, and it is picked only by
hand). A group's mean and
standard deviation are over its distinct seeds (copies of one seed count once; the error bars are
±1 sd), so runs that differ in anything but the seed are never averaged together. Each group gets one
accuracy matrix: the mean over its seeds, every cell "mean ± sd", or a single run's own matrix. The matrices
share one colour scale spanning the values shown, and the Acc axis is zoomed, so small differences show. Unfinished runs
(stopped, failed, still running) are offered only when you tick "include unfinished runs".
**FWT** needs the STL run (one network per task) of the same sequence and seed; pick it too, or it reads n/a.

What to look for: the PRM paper expects PRM to beat HAT in Acc and BWT on *similar* tasks (writers),
because it lets similar tasks share and refine units, and to match HAT on *dissimilar* tasks (classes),
where it protects everything just as HAT does. Small runs such as the bundled samples need not bear
this out (in some of them HAT is ahead): the tables say what these runs did. NCL (plain fine-tuning)
shows what forgetting looks like. **Joint** is not continual learning: after each task it trains a fresh
network on every task so far at once, so it bounds what sharing between tasks can give; its BWT is the
gain from training on later tasks' data, not forgetting.

**PS** (parameter sensitivity) is the standard deviation of test Acc over the complete trials of a *tune* study
of the group's sequence and method (see the Tuning view): how much the method depends on its hyper-parameters.
It comes from the study, not from the runs in the table (their spread over seeds is the ± beside Acc); the
caption names the study. It is looked for in the storage chosen in Tuning, your runs folder's `optuna.db` and
the bundled sample's, and reads "–" where none holds a study of that sequence and method.

**Time per task** (the PRM paper's Figure 3) takes every listed run of the open run's sequence and task count,
whatever is picked above and finished or not (an unfinished run counts for the tasks it has learnt): per method,
the seconds each task took (training, evaluation, and the similarity detection: PRM's DTD, CAT's transfer and
reference trainings), the mean over its seeds, and on the right the time accumulated since the first task, on a
log axis. A method with runs of several configurations gets a line per configuration, named "method · config",
in the method's colour with its own dash (in the bars: its own pattern). CAT trains one transfer network per
earlier task before each new task, so its time per task grows with the number of tasks learnt and its total grows
quadratically; PRM's one DTD pass per task should keep its time per task flat.

**Times compare only within one engine version.** Every run records the version of the engine that trained it
(`prm.__version__` in its run.json), and a new version is cut whenever the training step's speed or results
change. So CT (tables and bars) and the time chart use only runs recorded by the open run's engine version; any
other run keeps its Acc, BWT and FWT, its CT reads "–", and a caption names it with the engine that recorded it.
A run recorded before versions were recorded compares with none; when the open run is one, no times are shown.
The times are wall-clock seconds of runs that may have shared a machine: compare shapes and ratios, not the last
decimal; `python bench/cat_time.py` times CAT, PRM and HAT in one process.
"""


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
    return fig.with_ps(summary, {pair: study.ps for pair, (study, _) in pairs.items()}), notes


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
    split = fig.split_by_engine({name: run.engine_version for name, (run, _) in runs.items()}, reference=reference)
    st.markdown(f"**Time per task and accumulated time** (runs of {md(current.sequence)} with "
                f"{current.n_tasks} tasks, finished or not; mean over seeds)")
    if split.comparable:
        summary = fig.time_per_method(fig.task_times({n: (runs[n][0].state, runs[n][1]) for n in split.comparable}))
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
    split = fig.split_by_engine(versions, reference=reference)
    per_run = fig.per_run(states, variants=variants, timed=split.comparable)
    st.markdown("**Per run**")
    table(fig.shown(per_run), key="cmp-runs", name="compare-runs")
    st.caption(fig.engine_caption(split, what="CT"))
    summary, notes = _ps(fig.per_method(per_run), root)
    st.markdown("**Per method** (groups of like runs: mean ± sd over distinct seeds; PS from the group's tune study)")
    table(fig.shown(summary), key="cmp-methods", name="compare-methods")
    for note in notes:
        st.caption(note)
    chart(fig.bars(summary), key="cmp-bars", name="compare-metrics")
    st.caption("Acc is drawn on a zoomed axis (from just below the lowest mean − sd), so its bars start below "
               "the axis; the error bars are ±1 sd over seeds.")
    _times(readable, current, reference)
    st.markdown("**Accuracy matrices** (a group of several seeds: their mean, each cell mean ± sd)")
    chart(fig.matrices(fig.group_matrices(per_run, {name: s for name, (s, _) in states.items()})),
          key="cmp-matrices", name="compare-matrices")
    how_to_read(HELP)
