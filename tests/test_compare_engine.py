"""The engine's version in run.json, and Compare's times: CT and the time chart set only runs of
the open run's engine version side by side, name the others with their version, and caption only
what is drawn; two configurations of one method are told apart by name and dash or pattern."""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

import prm
from explorer import state as keys
from explorer.figures import common, compare
from prm import compare as compare_tables
from prm.config import ModelConfig
from prm.engine import train_sequence
from prm.run import RunWriter, load_run
from prm.run.writing import _versions
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "explorer" / "app.py")


def test_engine_version_is_the_packages_and_is_recorded():
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"] == prm.__version__
    assert _versions()["prm"] == prm.__version__


# ----------------------------------------------------------------------------- the split by engine


def test_split_keeps_only_runs_of_the_open_runs_engine_version():
    split = compare_tables.split_by_engine({"new": "0.2.0", "old": "0.1", "unknown": None, "new2": "0.2.0",
                                            "near": "0.2"}, reference="0.2.0")
    assert split.comparable == ("new", "new2")
    assert split.left_out == {"old": "0.1", "unknown": None, "near": "0.2"}  # equal strings only: 0.2 is not 0.2.0


def test_split_under_an_open_run_of_unknown_version_compares_nothing():
    split = compare_tables.split_by_engine({"a": None, "b": "0.2.0"}, reference=None)
    assert split.comparable == () and split.left_out == {"a": None, "b": "0.2.0"}
    assert compare_tables.split_by_engine({}, reference="0.2.0").comparable == ()


def test_engine_caption_names_each_left_out_run_with_its_version():
    split = compare_tables.split_by_engine({"b-run": "0.1", "a-run": None, "me": "0.2.0"}, reference="0.2.0")
    text = compare.engine_caption(split, what="CT")
    assert text.startswith("CT: only runs recorded by engine 0\\.2\\.0")
    assert text.endswith("Left out: a\\-run (recorded by an engine that did not record its version), "
                         "b\\-run (recorded by engine 0\\.1).")
    assert "me" not in text.split("Left out")[1]
    alone = compare.engine_caption(compare_tables.split_by_engine({"me": "0.2.0"}, reference="0.2.0"), what="CT")
    assert alone == "CT: only runs recorded by engine 0\\.2\\.0, as the open run was."
    none = compare.engine_caption(compare_tables.split_by_engine({"me": None}, reference=None), what="The time chart")
    assert none.startswith("The time chart: none shown.") and "did not record its version" in none


# ----------------------------------------------------------------------------- CT in the tables


def _state(*, method: str, seconds: float, width: int = 8):
    """A finished one-task run whose wall time is ``seconds``."""
    return SimpleNamespace(sequence="s", n_tasks=1, accuracy_matrix=lambda split="test": np.array([[0.9]]),
                           config={"method": method, "sequence": "s", "model": {"hidden": [width]}},
                           end=SimpleNamespace(status="finished", seconds=seconds), task_ends={})


def test_ct_of_a_run_of_another_engine_reads_a_dash_and_leaves_the_mean():
    runs = {"s0": (_state(method="hat", seconds=10.0), 0), "s1": (_state(method="hat", seconds=20.0), 1),
            "old-s2": (_state(method="hat", seconds=90.0), 2)}
    table = compare_tables.per_run(runs, timed=("s0", "s1"))
    assert table["CT (s)"].tolist()[:2] == [10.0, 20.0] and table["CT (s)"].isna().tolist() == [False, False, True]
    assert table["Acc"].notna().all()  # its Acc stays
    assert compare.shown(table)["CT (s)"].tolist() == ["10.0", "20.0", compare.NOT_TIMED]
    summary = compare_tables.per_method(table).iloc[0]
    assert summary["seeds"] == 3 and summary["CT (s)"] == pytest.approx(15.0)  # (10 + 20) / 2, not with 90
    assert summary["CT (s) sd"] == pytest.approx(5.0)
    assert compare_tables.per_run(runs)["CT (s)"].tolist() == [10.0, 20.0, 90.0]  # no split: all timed
    nothing = compare_tables.per_method(compare_tables.per_run(runs, timed=()))
    assert compare.shown(nothing)["CT (s)"].tolist() == [compare.NOT_TIMED]


# ----------------------------------------------------------------------------- the time chart's caption


def _times(*methods_configs: tuple[str, str]) -> pd.DataFrame:
    """A time_per_method summary: two tasks per (method, config), 1 s and 2 s."""
    return pd.DataFrame([{"method": m, "config": c, "task": t, "seeds": 1, "seconds": t + 1.0, "detection": 0.0,
                          "accumulated": [1.0, 3.0][t]} for m, c in methods_configs for t in (0, 1)])


@pytest.mark.parametrize("drawn, cat, prm_part", [
    ([("cat", "a")], True, None),
    ([("hat", "a")], False, None),
    ([("hat", "a"), ("prm+", "b"), ("prm", "c")], False, "PRM's (prm, prm\\+) should stay about flat"),
    ([("cat", "a"), ("prm-s", "b")], True, "PRM's (prm\\-s) should stay about flat"),
])
def test_time_caption_explains_only_the_lines_drawn(drawn, cat, prm_part):
    text = compare.time_caption(_times(*drawn))
    assert ("CAT's time per task grows" in text) == cat
    assert ("PRM's" in text) == (prm_part is not None) and (prm_part is None or prm_part in text)
    assert text.endswith(compare.time_sentence(_times(*drawn)))


