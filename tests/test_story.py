"""The Story view: its builders against hand-checked numbers on the default sample run and on
small hand-made inputs, and the view itself (AppTest) on every sample run, with the
missing-sibling message, the Train-live prefill and the links to the detailed tabs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from explorer import state as keys
from explorer.catalog import RunEntry
from explorer.figures import story
from explorer.views.story import STEPS
from prm.runs import RunParent, load_run

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "explorer" / "app.py")
SAMPLES = sorted(p.name for p in (ROOT / "sample_runs").iterdir() if (p / "run.json").exists())
DEFAULT = "digits-mixed-few-{}-s4"
pytestmark = pytest.mark.skipif(not (ROOT / "sample_runs" / DEFAULT.format("prm+") / "run.json").exists(),
                                reason="the default sample runs are missing (scripts/make_sample_runs.py)")


def sample(method: str, name: str = DEFAULT):
    return load_run(ROOT / "sample_runs" / name.format(method))


def entry(method: str, *, seed: int = 4, status: str = "finished", sequence: str = "seq", n_tasks: int = 3,
          config: str = "c", where: str = "x", setup: str = "s", parent: RunParent | None = None) -> RunEntry:
    return RunEntry(key=f"{where}/{sequence}-{method}-s{seed}", path=Path(f"/{where}/{sequence}-{method}-s{seed}"),
                    name=f"{sequence}-{method}-s{seed}", sequence=sequence, method=method, seed=seed, n_tasks=n_tasks,
                    tasks_done=n_tasks, acc=0.9, status=status, started=None, config=f"{method}-{config}",
                    setup=setup, parent=parent)


# ----------------------------------------------------------------------------- siblings

def test_siblings_keep_sequence_seed_and_task_count_and_prefer_finished_runs():
    me = entry("prm")
    listed = [me, entry("hat", status="stopped"), entry("hat", where="y"), entry("stl", seed=5),
              entry("ncl", n_tasks=4), entry("joint", sequence="other"), entry("prm-t"), entry("ewc")]
    found = story.siblings(me, listed)
    assert list(found) == ["prm", "hat", "prm-t"]
    assert found["hat"].key == "y/seq-hat-s4"  # the finished one, not the stopped one listed first
    assert story.missing(me, found) == ["prm+", "ncl", "stl", "joint"]
    assert story.missing_sentence(me, ["hat", "stl"]) == ("No HAT or STL run of seq seed 4 (3 tasks) is listed; "
                                                          "the steps that need one say so.")
    assert story.dtd_sibling("hat", found) == "prm" and story.dtd_sibling("hat", {"prm-t": None}) == "prm-t"
    assert story.dtd_sibling("ncl", {"hat": None}) is None
    assert story.told_with("hat", found) == ["hat", "prm"]


def test_siblings_skip_whatif_runs_and_prefer_the_same_setup():
    """A what-if run forced its decision: never the story's PRM+. A sibling trained on another
    network (a small live run listed first) gives way to one of the open run's set-up."""
    me = entry("hat")
    forced = RunParent(run="/x/seq-prm+-s4", name="seq-prm+-s4", task=1, dissimilar=((0,),))
    listed = [me, entry("prm+", where="mine", parent=forced), entry("prm+"), entry("stl", where="mine", setup="w64"),
              entry("stl")]
    found = story.siblings(me, listed)
    assert found["prm+"].key == "x/seq-prm+-s4" and found["prm+"].parent is None
    assert found["stl"].key == "x/seq-stl-s4"
    assert story.stl_of(me, listed).key == "x/seq-stl-s4"
    alone = story.siblings(me, [me, entry("stl", where="mine", setup="w64")])
    assert alone["stl"].key == "mine/seq-stl-s4"  # another set-up still serves when it is the only one


def test_like_runs_take_one_finished_run_per_distinct_seed_of_the_same_configuration():
    me = entry("hat")
    listed = [me, entry("hat", seed=5), entry("hat", seed=5, where="y"), entry("hat", seed=6, status="stopped"),
              entry("hat", seed=7, config="other"), entry("stl", seed=5)]
    assert [e.seed for e in story.like_runs(me, listed)] == [4, 5]
    assert story.stl_of(listed[1], listed).key == "x/seq-stl-s5"
    assert story.stl_of(me, listed) is None


# ----------------------------------------------------------------------------- steps 1 and 2

def test_sequence_sentences_name_families_and_true_groups():
    state = sample("prm+").state
    assert story.similar_groups(state) == [[3, 5, 6, 8, 9]]
    first, second = story.sequence_sentences(state)
    assert first == "The sequence digits\\-mixed\\-few has 10 tasks in 2 families: classes (5), writers (5)."
    assert second == ("Truly similar (same family and label set): T4, T6, T7, T9, T10; 5 tasks are similar to "
                      "no other task.")
    fig = story.sequence_figure(state)
    assert sorted(trace.name for trace in fig.data) == ["family: classes", "family: writers"]
    assert fig.layout.font.size >= 12


