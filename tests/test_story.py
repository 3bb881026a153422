"""The Story view: its builders against numbers worked out from the sample runs' raw records
(accuracy matrices, recorded masks and DTD records, ``prm.analysis.true_groups``) or by hand,
on small hand-made inputs and on a tiny sibling set trained here, and the view itself (AppTest)
on every sample run, with the missing-sibling message, the Train-live prefill, the links to the
detailed tabs and the length of what the page asks a reader to read (a two-minute story).

Samples used: ``digits-mixed-binary-*-s4`` (two families, writers truly similar: X-means' PRM
calls many wrongly similar, PRM+ calls every earlier task dissimilar), ``digits-mixed-prm-s0``
(the paper's PRM freeing units on some tasks, none on others) and the app's default,
``digits-writers-binary-prm-s2`` (one family, every task truly similar)."""

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
from prm import analysis, methods
from prm.analysis import true_groups
from prm.config import PRMConfig
from prm.engine import train_sequence
from prm.run import RunParent, RunWriter, load_run
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "explorer" / "app.py")
SAMPLES = sorted(p.name for p in (ROOT / "sample_runs").iterdir() if (p / "run.json").exists())
DEFAULT = "digits-mixed-binary-{}-s4"
WRITERS = "digits-writers-binary-prm-s2"
"""The app's default run (PRM at the median seed of PRM − HAT over the five bundled seeds)."""
FREEING = "digits-mixed-prm-s0"
"""The paper's PRM (relax 1) freeing units on some tasks and none on others."""
pytestmark = pytest.mark.skipif(not all((ROOT / "sample_runs" / name / "run.json").exists()
                                        for name in (DEFAULT.format("prm+"), WRITERS, FREEING)),
                                reason="the sample runs are missing (scripts/make_sample_runs.py)")


def sample(method: str, name: str = DEFAULT):
    return load_run(ROOT / "sample_runs" / name.format(method))


def entry(method: str, *, seed: int = 4, status: str = "finished", sequence: str = "seq", n_tasks: int = 3,
          config: str = "c", where: str = "x", setup: str = "s", parent: RunParent | None = None) -> RunEntry:
    return RunEntry(key=f"{where}/{sequence}-{method}-s{seed}", path=Path(f"/{where}/{sequence}-{method}-s{seed}"),
                    name=f"{sequence}-{method}-s{seed}", sequence=sequence, method=method, seed=seed, n_tasks=n_tasks,
                    tasks_done=n_tasks, acc=0.9, status=status, started=None, config=f"{method}-{config}",
                    setup=setup, parent=parent)


def calls_by_hand(state, layer: int = 0) -> dict[str, int]:
    """Right calls, wrong 'similar' calls and missed similar tasks, straight from the recorded
    DTD sets and the true groups (a call is right when 'dissimilar' matches 'other group')."""
    groups, out = true_groups(state.tasks), {"right": 0, "false similar": 0, "missed": 0, "calls": 0}
    for t, record in state.dtd.items():
        called = set(record.layers[layer]["dissimilar"])
        for i in range(t):
            same = groups[i] == groups[t]
            out["calls"] += 1
            out["right"] += (i in called) != same
            out["false similar"] += i not in called and not same
            out["missed"] += i in called and same
    return out


def units_by_hand(run, task: int, layer: int = 0) -> dict[str, int]:
    """Used, free and partially relaxed units while ``task`` was learnt, from the raw task masks
    and the DTD record alone: protection p = max over the called-dissimilar tasks' masks and
    (1 − relax) × the called-similar ones' (the paper's p_<=t-1 with ``prm.relax``); a used unit
    (HAT's a_<=t-1 above 0.5) is relaxed when p is at least 0.05 below it, free when p < 0.05.
    The recomputed p must be the mask the run recorded as protecting."""
    masks = np.stack([run.mask(i, layer) for i in range(task)])
    called, relax = set(run.state.dtd[task].layers[layer]["dissimilar"]), run.meta["config"]["prm"]["relax"]
    p = np.max([m if i in called else (1 - relax) * m for i, m in enumerate(masks)], axis=0)
    assert p == pytest.approx(run.protected(task, layer), abs=1e-6)
    a = masks.max(axis=0)
    used, relaxed = a > 0.5, (a > 0.5) & (p < a - 0.05)
    return {"used": int(used.sum()), "free": int((relaxed & (p < 0.05)).sum()),
            "partial": int((relaxed & (p >= 0.05)).sum())}