# ----------------------------------------------------------------------------- two configurations of a method


def test_two_configurations_of_one_method_get_one_colour_and_two_dashes():
    summary = _times(("hat", "aaa"), ("hat", "bbb"), ("prm", "ccc"))
    lines = {t.name: t for t in compare.time_figure(summary).data if t.xaxis == "x"}
    assert set(lines) == {"hat · aaa", "hat · bbb", "prm"}  # the config only where a method has several
    assert lines["hat · aaa"].line.color == lines["hat · bbb"].line.color == common.METHOD_COLOURS["hat"]
    assert lines["hat · aaa"].line.dash != lines["hat · bbb"].line.dash
    assert lines["prm"].line.dash == lines["hat · aaa"].line.dash == "solid"


def test_two_configurations_of_one_method_get_two_bar_patterns_and_names():
    metrics = {label: [0.9, 0.8, 0.7] for label in compare.METRICS.values()}
    summary = pd.DataFrame({"sequence": ["s"] * 3, "method": ["hat", "hat", "prm"], "tasks": ["3/3"] * 3,
                            "config": ["aaa", "bbb", "ccc"], "runs": [1] * 3, "seeds": [1] * 3, **metrics,
                            **{f"{label} sd": [None] * 3 for label in compare.METRICS.values()}})
    bar = compare.bars(summary).data[0]
    assert list(bar.y) == ["hat · aaa · 3/3", "hat · bbb · 3/3", "prm · 3/3"]
    assert list(bar.marker.color) == [common.METHOD_COLOURS["hat"]] * 2 + [common.METHOD_COLOURS["prm"]]
    assert list(bar.marker.pattern.shape) == ["", "/", ""]


# ----------------------------------------------------------------------------- the view on recorded runs


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    """A runs folder: PRM, HAT and a narrower HAT recorded now, a copy of HAT stamped as engine
    0.1, a copy of PRM whose run.json names no engine version."""
    root = tmp_path_factory.mktemp("engine")
    for name, cfg in (("prm-new", tiny_config()), ("hat-new", tiny_config(method="hat")),
                      ("hat-narrow", tiny_config(method="hat", seed=1, model=ModelConfig(hidden=(16, 16))))):
        train_sequence(cfg, emit=RunWriter(root / name, config=cfg))
    for source, name, version in (("hat-new", "hat-old", "0.1"), ("prm-new", "prm-unknown", None)):
        folder = Path(shutil.copytree(root / source, root / name))
        meta = json.loads((folder / "run.json").read_text())
        meta["versions"].pop("prm")
        meta["versions"] |= {} if version is None else {"prm": version}
        (folder / "run.json").write_text(json.dumps(meta))
    return root


def open_compare(root: Path, run: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=90)
    at.query_params.update({keys.VIEW: keys.COMPARE, keys.RUN: str(root / run)})
    at.session_state[keys.RUNS_DIR] = str(root)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _per_run(at: AppTest) -> pd.DataFrame:
    """The per-run table (the only one with a row per run), wherever the view puts it."""
    return next(d.value for d in at.dataframe if "run" in d.value.columns)


def _time_chart(at: AppTest) -> dict | None:
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    return next((s for s in specs if any("accumulated time" in a.get("text", "")
                                         for a in s["layout"].get("annotations", []))), None)


def test_recorded_runs_know_their_engine(recorded):
    assert load_run(recorded / "prm-new").engine_version == prm.__version__
    assert load_run(recorded / "hat-old").engine_version == "0.1"
    assert load_run(recorded / "prm-unknown").engine_version is None


def test_compare_times_only_runs_of_the_open_runs_engine(recorded):
    at = open_compare(recorded, "prm-new")
    runs = _per_run(at).set_index("run")
    assert runs.loc["hat-old", "CT (s)"] == runs.loc["prm-unknown", "CT (s)"] == compare.NOT_TIMED
    assert runs.loc["hat-old", "Acc"] != compare.NOT_TIMED  # Acc stays
    assert float(runs.loc["prm-new", "CT (s)"]) > 0 and float(runs.loc["hat-new", "CT (s)"]) > 0
    captions = "\n".join(c.value for c in at.caption)
    assert "hat\\-old (recorded by engine 0\\.1)" in captions
    assert "prm\\-unknown (recorded by an engine that did not record its version)" in captions
    lines = {d["name"] for d in _time_chart(at)["data"]}
    config = {name: compare_tables.config_id(load_run(recorded / name).state.config)
              for name in ("hat-new", "hat-narrow")}
    assert lines == {"prm", f"hat · {config['hat-new']}", f"hat · {config['hat-narrow']}"}  # not hat-old's seconds
    assert "PRM's (prm) should stay about flat" in captions and "CAT's" not in captions


def test_compare_shows_no_times_when_the_open_run_names_no_engine(recorded):
    at = open_compare(recorded, "prm-unknown")
    assert set(_per_run(at)["CT (s)"]) == {compare.NOT_TIMED}
    assert _time_chart(at) is None
    captions = "\n".join(c.value for c in at.caption)
    assert "CT: none shown. The open run was recorded by an engine that did not record its version" in captions
