"""Issue 7, "Never trust a run folder": every CLI failure is one ``prm: error:`` line and exit 2,
nothing is created before training starts, and a run that fails while being written keeps
every whole record it wrote and loads as 'failed' (one that recorded nothing is removed, and
only the files it wrote), with no temporary files. Study values of any type print on one line."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from prm.cli import main
from prm.run import RunWriter, load_run

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
    import prm.run.writing

    def full(path, *args, **kw):  # run.json and arrays/ are made; the event log cannot be
        raise FULL

    monkeypatch.setattr(prm.run.writing, "open", full, raising=False)
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


def full_disk_after(monkeypatch, first: str | None, meanwhile: Callable[[], None] = lambda: None) -> list[str]:
    """Make every ``RunWriter`` event after the first ``first`` one (from the very first event
    when None) raise ENOSPC before it writes anything; ``meanwhile`` runs once, at the first
    failure (another process writing beside the run). Returns the refused events' types."""
    write, refused, full = RunWriter.__call__, [], [first is None]

    def full_disk(self, event):
        if full[0]:
            if not refused:
                meanwhile()
            refused.append(event.type)
            raise FULL
        write(self, event)
        full[0] = event.type == first

    monkeypatch.setattr(RunWriter, "__call__", full_disk)
    return refused


def whole_lines(log: Path) -> list[dict]:
    """The log's records; fails when it does not end on a whole, parseable line."""
    data = log.read_bytes()
    assert data.endswith(b"\n"), data[-80:]
    return [json.loads(line) for line in data.splitlines()]


def test_full_disk_before_the_first_record_removes_the_run(tmp_path, monkeypatch, capsys):
    refused = full_disk_after(monkeypatch, None)
    out = tmp_path / "run"
    err = one_error(["run", *TINY, "--method", "prm", "--out", str(out)], capsys)
    assert "[Errno 28]" in err and "nothing was recorded: the run folder was removed" in err
    assert refused == ["run_started"] and not out.exists()  # the engine emits nothing after it


def test_full_disk_after_the_first_task_keeps_what_was_recorded(tmp_path, monkeypatch, capsys):
    """Cause 7: the records written before the disk filled are the run; it stays, as failed."""
    full_disk_after(monkeypatch, "task_end")
    out = tmp_path / "run"
    err = one_error(["run", *TINY, "--method", "prm", "--out", str(out)], capsys)
    assert "[Errno 28]" in err and f"kept in {out} as a failed run" in err
    run = load_run(out)
    assert run.status == "failed" and run.state.tasks_done == 1 and run.warnings == ()
    assert "No space left on device" in run.state.end.error
    assert whole_lines(out / "events.jsonl")[-1]["type"] == "run_end" and leftovers(out) == []


class FillingLog:
    """The run's event log on a disk that fills once ``fill()`` is called: a write that does
    not fit in the ``room`` left puts what fits on disk and raises ENOSPC, as a full disk does
    part-way through a line. With ``once``, the disk fills for that write only (the failing
    line's bytes are freed again when it is cut back); else nothing more fits."""

    def __init__(self, raw: Any) -> None:
        self.raw, self.room, self.once = raw, None, False

    def fill(self, *, room: int, once: bool) -> None:
        self.room, self.once = room, once

    def write(self, data: Any) -> int:
        if self.room is None:
            return self.raw.write(data)
        part = data[:self.room]
        if len(part):
            self.raw.write(part)
        self.room -= len(part)
        if len(part) < len(data):
            self.room = None if self.once else 0
            raise FULL
        return len(part)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)


def full_disk_at_the_closing_line(monkeypatch, *, once: bool) -> None:
    """The disk fills as the ``run_end`` line is written: 20 of its bytes reach the log."""
    init, call = RunWriter.__init__, RunWriter.__call__

    def init_with_filling_log(self, folder, **kw):
        init(self, folder, **kw)
        self._log = FillingLog(self._log)

    def fill_at_run_end(self, event):
        if event.type == "run_end":
            self._log.fill(room=20, once=once)
        return call(self, event)

    monkeypatch.setattr(RunWriter, "__init__", init_with_filling_log)
    monkeypatch.setattr(RunWriter, "__call__", fill_at_run_end)


def test_full_disk_at_the_closing_line_keeps_the_run_as_failed(tmp_path, monkeypatch, capsys):
    """Cause 7 as seen on a 40 KiB tmpfs: everything but the closing line fitted. The partial
    line is cut back; the run stays, with both tasks, and says why it failed."""
    full_disk_at_the_closing_line(monkeypatch, once=True)
    out = tmp_path / "run"
    err = one_error(["run", *TINY, "--method", "prm", "--out", str(out)], capsys)
    assert "[Errno 28]" in err and f"kept in {out} as a failed run" in err
    run = load_run(out)
    assert run.status == "failed" and run.state.tasks_done == 2 and run.warnings == ()
    assert "No space left on device" in run.state.end.error
    assert all(line["type"] != "run_end" or line["status"] == "failed" for line in whole_lines(out / "events.jsonl"))
    assert run.has_checkpoint(1) and leftovers(out) == []