TINY = ("hat", "prm", "prm+", "prm-t", "ncl", "stl", "joint")


@pytest.fixture(scope="module")
def tiny_siblings(tmp_path_factory) -> Path:
    """Every sibling method on a 3-task digits-writers-binary (all tasks truly similar), seed 0.
    Its PRM+ cuts at cosine distance 1.99 (every earlier task similar: every call right) with
    ``prm.relax`` 0.3, so its units are relaxed partially, never freed: what no bundled PRM+
    run shows, since each calls every earlier task dissimilar."""
    root = tmp_path_factory.mktemp("story-runs")
    for method in TINY:
        rule = {"clustering": "cut", "threshold": 1.99, "relax": 0.3} if method == "prm+" else {}
        cfg = tiny_config(sequence="digits-writers-binary", n_tasks=3, method=method,
                          prm=PRMConfig(dtd_epochs=4, head_epochs=2, **rule))
        train_sequence(cfg, emit=RunWriter(root / f"digits-writers-binary-{method}-s0", config=cfg))
    return root


# ----------------------------------------------------------------------------- siblings

def test_siblings_keep_sequence_seed_and_task_count_and_prefer_finished_runs():
    me = entry("prm")
    listed = [me, entry("hat", status="stopped"), entry("hat", where="y"), entry("stl", seed=5),
              entry("ncl", n_tasks=4), entry("joint", sequence="other"), entry("prm-t"), entry("ewc")]
    found = analysis.siblings(me, listed)
    assert list(found) == ["prm", "hat", "prm-t"]
    assert found["hat"].key == "y/seq-hat-s4"  # the finished one, not the stopped one listed first
    assert analysis.missing(me, found) == ["prm+", "ncl", "stl", "joint"]
    assert story.missing_sentence(me, ["hat", "stl"]) == ("No HAT or STL run of seq seed 4 (3 tasks) is listed; "
                                                          "the steps that need one say so.")
    assert analysis.dtd_sibling("hat", found) == "prm" and analysis.dtd_sibling("hat", {"prm-t": None}) == "prm-t"
    assert analysis.dtd_sibling("ncl", {"hat": None}) is None
    assert analysis.told_with("hat", found) == ["hat", "prm"]


def test_siblings_skip_whatif_runs_and_prefer_the_same_setup():
    """A what-if run forced its decision: never the story's PRM+. A sibling trained on another
    network (a small live run listed first) gives way to one of the open run's set-up."""
    me = entry("hat")
    forced = RunParent(run="/x/seq-prm+-s4", name="seq-prm+-s4", task=1, dissimilar=((0,),))
    listed = [me, entry("prm+", where="mine", parent=forced), entry("prm+"), entry("stl", where="mine", setup="w64"),
              entry("stl")]
    found = analysis.siblings(me, listed)
    assert found["prm+"].key == "x/seq-prm+-s4" and found["prm+"].parent is None
    assert found["stl"].key == "x/seq-stl-s4"
    assert analysis.stl_of(me, listed).key == "x/seq-stl-s4"
    alone = analysis.siblings(me, [me, entry("stl", where="mine", setup="w64")])
    assert alone["stl"].key == "mine/seq-stl-s4"  # another set-up still serves when it is the only one


def test_like_runs_take_one_finished_run_per_distinct_seed_of_the_same_configuration():
    me = entry("hat")
    listed = [me, entry("hat", seed=5), entry("hat", seed=5, where="y"), entry("hat", seed=6, status="stopped"),
              entry("hat", seed=7, config="other"), entry("stl", seed=5)]
    assert [e.seed for e in analysis.like_runs(me, listed)] == [4, 5]
    assert analysis.stl_of(listed[1], listed).key == "x/seq-stl-s5"
    assert analysis.stl_of(me, listed) is None


# ----------------------------------------------------------------------------- steps 1 and 2

