"""AppTest tests of the Streamlit explorer: every view on a sample run, interactions, broken
runs, and the live tab training a tiny run to the end (and stopping one cleanly)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from explorer import state as keys
from explorer.figures.common import md
from prm.engine import train_sequence
from prm.run import RunWriter
from tests.conftest import tiny_config

APP = str(Path(__file__).resolve().parents[1] / "explorer" / "app.py")
SAMPLE = "sample_runs/digits-mixed-prm-s0"
pytestmark = pytest.mark.skipif(not (Path(APP).parents[1] / SAMPLE / "run.json").exists(),
                                reason=f"{SAMPLE} is missing (regenerate with scripts/make_sample_runs.py)")


def open_app(view: str, *, run: str = SAMPLE, task: str | None = None, runs_dir: Path | None = None,
             timeout: float = 30, projection: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=timeout)
    if projection:
        at.session_state[keys.PROJECTION] = projection
    at.query_params[keys.VIEW] = view
    at.query_params[keys.RUN] = run
    if task:
        at.query_params[keys.TASK] = task
    if runs_dir is not None:
        at.session_state[keys.RUNS_DIR] = str(runs_dir)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def charts(at: AppTest) -> list:
    return at.get("plotly_chart")


def texts(at: AppTest) -> str:
    return "\n".join(str(x.value) for kind in ("markdown", "caption", "info", "warning", "error", "metric")
                     for x in getattr(at, kind))


@pytest.mark.parametrize("view, n_charts, expected", [
    (keys.OVERVIEW, 2, "Which earlier tasks DTD judged similar"),
    (keys.ACCURACY, 3, "Row *j*, column *i*"),
    (keys.EMBEDDINGS, 2, "Points of layer 0"),
    (keys.CLUSTERING, 3, "X-means found k ="),
    (keys.MASKS, 4, "HAT would protect"),
    (keys.COMPARE, 2, "Per method"),
    (keys.LIVE, 0, "Fill in the form"),
])
def test_every_view_renders_on_the_sample_run(view, n_charts, expected):
    at = open_app(view)
    assert len(charts(at)) >= n_charts
    assert expected in texts(at)
    assert not at.error
    assert at.sidebar.selectbox(key=keys.RUN).value == SAMPLE
    assert any(b.label.startswith("Download CSV") for b in at.download_button) or view == keys.LIVE
    assert [e.label for e in at.expander if e.label == "How to read this"]


def test_overview_metrics_include_fwt_from_the_stl_run():
    at = open_app(keys.OVERVIEW)
    metrics = {m.label: m.value for m in at.metric}
    assert set(metrics) == {"Acc", "BWT", "FWT", "CT"}
    assert metrics["FWT"] != "n/a" or not (Path(APP).parents[1] / "sample_runs/digits-mixed-stl-s0").exists()


def test_embeddings_interactions_layer_step_projection():
    at = open_app(keys.EMBEDDINGS)
    assert "UMAP" in charts(at)[0].proto.spec or "umap" in texts(at).lower()
    at.segmented_control(key=keys.PROJECTION).set_value("pca").run()
    assert not at.exception and "PCA" in charts(at)[0].proto.spec
    at.select_slider(key=keys.STEP).set_value("T3").run()
    assert not at.exception and "X-means when T3 arrived" in charts(at)[0].proto.spec
    at.toggle(key=keys.TRAJECTORIES).set_value(True).run()
    assert not at.exception and "with trajectories" in charts(at)[0].proto.spec
    at.sidebar.selectbox(key=keys.LAYER).set_value(1).run()
    assert not at.exception and "Points of layer 1" in texts(at)
    at.toggle(key=keys.TRAJECTORIES).set_value(False).run()  # trajectories lock the projection to PCA
    at.segmented_control(key=keys.PROJECTION).set_value("tsne").run()
    assert not at.exception


def test_clustering_follows_the_task_in_the_url_and_explains_a_pair():
    at = open_app(keys.CLUSTERING, task="T5")
    assert "T5" in texts(at) and "arrives" in texts(at)
    at.sidebar.selectbox(key=keys.LAYER).set_value(1).run()
    assert "layer 1" in texts(at)
    at.selectbox(key="cl-a").set_value(0).run()
    at.selectbox(key="cl-b").set_value(2).run()
    assert not at.exception
    labels = [m.label for m in at.metric]
    assert "their distance" in labels and any(l.startswith("BIC change") for l in labels)
    at.segmented_control(key=keys.MEASURE).set_value("cosine").run()
    assert not at.exception and "cosine" in charts(at)[1].proto.spec


def test_accuracy_slider_and_difference_run():
    at = open_app(keys.ACCURACY)
    at.slider(key="acc-upto").set_value(3).run()
    assert not at.exception and "after T3" in charts(at)[0].proto.spec
    assert at.selectbox(key="acc-other").value  # another run of the same sequence is offered


def test_masks_for_an_unmasked_run_says_so():
    at = open_app(keys.MASKS, run="sample_runs/digits-mixed-ncl-s0")
    assert "unmasked method" in texts(at)


def _broken_runs(root: Path) -> dict[str, Path]:
    """Three damaged copies of a tiny run: no run.json, events cut mid-line, a corrupt npz."""
    cfg = tiny_config(n_tasks=3)
    good = root / "good"
    train_sequence(cfg, emit=RunWriter(good, config=cfg))
    import shutil

    out = {}
    for name in ("no-run-json", "truncated", "corrupt-npz"):
        shutil.copytree(good, root / name)
        out[name] = root / name
    (out["no-run-json"] / "run.json").unlink()
    events = (out["truncated"] / "events.jsonl").read_text().splitlines()
    cut = next(n for n, line in enumerate(events) if '"task_end"' in line and '"task": 1' in line)
    (out["truncated"] / "events.jsonl").write_text("\n".join(events[:cut]) + "\n" + events[cut][:40])
    (out["corrupt-npz"] / "arrays" / "task_001.npz").write_bytes(b"PK\x03\x04 this is not an npz")
    return out


def test_broken_run_folders_show_what_they_have(tmp_path):
    broken = _broken_runs(tmp_path)
    at = open_app(keys.OVERVIEW, run=str(broken["no-run-json"]), runs_dir=tmp_path)
    assert at.error and "cannot be opened" in at.error[0].value and md("no run.json") in at.error[0].value
    at = open_app(keys.LIVE, run=str(broken["no-run-json"]), runs_dir=tmp_path)
    assert "Fill in the form" in texts(at)  # the rest of the app keeps working
    at = open_app(keys.ACCURACY, run=str(broken["truncated"]), runs_dir=tmp_path)
    assert at.warning and "partial" in at.warning[0].value and "truncated last line" in at.warning[0].value
    assert len(charts(at)) >= 2
    for view in (keys.EMBEDDINGS, keys.CLUSTERING, keys.MASKS):
        at = open_app(view, run=str(broken["corrupt-npz"]), runs_dir=tmp_path, projection="pca")
        assert at.warning and md("task_001.npz: not a valid .npz file") in at.warning[0].value


def _wait(at: AppTest, done, timeout: float) -> AppTest:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        failed = [e.value for e in at.error if "did not start" in e.value]
        assert not failed, failed + [c.value for c in at.code]
        if done(at):
            return at
        time.sleep(0.5)
    raise AssertionError("the live run did not reach the expected state in time")


def test_live_tab_trains_a_tiny_run_to_the_end(tmp_path):
    at = open_app(keys.LIVE, runs_dir=tmp_path, timeout=60)
    at.selectbox(key="live-sequence").set_value("digits-classes")
    at.number_input(key="live-n-tasks").set_value(2)
    at.number_input(key="live-width").set_value(32)
    at.number_input(key="live-epochs").set_value(3)
    at.number_input(key="live-dtd").set_value(3)
    at.checkbox(key="live-umap").set_value(False)
    at.form_submit_button[0].click().run()
    assert not at.exception
    folders = [Path(p) for p in at.session_state[keys.LIVE_STARTED]]
    assert len(folders) == 1 and folders[0].parent == tmp_path and folders[0].name.startswith("digits-classes-prm-s0-")
    at = _wait(at, lambda a: any("finished" in (p.proto.text or "") for p in a.get("progress")), timeout=90)
    assert len(charts(at)) >= 2  # accuracy matrix and embeddings of the finished run
    assert "Latest DTD" in texts(at)
    meta = json.loads((folders[0] / "run.json").read_text())
    assert meta["config"]["model"]["hidden"] == [32, 32] and meta["config"]["record"]["projections"] == ["pca"]
    at.button(key=f"open-{folders[0].name}").click().run()
    assert at.sidebar.selectbox(key=keys.RUN).value == str(folders[0])


def test_live_stop_leaves_a_loadable_stopped_run(tmp_path):
    at = open_app(keys.LIVE, runs_dir=tmp_path, timeout=60)
    at.selectbox(key="live-sequence").set_value("digits-writers")
    at.checkbox(key="live-umap").set_value(False)
    at.form_submit_button[0].click().run()
    folder = Path(at.session_state[keys.LIVE_STARTED][0])
    at = _wait(at, lambda a: any(b.label == "Stop" for b in a.button) and
               any("epoch" in (p.proto.text or "") for p in a.get("progress")), timeout=60)
    next(b for b in at.button if b.label == "Stop").click().run()
    at = _wait(at, lambda a: any("stopped" in (p.proto.text or "") for p in a.get("progress")), timeout=60)
    from prm.run import load_run

    assert load_run(folder).status == "stopped"
    # a second session (another browser tab) opens it as a stopped run
    other = open_app(keys.OVERVIEW, run=str(folder), runs_dir=tmp_path)
    assert "status **stopped**" in texts(other)


def test_the_url_keeps_task_and_layer_and_reports_what_it_cannot_use():
    """Task and layer travel in the URL; a value the run does not have is named in a warning
    and replaced by the default, never silently dropped."""
    at = AppTest.from_file(APP, default_timeout=30)
    at.query_params.update({keys.VIEW: keys.MASKS, keys.RUN: SAMPLE, keys.TASK: "T4", keys.LAYER: "1"})
    at.run()
    assert not at.exception and not at.warning
    assert at.sidebar.selectbox(key=keys.TASK).value == "T4" and at.sidebar.selectbox(key=keys.LAYER).value == "1"
    assert at.query_params[keys.LAYER] == "1" and at.query_params[keys.TASK] == "T4"
    at.sidebar.selectbox(key=keys.LAYER).set_value("0").run()
    assert at.query_params[keys.LAYER] == "0"

    at = AppTest.from_file(APP, default_timeout=30)
    at.query_params.update({keys.VIEW: keys.OVERVIEW, keys.RUN: "sample_runs/no-such-run", keys.TASK: "T99",
                            keys.LAYER: "7"})
    at.run()
    assert not at.exception
    warned = " ".join(w.value.replace("\\", "") for w in at.warning)
    for what, value in (("the run", "sample_runs/no-such-run"), ("task", "T99"), ("masked layer", "7")):
        assert f"The link asks for {what} '{value}'" in warned, warned
    assert at.sidebar.selectbox(key=keys.LAYER).value == "0"
    assert at.query_params[keys.LAYER] == "0"