def main_with_the_disk_full_from_the_closing_line(out: str) -> int:
    """``prm run`` in its own process with no room for any closing line (used below)."""
    full_disk_at_the_closing_line(pytest.MonkeyPatch(), once=False)
    try:
        return main(["run", *TINY, "--method", "hat", "--out", out])
    except SystemExit as exc:
        return exc.code


def test_a_run_whose_failed_line_cannot_be_written_loads_as_failed(tmp_path):
    """Not even a failed closing line fits: once the writer's process has exited, the run
    loads as failed (no closing record) with its tasks, and its log ends on a whole line."""
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    code = ("import sys; from tests.test_cli_hardening import main_with_the_disk_full_from_the_closing_line as run; "
            "sys.exit(run(sys.argv[1]))")
    proc = subprocess.run([sys.executable, "-c", code, str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert f"what was recorded is kept in {out}" in proc.stderr
    run = load_run(out)
    assert run.status == "failed" and "without a closing record" in run.status_note
    assert run.state.tasks_done == 2 and run.state.end is None
    assert whole_lines(out / "events.jsonl")[-1]["type"] == "task_end" and leftovers(out) == []


# ----------------------------------------------------------------------------- what clean-up may remove


@pytest.mark.parametrize("first", [None, "task_end"])  # the run records nothing / its first task
@pytest.mark.parametrize("out", ["P/A", "default"])  # --out P/A, or runs/... with runs/ new
def test_a_failing_run_never_removes_another_run_beside_it(out, first, finished_run, tmp_path, monkeypatch, capsys):
    """Cause 6: the parent folder made for the run holds another run, finished meanwhile by
    another process; the failing run removes at most its own files."""
    monkeypatch.chdir(tmp_path)
    parent = tmp_path / ("P" if out == "P/A" else "runs")
    full_disk_after(monkeypatch, first, meanwhile=lambda: shutil.copytree(finished_run, parent / "B"))
    err = one_error(["run", *TINY, "--method", "hat", *(["--out", out] if out == "P/A" else [])], capsys)
    assert "[Errno 28]" in err
    assert load_run(parent / "B").status == "finished"
    assert sorted(p.relative_to(parent / "B") for p in (parent / "B").rglob("*")) == \
        sorted(p.relative_to(finished_run) for p in finished_run.rglob("*"))
    ours = [p for p in parent.iterdir() if p.name != "B"]
    if first is None:
        assert ours == [] and "the run folder was removed" in err
    else:
        assert len(ours) == 1 and load_run(ours[0]).status == "failed" and "as a failed run" in err


def test_clean_up_leaves_a_file_someone_else_put_into_the_run_folder(tmp_path, monkeypatch, capsys):
    out = tmp_path / "P" / "A"
    full_disk_after(monkeypatch, None, meanwhile=lambda: (out / "notes.txt").write_text("not the run's"))
    err = one_error(["run", *TINY, "--method", "hat", "--out", str(out)], capsys)
    assert f"{out} holds files this run did not write and is kept" in err
    assert [p.name for p in out.rglob("*")] == ["notes.txt"] and (out / "notes.txt").read_text() == "not the run's"


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


# ----------------------------------------------------------------------------- empty paths


@pytest.mark.parametrize("argv", [
    ["run", *TINY, "--out", ""],
    ["run", *TINY, "--out", "  "],
    ["whatif", "parent-run", "--task", "2", "--similar", "1", "--out", ""],
    ["compare", *TINY, "--methods", "ncl", "--seeds", "0", "--out-dir", ""],
    ["compare", *TINY, "--methods", "ncl", "--seeds", "0", "--study", "s", "--storage", " "],
    ["tune", *TINY, "--method", "ncl", "--trials", "1", "--runs-dir", ""],
    ["tune", *TINY, "--method", "ncl", "--trials", "1", "--storage", ""],
    ["run", *TINY, "--data-dir", "\t"],  # an input folder: '' would fall back to $PRM_DATA just as silently
    ["show", ""],  # '' would be read as the current folder
    ["table", "", "--families"],
])
def test_an_empty_path_is_refused_and_nothing_is_created(argv, tmp_path, monkeypatch, capsys):
    """Cause 14: an empty (or blank) path is no folder or file, never the option's default."""
    monkeypatch.chdir(tmp_path)
    err = one_error(argv, capsys)
    assert "an empty path names no folder or file" in err, err
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- tuned studies


def tune_study(url: str, argv: list[str], *, params: dict[str, Any]) -> None:
    """The tune study ``compare --tuned`` looks for under ``argv``'s options, written with
    Optuna directly: one complete trial whose parameters are ``params`` (any type)."""
    import optuna

    from prm import tune
    from prm.cli import build_parser
    from prm.cli.options import run_config

    cfg = run_config(build_parser().parse_args(argv), sequence="digits-classes", method="hat", seed=0)
    study = optuna.create_study(storage=url, study_name=tune.default_study(cfg.sequence, cfg.method),
                                direction="maximize")
    for key, value in {"kind": "tune", "sequence": cfg.sequence, "method": cfg.method, "seed": 0,
                       "setup": tune.study_key(cfg)}.items():
        study.set_user_attr(key, value)
    distributions = {k: optuna.distributions.CategoricalDistribution([v]) for k, v in params.items()}
    study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=0.8,
                                              user_attrs={"val_acc": 0.8, "test_acc": 0.75, "seconds": 1.0}))