def test_sequence_sentences_name_families_and_true_groups():
    state = sample("prm+").state
    writers = [t for t, task in enumerate(state.tasks) if task["family"] == "writers"]
    assert writers == [3, 5, 6, 8, 9]  # run.json: T4, T6, T7, T9, T10; every classes task has its own digits
    assert story.similar_groups(state) == [writers]
    first, second = story.sequence_sentences(state)
    assert first == "The sequence digits\\-mixed\\-binary has 10 tasks in 2 families: classes (5), writers (5)."
    assert second == "Truly similar: T4, T6, T7, T9, T10; the other 5 are alone."
    fig = story.sequence_figure(state)
    assert sorted(trace.name for trace in fig.data) == ["family: classes", "family: writers"]
    assert fig.layout.font.size >= 12
    assert story.sequence_sentences(sample("prm", WRITERS).state) == (  # one family, one group
        "The sequence digits\\-writers\\-binary has 10 tasks in 1 family: writers (10).",
        "All 10 tasks are truly similar.")
    task = lambda family, classes: {"family": family, "classes": classes, "name": family}  # noqa: E731
    pairs = SimpleNamespace(sequence="s", n_tasks=4, tasks=[task("a", [0, 1]), task("b", [0, 1]), task("a", [0, 1]),
                                                            task("b", [0, 1])])
    assert story.sequence_sentences(pairs)[1] == "Truly similar: T1, T3; T2, T4."  # no task alone: no tail
    apart = SimpleNamespace(sequence="s", n_tasks=2, tasks=[task("classes", [0, 1]), task("classes", [2, 3])])
    assert story.sequence_sentences(apart)[1] == "No two tasks are truly similar."


def test_tile_text_thins_with_the_number_of_tasks_and_the_hover_keeps_every_group():
    """50 tiles in a ~560 px column are ~11 px wide: "T1<br>alone" on each overlapped its neighbours."""
    assert story.tile_text(2, "A", n_tasks=10) == "T3<br>group A"
    assert story.tile_text(0, None, n_tasks=story.TILE_TEXT_UP_TO) == "T1<br>alone"
    assert story.tile_text(2, "A", n_tasks=story.TILE_TEXT_UP_TO + 1) == "A"
    assert story.tile_text(0, None, n_tasks=story.TILE_LETTER_UP_TO) == ""
    assert story.tile_text(2, "A", n_tasks=story.TILE_LETTER_UP_TO + 1) == ""
    task = lambda n: {"family": "writers", "classes": [n % 3], "name": f"w{n}"}  # noqa: E731
    many = SimpleNamespace(sequence="s", n_tasks=50, tasks=[task(n) for n in range(50)])
    fig = story.sequence_figure(many)
    assert all(text == "" for trace in fig.data for text in trace.text)
    assert "true groups in the hover" in fig.layout.title.text.replace("<br>", " ")
    assert all("truly similar to" in hover for trace in fig.data for hover in trace.hovertext)
    few = story.sequence_figure(sample("prm+").state)
    assert any(text.endswith("group A") for trace in few.data for text in trace.text)


def test_title_margin_holds_the_wrapped_title_without_automargin():
    """A chart in a collapsed expander cannot measure its title, so automargin pushes nothing:
    the margin set must hold every line (step 5's stability chart had its title above its edge)."""
    fig = consequence.stability_figure(pd.DataFrame([{"method": "hat", "seeds": 1, "BWT": -0.01, "BWT sd": 0.0,
                                                      "FWT": 0.02, "FWT sd": 0.0}]))
    lines = fig.layout.title.text.count("<br>") + 1
    assert lines == 2
    assert fig.layout.margin.t >= lines * 1.2 * fig.layout.title.font.size + fig.layout.title.pad.b
    assert story.title_margin("a<br>b<br>c", size=story.LECTURE) > story.title_margin("a<br>b")


