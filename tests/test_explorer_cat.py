"""The explorer on CAT runs: every view opens the bundled CAT sample and shows what CAT records
(its transfer tests, their calls against the truth, its phases and its time per task), and
the builders behind them give hand-checked numbers on hand-made states."""

from __future__ import annotations

import base64
import re
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from explorer import catalog, live
from explorer import state as keys
from explorer.figures import clustering, common, compare, masks, overview, story
from prm import compare as compare_tables
from prm.analysis import true_groups
from prm.events import EpochEnd, RunStarted, TaskEnd, TransferTest
from prm.run import RunState, load_run

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "explorer" / "app.py")
CAT = "sample_runs/digits-mixed-cat-s0"
pytestmark = pytest.mark.skipif(not (ROOT / CAT / "run.json").exists(),
                                reason="the CAT sample runs are missing (scripts/make_sample_runs.py)")


def open_app(view: str, *, run: str = CAT, task: str | None = None, **session) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params[keys.VIEW] = view
    at.query_params[keys.RUN] = run
    if task:
        at.query_params[keys.TASK] = task
    for key, value in session.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def texts(at: AppTest) -> str:
    return "\n".join(str(x.value) for kind in ("markdown", "caption", "info", "warning", "metric", "subheader")
                     for x in getattr(at, kind))


