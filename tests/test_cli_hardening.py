"""Issue 7, "Never trust a run folder": every CLI failure is one ``prm: error:`` line and exit 2,
nothing is created before training starts, and a run that fails while being written is left
loadable (status 'failed') or removed, with no temporary files."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from prm.__main__ import main
from prm.runs import RunWriter, load_run

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--sequence", "digits-classes", "--n-tasks", "2", "--width", "16", "--epochs", "3",
        "--dtd-epochs", "2", "--head-epochs", "1", "--no-umap", "--quiet"]
FULL = OSError(errno.ENOSPC, "No space left on device")


def one_error(argv, capsys) -> str:
    """Run ``main(argv)``, which must exit 2 with exactly one ``prm: error:`` line; return it."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert err.startswith("prm: error:") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".tmp" in p.name]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "hat"
    assert main(["run", *TINY, "--method", "hat", "--out", str(out)]) == 0
    return out


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize("option, value, field", [
    ("--lr", "inf", "optim.lr"), ("--lr", "nan", "optim.lr"), ("--smax", "inf", "hat.smax"),
    ("--smax", "nan", "hat.smax"), ("--lamb", "inf", "hat.lamb"), ("--lamb", "nan", "hat.lamb"),
    ("--dropout", "nan", "model.hidden_dropout"), ("--ewc-lambda", "inf", "ewc_lambda"),
    ("--lr", "1e+39", "optim.lr"),  # finite, but overflows float32 inside SGD
])
def test_non_finite_numbers_are_refused_and_nothing_is_created(option, value, field, tmp_path, capsys):
    out = tmp_path / "run"
    err = one_error(["run", *TINY, option, value, "--out", str(out)], capsys)
    assert f"{field}: must be a finite number (float32), got {value}" in err
    assert not out.exists()


@pytest.mark.parametrize("extra, message", [
    (["--width", "1000000000"], "at most 16384 units per layer (MAX_WIDTH)"),
    (["--layers", "1000"], "--layers must be from 1 to 8"),
    (["--layers", "1000000000000"], "--layers must be from 1 to 8"),  # refused before [width] * layers
    (["--width", "16384", "--layers", "2"], "more than the 2e+08 allowed (MAX_WEIGHTS)"),
    (["--batch-size", "1000000000000"], "optim.batch_size: must be from 1 to 1000000"),
    (["--epochs", "1000000000000"], "optim.max_epochs: must be from 1 to 100000"),
    (["--dtd-epochs", "1000000000000"], "prm.dtd_epochs: must be from 1 to 100000"),
    (["--n-tasks", str(10**30)], "digits-classes takes n_tasks from 1 to 5"),
    (["--seed", str(2**40)], "seed: must be an integer from 0 to 4294967295"),
])
def test_huge_values_are_refused_before_anything_is_allocated(extra, message, tmp_path, capsys):
    out = tmp_path / "run"
    assert message in one_error(["run", *TINY, *extra, "--out", str(out)], capsys)
    assert not out.exists()


def test_a_data_set_that_fails_to_load_creates_nothing(tmp_path, capsys):
    out = tmp_path / "deep" / "run"
    err = one_error(["run", "--sequence", "EMNIST-10T", "--data-dir", str(tmp_path / "none"), "--out", str(out)],
                    capsys)
    assert "does not exist" in err and not (tmp_path / "deep").exists()


# ----------------------------------------------------------------------------- output folders


def test_out_that_is_a_file_or_under_a_file(tmp_path, capsys):
    file = tmp_path / "notes.txt"
    file.write_text("keep me")
    assert f"--out {file} is a file" in one_error(["run", *TINY, "--out", str(file)], capsys)
    err = one_error(["run", *TINY, "--out", str(file / "run")], capsys)
    assert f"lies under {file}, which is a file" in err
    assert f"--out-dir {file} is a file" in one_error(["compare", *TINY, "--out-dir", str(file)], capsys)
    assert "which is a file" in one_error(["compare", *TINY, "--out-dir", str(file / "sub")], capsys)
    assert file.read_text() == "keep me" and sorted(tmp_path.iterdir()) == [file]


def test_a_failure_creating_the_folder_removes_what_it_made(tmp_path, monkeypatch, capsys):
    made = RunWriter.__init__

    def init_then_full(self, folder, **kw):
        made(self, folder, **kw)
        raise FULL

    monkeypatch.setattr(RunWriter, "__init__", init_then_full)
    err = one_error(["run", *TINY, "--out", str(tmp_path / "a" / "b" / "run")], capsys)
    assert "could not create the run folder" in err and "[Errno 28] No space left on device" in err
    assert list(tmp_path.iterdir()) == []  # a/ and a/b/ too: they were made for this run
    (tmp_path / "empty").mkdir()
    one_error(["run", *TINY, "--out", str(tmp_path / "empty")], capsys)
    assert (tmp_path / "empty").is_dir() and list((tmp_path / "empty").iterdir()) == []  # given, so kept


# ----------------------------------------------------------------------------- full disk


