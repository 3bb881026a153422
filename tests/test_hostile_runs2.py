"""The second audit's run-folder cases (A06, A07, A10, A11, C08b, R01): what-if parent links no
path function can take, strings that are not text, a 'finished' run that learnt part of its
sequence, and a summary.json that contradicts the event log. Each test damages a copy of a
bundled sample run and failed before its fix."""

from __future__ import annotations

import io
import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from explorer import archive, catalog
from prm import metrics
from prm.run import RunFormatError, RunParent, load_run

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_runs" / "digits-classes-prm-s0"
pytestmark = pytest.mark.skipif(not SAMPLE.exists(), reason=f"{SAMPLE} is missing")
N_TASKS = 5  # digits-classes
LAYERS = 2  # the sample's masked layers


@pytest.fixture
def run_copy(tmp_path) -> Path:
    return Path(shutil.copytree(SAMPLE, tmp_path / "runs" / "copy"))


def events(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]


def write_events(folder: Path, records: list[dict]) -> None:
    (folder / "events.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def set_parent(folder: Path, target: str) -> None:
    edit_json(folder / "run.json", lambda m: m.update(parent={"run": target, "name": "p", "task": 1,
                                                             "dissimilar": [[0]] * LAYERS}))


def upload(folder: Path, root: Path) -> Path:
    """``folder`` zipped and uploaded into ``root`` (raises ``archive.UploadError``)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.writestr(f"{folder.name}/{path.relative_to(folder).as_posix()}", path.read_bytes())
    return archive.extract_run_zip(buffer.getvalue(), root=root, name=f"{folder.name}.zip")


# ----------------------------------------------------------------------------- A06, A07: parent links

BAD_PARENTS = ["/tmp/x\x00y", "/tmp/x\ny", "/tmp/\x1b[31mred", "/tmp/x\x85y", "/tmp/sur\ud800rogate",
               "/" + "x" * 5000]


@pytest.mark.parametrize("target", BAD_PARENTS, ids=["nul", "newline", "escape", "c1", "surrogate", "long"])
def test_a_parent_path_no_path_function_can_take_is_refused_with_a_warning(run_copy, target):
    set_parent(run_copy, target)
    run = load_run(run_copy)
    assert run.meta["parent"] is None and run.parent is None
    assert any(w.startswith("run.json: parent ignored (parent.run") for w in run.warnings), run.warnings
    assert catalog.describe(run_copy).parent is None


def test_a_good_parent_link_still_loads_without_a_warning(run_copy):
    set_parent(run_copy, str(SAMPLE))
    run = load_run(run_copy)
    assert run.warnings == () and run.parent == RunParent(run=str(SAMPLE), name="p", task=1, dissimilar=((0,), (0,)))


@pytest.mark.parametrize("target", ["/tmp/x\x00y", "/tmp/sur\ud800rogate"], ids=["nul", "surrogate"])
def test_an_upload_naming_such_a_parent_is_refused(run_copy, tmp_path, target):
    set_parent(run_copy, target)
    root = tmp_path / "uploads"
    with pytest.raises(archive.UploadError, match="parent ignored"):
        upload(run_copy, root)
    assert not any(root.iterdir())


def _panel(open_: str, root: str) -> None:
    """The what-if panel of DTD step 1 of ``open_``, with ``root``'s runs listed."""
    from pathlib import Path

    from explorer.views import whatif as view
    from explorer.views.common import Context, entries, load

    found = entries([Path(root)])
    run = load(Path(open_))
    entry = next(e for e in found if e.path == Path(open_))
    view.render(Context(run=run, entry=entry, task=1, layer=0, entries=tuple(found)), step=1, layer=0)


@pytest.mark.parametrize("opened", ["host", "loop-child", "nul-child"])
def test_a_parent_link_that_cannot_be_resolved_is_a_missing_parent(tmp_path, opened):
    """A parent path that is a symlink loop passes every check on its text; resolving it raises
    RuntimeError (and a NUL ValueError). Listing such a child must not break the Clustering
    view of any run, nor of the child itself."""
    root = tmp_path / "runs"
    root.mkdir()
    for name in ("host", "loop-child", "nul-child"):
        shutil.copytree(SAMPLE, root / name)
    (root / "loop1").symlink_to(root / "loop2")
    (root / "loop2").symlink_to(root / "loop1")
    set_parent(root / "loop-child", str(root / "loop1"))
    set_parent(root / "nul-child", "/tmp/x\x00y")
    at = AppTest.from_function(_panel, kwargs={"open_": str(root / opened), "root": str(root)}, default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    if opened == "loop-child":
        assert any("is not among the listed runs" in c.value for c in at.caption)


# ----------------------------------------------------------------------------- A10, A11: lone surrogates

SURROGATE = "sur\ud800rogate"


def _name_first_task(records: list[dict]) -> str:
    records[0]["tasks"][0]["name"] = SURROGATE
    return "tasks[0].name"


def _family_first_task(records: list[dict]) -> str:
    records[0]["tasks"][0]["family"] = SURROGATE
    return "tasks[0].family"


def _run_end_error(records: list[dict]) -> str:
    records[-1].update(status="failed", error=f"Traceback {SURROGATE}")
    return "error"


@pytest.mark.parametrize("damage", [_name_first_task, _family_first_task, _run_end_error])
def test_a_record_with_a_lone_surrogate_is_skipped_naming_the_field(run_copy, damage):
    (run_copy / "summary.json").unlink()
    records = events(run_copy)
    field = damage(records)
    write_events(run_copy, records)
    run = load_run(run_copy)
    assert any(field in w and "lone surrogate" in w for w in run.warnings), run.warnings
    texts = [t["name"] for t in run.state.tasks] + [t["family"] for t in run.state.tasks]
    texts += [run.state.end.error or ""] if run.state.end else []
    assert all(t.encode("utf-8") for t in texts)  # every string the views show can be encoded
    assert catalog.describe(run_copy).status == "failed"


def test_a_summary_with_a_lone_surrogate_is_ignored_naming_the_field(run_copy):
    edit_json(run_copy / "summary.json", lambda s: s.update(name=SURROGATE))
    run = load_run(run_copy)
    assert any(w.startswith("summary.json: ignored (name") and "lone surrogate" in w for w in run.warnings)


def test_a_run_json_field_with_a_lone_surrogate_is_dropped_with_a_warning(run_copy):
    edit_json(run_copy / "run.json", lambda m: m.update(host=SURROGATE))
    run = load_run(run_copy)
    assert run.meta["host"] is None
    assert any(w.startswith("run.json: host ignored") and "lone surrogate" in w for w in run.warnings)


def test_a_config_string_with_a_lone_surrogate_makes_run_json_unreadable(run_copy):
    edit_json(run_copy / "run.json", lambda m: m["config"].update(data_dir=f"/data/{SURROGATE}"))
    with pytest.raises(RunFormatError, match="config.data_dir.*lone surrogate"):
        load_run(run_copy)
    assert catalog.describe(run_copy).status == "unreadable"


def test_an_upload_with_a_surrogate_task_name_is_refused(run_copy, tmp_path):
    (run_copy / "summary.json").unlink()
    records = events(run_copy)
    _name_first_task(records)
    write_events(run_copy, records)
    root = tmp_path / "uploads"
    with pytest.raises(archive.UploadError, match="lone surrogate"):
        upload(run_copy, root)
    assert not any(root.iterdir())


# ----------------------------------------------------------------------------- C08b: finished too early


def _cut_after_first_task(folder: Path, status: str) -> list[dict]:
    records = events(folder)
    first_end = next(n for n, r in enumerate(records) if r["type"] == "task_end")
    records = records[: first_end + 1] + [{**records[-1], "status": status}]
    write_events(folder, records)
    (folder / "summary.json").unlink()
    return records


def test_a_run_end_finished_before_the_last_task_is_refused(run_copy):
    _cut_after_first_task(run_copy, "finished")
    run = load_run(run_copy)
    assert run.status == "failed" and run.state.end is None and run.state.tasks_done == 1
    assert any("run_end record skipped" in w and f"finished after 1 of {N_TASKS} tasks" in w for w in run.warnings)
    assert catalog.describe(run_copy).status == "failed"


def test_a_run_stopped_after_one_task_is_still_stopped(run_copy):
    _cut_after_first_task(run_copy, "stopped")
    run = load_run(run_copy)
    assert run.status == "stopped" and run.warnings == ()


# ----------------------------------------------------------------------------- R01: summary against the log


def test_a_summary_the_log_contradicts_is_not_trusted_by_the_picker(run_copy):
    """R01: the log is cut after task 2 (no run_end); the summary claims finished 5/5, Acc 0.999."""
    records = events(run_copy)
    second_end = [n for n, r in enumerate(records) if r["type"] == "task_end"][1]
    write_events(run_copy, records[: second_end + 1])
    edit_json(run_copy / "summary.json", lambda s: s.update(status="finished", acc=0.999, tasks_done=N_TASKS))
    entry, run = catalog.describe(run_copy), load_run(run_copy)
    assert (entry.status, entry.tasks_done) == (run.status, run.state.tasks_done) == ("failed", 2)
    assert entry.acc == metrics.average_accuracy(run.state.accuracy_matrix("test"))


@pytest.mark.parametrize("change", [{"acc": 0.999}, {"tasks_done": 4}, {"status": "stopped"}, {"n_tasks": 6}])
def test_a_summary_that_differs_from_the_logs_last_records_is_not_trusted(run_copy, change):
    edit_json(run_copy / "summary.json", lambda s: s.update(change))
    entry, run = catalog.describe(run_copy), load_run(run_copy)
    assert (entry.status, entry.tasks_done, entry.n_tasks) == ("finished", N_TASKS, N_TASKS)
    assert entry.acc == metrics.average_accuracy(run.state.accuracy_matrix("test"))


def test_a_summary_the_log_bears_out_is_used_without_reading_the_log(run_copy, monkeypatch):
    """The summary is the picker's cache (a runs folder may hold thousands of runs): when the
    log's last records agree with it, the log is not folded."""
    def refuse(folder):
        raise AssertionError(f"the whole log of {folder} was read")

    monkeypatch.setattr(catalog, "load_run", refuse)
    entry = catalog.describe(run_copy)
    summary = json.loads((run_copy / "summary.json").read_text())
    assert (entry.status, entry.tasks_done, entry.acc) == (summary["status"], summary["tasks_done"], summary["acc"])


def test_every_bundled_sample_summary_is_borne_out_by_its_log(monkeypatch):
    monkeypatch.setattr(catalog, "load_run", lambda folder: pytest.fail(f"{folder.name}'s summary was not trusted"))
    samples = [p for p in sorted(SAMPLE.parent.iterdir()) if (p / "summary.json").is_file()]
    assert samples and all(catalog.describe(p).status == "finished" for p in samples)


def test_a_long_last_record_is_found_by_a_wider_tail_read(run_copy, monkeypatch):
    """A failed run's run_end holds its traceback (up to 100 000 characters): the tail read
    widens rather than giving up on the summary or misreading it."""
    monkeypatch.setattr(catalog, "load_run", lambda folder: pytest.fail("the summary was not trusted"))
    records = events(run_copy)
    records[-1].update(status="failed", error="x" * 60_000)
    write_events(run_copy, records)
    edit_json(run_copy / "summary.json", lambda s: s.update(status="failed"))
    entry = catalog.describe(run_copy)
    assert (entry.status, entry.tasks_done) == ("failed", N_TASKS)
    assert np.isclose(entry.acc, json.loads((run_copy / "summary.json").read_text())["acc"])
    assert os.path.getsize(run_copy / "events.jsonl") > 60_000