def specs(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def values(data) -> list[float]:
    """A plotly JSON array: a plain list, or the typed array plotly writes for numpy data."""
    if isinstance(data, dict):
        return np.frombuffer(base64.b64decode(data["bdata"]), dtype=data["dtype"]).tolist()
    return list(data)


def right_calls(test: TransferTest, groups: list[int]) -> int:
    """Calls right of one transfer test, counted here from its record alone: an earlier task is
    called right when it was called similar exactly when it shares the new task's true group."""
    return sum((j in test.similar) == (groups[j] == groups[test.task]) for j in range(test.task))


# ----------------------------------------------------------------------------- hand-made states

SIZES = {"train": 1, "val": 1, "test": 1}
TASKS = [{"name": "writer a", "family": "writers", "classes": list(range(10)), "sizes": SIZES},
         {"name": "classes 2-3", "family": "classes", "classes": [2, 3], "sizes": SIZES},
         {"name": "writer b", "family": "writers", "classes": list(range(10)), "sizes": SIZES}]


def state_of(method: str, seconds: dict[str, list[float]], *, transfer: dict[int, TransferTest] | None = None,
             epochs: tuple[EpochEnd, ...] = (), n_tasks: int = 3) -> RunState:
    """A run of ``method`` on TASKS whose task t took ``seconds[phase][t]`` (as many tasks as
    the lists are long)."""
    done = len(next(iter(seconds.values())))
    ends = {t: TaskEnd(task=t, test_acc=[0.9] * (t + 1) + [None] * (n_tasks - t - 1), val_acc=[0.9] * n_tasks,
                       seconds={p: v[t] for p, v in seconds.items()}, epochs={}, capacity=[0.5])
            for t in range(done)}
    started = RunStarted(config={"method": method, "sequence": "hand", "model": {"hidden": [8]},
                                 "optim": {"max_epochs": 10}}, tasks=TASKS[:n_tasks], sequence="hand", input_dim=4)
    return RunState(started=started, task_ends=ends, transfer=transfer or {}, epochs=epochs)


def test_time_per_task_is_the_sum_of_phases_accumulated_and_averaged_over_seeds():
    cat = {"transfer": [0.0, 2.0, 4.0], "reference": [0.0, 0.5, 0.5]}
    runs = {
        "cat-s0": (state_of("cat", {"train": [1.0, 1.0, 1.0], **cat}), 0),
        "cat-s0-copy": (state_of("cat", {"train": [3.0, 3.0, 3.0], **cat}), 0),
        "cat-s1": (state_of("cat", {"train": [4.0, 2.0], "transfer": [0.0, 3.0], "reference": [0.0, 1.0]}), 1),  # 2 tasks
        "prm-s0": (state_of("prm", {"train": [2.0, 2.0, 2.0], "dtd": [0.0, 1.0, 1.0], "eval": [0.1, 0.1, 0.1]}), 0),
    }
    table = compare_tables.task_times(runs)
    one = table[table["run"] == "cat-s0"]
    assert one["seconds"].tolist() == [1.0, 3.5, 5.5]
    assert one["accumulated"].tolist() == [1.0, 4.5, 10.0]  # 1, 1 + 3.5, 1 + 3.5 + 5.5
    assert one["detection"].tolist() == [0.0, 2.5, 4.5]
    assert table[table["run"] == "cat-s1"]["accumulated"].tolist() == [4.0, 10.0]  # learnt 2 tasks: 2 rows
    assert table[table["run"] == "prm-s0"]["accumulated"].tolist() == pytest.approx([2.1, 5.2, 8.3])

    summary = compare_tables.time_per_method(table).set_index(["method", "task"])
    # seed 0 is two copies (1, 3.5, 5.5 and 3, 5.5, 7.5): averaged first (2, 4.5, 6.5), then with seed 1
    assert summary.loc[("cat", 0), "seconds"] == pytest.approx((2.0 + 4.0) / 2)
    assert summary.loc[("cat", 1), "seconds"] == pytest.approx((4.5 + 6.0) / 2)
    assert summary.loc[("cat", 1), "accumulated"] == pytest.approx(((4.5 + 8.5) / 2 + 10.0) / 2)
    assert summary.loc[("cat", 2), "seconds"] == pytest.approx(6.5) and summary.loc[("cat", 2), "seeds"] == 1
    assert summary.loc[("cat", 2), "accumulated"] == pytest.approx((10.0 + 16.0) / 2)  # only seed 0 reached T3
    assert summary.loc[("cat", 0), "seeds"] == 2

    fig = compare.time_figure(compare_tables.time_per_method(table))
    assert fig.layout.yaxis2.type == "log" and fig.layout.yaxis.type != "log"
    lines = {(t.name, t.xaxis): t for t in fig.data}
    assert list(lines[("cat", "x2")].y) == pytest.approx([3.0, 8.25, 13.0])
    assert list(lines[("prm", "x")].y) == pytest.approx([2.1, 3.1, 3.1])
    assert list(lines[("prm", "x")].x) == ["T1", "T2", "T3"]
    assert lines[("cat", "x")].line.color == common.METHOD_COLOURS["cat"]
    assert compare.time_sentence(compare_tables.time_per_method(table)) == (
        "Time per task: cat 5.2 s at T2, 6.5 s at T3 (13.0 s in all); prm 3.1 s at T2, 3.1 s at T3 (8.3 s in all).")


def test_log_ticks_are_one_two_five_per_decade_and_plain_numbers():
    ticks = compare.log_ticks([0.7, 3.0, 95.0])
    assert ticks["tickvals"] == pytest.approx([0.5, 1, 2, 5, 10, 20, 50, 100])
    assert ticks["ticktext"] == ["0.5", "1", "2", "5", "10", "20", "50", "100"]
    assert compare.log_ticks([0.0]) == {}
    assert compare.log_ticks([1.0, float("inf")]) == compare.log_ticks([1.0])  # a damaged run cannot crash it


def test_a_method_with_two_configurations_gets_two_lines():
    base = {"train": [1.0, 1.0]}
    wide = state_of("hat", base)
    narrow = state_of("hat", base)
    narrow.started.config["model"] = {"hidden": [4]}
    summary = compare_tables.time_per_method(compare_tables.task_times({"a": (wide, 0), "b": (narrow, 0)}))
    names = sorted({t.name for t in compare.time_figure(summary).data})
    assert len(names) == 2 and all(n.startswith("hat · ") for n in names)


def _cat_test() -> TransferTest:
    """T3 (writer b) tested against T1 (writer a, truly similar) and T2 (classes 2-3, truly
    dissimilar): both transfer networks beat the reference, so both are called similar and the
    call on T2 is wrong."""
    return TransferTest(task=2, transfer_acc=[0.95, 0.97], reference_acc=0.9, similar=[0, 1], epochs=[5, 7],
                        reference_epochs=6, seconds={"transfer": 1.5, "reference": 0.5})


def test_cat_clustering_builders_mark_a_wrong_call():
    test = _cat_test()
    calls = clustering.transfer_calls(TASKS, test)
    assert calls[""].tolist() == ["✓", "✗"]
    assert calls["called"].tolist() == ["similar", "similar"] and calls["truly"].tolist() == ["similar", "dissimilar"]
    assert calls["transfer acc"].tolist() == ["0.950", "0.970"]
    assert clustering.count_line(calls) == "1 of 2 calls right"

    fig = clustering.transfer_figure(test, TASKS)
    bars = [t for t in fig.data if t.type == "bar"]
    similar = next(b for b in bars if b.name == "called similar")
    assert list(similar.x) == ["T1", "T2"] and list(similar.y) == [0.95, 0.97]
    assert list(similar.text) == ["✓", "✗"]
    assert list(similar.textfont.color) == [common.RIGHT_COLOUR, common.WRONG_COLOUR]
    assert list(next(b for b in bars if b.name == "called dissimilar").x) == []
    assert fig.layout.shapes[0].y0 == fig.layout.shapes[0].y1 == 0.9  # the reference line
    assert any("0.900" in (t.name or "") for t in fig.data if t.type == "scatter")
    assert fig.layout.yaxis.range[0] < 0.9 and max(fig.layout.yaxis.tickvals) == 1.0

    summary = clustering.transfer_summary(state_of("cat", {"train": [1.0, 1.0, 1.0]}, transfer={2: test}))
    assert summary.to_dict("records") == [{"step": "T3", "called similar": "T1, T2", "calls right": "1 of 2",
                                           "reference acc": "0.900", "best transfer acc": "0.970",
                                           "transfer s": "1.50", "reference s": "0.50"}]


def test_overview_and_story_read_cat_calls_through_run_state_calls():
    test = _cat_test()
    first = TransferTest(task=1, transfer_acc=[0.5], reference_acc=0.9, similar=[], epochs=[3], reference_epochs=3,
                         seconds={"transfer": 0.2, "reference": 0.3})
    state = state_of("cat", {"train": [1.0, 1.0, 1.0], "transfer": [0.0, 0.2, 1.5], "reference": [0.0, 0.3, 0.5]},
                     transfer={1: first, 2: test})
    rows = overview.similarity_summary(state).set_index("task")
    assert rows.loc["T3 writer b", "decision"] == "every layer: similar T1 ✓, T2 ✗; dissimilar ∅"
    assert rows.loc["T3 writer b", "calls right"] == "1/2" and rows.loc["T3 writer b", "source"] == "cat"
    assert rows.loc["T2 classes 2-3", "decision"] == "every layer: similar ∅; dissimilar T1 ✓"

    table = story.calls_table(state, layer=0)
    assert len(table) == 3 and int(table["right"].sum()) == 2
    assert "transfer-test calls" in story.calls_figure(table, n_tasks=3, layer=0, method="cat").layout.title.text
    prm = state_of("prm", {"train": [1.0, 1.0, 1.0], "dtd": [0.0, 2.0, 2.0]})
    beside = story.calls_side_by_side({"cat": state}, layer=0)
    assert beside.to_dict("records")[-1] == {"new task": "T3", "truly similar": "T1",
                                            "CAT": "1/2 right · similar: T1 ✓, T2 ✗"}
    sentence = story.calls_right_sentence({"prm": prm, "cat": state}, layer=0)
    assert sentence.startswith("Calls right: PRM 0 of 0, CAT 2 of 3 (67%).")
    assert "CAT 2.5 s of its CT 5.5 s" in sentence and "PRM 4.0 s of its CT 7.0 s" in sentence


def test_live_progress_names_cat_phases_and_counts_the_transfer_networks():
    def epoch(phase, n, task=2):
        return EpochEnd(task=task, phase=phase, epoch=n, train_loss=1.0, train_acc=0.5, val_loss=1.0, val_acc=0.75,
                        lr=0.1, seconds=0.1)

    done = {"train": [1.0, 1.0]}
    state = state_of("cat", done, epochs=(epoch("transfer", 0), epoch("transfer", 1), epoch("transfer", 0),
                                          epoch("transfer", 1), epoch("transfer", 2)))
    fraction, text = live.progress(state)
    assert text == "task 3 of 3 · CAT transfer network 2 of 2 epoch 3 · val acc 0.750"
    assert fraction == pytest.approx(2 / 3)
    _, text = live.progress(state_of("cat", done, epochs=(epoch("reference", 4),)))
    assert "CAT reference network epoch 5" in text


def test_cat_settings_split_no_other_methods_experiment():
    prm = {"method": "prm", "seed": 0, "sequence": "s"}
    with_cat = {**prm, "cat": {"detect_epochs": 200}}
    assert catalog.config_key(prm) == catalog.config_key(with_cat)  # recorded before and after CAT existed
    cat = {"method": "cat", "seed": 0, "sequence": "s", "cat": {"detect_epochs": 200}}
    assert catalog.config_key(cat) != catalog.config_key({**cat, "cat": {"detect_epochs": 50}})
    assert catalog.setup_key(cat) == catalog.setup_key(with_cat)


def test_phase_table_of_a_cat_run_shows_its_phases_not_dtd():
    state = load_run(ROOT / CAT).state
    table = overview.phase_table(overview.phase_seconds(state))
    assert list(table.columns) == ["task", "CAT transfer tests", "CAT reference", "training (LwPRM for PRM)",
                                   "evaluation"]
    seconds = state.task_seconds()
    assert table["CAT transfer tests"].tolist() == pytest.approx(seconds["transfer"].round(4).tolist())
    prm = overview.phase_table(overview.phase_seconds(load_run(ROOT / "sample_runs/digits-mixed-prm-s0").state))
    assert "X-means" in prm.columns and "CAT reference" not in prm.columns


# ----------------------------------------------------------------------------- the views on the CAT sample

def test_clustering_shows_cats_transfer_tests_and_calls():
    state = load_run(ROOT / CAT).state
    test = state.transfer[2]  # T3 writer 00: T1 writer 02 truly similar, T2 classes 2-3 not
    assert test.similar == [] and test.reference_acc == pytest.approx(0.9)
    at = open_app(keys.CLUSTERING, task="T3")
    text = texts(at)
    assert "T3 writer 00 arrives · CAT's transfer tests: 2 earlier tasks" in text
    assert "here **0.900**" in text
    assert "1 of 2 calls right" in text  # T1 called dissimilar: wrong; T2 dissimilar: right
    dissimilar = next(df.value for df in at.dataframe if "truly" in df.value.columns)
    assert dissimilar.set_index("task").loc["T1 writer 02", ""] == "✗"
    assert dissimilar.set_index("task").loc["T2 classes 2-3", ""] == "✓"
    bars = specs(at)[0]
    assert bars["layout"]["shapes"][0]["y0"] == pytest.approx(0.9)
    assert values([b["y"] for b in bars["data"] if b["type"] == "bar" and b["name"] == "called dissimilar"][0]) == \
        pytest.approx(test.transfer_acc)
    steps = next(df.value for df in at.dataframe if "reference acc" in df.value.columns)
    assert len(steps) == 9 and steps.set_index("step").loc["T3", "calls right"] == "1 of 2"
    assert "CAT has no what-if" in text
    assert "This run has no dissimilar-task detection" not in text


def test_compare_draws_time_per_task_with_a_log_axis_for_the_accumulated_time(tmp_path):
    """Copies of the CAT and HAT samples, stamped as one engine version no sample has: the chart
    draws exactly their two lines (any sample is of another engine: left out), and its caption
    explains CAT's growth but says nothing of PRM, which is not drawn."""
    for sample in (CAT, "sample_runs/digits-mixed-hat-s0"):
        folder = Path(shutil.copytree(ROOT / sample, tmp_path / f"{Path(sample).name}-copy"))
        meta = json.loads((folder / "run.json").read_text())
        meta["versions"]["prm"] = "test-engine"
        (folder / "run.json").write_text(json.dumps(meta))
    at = open_app(keys.COMPARE, run=str(tmp_path / "digits-mixed-cat-s0-copy"), **{keys.RUNS_DIR: str(tmp_path)})
    time = next(s for s in specs(at) if any("accumulated time" in a.get("text", "")
                                            for a in s["layout"].get("annotations", [])))
    assert time["layout"]["yaxis2"]["type"] == "log"
    lines = {(d["name"], d["xaxis"]): d for d in time["data"]}
    assert {name for name, _ in lines} == {"cat", "hat"}
    cat = load_run(ROOT / CAT).state
    assert values(lines[("cat", "x2")]["y"]) == pytest.approx(np.cumsum(sum(cat.task_seconds().values())).tolist())
    caption = "\n".join(c.value for c in at.caption)
    assert "CAT's time per task grows with the number of earlier tasks" in caption and "PRM's" not in caption
    assert json.loads(at.get("plotly_chart")[-1].proto.spec)["data"][0]["type"] == "heatmap"  # the matrices stay last


def test_story_of_the_cat_run_sets_its_calls_beside_dtds():
    at = open_app(keys.STORY)
    assert [h.value for h in at.subheader] == list(story_steps())
    captions = "\n".join(c.value for c in at.caption)
    assert "CAT runs no DTD; these are the decisions of its PRM sibling, and CAT's own calls stand beside" in captions
    state = load_run(ROOT / CAT).state
    groups = true_groups(state.tasks)
    right = sum(right_calls(test, groups) for test in state.transfer.values())
    assert f"CAT {right} of 45" in texts(at)


def test_story_counts_cats_calls_right_from_its_transfer_tests_beside_dtds():
    at = open_app(keys.STORY, run="sample_runs/digits-mixed-prm-s0")
    state = load_run(ROOT / CAT).state
    groups = true_groups(state.tasks)
    right = sum(right_calls(test, groups) for test in state.transfer.values())
    assert re.search(rf"Calls right: PRM \d+ of 45 \(\d+%\), CAT {right} of 45", texts(at))
    beside = next(df.value for df in at.dataframe if "truly similar" in df.value.columns)
    assert list(beside.columns) == ["new task", "truly similar", "PRM", "CAT"] and len(beside) == 9
    assert len(at.get("plotly_chart")) == 6  # the comparison is a table: one chart per step, two in step 5


def story_steps():
    from explorer.views.story import STEPS

    return STEPS


def test_overview_of_the_cat_run_lists_its_calls_and_phases():
    at = open_app(keys.OVERVIEW)
    assert "Which earlier tasks CAT's transfer tests judged similar" in texts(at)
    decisions = next(df.value for df in at.dataframe if "calls right" in df.value.columns).set_index("task")
    state = load_run(ROOT / CAT).state
    groups = true_groups(state.tasks)
    assert decisions.loc["T10 classes 0-1", "calls right"] == f"{right_calls(state.transfer[9], groups)}/9"
    assert set(decisions["source"]) == {"", "cat"}
    bars = {d["name"] for d in specs(at)[1]["data"]}
    assert {"CAT transfer tests", "CAT reference"} <= bars and "X-means" not in bars


def test_masks_label_cats_protection_by_first_claim():
    at = open_app(keys.MASKS, task="T5")
    rows = next(s for s in specs(at) if s["data"][0].get("y") and str(s["data"][0]["y"][0]).startswith("HAT"))
    assert rows["data"][0]["y"][1].startswith("CAT protected while learning T5:<br>claimed first by tasks it called "
                                              "dissimilar")
    assert masks.row_labels(load_run(ROOT / "sample_runs/digits-mixed-hat-s0"), 4)[1] == "protected while learning T5"


def test_embeddings_and_accuracy_open_the_cat_run():
    at = open_app(keys.EMBEDDINGS)
    assert "CAT decides which tasks are similar by training transfer networks" in texts(at)
    assert specs(at)
    at = open_app(keys.ACCURACY)
    assert specs(at)


def test_live_offers_cat_and_shows_the_latest_transfer_test_of_a_run(tmp_path):
    """A CAT run cut in the middle of its fourth task (the transfer test of T4 not written yet)."""
    folder = tmp_path / "cat-cut"
    shutil.copytree(ROOT / CAT, folder)
    (folder / "summary.json").unlink()
    lines = (folder / "events.jsonl").read_text().splitlines()
    cut = next(n for n, line in enumerate(lines) if json.loads(line).get("type") == "transfer_test"
               and json.loads(line)["task"] == 3)
    (folder / "events.jsonl").write_text("\n".join(lines[:cut]) + "\n")
    at = open_app(keys.LIVE, **{keys.RUNS_DIR: str(tmp_path), keys.LIVE_STARTED: [str(folder)]})
    assert "cat" in at.selectbox(key=keys.LIVE_METHOD).options
    text = texts(at)
    assert "Latest transfer test: T3 writer 00" in text and "reference network 0.900" in text
