"""Train live: start runs of the engine's CLI in the background and watch them learn.

The page never trains anything itself: ``explorer.live`` starts ``python -m prm run`` in a
child process that writes a normal run folder, and a fragment re-reads that folder every
couple of seconds. Runs found running in the runs folder are shown too, so a reload or a
second browser tab re-attaches to them, and the newest finished ones stay listed with an Open
button (the session's own list of started runs is empty after a reload).
"""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from explorer import catalog, live, worker
from explorer import state as keys
from explorer.figures import accuracy, clustering, embeddings
from explorer.figures.common import fmt, md, names, short, visible
from explorer.views.common import chart, entries, how_to_read, load, projection, read_help, table
from prm import methods
from prm.limits import MAX_LAYERS, MAX_SEED
from prm.data import DATA_ENV, DEFAULT_N_TASKS, DataError, available_sequences, task_count_range
from prm.run import Run, RunFormatError, RunState

HELP = read_help("live")

QUICK_HELP = ("width 256, 60 epochs per task, 20 DTD epochs, no UMAP; the rest as the engine's defaults. "
              "Measured by scripts/live_settings.py on digits-mixed and digits-mixed-few (seeds 0-1): Acc within "
              "0.003-0.008 of the defaults for HAT and 0.019-0.030 for PRM, with about 60% of their training epochs")
"""The quick-demo button's tooltip: its setting and what it measured (scripts/live_settings.py)."""

QUICK_DEMO = {"width": 256, "epochs": 60, "dtd_epochs": 20}
"""The "Quick demo settings" (LiveOptions fields; UMAP is left off too): measured against the
engine's defaults by ``scripts/live_settings.py``, whose numbers HELP quotes."""

_TRAINING_FIELDS = {"live-n-tasks": "n_tasks", "live-width": "width", "live-epochs": "epochs", "live-lr": "lr",
                    "live-batch": "batch_size", "live-lamb": "lamb", "live-dtd": "dtd_epochs", "live-umap": "umap",
                    "live-shots": "shots", "live-layers": "layers", "live-dropout": "dropout",
                    "live-input-dropout": "input_dropout", "live-patience": "patience", "live-smax": "smax"}
"""The form's training widgets (by key) and the LiveOptions field each one sets."""

FAST_POLL, POLL = 0.1, 2.0
"""Seconds between re-reads of the live runs: fast from Start until the new run's first
epoch shows (a warm worker starts it within a second), then slower for the rest of it."""

_FAST = "live-fast"
"""Session key: a run started here has not shown its first epoch yet (poll at FAST_POLL)."""

worker.warm()  # the first page load of a server imports this view: a worker is ready by the first Start


def _training_values(options: live.LiveOptions) -> dict[str, object]:
    """The training widgets' values for ``options`` (0 tasks or shots: the sequence's default)."""
    return {key: getattr(options, field) or 0 if field in ("n_tasks", "shots") else getattr(options, field)
            for key, field in _TRAINING_FIELDS.items()}


def prefill(config: dict, *, method: str, seed: int) -> list[str]:
    """Fill the whole Train-live form for a run like the one ``config`` records (a run's
    ``run.state.config``), of ``method`` with ``seed``: sequence, tasks, network, optimiser,
    HAT's and DTD's settings, so that Start trains a sibling the Story lists beside it. Call it
    from a button callback (before the form is drawn). Returns the set-up fields the form
    cannot reproduce (:func:`explorer.live.unmatched`; empty for runs the CLI or this form
    made), for the caller to name."""
    options = live.options_like(config, method=method, seed=seed)
    st.session_state.update({keys.LIVE_SEQUENCE: options.sequence, keys.LIVE_METHOD: method,
                             keys.LIVE_SEED: seed, **_training_values(options)})
    try:
        return live.unmatched(config, options)
    except ValueError as exc:
        return [str(exc)]


def _fill(values: dict[str, object]) -> None:
    """Put ``values`` into the form (a button callback, so it runs before the form is drawn)."""
    st.session_state.update(values)