def test_protection_table_reads_hat_capacity_on_arrival_and_accuracy_just_after_learning():
    hat, stl = sample("hat").state, sample("stl").state
    table = story.protection_table(hat, layer=0, stl=stl)
    assert table["protected on arrival"].iloc[0] == 0.0
    for t in range(1, 10):  # the share HAT held on arrival is the capacity recorded after the task before
        assert table["protected on arrival"].iloc[t] == hat.task_ends[t - 1].capacity[0]
    assert table["protected on arrival"].iloc[9] == pytest.approx(0.8125)
    writers = table[table["family"] == "writers"]
    assert list(writers["task"]) == ["T4", "T6", "T7", "T9", "T10"]
    assert writers["HAT"].mean() == pytest.approx((0.9333 + 0.7667 + 0.9333 + 1.0 + 0.9667) / 5, abs=1e-3)
    assert writers["STL"].mean() == pytest.approx((0.9 + 0.8333 + 1.0 + 1.0 + 0.9667) / 5, abs=1e-3)
    assert table["joint"].isna().all()
    first, second = story.protection_sentences(table, layer=0, state=hat)
    assert "protected 81% of the units of layer 0" in first
    assert "writers (similar tasks): HAT 0.920 against STL 0.940 (-0.020)" in second


# ----------------------------------------------------------------------------- step 3

def test_calls_of_prm_on_the_default_sequence_right_and_wrong():
    table = story.calls_table(sample("prm").state, layer=0)
    assert len(table) == 45  # 1 + 2 + ... + 9 earlier tasks
    assert int(table["right"].sum()) == 30
    per = table.groupby("family", sort=False)["right"].agg(["sum", "count"])
    assert per.loc["classes"].tolist() == [8, 14] and per.loc["writers"].tolist() == [22, 31]
    first, second = story.calls_sentences(table, layer=0)
    assert first.startswith("On layer 0, 30 of 45 calls were right (67%); of the 15 wrong ones, 15 called")
    assert second == "Right calls by the family of the new task: classes tasks 8 of 14; writers tasks 22 of 31."
    fig = story.calls_figure(table, n_tasks=10, layer=0, method="prm")
    marks = {trace.name: len(trace.x) for trace in fig.data if trace.type == "scatter"}
    assert marks == {"✓ right": 30, "✗ wrong": 15}


def test_prm_plus_calls_judge_the_rule_it_used_and_ablations_judge_x_means():
    prm_plus = sample("prm+").state  # linkage rule: every call right on this seed
    assert int(story.calls_table(prm_plus, layer=0)["right"].sum()) == 45
    truth = sample("prm-t").state  # PRM(T) protects by the truth; X-means' own calls are judged
    table = story.calls_table(truth, layer=0)
    own = sum(len(set(truth.dtd[t].layers[0]["dissimilar_xmeans"]) ^ set(truth.dtd[t].layers[0]["dissimilar"]))
              for t in truth.dtd)
    assert len(table) - int(table["right"].sum()) == own


# ----------------------------------------------------------------------------- step 4

def test_relaxed_counts_and_choice():
    counts = story.relaxed_counts(sample("prm+"), layer=0)
    assert counts == {1: 0, 2: 0, 3: 0, 4: 0, 5: 11, 6: 29, 7: 0, 8: 19, 9: 23}
    assert story.relaxed_choice(counts, 9) == (9, "T10 is the task picked in the sidebar")
    task, why = story.relaxed_choice(counts, 2)
    assert task == 6 and why == ("T3, the sidebar task, has none, so this shows T7, the task with the most "
                                 "relaxed units (29)")
    assert story.relaxed_choice({1: 0, 2: 0}, 1)[0] is None
    assert story.relaxed_choice({}, 0)[0] is None


def test_relaxed_sentences_name_the_similar_tasks():
    first, second = story.relaxed_sentences(sample("prm+"), task=9, layer=0, why="T10 is the task picked")
    assert "23 of the 209 units of layer 0" in first
    assert second.startswith("They belong to T4, T6, T7, T9, the earlier tasks the run treated as similar to T10; "
                             "the units of T1, T2, T3, T5, T8")
    fig = story.relaxed_figure(sample("prm+"), task=9, layer=0)
    assert len(fig.data[0].x) == 209 and fig.layout.shapes[0].x1 == pytest.approx(22.5)


# ----------------------------------------------------------------------------- step 5

def test_difference_matrix_and_its_sentence():
    a, b = sample("prm+").state, sample("hat").state
    fig = story.difference_figure(a, b, a_name="PRM+", b_name="HAT")
    z = np.array(fig.data[0].z, dtype=float)
    assert z[9, 8] == pytest.approx(0.8852 - 1.0, abs=1e-3) and z[9, 5] == pytest.approx(0.9333 - 0.7667, abs=1e-3)
    assert fig.data[0].zmin == -fig.data[0].zmax == pytest.approx(-np.nanmax(np.abs(z)))
    assert fig.data[0].text[9][8] == "-0.12" and fig.data[0].text[0][5] == ""  # not learnt yet: blank
    assert story.difference_sentence(a, b, a_name="PRM+", b_name="HAT") == (
        "After T10, PRM+ − HAT averages +0.018 over 10 tasks, from -0.115 on T9 to +0.167 on T6.")


