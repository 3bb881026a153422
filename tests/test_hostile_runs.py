"""Run folders built to hurt: every case of issue 7 against the loader and the catalogue.

Each case damages a copy of a bundled sample run and checks the outcome promised in
docs/reliability.md: a partial run with a warning naming the damage, or one clear
``RunFormatError``; never another exception, never a hang, never a large allocation.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import threading
import tracemalloc
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from explorer import catalog
from prm import safeio
from prm.run import RunFormatError, load_run, read_meta

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_runs" / "digits-classes-prm-s0"
pytestmark = pytest.mark.skipif(not SAMPLE.exists(), reason=f"{SAMPLE} is missing")


@pytest.fixture
def run_copy(tmp_path) -> Path:
    folder = tmp_path / "copy"
    shutil.copytree(SAMPLE, folder)
    return folder


def events(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]


def write_events(folder: Path, records: list[dict]) -> None:
    (folder / "events.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def outcome(folder: Path):
    """load_run's result (or its RunFormatError) and the catalogue row, with a hang guard."""
    result: dict = {}

    def work():
        try:
            result["run"] = load_run(folder)
        except RunFormatError as exc:
            result["error"] = str(exc)
        result["row"] = catalog.describe(folder)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(timeout=20)
    assert not thread.is_alive(), "the loader blocked"
    assert "row" in result, "load_run or describe raised something other than RunFormatError"
    return result


def deep(n: int = 100_000) -> str:
    return "[" * n + "]" * n


# ----------------------------------------------------------------------------- run.json


@pytest.mark.parametrize("write, message", [
    (lambda f: (f / "run.json").write_text(deep()), "not valid JSON"),
    (lambda f: (f / "run.json").write_text("[1, 2]"), "missing schema or config"),
    (lambda f: ((f / "run.json").unlink(), (f / "run.json").mkdir()), "not a regular file"),
    (lambda f: ((f / "run.json").unlink(), os.mkfifo(f / "run.json")), "not a regular file"),
    (lambda f: ((f / "run.json").unlink(), (f / "run.json").symlink_to("/dev/zero")), "outside the run folder"),
    (lambda f: (f / "run.json").write_bytes(b" " * (safeio.MAX_JSON_BYTES + 1)), "MiB allowed"),
    (lambda f: (f / "run.json").write_text(json.dumps({"schema": True, "config": {}})), "missing schema"),
    (lambda f: (f / "run.json").write_text(json.dumps({"schema": 0, "config": {}})), "not valid"),
])
def test_unreadable_run_json_is_one_clear_error_and_an_unreadable_row(run_copy, write, message):
    write(run_copy)
    result = outcome(run_copy)
    assert message in result["error"]
    assert result["row"].status == "unreadable" and message in result["row"].problem


@pytest.mark.parametrize("change, message", [
    ({"lr": float("inf")}, "optim"),
    ({"lr": "fast"}, "optim"),
    ({"hidden": [10**9]}, "model"),
    ({"method": "lwf"}, "method"),
])
def test_an_impossible_config_in_run_json_is_refused(run_copy, change, message):
    meta = json.loads((run_copy / "run.json").read_text())
    for key, value in change.items():
        section = next((s for s in ("optim", "model") if key in meta["config"][s]), None)
        (meta["config"][section] if section else meta["config"])[key] = value
    (run_copy / "run.json").write_text(json.dumps(meta))
    assert message in outcome(run_copy)["error"]


# ----------------------------------------------------------------------------- events.jsonl


def test_events_without_config_skip_everything_with_a_warning(run_copy):
    records = events(run_copy)
    del records[0]["config"]
    write_events(run_copy, records)
    run = outcome(run_copy)["run"]
    assert run.state.started is None and run.state.tasks_done == 0
    assert any("run_started record skipped (config" in w for w in run.warnings)