def test_protection_table_reads_hat_capacity_on_arrival_and_accuracy_just_after_learning():
    hat_run = sample("hat")
    hat, stl = hat_run.state, sample("stl").state
    table = story.protection_table(hat, layer=0, stl=stl)
    assert table["protected on arrival"].iloc[0] == 0.0
    for t in range(1, 10):  # the share HAT held on arrival is the capacity recorded after the task before
        assert table["protected on arrival"].iloc[t] == hat.task_ends[t - 1].capacity[0]
    assert int((hat_run.accumulated(8, 0) > 0.5).sum()) == 202  # HAT's recorded mask after T9: 202 of 256 units
    assert table["protected on arrival"].iloc[9] == 202 / 256
    writers = table[table["family"] == "writers"]
    assert list(writers["task"]) == ["T4", "T6", "T7", "T9", "T10"]
    hat_diag, stl_diag = np.diag(hat.accuracy_matrix("test")), np.diag(stl.accuracy_matrix("test"))
    assert hat_diag[[3, 5, 6, 8, 9]] == pytest.approx([0.8, 0.8667, 0.8, 0.8077, 0.8], abs=1e-4)
    assert stl_diag[[3, 5, 6, 8, 9]] == pytest.approx([0.9333, 0.8, 0.8667, 0.8846, 0.9], abs=1e-4)
    assert writers["HAT"].mean() == pytest.approx(4.0744 / 5, abs=1e-4)  # 0.815
    assert writers["STL"].mean() == pytest.approx(4.3846 / 5, abs=1e-4)  # 0.877
    assert table["joint"].isna().all()
    first, second = story.protection_sentences(table, layer=0, state=hat)
    assert first == "When the last task arrived, HAT protected 79% of layer 0's units."  # 202 / 256
    assert second == ("Just after learning, the similar tasks scored 0.815 under HAT against 0.877 when learnt alone "
                      "(STL): −0.062.")  # the five writers, as above
    details = story.protection_details(table, state=hat)
    assert "writers (similar tasks): HAT 0.815 against STL 0.877 (−0.062)" in details
    no_stl = story.protection_sentences(story.protection_table(hat, layer=0), layer=0, state=hat)[1]
    assert no_stl == "Just after learning, the similar tasks scored 0.815 under HAT; no STL run is listed to compare."


# ----------------------------------------------------------------------------- step 3

def test_calls_of_prm_on_the_default_sequence_right_and_wrong():
    """X-means' sets (recorded): T2 {T1}, T3 {T2}, T4 {T1, T3}, every later task {} (all
    similar). Right, by new task: 1, 1, 2, 0, 1, 2, 0, 3, 4 = 14 of 45; the 31 wrong all call a
    dissimilar task similar (no writer ever called dissimilar to a writer)."""
    state = sample("prm").state
    table = story.calls_table(state, layer=0)
    assert len(table) == 45  # 1 + 2 + ... + 9 earlier tasks
    assert calls_by_hand(state) == {"right": 14, "false similar": 31, "missed": 0, "calls": 45}
    assert int(table["right"].sum()) == 14
    per = table.groupby("family", sort=False)["right"].agg(["sum", "count"])
    assert per.loc["classes"].tolist() == [2, 14] and per.loc["writers"].tolist() == [12, 31]
    who = story.decider(state)
    assert who == "PRM's DTD decided by X-means on the task embeddings"
    first, second = story.calls_sentences(table, layer=0, who=who)
    assert first == "PRM's DTD decided by X-means on the task embeddings: on layer 0, 14 of 45 calls were right (31%)."
    assert second == "Of the 31 wrong, 31 called a dissimilar task similar and 0 missed a similar one."
    assert story.calls_details(table) == ("Right calls by the family of the new task: classes tasks 2 of 14; "
                                          "writers tasks 12 of 31.")
    fig = story.calls_figure(table, n_tasks=10, layer=0, method="prm")
    marks = {trace.name: len(trace.x) for trace in fig.data if trace.type == "scatter"}
    assert marks == {"✓ right": 14, "✗ wrong": 31}


def test_prm_plus_calls_judge_the_rule_it_used_and_ablations_judge_x_means():
    prm_plus = sample("prm+").state  # linkage rule: every earlier task called dissimilar on this seed
    assert all(set(r.layers[0]["dissimilar"]) == set(range(t)) for t, r in prm_plus.dtd.items())
    # so the wrong calls are the C(5, 2) = 10 pairs of writers, each missed
    assert calls_by_hand(prm_plus) == {"right": 35, "false similar": 0, "missed": 10, "calls": 45}
    assert int(story.calls_table(prm_plus, layer=0)["right"].sum()) == 35
    who = story.decider(prm_plus)  # step 3 names the rule and threshold the run was configured with
    assert who == "PRM\\+'s DTD decided by average linkage on the cosine distance of binarised embeddings, cut at 0.3"
    assert story.calls_sentences(story.calls_table(prm_plus, layer=0), layer=0, who=who) == (
        f"{who}: on layer 0, 35 of 45 calls were right (78%).",
        "Of the 10 wrong, 0 called a dissimilar task similar and 10 missed a similar one.")
    cut = {**prm_plus.config, "prm": {**prm_plus.config["prm"], "clustering": "cut", "features": "raw"}}
    assert story.decider(SimpleNamespace(config=cut)).endswith(
        "decided by a cut at cosine distance 0.3 of raw embeddings")
    assert story.decider(sample("prm-t").state) == "PRM\\(T\\) protects by the truth; judged here is its X-means"
    assert story.decider(load_run(ROOT / "sample_runs" / "digits-mixed-cat-s0").state) == "CAT decided by transfer tests"
    truth = sample("prm-t").state  # PRM(T) protects by the truth; X-means' own calls are judged
    table = story.calls_table(truth, layer=0)
    own = sum(len(set(truth.dtd[t].layers[0]["dissimilar_xmeans"]) ^ set(truth.dtd[t].layers[0]["dissimilar"]))
              for t in truth.dtd)
    assert own > 0 and len(table) - int(table["right"].sum()) == own


