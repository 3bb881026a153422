"""AppTest tests of issue 7, "never trust a run folder": hostile names stay text, damaged runs
render, Open switches the whole app, like runs only are averaged, a runs folder that is a file,
help that matches the run, an honest projection control and Stop only where it may signal."""

from __future__ import annotations

import io
import json
import re
import shutil
import socket
import subprocess
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from google.protobuf.json_format import MessageToDict
from streamlit.testing.v1 import AppTest

from explorer import catalog
from explorer import state as keys
from explorer.figures.common import md
from prm import compare as compare_tables
from prm.engine import train_sequence
from prm.run import RunWriter, load_run
from prm.run.meta import _process_start
from tests.conftest import tiny_config
from tests.test_app import SAMPLE, charts, open_app, texts

pytestmark = pytest.mark.skipif(not (Path(__file__).resolve().parents[1] / SAMPLE / "run.json").exists(),
                                reason=f"{SAMPLE} is missing")

HOSTILE = ["![x](http://127.0.0.1:8765/x)", "<img src=x onerror=alert(1)>", ":red[boom] **bold** :material/home:"]
RAW = ["![x](", "](http", "<img", ":red[boom]", "**bold**", ":material/home:"]
FOLDER = "![x](x) <img src=x onerror=alert(1)> :red[boom] **bold**"  # no slash: a folder name


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A finished 3-task PRM run on digits-mixed (both families, two DTD steps)."""
    folder = tmp_path_factory.mktemp("tiny") / "prm"
    cfg = tiny_config(sequence="digits-mixed")
    train_sequence(cfg, emit=RunWriter(folder, config=cfg))
    return folder


def copy_run(src: Path, root: Path, name: str) -> Path:
    return Path(shutil.copytree(src, root / name))


def rewrite_events(folder: Path, change) -> None:
    """Apply ``change`` to the parsed event records and write them back (summary dropped)."""
    records = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]
    (folder / "events.jsonl").write_text("".join(json.dumps(r) + "\n" for r in change(records)))
    (folder / "summary.json").unlink(missing_ok=True)


def unescaped_only(markdown: str) -> str:
    """The Markdown with every backslash-escaped character blanked: what is left can act."""
    return re.sub(r"\\[!-/:-@\[-`{-~]", "_", markdown)


def strings(at: AppTest) -> tuple[list[str], list[str]]:
    """Every string the browser renders as Markdown (bodies, labels, help, progress text,
    expander and tab labels) and every plotly spec."""
    found, specs = [], []

    def walk(value, field=""):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, k)
        elif isinstance(value, list):
            for v in value:
                walk(v, field)
        elif isinstance(value, str) and field in ("body", "label", "help", "text", "value"):
            found.append(value)

    for node in at._tree:
        proto = getattr(node, "proto", None)
        if proto is None or not hasattr(proto, "DESCRIPTOR"):
            continue
        if getattr(node, "type", "") == "plotly_chart":
            specs.append(proto.spec)
            continue
        if getattr(node, "type", "") in ("dataframe", "selectbox", "multiselect", "select_slider", "code"):
            walk({k: v for k, v in MessageToDict(proto).items() if k in ("label", "help")})  # options: plain text
            continue
        walk(MessageToDict(proto))
    return found, specs


@pytest.fixture(scope="module")
def hostile(tiny_run, tmp_path_factory) -> Path:
    """The tiny run with hostile task names, families, sequence and folder name."""
    root = tmp_path_factory.mktemp("hostile")
    folder = copy_run(tiny_run, root, FOLDER)

    def change(records):
        first = records[0]
        first["sequence"] = "<img src=x onerror=alert(1)> ![s](http://127.0.0.1:8765/s)"
        for n, task in enumerate(first["tasks"]):
            task["name"] = HOSTILE[n % len(HOSTILE)]
            task["family"] = f"![f](http://127.0.0.1:8765/f) {task['family']}"
        return records

    rewrite_events(folder, change)
    assert load_run(folder).state.tasks[0]["name"] == HOSTILE[0]
    return folder


@pytest.mark.parametrize("view", keys.VIEWS)
def test_hostile_names_reach_markdown_and_plotly_only_escaped(hostile, view):
    """Task names, families, sequence and folder name from a run file reach every Markdown sink
    backslash-escaped and every plotly text HTML-escaped, in every view (Train live included)."""
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "explorer" / "app.py"), default_timeout=30)
    at.session_state[keys.RUNS_DIR] = str(hostile.parent)
    at.session_state[keys.PROJECTION] = "pca"
    at.session_state[keys.LIVE_STARTED] = [str(hostile)]  # so the Train-live panel shows it too
    at.query_params[keys.VIEW] = view
    at.query_params[keys.RUN] = catalog.key_of(hostile)
    at.query_params[keys.TASK] = "T3"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    found, specs = strings(at)
    leaks = [s for s in found if any(r in unescaped_only(s) for r in RAW)]
    assert not leaks, leaks
    assert not [s for s in specs if "<img" in s]
    shown = "\n".join(found + specs)
    assert md(FOLDER) in shown  # the names are shown, escaped, not dropped
    if view in (keys.OVERVIEW, keys.ACCURACY, keys.CLUSTERING, keys.MASKS, keys.EMBEDDINGS):
        assert "&lt;img src=x onerror=alert(1)&gt;" in shown or md(HOSTILE[1]) in shown


def test_escaping_neutralises_streamlit_directives():
    for text in HOSTILE + [FOLDER, "$x$ `code` # h"]:
        escaped = md(text)
        assert not any(r in unescaped_only(escaped) for r in RAW)
        assert escaped.replace("\\", "") == text.replace("\\", "")
    assert "\n" not in md("a\n# heading")


def test_views_render_a_run_without_any_array(tiny_run, tmp_path):
    """Every view renders a run whose arrays/*.npz and projections.npz are gone, and says so."""
    folder = copy_run(tiny_run, tmp_path, "no-arrays")
    for npz in [*folder.glob("arrays/*.npz"), folder / "projections.npz"]:
        npz.unlink()
    messages = {keys.EMBEDDINGS: "embedding arrays are missing", keys.CLUSTERING: "embedding arrays are missing",
                keys.MASKS: "mask arrays are missing"}
    for view in keys.VIEWS:
        at = open_app(view, run=str(folder), runs_dir=tmp_path, task="T3", projection="umap")
        assert at.warning and "missing" in at.warning[0].value  # the header says what is damaged
        if view in messages:
            assert messages[view] in texts(at), view


def test_open_in_train_live_switches_the_whole_app(tiny_run, tmp_path):
    """Open hands the run to the sidebar, which applies it on the full rerun: picker, URL and
    header follow. (AppTest reruns the whole script on a click, fragment or not: that Open
    works from inside the fragment is proven in tests/test_browser.py.)"""
    folder = copy_run(tiny_run, tmp_path, "finished-live")
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "explorer" / "app.py"), default_timeout=30)
    at.session_state[keys.RUNS_DIR] = str(tmp_path)
    at.session_state[keys.LIVE_STARTED] = [str(folder)]
    at.query_params[keys.VIEW] = keys.LIVE
    at.query_params[keys.RUN] = SAMPLE
    at.run()
    assert at.sidebar.selectbox(key=keys.RUN).value == SAMPLE
    at.button(key=f"open-{folder.name}").click().run()
    assert not at.exception
    assert at.sidebar.selectbox(key=keys.RUN).value == str(folder)
    assert at.query_params[keys.RUN] == str(folder)  # the URL follows
    assert md(folder.name) in at.markdown[0].value


def test_same_folder_name_in_your_runs_and_the_samples(tmp_path):
    """A copy of a sample under the same folder name: its key opens the copy, the sample's key
    the sample, and the picker lists both with distinct labels that say where each lives."""
    mine = copy_run(catalog.ROOT / SAMPLE, tmp_path, Path(SAMPLE).name)
    key = catalog.key_of(mine)
    at = open_app(keys.OVERVIEW, run=key, runs_dir=tmp_path)
    picker = at.sidebar.selectbox(key=keys.RUN)
    assert picker.value == key
    header = at.markdown[0].value
    assert md(key) in header and "your runs folder" in header
    labels = [lab for lab in picker.options if lab.endswith(Path(SAMPLE).name)]
    assert len(labels) == 2 and len(set(labels)) == 2 and any(lab.endswith(SAMPLE) for lab in labels)
    at = open_app(keys.OVERVIEW, run=SAMPLE, runs_dir=tmp_path)
    assert at.sidebar.selectbox(key=keys.RUN).value == SAMPLE and "bundled sample" in at.markdown[0].value


def _state(*, n_tasks: int, done: int, status: str | None, acc: float, sequence: str = "digits-classes",
           method: str = "prm", width: int = 32) -> SimpleNamespace:
    """A hand-made run state: a lower-triangular accuracy matrix with ``done`` rows of ``acc``."""
    R = np.full((n_tasks, n_tasks), np.nan)
    for j in range(done):
        R[j, : j + 1] = acc
    return SimpleNamespace(sequence=sequence, n_tasks=n_tasks, accuracy_matrix=lambda split="test": R.copy(),
                           config={"method": method, "sequence": sequence, "seed": 0, "n_tasks": n_tasks,
                                   "model": {"hidden": [width, width]}},
                           end=None if status is None else SimpleNamespace(status=status, seconds=1.0), task_ends={})


def test_compare_averages_only_like_runs_over_distinct_seeds():
    runs = {f"three-{i}": (_state(n_tasks=3, done=3, status="finished", acc=0.9), 0) for i in range(5)}
    runs |= {"five": (_state(n_tasks=5, done=5, status="finished", acc=0.5), 0),
             "wide": (_state(n_tasks=3, done=3, status="finished", acc=0.1, width=64), 0),
             "ten": (_state(n_tasks=10, done=10, status="finished", acc=0.8), 0),
             "ten-s1": (_state(n_tasks=10, done=10, status="finished", acc=0.6), 1),
             "stopped": (_state(n_tasks=10, done=2, status="stopped", acc=0.2), 0)}
    table = compare_tables.per_run(runs)
    assert table.set_index("run").loc["stopped", "ended"] == "stopped"
    summary = compare_tables.per_method(table).set_index("tasks")
    three = summary[summary["config"] == table.set_index("run").loc["three-0", "config"]].loc["3/3"]
    assert three["runs"] == 5 and three["seeds"] == 1 and three["Acc"] == pytest.approx(0.9)
    assert pd.isna(three["Acc sd"])  # one seed: no spread
    assert summary.loc["5/5", "Acc"] == pytest.approx(0.5)  # 3 and 5 tasks are not averaged together
    assert len(summary.loc["3/3"]) == 2  # another width is another configuration
    assert summary.loc["10/10", "seeds"] == 2 and summary.loc["10/10", "Acc"] == pytest.approx(0.7)
    assert summary.loc["2/10", "Acc"] == pytest.approx(0.2)  # the stopped run stands alone


def test_compare_view_offers_finished_runs_and_picks_the_current_one(tiny_run, tmp_path):
    """Unfinished runs are offered only when ticked and then form their own group; copies of one
    seed count as one seed; the open run is always picked first, even when unfinished."""
    for n in range(3):
        copy_run(tiny_run, tmp_path, f"copy-{n}")
    stopped = copy_run(tiny_run, tmp_path, "stopped")

    def stop_after_first_task(records):
        cut = next(n for n, r in enumerate(records) if r["type"] == "task_end")
        return records[: cut + 1] + [{"type": "run_end", "status": "stopped", "seconds": 1.0}]

    rewrite_events(stopped, stop_after_first_task)
    at = open_app(keys.COMPARE, run=str(tmp_path / "copy-1"), runs_dir=tmp_path)
    runs = at.multiselect(key=keys.COMPARE_RUNS)
    assert str(tmp_path / "copy-1") == runs.value[0]
    assert not [o for o in runs.options if o.startswith("stopped ·")]  # chips read "<run name> · Acc <value>"
    at.checkbox(key=keys.COMPARE_UNFINISHED).check().run()
    assert any(o.startswith("stopped ·") for o in at.multiselect(key=keys.COMPARE_RUNS).options)
    at.multiselect(key=keys.COMPARE_RUNS).select(str(stopped)).run()
    assert not at.exception
    groups = at.dataframe[1].value
    assert sorted(groups["tasks"]) == ["1/3", "3/3"] and groups.set_index("tasks").loc["3/3", "seeds"] == 1
    at = open_app(keys.COMPARE, run=str(stopped), runs_dir=tmp_path)
    assert at.multiselect(key=keys.COMPARE_RUNS).value[0] == str(stopped)  # the current run, though unfinished


def test_a_runs_folder_that_is_a_file(tiny_run, tmp_path):
    """The sidebar says the runs folder is a file, the samples still open, and an upload or a
    Start says why it cannot proceed instead of raising."""
    bad = tmp_path / "runs.txt"
    bad.write_text("not a folder")
    at = open_app(keys.OVERVIEW, runs_dir=bad)
    assert at.sidebar.error and "is a file" in at.sidebar.error[0].value.replace("\\", "")
    assert len(charts(at)) >= 2  # the sample still opens
    at.sidebar.file_uploader(key=keys.UPLOAD).upload("run.zip", _zipped(tiny_run), "application/zip").run()
    assert not at.exception
    assert any("Upload refused" in e.value and "is a file" in e.value.replace("\\", "") for e in at.sidebar.error)
    at = open_app(keys.LIVE, runs_dir=bad)
    at.number_input(key="live-n-tasks").set_value(2)
    at.form_submit_button[0].click().run()
    assert not at.exception
    assert any("Cannot start" in e.value and "is a file" in e.value.replace("\\", "") for e in at.error)
    assert not bad.with_suffix("").exists() and bad.read_text() == "not a folder"


def _zipped(folder: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path in folder.rglob("*"):
            if path.is_file():
                zf.write(path, path.relative_to(folder).as_posix())
    return buf.getvalue()


@pytest.mark.parametrize("run, clusters", [("sample_runs/digits-mixed-hat-s0", False),
                                           ("sample_runs/mnist5k-mixed-hat-s0", False),
                                           ("sample_runs/mnist5k-mixed-prm-s0", True)])
def test_help_says_what_this_runs_charts_encode(run, clusters):
    """Embeddings help claims X-means colours only for a run with DTD steps and names this run's
    own families (with their symbols); the Overview help names them too."""
    at = open_app(keys.EMBEDDINGS, run=run, projection="pca")
    help_text = next(m.value for m in at.markdown if "**In this run**" in m.value)
    assert ("= the clusters that decided" in help_text) == clusters
    assert ("**Colour** = task" in help_text) != clusters
    families = {t["family"] for t in load_run(catalog.ROOT / run).state.tasks}
    assert all(md(f) in help_text for f in families)
    assert "circle = class" not in help_text and "diamond = writer" not in help_text
    overview = texts(open_app(keys.OVERVIEW, run=run))
    assert all(f"**{md(f)}**" in overview for f in families) and "orange tiles" not in overview


def test_compare_help_states_the_papers_expectation_as_the_papers():
    text = texts(open_app(keys.COMPARE))
    assert "should beat HAT" not in text and "the PRM paper expects" in text


def test_trajectories_show_pca_in_the_projection_control():
    """While trajectories are on the control shows PCA, disabled, with a reason; turning them off
    brings the user's projection back."""
    at = open_app(keys.EMBEDDINGS, projection="umap")  # the user's choice (a 10-task run opens on PCA)
    control = at.segmented_control(key=keys.PROJECTION)
    assert control.value == "umap" and not control.disabled
    at.toggle(key=keys.TRAJECTORIES).set_value(True).run()
    control = at.segmented_control(key=keys.PROJECTION)
    assert control.value == "pca" and control.disabled and "drawn in PCA" in control.help
    assert "PCA with trajectories" in charts(at)[0].proto.spec
    at.toggle(key=keys.TRAJECTORIES).set_value(False).run()
    control = at.segmented_control(key=keys.PROJECTION)
    assert control.value == "umap" and not control.disabled  # the user's choice comes back
    assert "UMAP" in charts(at)[0].proto.spec


def _running_elsewhere(tiny_run: Path, root: Path, pid: int | None) -> Path:
    """A copy of the tiny run without its closing record whose run.json names ``pid``."""
    folder = copy_run(tiny_run, root, f"elsewhere-{pid}")
    rewrite_events(folder, lambda records: [r for r in records if r["type"] != "run_end"])
    meta = json.loads((folder / "run.json").read_text())
    meta.update(pid=pid, pid_start=_process_start(pid) if pid else None, host=socket.gethostname())
    (folder / "run.json").write_text(json.dumps(meta))
    return folder


def test_stop_is_offered_only_where_this_server_may_signal(tiny_run, tmp_path):
    """A running run whose writer this server cannot prove gets no Stop, but a caption saying to
    stop it where it runs; a failed run shows why it counts as failed (run.status_note)."""
    sleeper = subprocess.Popen(["sleep", "60"])  # a live process that is not a provable run writer
    try:
        folder = _running_elsewhere(tiny_run, tmp_path, sleeper.pid)
        at = open_app(keys.LIVE, runs_dir=tmp_path)
        assert md(folder.name) in texts(at)  # listed as running
        assert not [b for b in at.button if b.label == "Stop"]
        assert any("stop it where it runs" in c.value for c in at.caption)
    finally:
        sleeper.kill()
        sleeper.wait()
    dead = _running_elsewhere(tiny_run, tmp_path, None)
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "explorer" / "app.py"), default_timeout=30)
    at.session_state[keys.RUNS_DIR] = str(tmp_path)
    at.session_state[keys.LIVE_STARTED] = [str(dead)]
    at.query_params[keys.VIEW] = keys.LIVE
    at.run()
    assert not at.exception
    assert any(w.value.startswith("Failed:") and md("closing record") in w.value for w in at.warning)