@pytest.mark.parametrize("mutate, warning", [
    (lambda r: r.update(task=10**30) if r["type"] == "task_end" and r["task"] == 2 else None, "task must be"),
    (lambda r: r.update(test_acc=["x"] * 5) if r["type"] == "task_end" and r["task"] == 2 else None, "test_acc"),
    (lambda r: r.update(val_acc=1e999) if r["type"] == "epoch" else None, "val_acc"),
    (lambda r: r.update(phase="dtd\n![](http://x)") if r["type"] == "epoch" else None, "phase must be one of"),
    (lambda r: r.update(seconds={"train": -1}) if r["type"] == "task_end" and r["task"] == 3 else None, "seconds.train"),
    (lambda r: r["layers"][0].update(dissimilar=[7]) if r["type"] == "dtd" and r["task"] == 2 else None, "dissimilar"),
    (lambda r: r["layers"][0]["xmeans"].update(labels=[0, 5, 0]) if r["type"] == "dtd" and r["task"] == 2 else None,
     "labels"),
    (lambda r: r["layers"][0]["xmeans"]["attempts"][0].update(parent=99) if r["type"] == "dtd" and r["task"] == 4
     else None, "parent"),
    (lambda r: r.update(status="running") if r["type"] == "run_end" else None, "status must be"),
])
def test_a_bad_record_is_skipped_with_a_warning_and_the_rest_kept(run_copy, mutate, warning):
    records = events(run_copy)
    for record in records:
        mutate(record)
    write_events(run_copy, records)
    run = outcome(run_copy)["run"]
    assert any(warning in w for w in run.warnings), run.warnings
    assert run.state.tasks_done >= 2  # what came before the damage is still there


def test_a_split_tree_with_a_cycle_is_refused(tmp_path):
    run_copy = tmp_path / "copy"
    shutil.copytree(ROOT / "sample_runs" / "digits-mixed-prm-s0", run_copy)  # X-means kept splits at step 5
    records = events(run_copy)
    dtd = next(r for r in records if r["type"] == "dtd" and r["task"] == 4)
    kept = [a for a in dtd["layers"][0]["xmeans"]["attempts"] if a["kept"]]
    assert kept, "the sample's DTD step 5 has no kept split"
    kept[0]["child_ids"] = [kept[0]["parent"], kept[0]["parent"] + 1]  # a child that is its own parent
    write_events(run_copy, records)
    run = outcome(run_copy)["run"]
    assert 4 not in run.state.dtd and any("child_ids must be two new ids" in w for w in run.warnings)


def test_records_out_of_order_or_after_run_end_are_skipped(run_copy):
    records = events(run_copy)
    end = {**records.pop(), "status": "stopped"}  # a finished run_end mid-log is refused on its own count
    records.insert(len(records) // 2, end)
    write_events(run_copy, records)
    run = outcome(run_copy)["run"]
    assert run.status == "stopped" and run.state.tasks_done < 5
    assert any("after run_end" in w for w in run.warnings)
    assert len(run.warnings) <= 22  # a flood of skipped records is counted, not listed one by one


def test_an_event_log_over_the_limit_is_read_up_to_it(run_copy, monkeypatch):
    monkeypatch.setattr(safeio, "MAX_EVENTS_BYTES", 40_000)  # the sample's log is 124 kB
    run = outcome(run_copy)["run"]
    assert 0 < run.state.tasks_done < 5 and any("only its first" in w for w in run.warnings)


def test_an_overlong_line_is_skipped_unparsed(run_copy):
    with open(run_copy / "events.jsonl", "a") as log:
        log.write('{"type": "epoch", "x": [' + "0," * (9 * 2**20) + "0]}\n")
    run = outcome(run_copy)["run"]
    assert run.state.tasks_done == 5 and any("longer than 16 MiB; skipped" in w for w in run.warnings)


@pytest.mark.parametrize("kind", ["fifo", "dev-zero-link", "folder"])
def test_an_event_log_that_is_not_a_file_is_never_read(run_copy, kind):
    (run_copy / "events.jsonl").unlink()
    {"fifo": lambda p: os.mkfifo(p), "dev-zero-link": lambda p: p.symlink_to("/dev/zero"),
     "folder": lambda p: p.mkdir()}[kind](run_copy / "events.jsonl")
    run = outcome(run_copy)["run"]
    assert run.state.n_tasks == 0 and run.warnings


# ----------------------------------------------------------------------------- arrays


@pytest.mark.parametrize("file", ["/etc/passwd", "../../run.json", "arrays/../../x.npz", "/dev/stdin",
                                  "arrays/task_000.npz\n", "arrays/dtd_001.npz"])
def test_array_files_named_in_the_log_must_be_the_runs_own(run_copy, file):
    records = events(run_copy)
    record = next(r for r in records if r["type"] == "arrays" and r["kind"] == "task" and r["task"] == 0)
    record["file"] = file
    write_events(run_copy, records)
    run = outcome(run_copy)["run"]
    assert run.mask(0, 0) is None and run.mask(1, 0) is not None and run.state.tasks_done == 5
    assert any("file must be 'arrays/task_000.npz'" in w for w in run.warnings)


@pytest.mark.parametrize("target", ["/dev/stdin", "/dev/zero", "outside"])
def test_an_array_file_that_links_out_or_to_a_device_is_refused(run_copy, target, tmp_path):
    path = run_copy / "arrays" / "task_001.npz"
    if target == "outside":
        target = tmp_path / "elsewhere.npz"
        shutil.copy(path, target)
    path.unlink()
    path.symlink_to(target)
    run = outcome(run_copy)["run"]
    assert run.mask(1, 0) is None and run.mask(0, 0) is not None
    assert any("task_001.npz" in w and "outside the run folder" in w for w in run.warnings)


def _npz_with_member(name: str, header_shape: tuple, payload: bytes, dtype: str = "<f4") -> bytes:
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1, dtype=dtype))
    header["shape"] = header_shape
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    buffer.write(payload)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name, buffer.getvalue())
    return out.getvalue()