def _seed_form(available: list[str]) -> None:
    """Start every form widget from the session (another view may have prefilled the sequence,
    method and seed), else from the engine's defaults; widgets are then drawn without value=,
    which Streamlit would report as a conflict with a preset session value."""
    d = live.LiveOptions()
    if st.session_state.get(keys.LIVE_SEQUENCE) not in available:
        st.session_state[keys.LIVE_SEQUENCE] = d.sequence if d.sequence in available else available[0]
    if st.session_state.get(keys.LIVE_METHOD) not in methods.REGISTRY:
        st.session_state[keys.LIVE_METHOD] = d.method
    seed = st.session_state.get(keys.LIVE_SEED)
    if not (isinstance(seed, int) and 0 <= seed <= MAX_SEED):
        st.session_state[keys.LIVE_SEED] = d.seed
    for key, value in _training_values(d).items():
        st.session_state.setdefault(key, value)


def _form(root: Path) -> None:
    data_dir = st.text_input("data folder (for the paper's data sets)", os.environ.get(DATA_ENV, ""),
                             key="live-data-dir", help="EMNIST, CIFAR-100 (binary) and LEAF files you already have; "
                             "see 'Using the paper's data sets' in docs/data.md. The bundled sequences need none.")
    try:
        available = available_sequences(data_dir or None)
    except DataError as exc:  # a '~user' that names no home folder: say so, start nothing
        st.error(f"Cannot list the sequences: {md(exc)}. Type another data folder (or fix `{DATA_ENV}`).")
        return
    _seed_form(list(available))
    row = st.container(horizontal=True)  # a row that wraps: a label is never cut to fit a column
    row.button("Quick demo settings", key="live-quick", icon=":material/bolt:", on_click=_fill,
               args=(_training_values(live.LiveOptions(**QUICK_DEMO, umap=False)),), help=QUICK_HELP)
    row.button("Engine defaults", key="live-defaults", icon=":material/restart_alt:", on_click=_fill,
               args=(_training_values(live.LiveOptions()),),
               help="the engine's own settings (prm/config.py): the most accurate, and slower")
    with st.form("live-form"):
        options = _fields(available, data_dir=data_dir or None)
        submitted = st.form_submit_button("Start", type="primary", icon=":material/play_arrow:")
    if submitted:
        _start(options, root)


def _fields(available: dict[str, str], *, data_dir: str | None) -> live.LiveOptions:
    """The form's widgets, drawn in three rows, and the options they hold now (the sequence's
    column is the widest: its names are the longest values)."""
    c = st.columns([5, 3, 2, 3])
    sequence = c[0].selectbox("sequence", list(available),
                              help="; ".join(f"{k}: {v}" for k, v in available.items()), key=keys.LIVE_SEQUENCE)
    method = c[1].selectbox("method", list(methods.NAMES), key=keys.LIVE_METHOD,
                            help="  \n".join(f"**{m.name}**: {m.help}" for m in methods.REGISTRY.values()))
    seed = c[2].number_input("seed", 0, MAX_SEED, key=keys.LIVE_SEED)
    n_tasks = c[3].number_input("tasks (0 = the sequence's default)", 0, 75, key="live-n-tasks",
                                help="allowed: " + ", ".join(
                                    f"{k} {task_count_range(k)[0]}-{task_count_range(k)[1]} "
                                    f"(default {DEFAULT_N_TASKS[k]})" for k in available))
    c = st.columns(4)
    width = c[0].number_input("layer width", 8, 2000, step=32, key="live-width",
                              help="units per masked hidden layer (2 layers). At 64, HAT's sparsity regulariser "
                              "(which prices the fraction of units a task takes) leaves a writer task a handful "
                              "of units")
    epochs = c[1].number_input("max epochs per task", 1, 500, key="live-epochs",
                               help="training stops earlier when the learning rate decays below 1e-4. At the "
                               "starting rate a 10-way writer task needs about 40 epochs; 20 stop it halfway")
    lr = c[2].number_input("learning rate", 1e-4, 1.0, format="%.4f", key="live-lr",
                           help="initial SGD step, divided by 3 after 5 epochs without validation gain")
    batch = c[3].number_input("batch size", 1, 512, key="live-batch")
    c = st.columns([1, 1, 2])
    lamb = c[0].number_input("mask sparsity λ (lamb)", 0.0, 10.0, key="live-lamb",
                             help="how hard new tasks are pushed to use few new units")
    dtd_epochs = c[1].number_input("DTD epochs", 1, 500, key="live-dtd",
                                   help="PRM only: max epochs of DTD's whole-model pass")
    umap = c[2].checkbox("store UMAP at the end", key="live-umap",
                         help="adds a few seconds at the end of the run (numba compile)")
    more = _more_fields()
    return live.LiveOptions(sequence=sequence, method=method, seed=int(seed), n_tasks=int(n_tasks) or None,
                            data_dir=data_dir, width=int(width), epochs=int(epochs), lr=float(lr),
                            batch_size=int(batch), lamb=float(lamb), dtd_epochs=int(dtd_epochs), umap=bool(umap),
                            **more)