@pytest.mark.parametrize("fail_on_call, status", [
    (1, "failed"), (2, "failed"),  # task 0's arrays, DTD's arrays of task 1
    (4, "finished"),  # projections.npz, after the run_end line: the run did finish
])
def test_full_disk_while_writing_arrays_leaves_a_loadable_run(fail_on_call, status, tmp_path, monkeypatch, capsys):
    save, calls = np.savez_compressed, []

    def full_disk(file, *args, **kw):
        calls.append(file)
        if len(calls) == fail_on_call:
            Path(file).write_bytes(b"PK\x03\x04 half an array")  # part-way, as a real full disk would
            raise FULL
        return save(file, *args, **kw)

    monkeypatch.setattr(np, "savez_compressed", full_disk)
    out = tmp_path / "run"
    err = one_error(["run", *TINY, "--method", "prm", "--out", str(out)], capsys)
    assert err.startswith(f"prm: error: could not write the run {out}: [Errno 28] No space left on device")
    assert f"kept in {out}" in err and ("as a failed run" in err) == (status == "failed")
    assert load_run(out).status == status
    assert leftovers(out) == []


def test_full_disk_before_the_closing_line_removes_the_run(tmp_path, monkeypatch, capsys):
    write, full = RunWriter.__call__, []

    def full_disk(self, event):
        if full or event.type == "arrays":  # from the first array on, nothing can be written
            full.append(event.type)
            raise FULL
        return write(self, event)

    monkeypatch.setattr(RunWriter, "__call__", full_disk)
    out = tmp_path / "run"
    err = one_error(["run", *TINY, "--method", "prm", "--out", str(out)], capsys)
    assert "[Errno 28]" in err and "the incomplete run folder was removed" in err
    assert "run_end" in full and not out.exists()


# ----------------------------------------------------------------------------- Ctrl-C


def test_ctrl_c_while_computing_projections_reports_the_finished_run(tmp_path, monkeypatch, capsys):
    import prm.projection

    def interrupted(*args, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(prm.projection, "project", interrupted)
    out = tmp_path / "run"
    assert main(["run", *TINY, "--method", "prm", "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert "interrupted while computing projections: the run finished (summary written)" in err
    assert "stopped" not in err
    assert load_run(out).status == "finished" and leftovers(out) == []


def test_ctrl_c_during_training_still_says_stopped(tmp_path, monkeypatch, capsys):
    write = RunWriter.__call__

    def ctrl_c_at_first_epoch(self, event):
        write(self, event)
        if event.type == "epoch":
            raise KeyboardInterrupt

    monkeypatch.setattr(RunWriter, "__call__", ctrl_c_at_first_epoch)
    out = tmp_path / "run"
    assert main(["run", *TINY, "--method", "hat", "--out", str(out)]) == 130
    assert "stopped: the run so far is saved in" in capsys.readouterr().err
    assert load_run(out).status == "stopped"


# ----------------------------------------------------------------------------- show, pipes, parser


def test_show_into_a_closed_pipe_exits_quietly_with_141(finished_run):
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is printed, as after `| head -1`
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    try:
        proc = subprocess.run([sys.executable, "-m", "prm", "show", str(finished_run)], cwd=ROOT, env=env,
                              stdout=write, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    assert proc.returncode == 141, proc.stderr
    assert proc.stderr == ""


def _damage_summary(run: Path) -> None:
    (run / "summary.json").write_text('{"acc": "high"}')


def _damage_meta(run: Path) -> None:
    (run / "run.json").write_text("[" * 100000)


def _damage_log(run: Path) -> None:
    (run / "events.jsonl").write_bytes(b"\xff\x00{not json\n" * 3)


def _replace_by_file(run: Path) -> None:
    shutil.rmtree(run)
    run.write_text("not a run")


@pytest.mark.parametrize("damage", [_damage_summary, _damage_meta, _damage_log, _replace_by_file,
                                    lambda run: shutil.rmtree(run / "arrays")])
def test_show_of_a_damaged_run_is_one_error_line_or_a_summary(damage, finished_run, tmp_path, capsys):
    run = tmp_path / "copy"
    shutil.copytree(finished_run, run)
    damage(run)
    try:
        assert main(["show", str(run)]) == 0  # a partial run is shown, with warnings
    except SystemExit as exc:
        err = capsys.readouterr().err
        assert exc.code == 2 and err.startswith("prm: error:") and err.count("\n") == 1, err
        assert capsys.readouterr().out == ""


def test_show_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert one_error(["show", str(tmp_path)], capsys)


@pytest.mark.parametrize("argv, hint", [
    (["--bogus"], "(see 'python -m prm --help')"),
    ([], "(see 'python -m prm --help')"),
    (["run", "--bogus"], "(see 'python -m prm run --help')"),
    (["compare", "--jobs", "x"], "(see 'python -m prm compare --help')"),
])
def test_parser_errors_point_at_the_right_help(argv, hint, capsys):
    assert one_error(argv, capsys).rstrip().endswith(hint)