def test_bwt_and_fwt_per_family():
    stl = sample("stl").state
    table = story.family_transfer({"prm+": sample("prm+").state, "hat": sample("hat").state}, stl)
    table = table.set_index(["method", "family"])
    assert table.loc["HAT"].values.ravel().tolist() == ["0.000", "+0.003", "0.000", "-0.020"]  # HAT never forgets
    # PRM+ writers: final minus just-learnt on T4, T6, T7, T9, T10 = 0, +0.067, 0, 0, 0
    assert table.loc[("PRM+", "writers"), "BWT"] == "+0.013"
    assert table.loc[("PRM+", "writers"), "FWT"] == "+0.004"
    no_stl = story.family_transfer({"hat": sample("hat").state}, None).set_index("family")
    assert no_stl.loc["writers", "FWT"] == "n/a" and not no_stl.isna().any().any()


def test_stability_points_mean_and_sd_over_seeds():
    hat, ncl, stl = sample("hat").state, sample("ncl").state, sample("stl").state
    points = story.stability_points({"hat": [(hat, stl)], "mixed": [(hat, stl), (ncl, stl)], "alone": [(ncl, None)]})
    points = points.set_index("method")
    assert points.loc["hat", "BWT"] == pytest.approx(0.0) and points.loc["hat", "BWT sd"] == 0
    ncl_bwt = float(np.mean(ncl.accuracy_matrix()[9] - np.diag(ncl.accuracy_matrix())))
    assert points.loc["mixed", "BWT"] == pytest.approx(ncl_bwt / 2)
    assert points.loc["mixed", "BWT sd"] == pytest.approx(abs(ncl_bwt) / 2)
    assert points.loc["mixed", "seeds"] == 2
    assert np.isnan(points.loc["alone", "FWT"])  # no STL run: BWT only
    fig = story.stability_figure(points.reset_index())
    assert [t.name for t in fig.data] == ["HAT", "mixed"] and fig.data[1].error_y.visible
    assert {a.text for a in fig.layout.annotations} >= {"keeps, does not transfer", "forgets, does not transfer"}
    assert story.stability_figure(pd.DataFrame(columns=points.reset_index().columns)).layout.annotations


# ----------------------------------------------------------------------------- the view

def open_story(run: str, *, task: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params[keys.VIEW] = keys.STORY
    at.query_params[keys.RUN] = f"sample_runs/{run}"
    if task:
        at.query_params[keys.TASK] = task
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.mark.parametrize("run", SAMPLES)
def test_story_renders_every_sample_run_with_five_steps(run):
    at = open_story(run)
    assert [h.value for h in at.subheader] == list(STEPS)
    assert not at.error
    assert len(at.get("plotly_chart")) >= 1
    assert "None" not in "\n".join(m.value for m in at.markdown)


def test_story_of_the_default_run_draws_every_step_and_links_to_the_details():
    at = open_story(DEFAULT.format("prm+"))
    assert len(at.get("plotly_chart")) == 6  # one per step, two in step 5
    text = "\n".join(m.value for m in at.markdown)
    assert "45 of 45 calls were right" in text
    assert not at.warning  # every sibling of the default run is listed
    masks = [b for b in at.button if b.key == "story-go-4"][0]
    masks.click().run()
    assert at.session_state[keys.VIEW] == keys.MASKS and at.session_state[keys.TASK] == "T10"


def test_story_names_missing_siblings_and_fills_the_train_live_form():
    at = open_story("digits-mixed-prm-d-s0")
    assert "No PRM\\+\\, PRM\\(T\\) or joint run of digits\\-mixed seed 0 (10 tasks) is listed" in at.warning[0].value
    assert "decisions of its PRM" not in "\n".join(c.value for c in at.caption)  # PRM(D) runs DTD itself
    train = [b for b in at.button if b.key == "story-train-joint"][0]
    train.click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state[keys.VIEW] == keys.LIVE
    assert (at.session_state[keys.LIVE_SEQUENCE], at.session_state[keys.LIVE_METHOD],
            at.session_state[keys.LIVE_SEED]) == ("digits-mixed", "joint", 0)
    assert at.selectbox(key=keys.LIVE_METHOD).value == "joint"


def test_story_of_an_unmasked_run_borrows_the_dtd_sibling():
    at = open_story("digits-mixed-few-ncl-s4", task="T3")
    captions = "\n".join(c.value for c in at.caption)
    assert "NCL runs no DTD; these are the decisions of its PRM\\+ sibling" in captions
    text = "\n".join(m.value for m in at.markdown)
    assert "T3, the sidebar task, has none, so this shows T7" in text