def test_compare_tuned_with_a_string_parameter_is_one_error_line(tmp_path, monkeypatch, capsys):
    """Cause 12: the best trial's lr is the string 'fast'. One ``prm: error:`` line naming
    it, or the study skipped with a warning (when prm.tune refuses the trial), no traceback."""
    url = f"sqlite:///{tmp_path / 'o.db'}"
    argv = ["compare", *TINY, "--methods", "hat", "--seeds", "0", "--tuned", "--storage", url]
    tune_study(url, argv, params={"lr": "fast", "lamb": 0.5})
    monkeypatch.chdir(tmp_path)
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    if code == 2:
        assert err.splitlines()[-1].startswith("prm: error:") and "lr" in err.splitlines()[-1], err
        assert "lr fast" in err.splitlines()[-1]
    else:
        assert code == 0 and "prm: digits-classes hat:" in err, err


def fake_study(value: Any) -> Any:
    """A study as ``prm.tune`` reads one, its best trial's values (and PS) all ``value``."""
    from types import SimpleNamespace

    best = SimpleNamespace(number=0, state="complete", params={"lr": value, "lamb": 0.5}, val_acc=value,
                           test_acc=value, run_dir=None, run_dir_relative=None, host=value)
    return SimpleNamespace(name="tune-digits-classes-hat", kind="tune", sequence="digits-classes", method="hat",
                           attrs={"seed": 0}, trials=(best,), complete=(best,), best=best, ps=value)


ODD_VALUES = ["fast", None, 10**400, float("nan"), float("inf"), [1, 2], {"a": 1}, "x" * 10000 + "\nTraceback"]


@pytest.mark.parametrize("value", ODD_VALUES, ids=lambda v: type(v).__name__)
def test_study_values_of_any_type_are_printed_on_one_line_each(value, monkeypatch, capsys):
    """tune's and compare's lines about a study format whatever the storage holds."""
    from prm import tune
    from prm.cli import build_parser
    from prm.cli.compare import _print_tables, _tuned
    from prm.cli.tune import print_study

    study = fake_study(value)
    print_study(study, url="sqlite:///nowhere/o.db", target=1)
    printed = capsys.readouterr().out
    assert "lamb 0.5" in printed and len(printed.splitlines()) == 5 and len(printed) < 2000, printed
    monkeypatch.setattr(tune, "study_names", lambda url: [study.name])
    monkeypatch.setattr(tune, "load_study", lambda url, name: study)
    args = build_parser().parse_args(["compare", *TINY, "--methods", "hat", "--tuned", "--storage", "sqlite:///o.db"])
    tuned = _tuned(args, ["digits-classes"], ["hat", "stl"], shown=["hat"])
    said = capsys.readouterr().err
    assert said.count("\n") == 1 and "lamb 0.5" in said and len(said) < 500, said
    R = np.array([[0.9, np.nan], [0.8, 0.7]])
    _print_tables(args, {("digits-classes", "hat", 0): (R, 1.0, ["classes"] * 2)}, methods=["hat"], tuned=tuned)
    assert capsys.readouterr().out.splitlines()[1].split()[-1] == "-"  # PS not a number: shown as missing


@pytest.mark.parametrize("value", ODD_VALUES, ids=lambda v: type(v).__name__)
def test_a_tuned_parameter_that_is_not_a_number_is_one_error_line(value, capsys):
    from prm import tune
    from prm.cli import build_parser
    from prm.cli.compare import _tuned_config
    from prm.cli.options import run_config

    cfg = run_config(build_parser().parse_args(["compare", *TINY]), sequence="digits-classes", method="hat", seed=0)
    study = fake_study(value)
    study.attrs["setup"] = tune.study_key(cfg)
    with pytest.raises(SystemExit) as info:
        _tuned_config(cfg, study)
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith("prm: error: study tune-digits-classes-hat") and \
        err.count("\n") == 1 and "lr" in err and len(err) < 600, err
