"""Numbers no float can hold, in every file of a run folder.

JSON allows an integer of any length (``1`` and 400 zeros) and Python's ``json`` also reads
``NaN`` and ``Infinity``. Such a number in ``summary.json``, ``run.json`` or an event line must
reject that record with a warning naming the field (or, for ``run.json``, one clear
``RunFormatError``); never an ``OverflowError`` or ``ValueError`` from the picker, the loader,
the app or the command line.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from explorer import archive, catalog
from explorer import state as keys
from prm import records
from prm.cli import main
from prm.methods.base import Shape
from prm.run import RunFormatError, load_run, read_meta
from prm.run.reading import _check_arrays
from tests.test_app import open_app

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_runs" / "digits-classes-prm-s0"
pytestmark = pytest.mark.skipif(not SAMPLE.exists(), reason=f"{SAMPLE} is missing")

BEYOND_FLOAT = "1" + "0" * 400
"""Valid JSON; ``float()`` of it raises OverflowError."""
BEYOND_INT_STR = "1" + "0" * 5000
"""Valid JSON; Python refuses to convert it from a string (the 4300-digit limit): ValueError."""
UNFIT = [BEYOND_FLOAT, "-" + BEYOND_FLOAT, BEYOND_INT_STR, "NaN", "Infinity", "-Infinity", "1e999"]


def damaged(tmp_path: Path, file: str, old: str, new: str, *, drop_summary: bool = False) -> Path:
    """A copy of the sample with the first ``old`` of ``file`` replaced by ``new`` (raw text:
    ``json.dumps`` could not write these numbers)."""
    folder = Path(shutil.copytree(SAMPLE, tmp_path / "runs" / "damaged"))
    text = (folder / file).read_text()
    assert old in text, f"{old!r} is not in the sample's {file}"
    (folder / file).write_text(text.replace(old, new, 1))
    if drop_summary:
        (folder / "summary.json").unlink()
    return folder


def summary_value(key: str) -> str:
    return f'"{key}": {json.dumps(json.loads((SAMPLE / "summary.json").read_text())[key])}'


# ----------------------------------------------------------------------------- summary.json


@pytest.mark.parametrize("number", UNFIT)
@pytest.mark.parametrize("key", ["acc", "seed", "seconds"])
def test_an_unfit_number_in_the_summary_is_ignored_and_the_log_read_instead(tmp_path, key, number):
    folder = damaged(tmp_path, "summary.json", summary_value(key), f'"{key}": {number}')
    run = load_run(folder)
    assert run.summary is None and run.state.tasks_done == 5
    assert any(w.startswith("summary.json: ignored") and key in w for w in run.warnings), run.warnings
    row = catalog.describe(folder)
    expected = catalog.describe(SAMPLE)
    assert (row.status, row.acc, row.tasks_done) == (expected.status, expected.acc, expected.tasks_done)


def test_the_summary_reader_refuses_an_integer_beyond_float_range_built_in_memory():
    summary = json.loads((SAMPLE / "summary.json").read_text())
    summary["acc"] = int(BEYOND_FLOAT)
    with pytest.raises(records.BadRecord, match="acc"):
        records.parse_summary(summary)


# ----------------------------------------------------------------------------- events.jsonl


@pytest.mark.parametrize("number", UNFIT)
def test_an_unfit_number_in_an_event_skips_that_record_only(tmp_path, number):
    first_epoch = '"type": "epoch", "task": 0, "phase": "train", "epoch": 0, "train_loss": '
    folder = damaged(tmp_path, "events.jsonl", first_epoch, first_epoch + f"{number}, \"was\": ", drop_summary=True)
    run = load_run(folder)
    assert run.state.tasks_done == 5 and len(run.state.epochs) == len(load_run(SAMPLE).state.epochs) - 1
    assert any("train_loss" in w for w in run.warnings), run.warnings
    row = catalog.describe(folder)
    assert row.status == "finished" and row.tasks_done == 5


# ----------------------------------------------------------------------------- run.json


@pytest.mark.parametrize("number", UNFIT)
@pytest.mark.parametrize("old, field", [('"lr": 0.1', "lr"), ('"seed": 0', "seed"), ('"pid": ', "pid")])
def test_an_unfit_number_in_run_json_is_one_clear_error(tmp_path, old, field, number):
    new = old.split(":")[0] + f": {number}" + (', "was": ' if old.endswith(": ") else "")
    folder = damaged(tmp_path, "run.json", old, new)
    with pytest.raises(RunFormatError, match=field) as info:
        load_run(folder)
    assert "\n" not in str(info.value) and len(str(info.value)) < 400
    row = catalog.describe(folder)
    assert row.status == "unreadable" and field in row.problem


# ----------------------------------------------------------------------------- the app and the CLI


def test_the_app_opens_a_run_whose_summary_holds_a_number_beyond_float_range(tmp_path):
    folder = damaged(tmp_path, "summary.json", summary_value("acc"), f'"acc": {BEYOND_FLOAT}')
    at = open_app(keys.OVERVIEW, run=str(folder), runs_dir=folder.parent)  # asserts no exception
    assert any("summary.json: ignored (acc" in w.value.replace("\\", "") for w in at.warning)


def test_an_upload_whose_summary_holds_a_number_beyond_float_range_is_refused(tmp_path):
    folder = damaged(tmp_path, "summary.json", summary_value("acc"), f'"acc": {BEYOND_FLOAT}')
    root = tmp_path / "uploads"
    at = open_app(keys.OVERVIEW, runs_dir=root)
    at.sidebar.file_uploader(key=keys.UPLOAD).upload("run.zip", archive.zip_run(folder), "application/zip").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Upload refused" in e.value and "summary.json: ignored (acc" in e.value.replace("\\", "")
               for e in at.sidebar.error)


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


@pytest.mark.parametrize("file, old, new", [
    ("summary.json", summary_value("acc"), f'"acc": {BEYOND_FLOAT}'),
    ("events.jsonl", '"seconds": ', f'"seconds": {BEYOND_FLOAT}, "was": '),
])
def test_prm_table_reads_the_run_from_its_log(tmp_path, capsys, file, old, new):
    folder = damaged(tmp_path, file, old, new, drop_summary=file != "summary.json")
    code, _ = run_cli(["table", str(folder)], capsys)
    assert code == 0


def test_prm_table_skips_a_run_json_beyond_float_range_with_one_line(tmp_path, capsys):
    folder = damaged(tmp_path, "run.json", '"lr": 0.1', f'"lr": {BEYOND_FLOAT}')
    code, err = run_cli(["table", str(folder)], capsys)
    assert code == 2 and f"prm: skipped {folder}" in err and "lr" in err


def test_prm_whatif_of_a_parent_with_a_number_beyond_float_range_is_one_error_line(tmp_path, capsys):
    folder = damaged(tmp_path, "summary.json", summary_value("acc"), f'"acc": {BEYOND_FLOAT}')
    code, err = run_cli(["whatif", str(folder), "--task", "2", "--similar", "1", "--out", str(tmp_path / "child")],
                        capsys)
    assert code == 2 and err.startswith("prm: error:") and err.count("\n") == 1, err


def test_the_interpreter_limit_on_integer_strings_is_not_what_protects_us(tmp_path):
    """With the 4300-digit limit lifted, a long integer is still refused from its length."""
    old = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        folder = damaged(tmp_path, "summary.json", summary_value("acc"), f'"acc": {BEYOND_INT_STR}')
        run = load_run(folder)
    finally:
        sys.set_int_max_str_digits(old)
    assert any(w.startswith("summary.json: ignored") and "acc" in w for w in run.warnings), run.warnings


def test_a_pid_beyond_pid_t_is_no_pid(tmp_path):
    """``os.kill`` (the liveness probe where /proc is missing) raises OverflowError beyond a
    pid_t, so run.json's pid must fit one or count as absent."""
    folder = damaged(tmp_path, "run.json", '"pid": ', f'"pid": {2**40}, "was": ')
    assert read_meta(folder)["pid"] is None
    assert catalog.describe(folder).status == "finished"


@pytest.mark.parametrize("layer", ["²", "٣", "0" * 5000])
def test_a_layer_number_in_an_array_name_that_int_refuses_is_not_an_array_of_the_run(layer):
    """The array's layer is read from its name; a name ``safeio`` would let through today or
    not, it is checked here as a number too."""
    where = Shape(task=0, layer=None, widths=(4,), input_dim=4, n_tasks=1, config={"method": "hat"})
    kept, problems = _check_arrays("task", 0, {f"mask_l{layer}": np.zeros(4, np.float32)}, [4], where)
    assert kept == {} and "not an array of this run" in problems[0]