def _more_fields() -> dict[str, object]:
    """The rest of the set-up the engine's CLI takes, folded away (the engine's defaults suit
    most runs); here so that a run made with other values can get siblings from this form."""
    with st.expander("More settings: network, optimiser, HAT"):
        c = st.columns(3)
        layers = c[0].number_input("masked hidden layers", 1, MAX_LAYERS, key="live-layers")
        dropout = c[1].number_input("hidden dropout", 0.0, 0.99, key="live-dropout")
        input_dropout = c[2].number_input("input dropout", 0.0, 0.99, key="live-input-dropout")
        c = st.columns(3)
        shots = c[0].number_input("shots (0 = the sequence's default)", 0, 10_000, key="live-shots",
                                  help="training images per class of a few-shot sequence")
        patience = c[1].number_input("patience", 1, 500, key="live-patience",
                                     help="epochs without validation gain before the learning rate is divided")
        smax = c[2].number_input("HAT smax", 1.0, 10_000.0, key="live-smax", help="HAT's maximal mask slope")
    return {"layers": int(layers), "dropout": float(dropout), "input_dropout": float(input_dropout),
            "shots": int(shots) or None, "patience": int(patience), "smax": float(smax)}


def _start(options: live.LiveOptions, root: Path) -> None:
    """Start the run the form asks for, or say why not (a task count the sequence does not
    take, a runs folder that cannot hold runs, a folder that cannot be written)."""
    low, high = task_count_range(options.sequence)
    if options.n_tasks and not low <= options.n_tasks <= high:
        st.error(f"{options.sequence} takes {low} to {high} tasks; got {options.n_tasks}.")
        return
    problem = catalog.runs_folder_problem(root)
    if problem:
        st.error(f"Cannot start: {md(problem)}. Change 'Your runs folder' in the sidebar.")
        return
    try:
        folder = live.start(options, root=root)
    except OSError as exc:
        st.error(f"Cannot start a run in {md(root)}: {md(exc.strerror or exc)}.")
        return
    st.session_state.setdefault(keys.LIVE_STARTED, []).append(str(folder))
    st.session_state[_FAST] = True
    st.toast(f"Started {md(folder.name)}")


def _open_button(where, folder: Path) -> None:
    """An Open button that shows ``folder`` in the other tabs."""
    if where.button("Open", key=f"open-{folder.name}", icon=":material/open_in_new:",
                    help="show this run in the other tabs"):
        # the button lives in a fragment: only a full rerun redraws the sidebar, header and URL
        st.session_state[keys.OPEN_RUN] = catalog.key_of(folder)
        st.rerun(scope="app")