def test_every_call_right_leaves_the_second_sentence_empty(tiny_siblings):
    """The tiny PRM+ calls both earlier writers similar at every step, as the truth has it."""
    state = load_run(tiny_siblings / "digits-writers-binary-prm+-s0").state
    assert calls_by_hand(state) == {"right": 3, "false similar": 0, "missed": 0, "calls": 3}
    who = story.decider(state)
    assert who == "PRM\\+'s DTD decided by a cut at cosine distance 1.99 of raw embeddings"
    assert story.calls_sentences(story.calls_table(state, layer=0), layer=0, who=who) == (
        f"{who}: on layer 0, 3 of 3 calls were right (100%).", "")


# ----------------------------------------------------------------------------- step 4

def test_relaxed_counts_and_choice():
    run = sample("prm", FREEING)
    counts = story.relaxed_counts(run, layer=0)
    by_hand = {t: units_by_hand(run, t)["free"] for t in range(1, 10)}
    assert counts == by_hand == {1: 0, 2: 38, 3: 0, 4: 7, 5: 1, 6: 85, 7: 6, 8: 16, 9: 1}
    assert story.relaxed_choice(counts, 9) == (9, "T10 is the task picked in the sidebar")
    task, why = story.relaxed_choice(counts, 3)
    assert task == 6 and why == ("T4, the sidebar task, has none, so this shows T7, the task with the most "
                                 "units relaxed (85)")
    assert story.relaxed_choice(counts, 0)[1].startswith("the first task has nothing earlier to relax, so this shows T7")
    assert story.relaxed_choice({1: 4, 2: 4, 3: 0}, 3)[0] == 1  # the earliest among equals
    assert story.relaxed_choice({1: 0, 2: 0}, 1)[0] is None
    assert story.relaxed_choice({}, 0)[0] is None


def test_relaxed_sentences_count_free_units_and_name_the_similar_tasks():
    """The paper's PRM (relax 1) frees the units of the tasks called similar: none is partial.
    T7 of digits-mixed seed 0: DTD called only T2 dissimilar."""
    run = sample("prm", FREEING)
    assert run.state.dtd[6].layers[0]["dissimilar"] == [1]
    units = units_by_hand(run, 6)
    assert units["free"] == 85 and units["partial"] == 0
    first, second = story.relaxed_sentences(run, task=6, layer=0)
    assert first == (f"While learning T7, HAT would protect the {units['used']} units of layer 0 that earlier tasks "
                     f"used; PRM kept {units['used'] - 85} protected, relaxed 0 partially and freed 85.")
    assert second == "They belong to T1, T3, T4, T5, T6, the tasks called similar."
    assert story.relaxed_details(run, task=6, layer=0, why="T7 is the task picked") == (
        "T7 is the task picked. The units of T2 (called dissimilar) stayed protected.")
    fig = story.relaxed_figure(run, task=6, layer=0)
    assert len(fig.data[0].x) == units["used"] and [s.x1 for s in fig.layout.shapes] == [pytest.approx(84.5)]
    assert fig.layout.annotations[0].text == "85 free"


