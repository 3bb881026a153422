"""The numbers behind the baselines' own charts (prm.analysis), against values worked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from prm import analysis


def test_a_packed_supermask_unpacks_row_by_row():
    mask = np.array([[1, 0, 1], [0, 1, 1]], dtype=bool)
    bits = np.packbits(mask, axis=1)
    assert bits.tolist() == [[0b10100000], [0b01100000]]  # each row padded to whole bytes with zeros
    assert (analysis.unpack_mask(bits, (2, 3)) == mask).all()
    wide = np.random.default_rng(0).random((3, 20)) < 0.5
    assert (analysis.unpack_mask(np.packbits(wide, axis=1), (3, 20)) == wide).all()


def test_hat_weight_overlap_from_unit_masks_by_hand():
    # task a uses outputs {0, 1} and inputs {0, 1}: 4 weights; task b outputs {1, 2}, input {0}: 2 weights;
    # both use the weight from input 0 to output 1 only: Jaccard 1 / (4 + 2 - 1) = 0.2
    out_a, out_b = np.array([1, 1, 0], bool), np.array([0, 1, 1], bool)
    in_a, in_b = np.array([1, 1], bool), np.array([1, 0], bool)
    assert analysis.unit_edge_jaccard(out_a, out_b, in_a, in_b) == pytest.approx(0.2)
    assert analysis.unit_edge_jaccard(out_a, out_a, in_a, in_a) == 1.0
    none = np.zeros(3, bool)
    assert analysis.unit_edge_jaccard(none, none, in_a, in_a) == 0.0


def test_chance_overlap_of_independent_masks():
    assert analysis.chance_jaccard(0.5) == pytest.approx(1 / 3)  # 0.25 / (0.5 + 0.5 - 0.25)
    assert analysis.chance_jaccard(1.0) == 1.0 and analysis.chance_jaccard(0.0) == 0.0
    rng = np.random.default_rng(0)
    a, b = rng.random(200_000) < 0.3, rng.random(200_000) < 0.3
    assert (a & b).sum() / (a | b).sum() == pytest.approx(analysis.chance_jaccard(0.3), abs=0.005)


def test_path_reuse_counts_modules_frozen_by_earlier_paths():
    first = np.array([[1, 1, 0, 0], [0, 1, 1, 0]])
    second = np.array([[0, 1, 1, 0], [0, 0, 1, 1]])  # reuses module 1 of layer 0 and module 2 of layer 1
    third = np.array([[1, 0, 0, 1], [1, 0, 0, 0]])  # reuses module 0 of layer 0 (first's)
    assert analysis.path_reuse([first, second, third]) == [
        {"modules": 4, "reused": 0, "new": 4}, {"modules": 4, "reused": 2, "new": 2},
        {"modules": 3, "reused": 1, "new": 2}]


def test_neighbour_agreement_by_hand():
    vectors = np.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0], [-1.0, 0.0]])
    labels = ["a", "a", "b", "b", "c"]  # 'c' has no partner: not asked
    hits, asked, chance = analysis.neighbour_agreement(vectors, labels)
    assert (hits, asked) == (4, 4)
    assert chance == pytest.approx(4 * 1 / 4)  # each asked vector has 1 same-label among 4 others
    crossed = analysis.neighbour_agreement(vectors[:4], ["a", "b", "a", "b"])
    assert crossed[:2] == (0, 4)


# ----------------------------------------------------------------------------- the views, on runs of each baseline

import json  # noqa: E402
from pathlib import Path  # noqa: E402

from streamlit.testing.v1 import AppTest  # noqa: E402

from explorer import state as keys  # noqa: E402
from explorer.figures import baselines as fig  # noqa: E402
from prm.engine import train_sequence  # noqa: E402
from prm.methods.pathnet import PathNetConfig  # noqa: E402
from prm.run import RunWriter, load_run  # noqa: E402
from tests.conftest import tiny_config  # noqa: E402

APP = str(Path(__file__).resolve().parents[1] / "explorer" / "app.py")
BASELINES = ("supsup", "pathnet", "acl", "hypernet")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """A tiny run of HAT and of each baseline on four tasks of digits-mixed (two families), seed 0."""
    root = tmp_path_factory.mktemp("baseline-runs")
    for method in ("hat", *BASELINES):
        cfg = tiny_config(method=method, sequence="digits-mixed", n_tasks=4,
                          pathnet=PathNetConfig(generations=2, epochs=1))
        train_sequence(cfg, emit=RunWriter(root / method, config=cfg), compile="off")
    return root


def _open(view: str, run: Path, root: Path) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params[keys.VIEW] = view
    at.query_params[keys.RUN] = str(run)
    at.session_state[keys.RUNS_DIR] = str(root)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def _texts(at: AppTest) -> str:
    return "\n".join(str(x.value) for kind in ("markdown", "caption", "info", "warning") for x in getattr(at, kind))


def test_supermask_overlaps_are_the_recorded_masks_and_hat_stands_beside_them(runs):
    run = load_run(runs / "supsup")
    tasks, matrix, density = fig.supermask_overlap(run, 1)
    assert tasks == [0, 1, 2, 3] and np.allclose(np.diag(matrix), 1.0)
    a, b = (analysis.unpack_mask(run.own(t, fig.SUPERMASK, 1), (32, 32)) for t in (0, 2))
    assert matrix[0, 2] == pytest.approx((a & b).sum() / (a | b).sum())
    assert density == pytest.approx(0.5, abs=0.01)  # the default keeps half of every layer
    at = _open(keys.MASKS, runs / "supsup", runs)
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]
    assert titles == ["Supermask overlap, layer 0", "HAT's weight overlap, layer 0"]
    assert "independent masks that dense would share 0.333" in _texts(at)


def test_pathnet_paths_show_reuse_of_frozen_modules(runs):
    run = load_run(runs / "pathnet")
    tasks, cells = fig.path_grid(run)
    paths = [run.own(t, fig.PATH).astype(bool) for t in tasks]
    assert cells.shape == (4, 2, 16) and ((cells > 0) == np.stack(paths)).all()
    for t in range(1, 4):  # violet (2) exactly where an earlier path froze the module
        frozen = np.any(paths[:t], axis=0)
        assert ((cells[t] == 2) == (paths[t] & frozen)).all()
    table = fig.path_table(run)
    assert (table["reused"] + table["new"] == table["modules"]).all() and table["reused"].iloc[0] == 0
    fitness = fig.fitness_figure(run)
    assert len(fitness.data) == 4 and list(fitness.data[1].y) == pytest.approx(run.own(1, fig.FITNESS).tolist())
    at = _open(keys.MASKS, runs / "pathnet", runs)
    assert len(at.get("plotly_chart")) == 2 and "PathNet" in _texts(at)


def test_acl_parts_are_drawn_from_the_last_tasks_record(runs):
    run = load_run(runs / "acl")
    frame = fig.parts_frame(run)
    last = run.own(3, fig.PARTS)
    assert len(frame) == 12 and frame["accuracy"].tolist() == pytest.approx(last.ravel().tolist())
    both = frame[frame["part"] == fig.PART_NAMES[0]]["accuracy"].to_numpy()
    assert both == pytest.approx(run.state.accuracy_matrix("test")[3])  # both parts = the accuracy matrix
    at = _open(keys.MASKS, runs / "acl", runs)
    assert "Zeroing the private features costs" in _texts(at)


def test_hypernet_embeddings_are_counted_against_a_random_neighbour(runs):
    run = load_run(runs / "hypernet")
    tasks, vectors = fig.task_embeddings(run)
    assert tasks == [0, 1, 2, 3] and vectors.shape == (4, 96)
    at = _open(keys.EMBEDDINGS, runs / "hypernet", runs)
    assert len(at.get("plotly_chart")) == 1
    assert "nearest embedding (cosine) from their own family" in _texts(at)


@pytest.mark.parametrize("view", [keys.OVERVIEW, keys.ACCURACY, keys.CLUSTERING, keys.COMPARE, keys.STORY])
@pytest.mark.parametrize("method", BASELINES)
def test_every_other_view_opens_a_baseline_run(runs, method, view):
    _open(view, runs / method, runs)
