"""Train live: start runs of the engine's CLI in the background and watch them learn.

The page never trains anything itself: ``explorer.live`` starts ``python -m prm run`` in a
child process that writes a normal run folder, and a fragment re-reads that folder every
couple of seconds. Runs found running in the runs folder are shown too, so a reload or a
second browser tab re-attaches to them.
"""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from explorer import catalog, live
from explorer import state as keys
from explorer.figures import accuracy, clustering, embeddings
from explorer.figures.common import md, names, short
from explorer.views.common import chart, how_to_read, load, projection, table
from prm.config import METHOD_HELP, METHODS
from prm.data import DATA_ENV, DEFAULT_N_TASKS, available_sequences, task_count_range
from prm.runs import RunFormatError

HELP = """
Fill in the form and press **Start**: the engine trains in a separate process and writes a run folder
into your runs folder (sidebar), exactly as `python -m prm run` does. The page re-reads that folder every
two seconds: the progress bar (task, phase, epoch), the accuracy matrix as rows fill in, the embeddings of
the first masked layer (PCA, since UMAP would compile for seconds) and the latest DTD decision. **Stop**
ends the run cleanly (like Ctrl-C): what was learnt so far stays a loadable 'stopped' run. Stop is offered
only for runs this server started or can prove it may signal; a run started from a terminal is stopped there
(Ctrl-C). **Open** shows a finished run in the other tabs. Several runs
may train at once, each on one CPU core. Small settings (2–3 tasks, width 64, 20 epochs) finish in seconds.
"""


def _form(root: Path) -> None:
    d = live.LiveOptions()
    data_dir = st.text_input("data folder (for the paper's data sets)", os.environ.get(DATA_ENV, ""),
                             key="live-data-dir", help="EMNIST, CIFAR-100 (binary) and LEAF files you already have; "
                             "see 'Using the paper's data sets' in docs/data.md. The bundled sequences need none.")
    available = available_sequences(data_dir or None)
    with st.form("live-form"):
        c = st.columns(4)
        sequence = c[0].selectbox("sequence", list(available), index=list(available).index(d.sequence),
                                  help="; ".join(f"{k}: {v}" for k, v in available.items()), key="live-sequence")
        method = c[1].selectbox("method", list(METHODS), index=list(METHODS).index(d.method),
                                help="  \n".join(f"**{k}**: {v}" for k, v in METHOD_HELP.items()), key="live-method")
        seed = c[2].number_input("seed", 0, 10_000, d.seed, key="live-seed")
        n_tasks = c[3].number_input("tasks (0 = the sequence's default)", 0, 75, 0, key="live-n-tasks",
                                    help="allowed: " + ", ".join(
                                        f"{k} {task_count_range(k)[0]}-{task_count_range(k)[1]} "
                                        f"(default {DEFAULT_N_TASKS[k]})" for k in available))
        c = st.columns(4)
        width = c[0].number_input("layer width", 8, 2000, d.width, step=32, key="live-width",
                                  help="units per masked hidden layer (2 layers)")
        epochs = c[1].number_input("max epochs per task", 1, 500, d.epochs, key="live-epochs",
                                   help="training stops earlier when the learning rate decays below 1e-4")
        lr = c[2].number_input("learning rate", 1e-4, 1.0, d.lr, format="%.4f", key="live-lr",
                               help="initial SGD step, divided by 3 after 5 epochs without validation gain")
        batch = c[3].number_input("batch size", 1, 512, d.batch_size, key="live-batch")
        c = st.columns(4)
        lamb = c[0].number_input("mask sparsity λ (lamb)", 0.0, 10.0, d.lamb, key="live-lamb",
                                 help="how hard new tasks are pushed to use few new units")
        dtd_epochs = c[1].number_input("DTD epochs", 1, 500, d.dtd_epochs, key="live-dtd",
                                       help="PRM only: max epochs of DTD's whole-model pass")
        umap = c[2].checkbox("store UMAP at the end", value=d.umap, key="live-umap",
                             help="adds a few seconds at the end of the run (numba compile)")
        submitted = st.form_submit_button("Start", type="primary", icon=":material/play_arrow:")
    if submitted:
        low, high = task_count_range(sequence)
        if n_tasks and not low <= n_tasks <= high:
            st.error(f"{sequence} takes {low} to {high} tasks; got {n_tasks}.")
            return
        problem = catalog.runs_folder_problem(root)
        if problem:
            st.error(f"Cannot start: {md(problem)}. Change 'Your runs folder' in the sidebar.")
            return
        options = live.LiveOptions(sequence=sequence, method=method, seed=int(seed), n_tasks=int(n_tasks) or None,
                                   data_dir=data_dir or None,
                                   width=int(width), epochs=int(epochs), lr=float(lr), batch_size=int(batch),
                                   lamb=float(lamb), dtd_epochs=int(dtd_epochs), umap=bool(umap))
        try:
            folder = live.start(options, root=root)
        except OSError as exc:
            st.error(f"Cannot start a run in {md(root)}: {md(exc.strerror or exc)}.")
            return
        st.session_state.setdefault(keys.LIVE_STARTED, []).append(str(folder))
        st.toast(f"Started {md(folder.name)}")


