"""Unit tests of the explorer's pure figure builders on a tiny recorded run."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import plotly.graph_objects as go
import pytest

from explorer import archive, live
from explorer.figures import accuracy, clustering, compare, embeddings, masks, overview
from prm import analysis, similarity
from prm import compare as compare_tables
from prm.engine import train_sequence
from prm.run import RunWriter, load_run
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A 4-task digits-mixed PRM run (both families, 3 DTD steps) and its HAT counterpart."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for method in ("prm", "hat"):
        cfg = tiny_config(sequence="digits-mixed", n_tasks=4, method=method)
        train_sequence(cfg, emit=RunWriter(root / method, config=cfg))
        out[method] = load_run(root / method)
    return out


def test_metrics_and_overview(runs):
    state = runs["prm"].state
    m = analysis.run_metrics(state)
    assert 0 <= m["acc"] <= 1 and m["fwt"] is None and m["ct"] > 0 and m["tasks_done"] == 4
    m_stl = analysis.run_metrics(state, stl=runs["hat"].state)  # any full matrix works as a reference
    assert m_stl["fwt"] == pytest.approx(float(np.mean(np.diag(state.accuracy_matrix()) -
                                                       np.diag(runs["hat"].state.accuracy_matrix()))))
    strip = overview.sequence_strip(state)
    assert sum(len(bar.x) for bar in strip.data) == 4
    phases = overview.phase_seconds(state)
    assert set(phases["task"]) == {"T1", "T2", "T3", "T4"}
    assert phases[phases["phase"].str.startswith("X-means")]["seconds"].iloc[1:].gt(0).all()
    assert isinstance(overview.phase_figure(phases), go.Figure)
    summary = overview.similarity_summary(state)
    assert summary["decision"].iloc[0].startswith("first task") and "l1:" in summary["decision"].iloc[3]


def test_accuracy_builders(runs):
    state = runs["prm"].state
    fig = accuracy.heatmap(state.accuracy_matrix(), state.tasks, upto=1)
    z = np.array(fig.data[0].z, dtype=float)
    assert np.isnan(z[2:]).all() and not np.isnan(z[1, :2]).any()
    assert "tested on" in fig.data[0].hovertext[1][0]
    diff = accuracy.difference(state, runs["hat"].state)
    assert diff.shape == (4, 4) and np.isnan(diff[0, 1])
    assert accuracy.heatmap(diff, state.tasks, diverging=True).data[0].zmid == 0
    assert len(accuracy.curves(state).data) == 4
    table = accuracy.matrix_table(state)  # long: one row per learnt pair (j ≥ i) of the 4 tasks
    assert list(table.columns) == ["after", "tested on", "accuracy", "change since learnt"] and len(table) == 10


def test_embedding_steps_and_frames(runs):
    run = runs["prm"]
    assert embeddings.steps(run) == ["T2", "T3", "T4", embeddings.END]
    proj = embeddings.precomputed(run, 0, "pca")
    assert proj is not None and proj.coords.shape == (7, 2) and embeddings.precomputed(run, 0, "umap") is None
    frame = embeddings.step_frame(run, 0, proj, "T4")
    assert list(frame["task"]) == ["T1", "T2", "T3", "T4"] and frame["is_dtd"].tolist() == [False] * 3 + [True]
    labels = run.state.dtd[3].layers[0]["xmeans"]["labels"]
    assert frame["cluster"].tolist() == [str(label) for label in labels]
    assert frame["relation"].iloc[-1] == "new task" and frame["nearest"].str.contains("T").all()
    end = embeddings.step_frame(run, 1, proj, embeddings.END)
    assert end["cluster"].eq("").all() and end["call"].eq("").all() and len(end) == 4
    fig = embeddings.figure(frame, title="t")
    assert any("nearest" in (t.hovertext or [""])[0] for t in fig.data)
    moved, paths = embeddings.trajectory_projection(run, 0, frame)
    assert len(paths) == 4 and all(np.allclose(p[-1], moved.iloc[n][["x", "y"]].to_numpy(float))
                                   for n, (_, p) in enumerate(paths))
    computed = embeddings.compute(run, 0, "tsne")
    assert computed.coords.shape == (7, 2) and computed.method == "tsne"


def test_clustering_record_and_evidence(runs):
    run = runs["prm"]
    record = run.state.dtd[3]
    table = clustering.decision_table(record, 0)
    assert len(table) == len(record.layers[0]["xmeans"]["attempts"]) >= 1
    assert {"BIC parent", "BIC children", "kept", "reason"} <= set(table.columns)
    assert isinstance(clustering.decision_tree(record, 0), go.Figure)
    pts = run.dtd_embeddings(3, 0)
    d = similarity.pairwise(pts, "euclidean")
    assert np.allclose(np.diag(d), 0) and np.allclose(d, d.T)
    assert np.allclose(np.diag(similarity.pairwise(pts, "cosine")), 1)
    ari = clustering.agreement(run.state)
    assert len(ari) == 3 * 2 and ari["ARI"].between(-1, 1).all()
    ev = analysis.pair_evidence(run, 3, 0, 0, 3)
    assert ev["distance"] == pytest.approx(d[0, 3], rel=1e-5) and set(ev["jaccard"]) == {"l0", "l1"}
    assert np.isfinite(ev["bic_change"])
    assert analysis.jaccard(np.array([1, 1, 0]), np.array([1, 0, 0])) == 0.5
    assert analysis.jaccard(np.zeros(3), np.zeros(3)) == 0.0


def test_mask_builders(runs):
    run = runs["prm"]
    tasks, m = masks.task_masks(run, 0)
    assert tasks == [0, 1, 2, 3] and m.shape == (4, 32)
    order = masks.unit_order(m)
    first = [int(np.argmax(m[:, u] > 0.5)) if (m[:, u] > 0.5).any() else 4 for u in order]
    assert first == sorted(first)
    parts = masks.relaxed_units(run, 2, 0)
    assert parts["relaxed"].sum() == ((parts["accumulated"] > 0.5) & (parts["protected"] <= 0.5)).sum()
    hat = masks.relaxed_units(runs["hat"], 2, 0)
    assert hat["relaxed"].sum() == 0  # HAT protects everything it used
    assert masks.relaxed_units(run, 0, 0) is None
    cap = masks.capacity_table(run.state)
    assert len(cap) == 8 and cap["capacity used"].between(0, 1).all()
    _, overlap = masks.overlap_matrix(run, 1)
    assert np.allclose(np.diag(overlap), 1) and np.allclose(overlap, overlap.T)
    for fig in (masks.mask_heatmap(run, 0), masks.relaxed_figure(run, 2, 0), masks.overlap_figure(run, 0),
                masks.capacity_figure(cap)):
        assert isinstance(fig, go.Figure)


def test_compare_builders(runs):
    states = {"prm": (runs["prm"].state, 0), "hat": (runs["hat"].state, 0), "prm2": (runs["prm"].state, 1)}
    table = compare_tables.per_run(states)
    assert list(table["method"]) == ["prm", "hat", "prm"] and table["FWT"].isna().all()
    summary = compare_tables.per_method(table)
    assert summary.set_index("method").loc["prm", "seeds"] == 2
    assert summary.set_index("method").loc["prm", "Acc sd"] == pytest.approx(0.0)
    assert len(compare.bars(summary).data) == 4
    groups = compare_tables.group_matrices(table, {k: s for k, (s, _) in states.items()})
    assert [len(compare.matrix(g, zrange=compare.matrix_range(groups)).data) for g in groups] == [1, 1]


def test_archive_round_trip_and_refusals(runs, tmp_path):
    data = archive.zip_run(runs["prm"].path)
    folder = archive.extract_run_zip(data, root=tmp_path, name="prm.zip")
    assert load_run(folder).state.tasks_done == 4
    assert archive.extract_run_zip(data, root=tmp_path, name="prm.zip").name == "prm-2"

    def zipped(files: dict[str, bytes]) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for name, content in files.items():
                zf.writestr(name, content)
        return buf.getvalue()

    run_json = (runs["prm"].path / "run.json").read_bytes()
    for files, message in [({"../run.json": run_json}, "unsafe"), ({"/abs/run.json": run_json}, "unsafe"),
                           ({"run.json": run_json, "evil.py": b"print()"}, "unexpected"),
                           ({"events.jsonl": b""}, "no run.json"),
                           ({"run.json": b"{not json"}, "readable run")]:
        with pytest.raises(archive.UploadError, match=message):
            archive.extract_run_zip(zipped(files), root=tmp_path / "up", name="x.zip")
    with pytest.raises(archive.UploadError, match="not a zip"):
        archive.extract_run_zip(b"hello", root=tmp_path, name="x.zip")
    assert not (tmp_path / "up").exists() or not any((tmp_path / "up").iterdir())


def test_live_command_and_progress(runs, tmp_path):
    cmd = live.LiveOptions(sequence="digits-classes", n_tasks=2, width=32, epochs=3, umap=False).command(tmp_path / "r")
    assert cmd[1:4] == ["-m", "prm", "run"] and "--no-umap" in cmd and cmd[cmd.index("--n-tasks") + 1] == "2"
    fraction, text = live.progress(runs["prm"].state)
    assert fraction == 1.0 and text.startswith("finished")


def test_oracle_figure_shows_the_measured_transfer_up_to_the_step():
    oracle = [[0.9, 0.8, 0.1], [0.7, 0.95, 0.2], [0.1, 0.15, 0.85]]
    tasks = [{"name": f"t{i}", "family": "style-A", "classes": list(range(10))} for i in range(3)]
    fig = clustering.oracle_figure(oracle, tasks, step=1, labels=[0, 0])
    assert np.asarray(fig.data[0].z).shape == (2, 2) and fig.data[0].z[0][1] == pytest.approx((0.8 - 0.1) / (0.95 - 0.1))


def test_sequence_strip_and_symbols_cover_every_family():
    from explorer.figures.common import family_colour, family_symbol
    from prm.run import load_run

    run = load_run("sample_runs/mnist5k-mixed-prm-s0")
    fig = overview.sequence_strip(run.state)
    assert sum(len(bar.x) for bar in fig.data) == run.state.n_tasks
    families = {t["family"] for t in run.state.tasks}
    assert len({family_symbol(f) for f in families}) == len(families)
    assert len({family_colour(f) for f in families}) == len(families)


def test_units_are_counted_protected_partially_relaxed_or_free_on_hand_made_masks():
    """Six units: 0 protected as by HAT, 1 partially relaxed (0.7: prm.relax 0.3), 2 free, 3
    protected (0.97 is within RELAXED_BY of HAT's 1), 4 partially (0.06 is not below 0.05),
    5 unused by every earlier task (not counted, whatever its protection)."""
    from types import SimpleNamespace

    accumulated, protected = np.array([1, 1, 1, 1, 1, 0.2]), np.array([1, 0.7, 0.0, 0.97, 0.06, 0])
    run = SimpleNamespace(accumulated=lambda t, layer: accumulated if t == 2 else None,
                          protected=lambda t, layer: protected, meta={"config": {"method": "prm+"}})
    parts = masks.relaxed_units(run, 3, 0)
    assert parts["free"].tolist() == [0, 0, 1, 0, 0, 0] and parts["partial"].tolist() == [0, 1, 0, 0, 1, 0]
    assert masks.unit_counts(parts) == {"used": 5, "protected": 2, "partial": 2, "free": 1}
    assert masks.kept_gradient(parts) == pytest.approx((0.3 + 0.94) / 2)  # the median of two
    assert masks.unit_sentence(parts, 3, layer=0) == (
        "While learning T4, HAT would protect the 5 units of layer 0 that earlier tasks used; this run kept 2 "
        "protected, relaxed 2 partially (to 0.62 of the gradient) and freed 1.")
    third = masks.relaxed_figure(run, 3, 0).data[0].z[2]
    assert sorted(third) == [0, 0, 0, 1.5, 1.5, 2]  # partial and free told apart in the chart too
    hat = {**parts, "protected": accumulated, "partial": np.zeros(6), "free": np.zeros(6), "relaxed": np.zeros(6)}
    assert masks.unit_sentence(hat, 3, layer=0).endswith("kept 5 protected, relaxed 0 partially and freed 0.")


def test_a_partly_relaxed_unit_counts_as_relaxed(tmp_path, tiny):
    from prm.config import PRMConfig
    from prm.engine import train_sequence
    from prm.run import RunWriter, load_run

    def recorded(method: str, **prm):  # three writers: every earlier one truly similar
        cfg = tiny(sequence="digits-writers", method=method, prm=PRMConfig(dtd_epochs=4, head_epochs=2, **prm))
        train_sequence(cfg, emit=RunWriter(tmp_path / method, config=cfg))
        return load_run(tmp_path / method)

    run = recorded("prm-t", relax=0.3)  # similar-only units protected at 0.7, kept 0.3 of their gradient
    task = 2
    parts = masks.relaxed_units(run, task, 0)
    partly = (parts["accumulated"] > 0.5) & (parts["protected"] > 0.5) & (parts["protected"] < 0.8)
    assert partly.any() and parts["relaxed"][partly].all()
    assert parts["partial"][partly].all() and not parts["free"][partly].any()  # never counted as free
    counts = masks.unit_counts(parts)
    assert counts["partial"] == partly.sum() and counts["free"] == 0
    assert masks.kept_gradient(parts) == pytest.approx(0.3, abs=0.01)  # prm.relax, as the masks record it
    full = masks.relaxed_units(recorded("hat"), task, 0)
    assert full["relaxed"].sum() == 0
