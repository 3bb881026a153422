"""PRM Explorer: ``streamlit run explorer/app.py`` from the repository root.

The page is a sidebar for global choices (run, task, layer, runs folder, upload/download)
and one tab per view. Only the open tab is rendered. Everything a view draws comes from
``explorer.figures``; this file only wires widgets, the URL and the views together.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:  # CI runs `streamlit run` from a clean clone, nothing installed
    sys.path.insert(0, str(_ROOT))

import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402

from explorer import archive, catalog, theme  # noqa: E402
from explorer import state as keys  # noqa: E402
from explorer.figures.common import md, short, task_label, visible  # noqa: E402
from explorer.views import (accuracy, clustering, compare, embeddings, lecture, live, masks, overview,  # noqa: E402
                            story, tuning)
from explorer.views.common import Context, entries, link_warning, load, table, url_choice  # noqa: E402
from prm.run import RunFormatError  # noqa: E402

RUN_VIEWS = {keys.STORY: story.render, keys.OVERVIEW: overview.render, keys.ACCURACY: accuracy.render, keys.EMBEDDINGS: embeddings.render,
             keys.CLUSTERING: clustering.render, keys.MASKS: masks.render}


def _on_upload(root: Path) -> None:
    file = st.session_state.get(keys.UPLOAD)
    done = st.session_state.setdefault(keys.UPLOADED, set())
    if file is None or file.file_id in done:
        return
    done.add(file.file_id)
    try:
        folder = archive.extract_run_zip(file.getvalue(), root=root, name=file.name)
    except archive.UploadError as exc:
        st.session_state[keys.UPLOAD_MESSAGE] = ("error", f"Upload refused: {md(exc)}")
        return
    st.session_state[keys.OPEN_RUN] = catalog.key_of(folder)
    st.session_state[keys.UPLOAD_MESSAGE] = ("success", f"Unpacked into {md(folder)}")


@functools.lru_cache(maxsize=8)
def _zip(path: str, stamp: tuple) -> bytes:  # noqa: ARG001 - stamp is the cache key
    return archive.zip_run(Path(path))


def _sidebar() -> tuple[Path, list[catalog.RunEntry], catalog.RunEntry | None]:
    sb = st.sidebar
    sb.title("PRM Explorer")
    sb.caption("Partially Relaxed Masks: why tasks are clustered, replayed and trained live.")
    folder = st.session_state.pop(keys.OPEN_RUNS_DIR, None)  # a trial opened in Tuning: its study's folder
    if folder:
        st.session_state[keys.RUNS_DIR] = folder
    typed = sb.text_input("Your runs folder", keys.DEFAULT_RUNS_DIR, key=keys.RUNS_DIR,
                          help="relative to the repository root; new live runs go here too")
    try:
        root = keys.runs_root(typed, _ROOT)
    except ValueError as exc:  # '~nobody/runs': no such home folder
        sb.error(f"Your {md(exc)}. Type another runs folder.")
        st.stop()
    problem = catalog.runs_folder_problem(root)
    if problem:
        sb.error(f"Your runs folder cannot hold runs: {md(problem)}. The samples still open; training and "
                 "uploads need another folder.")
    roots = [root] if catalog.same_folder(root, catalog.SAMPLES) else [root, catalog.SAMPLES]
    found = entries(roots)
    by_key = {e.key: e for e in found}
    if not found:
        sb.warning("No runs found. Train one in the 'Train live' tab.")
        return root, found, None
    pending = st.session_state.pop(keys.OPEN_RUN, None)  # Open in Train live, or an upload
    if pending in by_key:
        st.session_state[keys.RUN] = pending
    url_choice(keys.RUN, list(by_key), catalog.default_key(found), what="the run", whose="the run list")
    chosen = sb.selectbox("Run", list(by_key), key=keys.RUN, format_func=lambda k: by_key[k].label,
                          help="your runs first, then the bundled samples; newest first")
    st.query_params[keys.RUN] = chosen
    return root, found, by_key[chosen]


def _task_and_layer(run) -> tuple[int, int]:
    """The sidebar's task and layer: the one task selector every view follows (their own
    sliders start from it), both kept in the URL."""
    state = run.state
    options = [short(t) for t in range(max(state.n_tasks, 1))]
    url_choice(keys.TASK, options, short(max(state.tasks_done - 1, 0)), what="task")
    label = st.sidebar.selectbox("Task", options, key=keys.TASK,
                                 format_func=lambda s: task_label(state.tasks, int(s[1:]) - 1),
                                 help="the task every view focuses on; the views' own sliders start from it")
    st.query_params[keys.TASK] = label
    layers = [str(layer) for layer in range(max(run.n_layers, 1))]
    url_choice(keys.LAYER, layers, "0", what="masked layer")
    layer = st.sidebar.selectbox("Layer", layers, key=keys.LAYER, format_func=lambda l: f"masked layer {l}",
                                 disabled=not run.n_layers,
                                 help="the masked hidden layer the views show" if run.n_layers else
                                 "this method has no masked layers")
    st.query_params[keys.LAYER] = layer
    return int(label[1:]) - 1, int(layer)


def _files(root: Path, entry: catalog.RunEntry | None) -> None:
    sb = st.sidebar
    if entry is not None:
        sb.download_button("Download this run (.zip)", functools.partial(_zip, str(entry.path),
                                                                           catalog.fingerprint(entry.path)),
                           file_name=f"{visible(entry.name)}.zip", mime="application/zip", on_click="ignore",
                           icon=":material/folder_zip:", key="download-run")
    sb.file_uploader("Upload a zipped run", type=["zip"], key=keys.UPLOAD, on_change=_on_upload, args=(root,),
                     help=f"a run folder as zip, at most {archive.MAX_UPLOAD_BYTES // 2**20} MB; "
                          "only run files are accepted, nothing is executed")
    message = st.session_state.pop(keys.UPLOAD_MESSAGE, None)
    if message:
        getattr(sb, message[0])(message[1])


def _catalogue(found: list[catalog.RunEntry]) -> None:
    with st.sidebar.expander("All runs"):
        table(pd.DataFrame([{"run": e.name, "sequence": e.sequence, "method": e.method, "seed": e.seed,
                             "Acc": e.acc, "status": e.status, "folder": str(e.path.parent)} for e in found]),
              key="catalogue", name="runs")


def main() -> None:
    st.set_page_config(page_title="PRM Explorer", page_icon=theme.icon(), layout="wide",
                       initial_sidebar_state="collapsed" if lecture.wanted() else "auto")
    st.html(theme.style())
    root, found, entry = _sidebar()
    lecturing = lecture.switch()
    run, problem = None, None
    if entry is not None:
        try:
            run = load(entry.path)
        except RunFormatError as exc:
            problem = str(exc)
    ctx = None
    if run is not None:
        task, layer = _task_and_layer(run)
        ctx = Context(run=run, entry=entry, task=task, layer=layer, entries=tuple(found))
    _files(root, entry)
    _catalogue(found)
    if lecturing and ctx is not None and run.state.n_tasks:
        lecture.render(ctx)  # the Story one step per screen: no heading, no tabs
        return
    if lecturing:
        st.info("Lecture mode tells the Story of a readable run with a learnt task: pick one in the sidebar.")

    if entry is not None:
        where = "bundled sample" if entry.where == "sample" else "your runs folder"
        st.markdown(f"### {md(entry.name)}  \n{md(entry.key)} ({where})" +
                    (f" · status **{md(run.status)}**" if run else ""))
    if problem:
        st.error(f"This run cannot be opened: {md(problem)}. Pick another run; the other tabs still work.")
    elif run is not None and (run.warnings or run.status_note):
        st.warning(f"This run is partial ({run.state.tasks_done} of {run.state.n_tasks} tasks learnt, status "
                   f"{md(run.status)}); the views show what it has. Details: " +
                   md("; ".join(filter(None, [run.status_note, *run.warnings]))))
    view = st.query_params.get(keys.VIEW)
    if view is not None and view not in keys.VIEWS:  # the bound tabs would fall back silently
        link_warning(view, what="the view", whose="PRM Explorer", options=list(keys.VIEWS), default=keys.VIEWS[0])
    tabs = st.tabs(list(keys.VIEWS), key=keys.VIEW, bind="query-params")
    for name, tab in zip(keys.VIEWS, tabs):
        if not tab.open:
            continue
        with tab:
            if name == keys.LIVE:
                live.render(root=root)
            elif name == keys.COMPARE:
                compare.render(entries=found, current_key=entry.key if entry else None, root=root)
            elif name == keys.TUNING:
                tuning.render(root=root)
            elif ctx is None:
                st.info("Pick a readable run in the sidebar to see this view.")
            elif not run.state.n_tasks:
                st.info("This run has recorded no task yet.")
            else:
                RUN_VIEWS[name](ctx)


main()