def test_a_zip_bomb_inside_an_npz_is_refused_before_anything_is_allocated(run_copy):
    # 256 MiB of zeros declared and present: a 0.3 MB file that inflates to 256 MiB
    bomb = io.BytesIO()
    header = {"descr": "<f4", "fortran_order": False, "shape": (2**26,)}
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("mask_l0.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(member, header)
            zeros = bytes(2**24)
            for _ in range(2**28 // len(zeros)):
                member.write(zeros)
    (run_copy / "arrays" / "task_002.npz").write_bytes(bomb.getvalue())
    assert len(bomb.getvalue()) < 2 * 2**20
    tracemalloc.start()
    run = outcome(run_copy)["run"]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 64 * 2**20, f"peak {peak / 2**20:.0f} MiB"
    assert run.mask(2, 0) is None and any("task_002.npz" in w for w in run.warnings)


@pytest.mark.parametrize("build, message", [
    (lambda: _npz_with_member("mask_l0.npy", (2**40,), b""), "needs 4194304 MiB"),  # header promises 4 TiB
    (lambda: _npz_with_member("mask_l0.npy", (10,), b"\0" * 8), "header promises"),  # fewer bytes than promised
    (lambda: _npz_with_member("mask_l0.npy\n", (1,), b"\0" * 4), "unexpected entry"),
    (lambda: _npz_with_member("../mask_l0.npy", (1,), b"\0" * 4), "unexpected entry"),
    (lambda: _npz_with_member("mask_l0.npy", (1,), b"\0" * 8, dtype="|O"), "dtype object is not a plain number"),
])
def test_npz_members_are_checked_from_their_headers(run_copy, build, message):
    (run_copy / "arrays" / "task_002.npz").write_bytes(build())
    run = outcome(run_copy)["run"]
    assert run.mask(2, 0) is None
    assert any("task_002.npz" in w and message in w for w in run.warnings), run.warnings


def test_duplicate_members_and_too_many_entries_are_refused(run_copy):
    path = run_copy / "arrays" / "task_002.npz"
    with zipfile.ZipFile(path, "w") as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate it is asked to write
        for _ in range(2):
            zf.writestr("mask_l0.npy", b"x")
    assert any("duplicate" in w for w in outcome(run_copy)["run"].warnings)
    with zipfile.ZipFile(path, "w") as zf:
        for n in range(200):
            zf.writestr(f"d{n}/", b"")
    assert any("200 entries" in w for w in outcome(run_copy)["run"].warnings)


def test_arrays_of_the_wrong_shape_dtype_or_range_are_dropped_one_by_one(run_copy):
    path = run_copy / "arrays" / "task_003.npz"
    with np.load(path) as data:
        arrays = dict(data)
    arrays["mask_l0"] = arrays["mask_l0"][:5]
    arrays["mask_l1"] = arrays["mask_l1"] * 3
    arrays["embedding_l0"] = np.full_like(arrays["embedding_l0"], np.nan)
    arrays["accumulated_l0"] = arrays["accumulated_l0"].astype(np.int64)
    arrays["evil_l0"] = np.zeros(3)
    np.savez(path, **arrays)
    run = outcome(run_copy)["run"]
    dropped = " ".join(run.warnings)
    for name in ("mask_l0", "mask_l1", "embedding_l0", "accumulated_l0", "evil_l0"):
        assert f"{name} ignored" in dropped
    assert run.embedding(3, 1) is not None and run.mask(3, 0) is None


def test_projections_whose_rows_do_not_match_are_ignored(run_copy):
    with np.load(run_copy / "projections.npz") as data:
        arrays = dict(data)
    arrays["pca_l0"] = arrays["pca_l0"][:2]
    np.savez(run_copy / "projections.npz", **arrays)
    run = outcome(run_copy)["run"]
    assert run.stored_projection("pca", 0) is None and run.stored_projection("pca", 1) is not None
    assert any("projections.npz: layer 0 ignored" in w for w in run.warnings)


# ----------------------------------------------------------------------------- summary.json


@pytest.mark.parametrize("summary", [
    json.dumps({"acc": "x"}), deep(), "[]", json.dumps({"status": "finished", "n_tasks": 5, "tasks_done": 9}),
])
def test_a_bad_summary_is_ignored_with_a_warning_and_recomputed_for_the_picker(run_copy, summary):
    (run_copy / "summary.json").write_text(summary)
    result = outcome(run_copy)
    assert result["run"].summary is None and any("summary.json: ignored" in w for w in result["run"].warnings)
    row = result["row"]
    assert row.status == "finished" and row.acc == pytest.approx(result["run"].state.accuracy_matrix()[-1].mean())


# ----------------------------------------------------------------------------- catalogue


def test_the_catalogue_lists_an_unreadable_run_and_carries_on(tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(SAMPLE, root / "good")
    (root / "bad").mkdir()
    (root / "bad" / "run.json").write_text(deep())
    (root / "stray-file").write_text("not a run")
    (root / "log-only").mkdir()
    (root / "log-only" / "events.jsonl").write_text("{}\n")
    rows = {p.name: catalog.describe(p) for p in __import__("prm.run", fromlist=["list_runs"]).list_runs(root)}
    assert set(rows) == {"good", "bad", "log-only"}
    assert rows["good"].status == "finished"
    assert rows["bad"].status == rows["log-only"].status == "unreadable"
    assert rows["bad"].label.startswith("unreadable") and rows["bad"].label != rows["log-only"].label


def test_a_runs_root_that_is_a_file_lists_nothing(tmp_path):
    from prm.run import list_runs

    (tmp_path / "file").write_text("x")
    assert list_runs(tmp_path / "file") == [] and list_runs(tmp_path / "missing") == []
    assert "is a file" in catalog.runs_folder_problem(tmp_path / "file" / "runs")


def test_a_run_json_naming_this_host_and_a_dead_or_foreign_pid_is_not_running(run_copy):
    meta = json.loads((run_copy / "run.json").read_text())
    records = events(run_copy)
    write_events(run_copy, records[:-1])  # no run_end
    for pid, start in ((0, None), (-1, None), (1, None), (os.getppid(), None), (os.getpid(), 12345)):
        meta.update(host=socket.gethostname(), pid=pid, pid_start=start)
        (run_copy / "run.json").write_text(json.dumps(meta))
        run = outcome(run_copy)["run"]
        assert run.status == "failed", (pid, start)
        assert read_meta(run_copy)["pid"] == pid