def test_relaxed_sentences_count_partial_units_apart_from_free_ones(tiny_siblings):
    """PRM+ with relax 0.3 protects a similar task's unit at 0.7: relaxed partially, never
    counted free. The tiny PRM+ called both earlier tasks similar when T3 arrived."""
    run = load_run(tiny_siblings / "digits-writers-binary-prm+-s0")
    assert run.state.dtd[2].layers[0]["dissimilar"] == []
    units = units_by_hand(run, 2)
    assert units["free"] == 0 and units["partial"] == units["used"] > 0
    first, second = story.relaxed_sentences(run, task=2, layer=0)
    assert first == (f"While learning T3, HAT would protect the {units['used']} units of layer 0 that earlier tasks "
                     f"used; PRM\\+ kept 0 protected, relaxed {units['used']} partially (to 0.30 of the gradient) "
                     "and freed 0.")
    assert second == "They belong to T1, T2, the tasks called similar."
    fig = story.relaxed_figure(run, task=2, layer=0)
    assert [s.x1 for s in fig.layout.shapes] == [pytest.approx(units["used"] - 0.5)]
    assert fig.layout.annotations[0].text == f"{units['used']} partially relaxed"


# ----------------------------------------------------------------------------- step 5

def test_difference_matrix_and_its_sentence():
    """PRM − HAT: the final rows (accuracy matrices) are PRM 0.9861, 1, 0.875, 0.7333, 1, 0.8333,
    0.9, 0.9437, 0.8462, 0.9333 and HAT 1, 1, 1, 0.8, 1, 0.8667, 0.8, 0.9577, 0.8077, 0.8:
    differences summing to +0.0188, lowest −0.125 on T3, highest +0.1333 on T10."""
    a, b = sample("prm").state, sample("hat").state
    A, B = a.accuracy_matrix("test"), b.accuracy_matrix("test")
    assert A[9] == pytest.approx([0.9861, 1, 0.875, 0.7333, 1, 0.8333, 0.9, 0.9437, 0.8462, 0.9333], abs=1e-4)
    assert B[9] == pytest.approx([1, 1, 1, 0.8, 1, 0.8667, 0.8, 0.9577, 0.8077, 0.8], abs=1e-4)
    fig = consequence.difference_figure(a, b, a_name="PRM", b_name="HAT")
    z = np.array(fig.data[0].z, dtype=float)
    assert z == pytest.approx(A - B, nan_ok=True)
    assert np.isnan(z[np.triu_indices(10, 1)]).all()  # not learnt yet
    assert fig.data[0].zmin == -fig.data[0].zmax == pytest.approx(-np.nanmax(np.abs(A - B)))
    assert fig.data[0].text[9][3] == "−0.07" and fig.data[0].text[9][9] == "+0.13" and fig.data[0].text[0][5] == ""
    assert consequence.difference_sentence(a, b, a_name="PRM", b_name="HAT") == (
        "After T10, PRM − HAT averages +0.002 over 10 tasks, from −0.125 on T3 to +0.133 on T10.")


def test_bwt_and_fwt_per_family():
    """PRM's classes (T1, T2, T3, T5, T8): final − just learnt −0.0139, 0, −0.125, 0, −0.0422, mean
    −0.036; its writers: −0.1, 0, 0, 0, 0, mean −0.020, and just learnt − STL −0.1, +0.0333,
    +0.0333, −0.0385, +0.0333, mean −0.008. HAT's writers: 0.815 − 0.877 (step 2's test)."""
    prm, hat, stl = sample("prm").state, sample("hat").state, sample("stl").state
    table = consequence.family_transfer({"prm": prm, "hat": hat}, stl).set_index(["method", "family"])
    assert table.loc["HAT"].values.ravel().tolist() == ["0.000", "0.000", "0.000", "−0.062"]  # HAT never forgets
    assert table.loc[("PRM", "classes"), "BWT"] == "−0.036" and table.loc[("PRM", "classes"), "FWT"] == "+0.006"
    assert table.loc[("PRM", "writers"), "BWT"] == "−0.020" and table.loc[("PRM", "writers"), "FWT"] == "−0.008"
    R, S = prm.accuracy_matrix("test"), np.diag(stl.accuracy_matrix("test"))
    writers = [3, 5, 6, 8, 9]
    assert np.mean(R[9, writers] - np.diag(R)[writers]) == pytest.approx(-0.02, abs=1e-4)
    assert np.mean(np.diag(R)[writers] - S[writers]) == pytest.approx(-0.0077, abs=1e-4)
    no_stl = consequence.family_transfer({"hat": hat}, None).set_index("family")
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
    assert {a.text.replace("<br>", " ") for a in fig.layout.annotations} >= {"keeps, does not transfer",
                                                                             "forgets, does not transfer"}
    assert consequence.stability_figure(pd.DataFrame(columns=points.reset_index().columns)).layout.annotations


