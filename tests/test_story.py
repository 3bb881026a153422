"""The Story view: its builders against hand-checked numbers on the default sample run and on
small hand-made inputs, and the view itself (AppTest) on every sample run, with the
missing-sibling message, the Train-live prefill, the links to the detailed tabs and the length
of what the page asks a reader to read (a two-minute story)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import re

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from explorer import state as keys
from explorer.catalog import RunEntry
from explorer.figures import consequence, story
from explorer.views.story import STEPS
from prm.runs import RunParent, load_run

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "explorer" / "app.py")
SAMPLES = sorted(p.name for p in (ROOT / "sample_runs").iterdir() if (p / "run.json").exists())
DEFAULT = "digits-mixed-binary-{}-s4"
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
    assert second == "Truly similar: T4, T6, T7, T9, T10; the other 5 are alone."
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
    assert first == "When the last task arrived, HAT protected 81% of layer 0's units."
    assert second == ("Just after learning, the similar tasks scored 0.920 under HAT against 0.940 when learnt alone "
                      "(STL): −0.020.")  # the five writers, as above
    details = story.protection_details(table, state=hat)
    assert "writers (similar tasks): HAT 0.920 against STL 0.940 (−0.020)" in details
    no_stl = story.protection_sentences(story.protection_table(hat, layer=0), layer=0, state=hat)[1]
    assert no_stl == "Just after learning, the similar tasks scored 0.920 under HAT; no STL run is listed to compare."


# ----------------------------------------------------------------------------- step 3

def test_calls_of_prm_on_the_default_sequence_right_and_wrong():
    table = story.calls_table(sample("prm").state, layer=0)
    assert len(table) == 45  # 1 + 2 + ... + 9 earlier tasks
    assert int(table["right"].sum()) == 30
    per = table.groupby("family", sort=False)["right"].agg(["sum", "count"])
    assert per.loc["classes"].tolist() == [8, 14] and per.loc["writers"].tolist() == [22, 31]
    who = story.decider(sample("prm").state)
    assert who == "PRM's DTD decided by X-means on the task embeddings"
    first, second = story.calls_sentences(table, layer=0, who=who)
    assert first == "PRM's DTD decided by X-means on the task embeddings: on layer 0, 30 of 45 calls were right (67%)."
    assert second == "Of the 15 wrong, 15 called a dissimilar task similar and 0 missed a similar one."
    assert story.calls_details(table) == ("Right calls by the family of the new task: classes tasks 8 of 14; "
                                          "writers tasks 22 of 31.")
    fig = story.calls_figure(table, n_tasks=10, layer=0, method="prm")
    marks = {trace.name: len(trace.x) for trace in fig.data if trace.type == "scatter"}
    assert marks == {"✓ right": 30, "✗ wrong": 15}


def test_prm_plus_calls_judge_the_rule_it_used_and_ablations_judge_x_means():
    prm_plus = sample("prm+").state  # linkage rule: every call right on this seed
    assert int(story.calls_table(prm_plus, layer=0)["right"].sum()) == 45
    who = story.decider(prm_plus)  # step 3 names the rule and threshold the run was configured with
    assert who == "PRM\\+'s DTD decided by average linkage on the cosine distance of binarised embeddings, cut at 0.3"
    assert story.calls_sentences(story.calls_table(prm_plus, layer=0), layer=0, who=who)[1] == ""
    cut = {**prm_plus.config, "prm": {**prm_plus.config["prm"], "clustering": "cut", "features": "raw"}}
    assert story.decider(SimpleNamespace(config=cut)).endswith(
        "decided by a cut at cosine distance 0.3 of raw embeddings")
    assert story.decider(sample("prm-t").state) == "PRM\\(T\\) protects by the truth; judged here is its X-means"
    assert story.decider(load_run(ROOT / "sample_runs" / "digits-mixed-cat-s0").state) == "CAT decided by transfer tests"
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
                                 "units relaxed (29)")
    assert story.relaxed_choice({1: 0, 2: 0}, 1)[0] is None
    assert story.relaxed_choice({}, 0)[0] is None


def test_relaxed_sentences_count_partial_and_free_units_apart_and_name_the_similar_tasks():
    """PRM+ (relax 0.3) relaxes units partially: they are never counted as free. The paper's
    PRM (relax 1) frees them."""
    first, second = story.relaxed_sentences(sample("prm+"), task=9, layer=0)
    assert first == ("While learning T10, HAT would protect the 209 units of layer 0 that earlier tasks used; PRM\\+ "
                     "kept 186 protected, relaxed 23 partially (to 0.30 of the gradient) and freed 0.")
    assert second == "They belong to T4, T6, T7, T9, the tasks called similar."
    assert story.relaxed_details(sample("prm+"), task=9, layer=0, why="T10 is the task picked") == (
        "T10 is the task picked. The units of T1, T2, T3, T5, T8 (called dissimilar) stayed protected.")
    fig = story.relaxed_figure(sample("prm+"), task=9, layer=0)
    assert len(fig.data[0].x) == 209 and [s.x1 for s in fig.layout.shapes] == [pytest.approx(22.5)]
    assert fig.layout.annotations[0].text == "23 partially relaxed"
    paper = story.relaxed_sentences(sample("prm"), task=9, layer=0)[0]
    free = story.relaxed_counts(sample("prm"), layer=0)[9]
    assert f"relaxed 0 partially and freed {free}." in paper and free > 0


# ----------------------------------------------------------------------------- step 5

def test_difference_matrix_and_its_sentence():
    a, b = sample("prm+").state, sample("hat").state
    fig = consequence.difference_figure(a, b, a_name="PRM+", b_name="HAT")
    z = np.array(fig.data[0].z, dtype=float)
    assert z[9, 8] == pytest.approx(0.8852 - 1.0, abs=1e-3) and z[9, 5] == pytest.approx(0.9333 - 0.7667, abs=1e-3)
    assert fig.data[0].zmin == -fig.data[0].zmax == pytest.approx(-np.nanmax(np.abs(z)))
    assert fig.data[0].text[9][8] == "−0.12" and fig.data[0].text[0][5] == ""  # not learnt yet: blank
    assert consequence.difference_sentence(a, b, a_name="PRM+", b_name="HAT") == (
        "After T10, PRM+ − HAT averages +0.018 over 10 tasks, from −0.115 on T9 to +0.167 on T6.")


def test_bwt_and_fwt_per_family():
    stl = sample("stl").state
    table = consequence.family_transfer({"prm+": sample("prm+").state, "hat": sample("hat").state}, stl)
    table = table.set_index(["method", "family"])
    assert table.loc["HAT"].values.ravel().tolist() == ["0.000", "+0.003", "0.000", "−0.020"]  # HAT never forgets
    # PRM+ writers: final minus just-learnt on T4, T6, T7, T9, T10 = 0, +0.067, 0, 0, 0
    assert table.loc[("PRM+", "writers"), "BWT"] == "+0.013"
    assert table.loc[("PRM+", "writers"), "FWT"] == "+0.004"
    no_stl = consequence.family_transfer({"hat": sample("hat").state}, None).set_index("family")
    assert no_stl.loc["writers", "FWT"] == "n/a" and not no_stl.isna().any().any()


def test_stability_points_mean_and_sd_over_seeds():
    hat, ncl, stl = sample("hat").state, sample("ncl").state, sample("stl").state
    points = consequence.stability_points({"hat": [(hat, stl)], "mixed": [(hat, stl), (ncl, stl)], "alone": [(ncl, None)]})
    points = points.set_index("method")
    assert points.loc["hat", "BWT"] == pytest.approx(0.0) and points.loc["hat", "BWT sd"] == 0
    ncl_bwt = float(np.mean(ncl.accuracy_matrix()[9] - np.diag(ncl.accuracy_matrix())))
    assert points.loc["mixed", "BWT"] == pytest.approx(ncl_bwt / 2)
    assert points.loc["mixed", "BWT sd"] == pytest.approx(abs(ncl_bwt) / 2)
    assert points.loc["mixed", "seeds"] == 2
    assert np.isnan(points.loc["alone", "FWT"])  # no STL run: BWT only
    fig = consequence.stability_figure(points.reset_index())
    assert [t.name for t in fig.data] == ["HAT", "mixed"] and fig.data[1].error_y.visible
    assert {a.text for a in fig.layout.annotations} >= {"keeps, does not transfer", "forgets, does not transfer"}
    assert consequence.stability_figure(pd.DataFrame(columns=points.reset_index().columns)).layout.annotations


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


BODY_WORDS = 200
"""The most words the Story's body may ask a reader to read (about two minutes at a careful
pace, charts included): every text outside the "How to read this" expanders, headings, buttons
and tables left out, missing-sibling notices too (they ask for an action, not a read)."""


def body(node, out: dict[str, list[str]] | None = None, step: list[str] | None = None) -> dict[str, list[str]]:
    """The texts the Story's body shows, per step (the subheader above them; "intro" before
    the first), in page order, skipping everything inside an expander."""
    out, step = ({}, ["intro"]) if out is None else (out, step)
    for child in getattr(node, "children", {}).values():
        kind = type(child).__name__
        if kind == "Expander":
            continue
        if kind == "Subheader":
            step[0] = child.value
        elif kind in ("Markdown", "Caption", "Info"):
            out.setdefault(step[0], []).append(child.value)
        body(child, out, step)
    return out


def words(text: str) -> int:
    """Words as read: Markdown escapes undone, a token counts when it holds a letter or digit."""
    return len([w for w in re.sub(r"\\(.)", r"\1", text).split() if re.search(r"\w", w)])


def sentences(text: str) -> int:
    """Sentences: a full stop (or ! or ?) ends one when a space and a capital or the end follow
    ("0.920" and "T10," end none)."""
    return len([s for s in re.split(r"(?<=[.!?])\s+(?=[A-Z*])", text.strip()) if s])


def test_the_word_and_sentence_counters():
    assert words("PRM\\+ 0.976 here, HAT − 0.957; (STL): −0.020.") == 7  # a lone "−" is no word
    assert sentences("When T10 arrived, 0.920 (STL): −0.020. Of the 15 wrong, 15 did. **Bold** too.") == 3
    assert sentences("One, T4, T6; the other 5 are alone.") == 1


@pytest.mark.parametrize("run", SAMPLES)
def test_story_renders_every_sample_run_with_five_short_steps(run):
    """Every step's body is at most two short sentences and one chart, and the whole body
    stays within BODY_WORDS."""
    at = open_story(run)
    assert [h.value for h in at.subheader] == list(STEPS)
    assert not at.error
    assert len(at.get("plotly_chart")) >= 1
    assert "None" not in "\n".join(m.value for m in at.markdown)
    texts = body(at.tabs[0])
    assert set(texts) <= {"intro", *STEPS}
    for step in STEPS:
        assert sum(sentences(t) for t in texts.get(step, [])) <= 2, (step, texts.get(step))
    assert " decided by " in texts[STEPS[2]][-1] or " protects by " in texts[STEPS[2]][-1]  # the rule is named
    assert sum(words(t) for t in sum(texts.values(), [])) <= BODY_WORDS, texts


def test_story_of_the_default_run_draws_every_step_and_links_to_the_details():
    at = open_story(DEFAULT.format("prm+"))
    assert len(at.get("plotly_chart")) == 6  # one per step, and the stability chart in step 5's details
    assert sum(len(e.get("plotly_chart")) for e in at.tabs[0].expander) == 1
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
    at = open_story("digits-mixed-ncl-s0", task="T3")
    captions = "\n".join(c.value for c in at.caption)
    assert "NCL runs no DTD; these are the decisions of its PRM sibling" in captions
    text = "\n".join(m.value for m in at.markdown)
    assert "T3, the sidebar task, has none, so this shows T7" in text
