"""AppTest tests of the Train-live form and panel that train nothing: the quick-demo control,
finished runs listed after a reload, and values other views prefill into the form."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from streamlit.elements.lib import policies
from streamlit.testing.v1 import AppTest

from explorer import state as keys
from explorer.figures.common import fmt
from explorer.views import live as view
from prm.config import RunConfig
from prm.run import load_run

APP = str(Path(__file__).resolve().parents[1] / "explorer" / "app.py")
SAMPLES = Path(APP).parents[1] / "sample_runs"
SAMPLE = "sample_runs/digits-mixed-prm-s0"
pytestmark = pytest.mark.skipif(not (SAMPLES / "digits-mixed-prm-s0" / "run.json").exists(),
                                reason="sample runs are missing (regenerate with scripts/make_sample_runs.py)")


def open_live(runs_dir: Path, **session) -> AppTest:
    """A fresh session (a reload) on the Train-live tab, with ``session`` values preset."""
    at = AppTest.from_file(APP, default_timeout=30)
    at.query_params[keys.VIEW] = keys.LIVE
    at.query_params[keys.RUN] = SAMPLE
    at.session_state[keys.RUNS_DIR] = str(runs_dir)
    for key, value in session.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def copy_runs(names: list[str], root: Path) -> list[Path]:
    """Copy sample runs into ``root``, the first one the newest (run.json's time orders them)."""
    folders = []
    for age, name in enumerate(names):
        folder = root / name
        shutil.copytree(SAMPLES / name, folder)
        stamp = 2_000_000_000 - 60 * age
        os.utime(folder / "run.json", (stamp, stamp))
        folders.append(folder)
    return folders


def test_quick_demo_control_fills_the_form_and_defaults_restore_it(tmp_path):
    at = open_live(tmp_path)
    defaults = RunConfig()
    assert at.number_input(key="live-epochs").value == defaults.optim.max_epochs
    at.button(key="live-quick").click().run()
    assert at.number_input(key="live-width").value == view.QUICK_DEMO["width"]
    assert at.number_input(key="live-epochs").value == view.QUICK_DEMO["epochs"]
    assert at.number_input(key="live-dtd").value == view.QUICK_DEMO["dtd_epochs"]
    assert at.checkbox(key="live-umap").value is False
    assert at.number_input(key="live-lr").value == defaults.optim.lr  # what the setting does not change
    assert view.QUICK_DEMO["epochs"] < defaults.optim.max_epochs
    at.button(key="live-defaults").click().run()
    assert at.number_input(key="live-epochs").value == defaults.optim.max_epochs
    assert at.number_input(key="live-width").value == defaults.model.hidden[0]
    assert at.number_input(key="live-dtd").value == defaults.prm.dtd_epochs
    assert at.checkbox(key="live-umap").value is True
    assert not at.exception


def test_the_help_quotes_measured_numbers_and_how_to_reproduce_them():
    assert "scripts/live_settings.py" in view.HELP and "scripts/live_settings.py" in view.QUICK_HELP
    assert f"{view.QUICK_DEMO['epochs']} epochs" in view.QUICK_HELP


def test_finished_runs_of_the_runs_folder_are_listed_after_a_reload(tmp_path):
    names = ["digits-mixed-hat-s0", "digits-classes-hat-s0", "digits-mixed-binary-hat-s4", "digits-mixed-stl-s0",
             "digits-classes-stl-s0", "digits-mixed-binary-stl-s4"]
    folders = copy_runs(names, tmp_path)
    at = open_live(tmp_path)  # a new session: nothing in LIVE_STARTED
    assert keys.LIVE_STARTED not in at.session_state
    shown = [b for b in at.button if b.label == "Open"]
    assert [b.key for b in shown] == [f"open-{name}" for name in names[:view.RECENT]]  # the newest, newest first
    text = "\n".join(m.value for m in at.markdown)
    acc = load_run(folders[0]).summary["acc"]
    assert f"Acc {fmt(acc)}" in text and "finished" in text
    at.button(key=f"open-{names[0]}").click().run()
    assert not at.exception
    assert at.sidebar.selectbox(key=keys.RUN).value == str(folders[0])


def test_an_empty_runs_folder_lists_no_recent_runs(tmp_path):
    at = open_live(tmp_path)
    assert not [b for b in at.button if b.label == "Open"]
    assert "No run is training" in "\n".join(i.value for i in at.info)


def test_values_prefilled_by_another_view_are_honoured_without_warnings(tmp_path, monkeypatch):
    logged = []
    monkeypatch.setattr(policies, "_shown_default_value_warning", False)
    monkeypatch.setattr(policies._LOGGER, "warning", lambda *args, **kwargs: logged.append(args))
    at = open_live(tmp_path, **{keys.LIVE_SEQUENCE: "digits-writers", keys.LIVE_METHOD: "hat", keys.LIVE_SEED: 3})
    assert at.selectbox(key=keys.LIVE_SEQUENCE).value == "digits-writers"
    assert at.selectbox(key=keys.LIVE_METHOD).value == "hat"
    assert at.number_input(key=keys.LIVE_SEED).value == 3
    at.button(key="live-quick").click().run()  # filling the training settings keeps the prefilled choice
    assert at.selectbox(key=keys.LIVE_SEQUENCE).value == "digits-writers"
    assert at.number_input(key=keys.LIVE_SEED).value == 3
    assert not at.warning and not logged and not at.exception


def test_a_prefilled_sequence_that_is_not_available_falls_back_to_the_default(tmp_path):
    at = open_live(tmp_path, **{keys.LIVE_SEQUENCE: "no-such-sequence"})
    assert at.selectbox(key=keys.LIVE_SEQUENCE).value == view.live.LiveOptions().sequence