# ----------------------------------------------------------------------------- the view

def open_story(run: str | None, *, task: str | None = None, runs_dir: Path | None = None) -> AppTest:
    """The Story of a sample run (``run`` a folder name), of a run of ``runs_dir`` (a path), or
    of the run the app opens on (None)."""
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params[keys.VIEW] = keys.STORY
    if run is not None:
        at.query_params[keys.RUN] = run if runs_dir is not None else f"sample_runs/{run}"
    if task:
        at.query_params[keys.TASK] = task
    if runs_dir is not None:
        at.session_state[keys.RUNS_DIR] = str(runs_dir)
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
    """The app opens on PRM at seed 2 of digits-writers-binary. X-means called T1 dissimilar to
    T2 and T1, T2 to T3, every other earlier writer similar: 3 wrong of 45."""
    at = open_story(None)
    assert at.caption[0].value.startswith("**PRM** on digits\\-writers\\-binary, seed 2, told with ")
    assert len(at.get("plotly_chart")) == 6  # one per step, and the stability chart in step 5's details
    assert sum(len(e.get("plotly_chart")) for e in at.tabs[0].expander) == 1
    assert calls_by_hand(sample("prm", WRITERS).state)["right"] == 42
    text = "\n".join(m.value for m in at.markdown)
    assert "42 of 45 calls were right (93%)" in text
    assert [w.value for w in at.warning] == [  # no PRM(T) or joint run is bundled for it
        "No PRM\\(T\\) or joint run of digits\\-writers\\-binary seed 2 (10 tasks) is listed; the steps that need one "
        "say so."]
    masks = [b for b in at.button if b.key == "story-go-4"][0]
    masks.click().run()
    assert at.session_state[keys.VIEW] == keys.MASKS and at.session_state[keys.TASK] == "T10"


def test_story_with_every_sibling_listed_warns_of_none(tiny_siblings):
    at = open_story(str(tiny_siblings / "digits-writers-binary-prm+-s0"), runs_dir=tiny_siblings)
    assert [h.value for h in at.subheader] == list(STEPS)
    assert not at.warning and not at.error  # every sibling (STORY_SIBLINGS) is listed
    assert set(methods.STORY_SIBLINGS) == set(TINY)
    text = "\n".join(m.value for m in at.markdown)
    assert "3 of 3 calls were right (100%)" in text and "partially (to 0.30 of the gradient)" in text


def test_story_names_missing_siblings_and_fills_the_train_live_form():
    """digits-mixed seed 0 has PRM, HAT, CAT, NCL and STL runs bundled; no PRM+, PRM(T) or joint."""
    at = open_story(FREEING)
    assert "No PRM\\+\\, PRM\\(T\\) or joint run of digits\\-mixed seed 0 (10 tasks) is listed" in at.warning[0].value
    assert "decisions of its PRM" not in "\n".join(c.value for c in at.caption)  # PRM runs DTD itself
    train = [b for b in at.button if b.key == "story-train-joint"][0]
    train.click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state[keys.VIEW] == keys.LIVE
    assert (at.session_state[keys.LIVE_SEQUENCE], at.session_state[keys.LIVE_METHOD],
            at.session_state[keys.LIVE_SEED]) == ("digits-mixed", "joint", 0)
    assert at.selectbox(key=keys.LIVE_METHOD).value == "joint"


def test_story_of_an_unmasked_run_borrows_the_dtd_sibling():
    """T4 of digits-mixed seed 0: its PRM freed no unit; T7 freed the most (85, as counted from
    the masks in test_relaxed_counts_and_choice)."""
    assert units_by_hand(sample("prm", FREEING), 3)["free"] == 0
    at = open_story("digits-mixed-ncl-s0", task="T4")
    captions = "\n".join(c.value for c in at.caption)
    assert "NCL runs no DTD; these are the decisions of its PRM sibling" in captions
    text = "\n".join(m.value for m in at.markdown)
    assert "T4, the sidebar task, has none, so this shows T7, the task with the most units relaxed (85)" in text