def _one(folder: Path) -> str | None:
    """Render one live run in its card; return whether it is still running: "starting" until
    its first epoch is recorded, then "running"; None once it is not.

    Every card holds the same places (:data:`SLOTS`: progress, notes, charts, warnings),
    each an ``st.empty`` filled or left empty. The browser tells elements apart by position
    only (a card's key names it, but keeps no elements apart), and keeps those of the last
    script run until they are overwritten or the run ends: a new run listed above the others
    would show the charts of the run formerly at its place, faded, while the others were
    drawn. An emptied place overwrites them at once."""
    running = live.is_running(folder)
    with st.container(border=True, key=f"live-card-{folder.name}"):
        head, button = st.columns([3, 1])
        head.markdown(f"**{md(folder.name)}**")
        places = dict(zip(SLOTS, (st.empty() for _ in SLOTS)))
        if not (folder / "run.json").exists():
            code = live.child_exit(folder)
            if code is None:
                places["progress"].progress(0.0, text="starting…")
            else:
                places["progress"].error(f"The run did not start (exit status {code}).")
                places["notes"].code(visible(live.log_tail(folder)) or "(no output)")
            return "starting" if running else None
        try:
            run = load(folder)
        except RunFormatError as exc:  # its run.json became unreadable: say so, keep the other runs going
            places["progress"].error(f"This run cannot be read: {md(exc)}")
            return None
        running = running and run.state.end is None  # the log may have closed since is_running read it
        _progress(run, folder, button, places, running=running)
        if not run.state.tasks_done and not run.state.epochs:
            return "starting" if running else None
        with places["charts"].container():
            _charts(run, folder)
        if run.warnings and not running:
            places["warnings"].caption(md("; ".join(run.warnings)))
    return "running" if running else None


SLOTS = ("progress", "notes", "charts", "warnings")
"""The places of a run's card under its name, in order (:func:`_one`)."""


def _progress(run: Run, folder: Path, button, places: dict, *, running: bool) -> None:
    """The run's progress bar, its Stop button (only for a child this server started and can
    vouch for) or Open button, and why it failed, in the card's places."""
    fraction, text = live.progress(run.state)
    places["progress"].progress(fraction, text=md(text if running or run.state.end else f"{run.status}: {text}"))
    if running and live.can_stop(folder):
        button.button("Stop", key=f"stop-{folder.name}", on_click=live.stop, args=(folder,),
                      icon=":material/stop:")
    elif running:
        places["notes"].caption("This run is written by a process this server did not start and cannot vouch for "
                                "(e.g. from a terminal): stop it where it runs (Ctrl-C there).")
    else:
        _open_button(button, folder)
    if run.status == "failed" and run.status_note:
        places["notes"].warning(f"Failed: {md(run.status_note)}.")


def _charts(run: Run, folder: Path) -> None:
    """The run so far, in three columns: its accuracy matrix, layer 0's embeddings at the latest
    DTD step, and its latest similarity call."""
    state = run.state
    c1, c2, c3 = st.columns(3)
    with c1:
        chart(accuracy.heatmap(state.accuracy_matrix("test"), state.tasks, title="accuracy matrix", height=320),
              key=f"live-acc-{folder.name}", name="accuracy-matrix")
    with c2:
        if run.n_layers > 0 and run.learnt(0):
            steps = embeddings.steps(run)
            step = steps[-2] if len(steps) > 1 else embeddings.END  # the latest DTD step, if any
            frame = embeddings.step_frame(run, 0, projection(run, 0, "pca"), step)
            title = "embeddings, layer 0 (PCA)" + ("" if step == embeddings.END else f", when {step} arrived")
            chart(embeddings.figure(frame, title=title), key=f"live-emb-{folder.name}", name="embeddings")
        else:
            st.caption("embeddings appear after the first task (masked methods only)")
    with c3:
        _latest_call(state, folder)


