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
from prm.compare import setup_key
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


def _sibling_case(config: dict, method: str, seed: int):
    """The form after ``prefill`` (drawn by the app), the options it holds, and what a run of
    them records: (the form's options, setup key of the open run, setup key of the new run)."""
    at = AppTest.from_function(_prefilled_form, args=(config, method, seed), default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    options = at.session_state["options"]
    assert at.session_state["unmatched"] == []
    return options, setup_key(config), setup_key(view.live.config_of(options))


def _prefilled_form(config, method, seed):
    import streamlit as st

    from explorer.views import live as view

    if "options" not in st.session_state:
        st.session_state["unmatched"] = view.prefill(config, method=method, seed=seed)
    with st.form("f"):
        st.session_state["options"] = view._fields({config["sequence"]: ""}, data_dir=None)
        st.form_submit_button("Start")


@pytest.mark.parametrize("changes", [{}, {"n_tasks": 4, "model": {"hidden": [64, 64, 64], "input_dropout": 0.1,
                                                                   "hidden_dropout": 0.3},
                                           "optim": {"max_epochs": 60, "lr": 0.05, "batch_size": 32, "patience": 4},
                                           "hat": {"lamb": 0.5, "smax": 200.0}, "prm": {"dtd_epochs": 20}}],
                         ids=["sample", "4-task-small"])
def test_prefill_makes_the_form_train_a_sibling_of_the_open_run(changes):
    """Story's "Train <method>" (bug 1): every set-up field comes from the open run's config,
    so a run started with the prefilled form is its sibling (same setup key), only the method
    and the seed changed."""
    config = load_run(SAMPLES / "digits-writers-binary-prm-s2").state.config
    for section, values in changes.items():
        config = {**config, section: {**config[section], **values} if isinstance(values, dict) else values}
    options, theirs, ours = _sibling_case(config, "hat", 7)
    assert ours == theirs
    assert (options.method, options.seed, options.sequence) == ("hat", 7, config["sequence"])
    assert options.n_tasks == config["n_tasks"] and options.dtd_epochs == config["prm"]["dtd_epochs"]
    assert options.umap == ("umap" in config["record"]["projections"])


def test_prefill_names_what_the_form_cannot_reproduce():
    config = load_run(SAMPLES / "digits-writers-binary-prm-s2").state.config
    config = {**config, "optim": {**config["optim"], "clip": 5.0}}
    options = view.live.options_like(config, method="hat", seed=2)
    assert view.live.unmatched(config, options) == ["optim.clip"]