def _one(folder: Path) -> bool:
    """Render one live run; return whether it is still running."""
    running = live.is_running(folder)
    with st.container(border=True):
        head, button = st.columns([5, 1])
        head.markdown(f"**{md(folder.name)}**")
        if not (folder / "run.json").exists():
            code = live.child_exit(folder)
            if code is None:
                st.progress(0.0, text="starting…")
            else:
                st.error(f"The run did not start (exit status {code}).")
                st.code(live.log_tail(folder) or "(no output)")
            return running
        try:
            run = load(folder)
        except RunFormatError as exc:  # its run.json became unreadable: say so, keep the other runs going
            st.error(f"This run cannot be read: {md(exc)}")
            return False
        state = run.state
        fraction, text = live.progress(state)
        st.progress(fraction, text=md(text if running or state.end else f"{run.status}: {text}"))
        if running and live.can_stop(folder):
            button.button("Stop", key=f"stop-{folder.name}", on_click=live.stop, args=(folder,),
                          icon=":material/stop:")
        elif running:
            st.caption("This run is written by a process this server did not start and cannot vouch for (e.g. "
                       "from a terminal): stop it where it runs (Ctrl-C there).")
        elif button.button("Open", key=f"open-{folder.name}", icon=":material/open_in_new:",
                           help="show this run in the other tabs"):
            # the button lives in a fragment: only a full rerun redraws the sidebar, header and URL
            st.session_state[keys.OPEN_RUN] = catalog.key_of(folder)
            st.rerun(scope="app")
        if run.status == "failed" and run.status_note:
            st.warning(f"Failed: {md(run.status_note)}.")
        if not state.tasks_done and not state.epochs:
            return running
        c1, c2, c3 = st.columns(3)
        with c1:
            chart(accuracy.heatmap(state.accuracy_matrix("test"), state.tasks, title="accuracy matrix", height=320),
                  key=f"live-acc-{folder.name}", name="accuracy-matrix")
        masked = run.n_layers > 0
        with c2:
            if masked and run.learnt(0):
                steps = embeddings.steps(run)
                step = steps[-2] if len(steps) > 1 else embeddings.END  # the latest DTD step, if any
                frame = embeddings.step_frame(run, 0, projection(run, 0, "pca"), step)
                title = "embeddings, layer 0 (PCA)" + ("" if step == embeddings.END else f", when {step} arrived")
                chart(embeddings.figure(frame, title=title), key=f"live-emb-{folder.name}", name="embeddings")
            else:
                st.caption("embeddings appear after the first task (masked methods only)")
        with c3:
            if state.dtd:
                t = max(state.dtd)
                entry = state.dtd[t].layers[0]
                labels = names(state.tasks)
                st.markdown(f"**Latest DTD: {md(labels[t])}** (layer 0)  \nX-means k = {entry['xmeans']['k']}; "
                            f"dissimilar ({md(state.dtd[t].source)}): "
                            f"{', '.join(short(i) for i in entry['dissimilar']) or 'none'}")
                table(clustering.decision_table(state.dtd[t], 0), key=f"live-dtd-{folder.name}",
                      name=f"xmeans-{short(t)}", height=200)
            else:
                st.caption("the first DTD decision appears when task 2 arrives (PRM methods)")
        if run.warnings and not running:
            st.caption(md("; ".join(run.warnings)))
    return running


def _panel(root: Path) -> None:
    started = [Path(p) for p in st.session_state.get(keys.LIVE_STARTED, [])]
    folders = list(dict.fromkeys([*live.running(root), *reversed(started)]))
    if not folders:
        st.info("No run is training. Start one above; runs already training in the runs folder show up here.")
        return
    active = {str(f) for f in folders if _one(f)}
    before = st.session_state.get("live-active", set())
    st.session_state["live-active"] = active
    if before - active:  # a run just ended: refresh the whole page so the picker lists it
        st.rerun(scope="app")


def render(*, root: Path) -> None:
    problem = catalog.runs_folder_problem(root)
    st.caption(f"New runs are written to {md(root)}." if problem is None else
               f"Your runs folder cannot hold runs: {md(problem)}.")
    _form(root)
    started = [Path(p) for p in st.session_state.get(keys.LIVE_STARTED, [])]
    active = bool(live.running(root)) or any(live.is_running(p) for p in started)
    st.fragment(_panel, run_every=2.0 if active else None)(root)
    how_to_read(HELP)
