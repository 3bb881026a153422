"""PRM+'s cosine rules in the explorer: the linkage tree is the engine's own merges, the rule
recomputed from a run's record reproduces the set it used (on runs trained here and on any
bundled PRM+ sample), the distance bars and the two decisions side by side against values worked
out by hand, the embeddings' colours that never contradict the calls, and both views in AppTest."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.cluster.hierarchy import fcluster

from explorer import state as keys
from explorer.figures import embeddings as emb
from explorer.figures import linkage
from explorer.figures.common import DISSIMILAR_COLOUR, RIGHT_COLOUR, SIMILAR_COLOUR, WRONG_COLOUR, md
from prm.analysis import judged_right, true_groups
from prm.config import PRMConfig
from prm.engine import train_sequence
from prm.run import RunWriter, load_run
from prm.similarity import average_linkage
from tests.conftest import tiny_config
from tests.test_app import charts, open_app, texts

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = sorted(p.parent for p in (ROOT / "sample_runs").glob("*prm+*/run.json"))
DIGITS = list(range(10))


def _task(name: str, family: str, classes: list[int]) -> dict:
    return {"name": name, "family": family, "classes": classes}


def _same_partition(a, b) -> bool:
    return all((a[i] == a[j]) == (b[i] == b[j]) for i in range(len(a)) for j in range(len(a)))


# ----------------------------------------------------------------------------- by hand

def test_the_tree_holds_the_engines_merges_in_order():
    """T1-T2 at 0.1, then T3-T4 at 0.2, then both pairs at the mean of the four cross distances."""
    d = np.array([[0, .1, .8, .9], [.1, 0, .7, .6], [.8, .7, 0, .2], [.9, .6, .2, 0]])
    z = linkage.tree(d)
    assert np.allclose(z, [[0, 1, .1, 2], [2, 3, .2, 2], [4, 5, (.8 + .9 + .7 + .6) / 4, 4]])


def test_a_tie_is_broken_as_the_engine_breaks_it():
    """T2 is 0.2 from both T1 and T3: the engine joins the first pair in row order (T1, T2), so the
    cut at 0.3 keeps T3 alone, and the drawn tree must say the same (scipy's own average linkage
    is free to break the tie the other way)."""
    d = np.array([[0, .2, .5], [.2, 0, .2], [.5, .2, 0]])
    z = linkage.tree(d)
    assert np.allclose(z, [[0, 1, .2, 2], [3, 2, (.5 + .2) / 2, 3]])  # the pair (id 3) takes in T3
    cut = fcluster(z, np.nextafter(0.3, 0), criterion="distance")
    assert _same_partition(cut, average_linkage(d, 0.3)) and cut[0] == cut[1] != cut[2]


def _step(points, *, rule: str, threshold: float, recorded, xmeans=()) -> linkage.RuleStep:
    from prm.similarity import cosine_distances, dissimilar_by_rule

    dist = cosine_distances(np.asarray(points, dtype=float))
    task = len(points) - 1
    return linkage.RuleStep(rule=rule, threshold=threshold, features="raw", together=False, task=task, distance=dist,
                            labels=average_linkage(dist, threshold),
                            dissimilar=dissimilar_by_rule(np.asarray(points, dtype=float), task, rule=rule,
                                                          threshold=threshold),
                            recorded=list(recorded), xmeans=list(xmeans))


TASKS = [_task("w1", "writers", DIGITS), _task("0-1", "classes", [0, 1]), _task("w2", "writers", DIGITS)]


def test_distance_bars_by_hand():
    """Rows (1, 0), (0, 1) and the new task (1, 1): both at cosine distance 1 − 1/√2 ≈ 0.293 from
    it. With the cut at 0.25 both are dissimilar: T1 (a writer, like T3) wrongly, T2 rightly."""
    step = _step([[1, 0], [0, 1], [1, 1]], rule="cut", threshold=0.25, recorded=[0, 1])
    assert step.reproduced and step.dissimilar == [0, 1]
    fig = linkage.distance_figure(step, TASKS)
    bars = {b.name: b for b in fig.data if b.type == "bar"}
    assert set(bars) == {"called similar", "called dissimilar"}
    assert list(bars["called similar"].x) == []
    dissimilar = bars["called dissimilar"]
    assert list(dissimilar.x) == ["T1", "T2"] and np.allclose(dissimilar.y, [1 - 1 / math.sqrt(2)] * 2)
    assert dissimilar.marker.color == DISSIMILAR_COLOUR
    assert list(dissimilar.text) == ["✗", "✓"] and list(dissimilar.textfont.color) == [WRONG_COLOUR, RIGHT_COLOUR]
    assert [s.y0 for s in fig.layout.shapes] == [0.25]
    assert not _step([[1, 0], [0, 1], [1, 1]], rule="cut", threshold=0.25, recorded=[1]).reproduced


def test_dendrogram_draws_the_cut_and_colours_each_leaf_by_its_call():
    """T1 and T3 point the same way (distance 0), T2 is orthogonal to both (distance 1): linkage
    at 0.5 puts T1 with the new task T3 and leaves T2 out, both calls right."""
    step = _step([[1, 0], [0, 1], [2, 0]], rule="linkage", threshold=0.5, recorded=[1])
    assert step.reproduced
    fig = linkage.dendrogram_figure(step, TASKS)
    links, leaves = fig.data[0], fig.data[2]  # the elbows, the merge dots, the leaves
    heights = sorted({y for y in links.y if y is not None})
    assert heights == [0.0, 1.0]  # T1+T3 at 0, then T2 at the mean of 1 and 1
    ticks = dict(zip(fig.layout.xaxis.tickvals, fig.layout.xaxis.ticktext))
    colour = {ticks[x].split()[0]: c for x, c in zip(leaves.x, leaves.marker.color)}
    assert colour == {"T1": SIMILAR_COLOUR, "T2": DISSIMILAR_COLOUR, "T3": linkage.NEW_TASK_COLOUR}
    assert [s.y0 for s in fig.layout.shapes] == [0.5] and "T3 (new)" in ticks.values()
    assert sorted(t for t in leaves.text if t) == ["✓", "✓"]


def test_two_decisions_side_by_side_by_hand():
    """T4 (a writer) arrives after w1, the pair 0-1 and w2. X-means alone called everything
    similar (T2 wrong: 2 of 3); the rule called T2 dissimilar (3 of 3)."""
    tasks = [*TASKS, _task("w3", "writers", DIGITS)]
    frame = linkage.two_calls(tasks, task=3, xmeans=[], rule=[1], name="linkage")
    assert list(frame["X-means alone ✓✗"]) == ["✓", "✗", "✓"] and list(frame["linkage ✓✗"]) == ["✓"] * 3
    assert list(frame["linkage"]) == ["similar", "dissimilar", "similar"]
    assert linkage.two_counts(frame) == {"X-means alone": "2 of 3 calls right", "linkage": "3 of 3 calls right"}


def test_colours_follow_the_call_when_no_cluster_implies_it():
    """An X-means step whose one cluster holds every task, but whose used set is not empty (an
    undecided step, or a what-if): colouring by that cluster would paint every task alike while
    the table says 'dissimilar', so the colours show the call instead."""
    record = SimpleNamespace(source="xmeans", layers=[{"xmeans": {"labels": [0, 0, 0]}}])
    run = SimpleNamespace(state=SimpleNamespace(dtd={2: record}))
    assert emb.colouring(run, 0, 2, [0]) == (emb.CALL, [1, 0, 0])
    record.layers[0]["xmeans"]["labels"] = [1, 0, 0]
    assert emb.colouring(run, 0, 2, [0]) == ("X-means cluster", [1, 0, 0])
    record.source = "cut"
    assert emb.colouring(run, 0, 2, [0]) == (emb.CALL, [1, 0, 0])


# ----------------------------------------------------------------------------- runs trained here

@pytest.fixture(scope="module", params=[("linkage", "each", "raw"), ("cut", "together", "binary")],
                ids=lambda p: "-".join(p))
def rule_run(request, tmp_path_factory):
    rule, layers, features = request.param
    cfg = tiny_config(sequence="digits-mixed", n_tasks=4, method="prm+",
                      prm=PRMConfig(dtd_epochs=2, head_epochs=1, clustering=rule, threshold=0.5, layers=layers,
                                    features=features))
    folder = tmp_path_factory.mktemp("runs") / f"rule-{rule}"
    train_sequence(cfg, emit=RunWriter(folder, config=cfg))
    return load_run(folder)


def _check_rule_run(run) -> None:
    """Invariants of any run a cosine rule decided: the rule recomputed reproduces every recorded
    set, the drawn tree cut at the threshold is the rule's clusters, and the embeddings' colours
    never contradict the calls."""
    proj = emb.compute(run, 0, "pca")
    for t in run.dtd_steps():
        for layer in range(run.n_layers):
            step = linkage.rule_step(run, t, layer)
            assert step is not None and step.reproduced, (t, layer, step and step.dissimilar, step and step.recorded)
            cut = fcluster(linkage.tree(step.distance), np.nextafter(step.threshold, 0), criterion="distance")
            assert _same_partition(cut, step.labels)
            for draw in (linkage.dendrogram_figure, linkage.distance_figure):
                assert [shape.y0 for shape in draw(step, run.state.tasks).layout.shapes] == [step.threshold]
        frame = emb.step_frame(run, 0, proj, f"T{t + 1}")
        group = frame["group"].tolist()
        used = run.state.dtd[t].layers[0]["dissimilar"]
        assert {i for i in range(t) if group[i] != group[t]} == set(used)
        assert frame["grouping"].iloc[0] == ("linkage cluster" if run.state.dtd[t].source == "linkage" else emb.CALL)


def test_a_trained_rule_run_is_reproduced_and_coloured_by_its_calls(rule_run):
    _check_rule_run(rule_run)
    table = linkage.steps_right(rule_run.state, 0)
    groups = true_groups(rule_run.state.tasks)
    for (t, record), right in zip(sorted(rule_run.state.dtd.items()), table["rule right"]):
        called = judged_right(groups=groups, task=t, dissimilar=record.layers[0]["dissimilar"])
        assert right == f"{sum(called.values())} of {t}"


def test_the_comparison_figure_counts_each_decisions_calls(rule_run):
    run = rule_run
    t = max(run.dtd_steps())
    entry = run.state.dtd[t].layers[0]
    proj = emb.compute(run, 0, "pca")
    panels = [(name, emb.step_frame(run, 0, proj, f"T{t + 1}", dissimilar=entry[key]))
              for name, key in (("X-means alone", "dissimilar_xmeans"), ("rule", "dissimilar"))]
    fig = emb.comparison_figure(panels, title="t")
    groups = true_groups(run.state.tasks)
    want = [sum(judged_right(groups=groups, task=t, dissimilar=entry[key]).values())
            for key in ("dissimilar_xmeans", "dissimilar")]
    assert [a.text for a in fig.layout.annotations] == [f"X-means alone:<br>{want[0]} of {t} right",
                                                        f"rule:<br>{want[1]} of {t} right"]
    assert {tr.xaxis for tr in fig.data if tr.x is not None and any(v is not None for v in tr.x)} == {"x", "x2"}
    legend = {tr.name for tr in fig.data
              if tr.showlegend is not False and tr.legendgroup not in ("families", "outlines")}
    assert legend == {emb.CALL_NAMES[g][0] for _, frame in panels for g in frame["group"]}  # one legend, both panels


@pytest.mark.skipif(not SAMPLES, reason="no bundled PRM+ sample run")
@pytest.mark.parametrize("folder", SAMPLES, ids=lambda p: p.name)
def test_a_bundled_prm_plus_run_is_reproduced(folder):
    _check_rule_run(load_run(folder))


# ----------------------------------------------------------------------------- the views

def test_the_clustering_view_explains_the_rule_and_keeps_x_means_for_reference(rule_run):
    folder = Path(rule_run.path)
    at = open_app(keys.CLUSTERING, run=str(folder), runs_dir=folder.parent, task="T4")
    shown = texts(at)
    rule = rule_run.state.dtd[3].source
    assert f"decided by the '{rule}' rule on cosine distance" in shown
    assert "X-means, for reference only: not the rule this run used" in shown
    assert f"**{md('X-means alone')}: " in shown and f"**{md(rule)}: " in shown and "calls right" in shown
    specs = [c.proto.spec for c in charts(at)]
    assert any("Average-linkage tree, cut at 0.50" in s for s in specs)
    assert any("Cosine distance of earlier tasks to T4" in s for s in specs)
    assert any("Cosine distance by linkage cluster cN" in s for s in specs)
    assert any("X-means splits" in s for s in specs) and not at.error


def test_the_embeddings_view_colours_by_the_rule_and_shows_both_decisions(rule_run):
    folder = Path(rule_run.path)
    at = open_app(keys.EMBEDDINGS, run=str(folder), runs_dir=folder.parent, task="T4", projection="pca")
    rule = rule_run.state.dtd[3].source
    specs = [c.proto.spec for c in charts(at)]
    assert any(f"{rule} rule when T4" in s for s in specs)  # "arrived" may wrap to the next line
    assert "X-means alone against the" in texts(at)
    assert any("X-means alone (not used):" in s and f"the {rule} rule (used):" in s for s in specs) and not at.error
