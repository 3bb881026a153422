"""The run folder: write, load, replay; partial, corrupt and foreign folders."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from prm.engine import train_sequence
from prm.run import SCHEMA, RunFormatError, RunState, RunWriter, apply_events, finalize_run, list_runs, load_run, parse_lines
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("runs") / "prm-run"
    cfg = tiny_config(method="prm")
    result = train_sequence(cfg, emit=RunWriter(folder, config=cfg))
    return folder, result, cfg


def copy_run(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_round_trip_gives_back_what_was_trained(recorded):
    folder, result, cfg = recorded
    run = load_run(folder)
    assert run.status == "finished" and run.warnings == ()
    assert run.config == cfg
    assert np.allclose(run.state.accuracy_matrix("test"), result.test_acc, equal_nan=True, atol=1e-6)
    assert run.state.tasks_done == 3 and len(run.state.tasks) == 3
    assert sorted(run.state.dtd) == [1, 2]
    assert run.mask(2, 1).shape == (32,)
    assert run.dtd_embeddings(2, 0).shape == (3, 32)
    assert run.learnt(0) == [0, 1, 2] and run.dtd_steps() == [1, 2]
    assert run.summary["acc"] == pytest.approx(np.mean(result.test_acc[-1]), abs=1e-6)
    # projections of every final embedding plus each DTD embedding, per layer
    tasks, is_dtd, coords = run.stored_projection("pca", 0)
    assert coords.shape == (3 + 2, 2) and list(is_dtd) == [False, False, False, True, True]


def test_run_json_holds_schema_seed_and_versions(recorded):
    meta = json.loads((recorded[0] / "run.json").read_text())
    assert meta["schema"] == SCHEMA and meta["seed"] == 0
    assert {"python", "torch", "numpy"} <= set(meta["versions"]) and meta["started_at"]


def test_truncated_last_line_gives_a_partial_run_with_a_warning(recorded, tmp_path):
    folder = copy_run(recorded[0], tmp_path / "cut")
    log = folder / "events.jsonl"
    text = log.read_text()
    cut = text.rstrip("\n").rfind("\n") + 1  # chop the run_end line in half
    log.write_text(text[: cut + 10])
    (folder / "summary.json").unlink()
    run = load_run(folder)
    assert run.state.tasks_done == 3 and run.state.end is None
    assert any("truncated last line" in w for w in run.warnings)
    # the writer's pid (this test process) is alive, so the run looks like it is still going
    assert run.status == "running"


def test_run_without_closing_record_whose_writer_died_is_failed(recorded, tmp_path):
    folder = copy_run(recorded[0], tmp_path / "killed")
    lines = (folder / "events.jsonl").read_text().splitlines(keepends=True)
    (folder / "events.jsonl").write_text("".join(lines[: len(lines) // 2]))
    meta = json.loads((folder / "run.json").read_text())
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    meta["pid"] = int(dead.stdout)
    (folder / "run.json").write_text(json.dumps(meta))
    run = load_run(folder)
    assert run.status == "failed"
    assert "without a closing record" in run.status_note
    assert run.state.tasks_done < 3


def test_corrupt_middle_line_and_missing_or_bad_arrays_are_warnings(recorded, tmp_path):
    folder = copy_run(recorded[0], tmp_path / "bad")
    lines = (folder / "events.jsonl").read_text().splitlines(keepends=True)
    lines[3] = "{not json\n"
    (folder / "events.jsonl").write_text("".join(lines))
    (folder / "arrays" / "task_001.npz").unlink()
    (folder / "arrays" / "task_002.npz").write_bytes(b"PK\x03\x04 garbage")
    run = load_run(folder)
    assert run.status == "finished"
    assert any("corrupt line 4" in w for w in run.warnings)
    assert sum("task_00" in w for w in run.warnings) == 2
    assert run.mask(1, 0) is None and run.mask(0, 0) is not None


def test_pickled_arrays_are_never_loaded(recorded, tmp_path):
    folder = copy_run(recorded[0], tmp_path / "pickle")
    np.savez(folder / "arrays" / "task_000.npz", mask_l0=np.array([{"evil": 1}], dtype=object))
    run = load_run(folder)
    assert run.mask(0, 0) is None
    assert any("task_000" in w for w in run.warnings)


@pytest.mark.parametrize("damage, message", [
    (lambda f: (f / "run.json").unlink(), "no run.json"),
    (lambda f: (f / "run.json").write_text("{"), "not valid JSON"),
    (lambda f: (f / "run.json").write_text(json.dumps({"schema": SCHEMA + 1, "config": {}})), "upgrade"),
])
def test_folders_that_are_not_readable_runs_raise_a_clear_error(recorded, tmp_path, damage, message):
    folder = copy_run(recorded[0], tmp_path / "broken")
    damage(folder)
    with pytest.raises(RunFormatError, match=message):
        load_run(folder)
    with pytest.raises(RunFormatError, match="no such run folder"):
        load_run(tmp_path / "nowhere")


def test_apply_events_is_pure_and_incremental(recorded):
    records, problems = parse_lines((recorded[0] / "events.jsonl").read_text())
    assert problems == []
    empty = RunState()
    middle = len(records) // 2
    half = apply_events(empty, records[:middle])
    full = apply_events(half, records[middle:])
    assert empty.epochs == () and len(half.epochs) < len(full.epochs)
    assert full == apply_events(RunState(), records)


def test_writer_refuses_to_overwrite_a_run(recorded):
    with pytest.raises(FileExistsError):
        RunWriter(recorded[0], config=recorded[2])


def test_list_runs_finds_run_folders_newest_first(recorded, tmp_path):
    a = copy_run(recorded[0], tmp_path / "a")
    b = copy_run(recorded[0], tmp_path / "b")
    (tmp_path / "not-a-run").mkdir()
    import os

    os.utime(a / "run.json", (1, 1))
    assert list_runs(tmp_path) == [b, a]
    assert list_runs(tmp_path / "missing") == []


@pytest.mark.slow
def test_finalize_computes_umap_projections(recorded, tmp_path):
    folder = copy_run(recorded[0], tmp_path / "umap")
    meta = json.loads((folder / "run.json").read_text())
    meta["config"]["record"]["projections"] = ["pca", "umap"]
    (folder / "run.json").write_text(json.dumps(meta))
    lines = (folder / "events.jsonl").read_text().splitlines(keepends=True)
    started = json.loads(lines[0])
    started["config"] = meta["config"]  # run.json and the log must agree, or the log is ignored
    (folder / "events.jsonl").write_text(json.dumps(started) + "\n" + "".join(lines[1:]))
    finalize_run(folder)
    run = load_run(folder)
    coords = run.stored_projection("umap", 1)[2]
    assert coords.shape == (5, 2) and np.isfinite(coords).all()


def test_oracle_transfer_of_a_style_sequence_is_recorded(tmp_path):
    cfg = tiny_config(sequence="mnist5k-styles", n_tasks=3, method="hat")
    cfg = cfg.replace(optim=cfg.optim.__class__(max_epochs=1, patience=1))
    train_sequence(cfg, emit=RunWriter(tmp_path / "styles", config=cfg))
    run = load_run(tmp_path / "styles")
    oracle = np.array(run.state.oracle_transfer)
    assert oracle.shape == (3, 3) and ((0 <= oracle) & (oracle <= 1)).all()
    assert run.state.tasks[0]["family"] in {"style-A", "style-B", "style-C", "permuted", "rotated-90"}


@pytest.mark.slow
def test_a_umap_fit_leaves_torch_threads_as_they_were():
    import torch

    from prm.projection import project

    before = torch.get_num_threads()
    project(np.random.default_rng(0).random((12, 8)), method="umap", seed=0)
    assert torch.get_num_threads() == before