def _latest_call(state: RunState, folder: Path) -> None:
    """The latest similarity call: DTD's (layer 0) for a PRM method, the transfer test for CAT."""
    if state.dtd:
        t = max(state.dtd)
        entry = state.dtd[t].layers[0]
        labels = names(state.tasks)
        st.markdown(f"**Latest DTD: {md(labels[t])}** (layer 0)  \nX-means k = {entry['xmeans']['k']}; "
                    f"dissimilar ({md(state.dtd[t].source)}): "
                    f"{', '.join(short(i) for i in entry['dissimilar']) or 'none'}")
        table(clustering.decision_table(state.dtd[t], 0), key=f"live-dtd-{folder.name}",
              name=f"xmeans-{short(t)}", height=200)
    elif state.transfer:
        t = max(state.transfer)
        test = state.transfer[t]
        st.markdown(f"**Latest transfer test: {md(names(state.tasks)[t])}**  \nreference network "
                    f"{fmt(test.reference_acc)}; similar (transfer above it): "
                    f"{', '.join(short(i) for i in test.similar) or 'none'}")
        table(clustering.transfer_calls(state.tasks, test), key=f"live-cat-{folder.name}",
              name=f"cat-transfer-{short(t)}", height=200)
    else:
        st.caption("the first similarity call appears when task 2 arrives (PRM methods: DTD; CAT: its "
                   "transfer tests)")


RECENT = 5
"""Finished (or stopped, failed) runs of the runs folder listed under the live ones."""


def _recent(root: Path, shown: list[Path]) -> None:
    """The newest runs of the runs folder that are not shown above, one line each, so that a
    run trained here stays listed after a reload or in a second tab (the session's own list
    starts empty there). Rows come from the sidebar's catalogue, cached on each folder's
    fingerprint: a finished run is read once (its summary.json), then costs a few file stats
    per tick."""
    skip = {catalog.key_of(p) for p in shown}
    rows = [e for e in entries([root]) if e.key not in skip and e.status not in ("running", "unreadable")]
    if not rows:
        return
    st.markdown(f"**Recent runs in your runs folder** (newest {min(len(rows), RECENT)} of {len(rows)})")
    for entry in rows[:RECENT]:
        name, status, acc, button = st.columns([3, 1, 1, 1.5], vertical_alignment="center")
        name.markdown(md(entry.name))
        status.markdown(md(entry.status))
        acc.markdown(f"Acc {fmt(entry.acc)}")
        _open_button(button, entry.path)


def _first_of_each_name(folders: list[Path]) -> list[Path]:
    """One card per folder name, the first listed: a card and its widgets are keyed by it
    (a run started in an earlier runs folder may share its name with one in the new)."""
    first: dict[str, Path] = {}
    for folder in folders:
        first.setdefault(folder.name, folder)
    return list(first.values())


def _panel(root: Path) -> None:
    started = [Path(p) for p in st.session_state.get(keys.LIVE_STARTED, [])]
    folders = _first_of_each_name([*live.running(root), *reversed(started)])
    if not folders:
        st.info("No run is training. Start one above; runs already training in the runs folder show up here.")
    states = {str(f): _one(f) for f in folders}
    active = {f for f, state in states.items() if state}
    _recent(root, folders)
    before = st.session_state.get("live-active", set())
    st.session_state["live-active"] = active
    slower = st.session_state.get(_FAST) and "starting" not in states.values()
    if slower:
        st.session_state[_FAST] = False
    if before - active or slower:  # a run just ended (the picker must list it), or poll slower now
        st.rerun(scope="app")


def render(*, root: Path) -> None:
    problem = catalog.runs_folder_problem(root)
    st.caption(f"New runs are written to {md(root)}." if problem is None else
               f"Your runs folder cannot hold runs: {md(problem)}.")
    _form(root)
    started = [Path(p) for p in st.session_state.get(keys.LIVE_STARTED, [])]
    active = bool(live.running(root)) or any(live.is_running(p) for p in started)
    every = (FAST_POLL if st.session_state.get(_FAST) else POLL) if active else None
    st.fragment(_panel, run_every=every)(root)
    how_to_read(HELP)
