"""``python -m prm``: run, show, compare, bad arguments, Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prm.cli import main
from prm.run import load_run

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--sequence", "digits-classes", "--n-tasks", "2", "--width", "16", "--epochs", "3",
        "--dtd-epochs", "2", "--head-epochs", "1", "--no-umap", "--quiet"]


def exit_code(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    return info.value.code, capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["run", "--sequence", "mnist"], "unknown sequence 'mnist'"),
    (["run", "--method", "lwf"], "unknown method 'lwf'"),
    (["run", "--epochs", "0", "--n-tasks", "2"], "optim.max_epochs"),
    (["run", "--sequence", "digits-classes", "--n-tasks", "9"], "digits-classes"),
    (["run", "--lr", "fast"], "invalid float value"),
    (["run", "--device", "cuda"] if not __import__("torch").cuda.is_available() else ["run", "--layers", "0"], "--"),
    (["compare", "--seeds", "a,b"], "comma-separated integers"),
    (["show", "/nonexistent/run"], "no such run folder"),
    (["run", "--sequence", "EMNIST-10T", "--data-dir", "/nonexistent"], "data folder /nonexistent does not exist"),
    (["run", "--preset", "huge"], "invalid choice"),
])
def test_bad_arguments_get_one_line_and_exit_code_2(argv, message, capsys):
    code, err = exit_code(argv, capsys)
    assert code == 2
    assert err.startswith("prm: error:") and message in err
    assert err.count("\n") == 1


def test_run_then_show(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["run", *TINY, "--method", "prm", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "status   finished" in printed and "Acc" in printed and "T2   layer 0: k=1 dissimilar=[T1] (undecided)" in printed
    assert load_run(out).status == "finished"
    assert main(["show", str(out)]) == 0
    assert "accuracy matrix" in capsys.readouterr().out
    code, err = exit_code(["run", *TINY, "--out", str(out)], capsys)
    assert code == 2 and "already exists" in err


def test_compare_prints_acc_bwt_fwt_ct(tmp_path, capsys):
    assert main(["compare", *TINY, "--methods", "hat,ncl", "--seeds", "0,1", "--markdown",
                 "--out-dir", str(tmp_path)]) == 0
    table = capsys.readouterr().out.strip().splitlines()
    assert table[0].startswith("| sequence | method | seeds | Acc | BWT | FWT | CT s |")
    rows = [line for line in table if line.startswith("| digits-classes")]
    assert [r.split("|")[2].strip() for r in rows] == ["hat", "ncl"]  # STL ran only as FWT's reference
    assert all(" ± " in r.split("|")[6] for r in rows)  # FWT is a number, not '-'
    assert len(list(tmp_path.iterdir())) == 6  # 3 methods x 2 seeds recorded


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("started", [None, _ignore_sigint], ids=["plain", "sigint-ignored"])
def test_ctrl_c_leaves_a_loadable_stopped_run(started, tmp_path):
    """Also when the run was started with SIGINT ignored, as a shell without job control
    starts a background command (``cmd &`` in a script): Python then installs no handler,
    and ``prm run`` restores it so that Ctrl-C and the explorer's Stop still stop the run."""
    out = tmp_path / "interrupted"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "prm", "run", "--sequence", "digits-mixed", "--quiet",
                             "--no-umap", "--out", str(out)], cwd=ROOT, env=env, preexec_fn=started,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = out / "events.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not log.exists() or log.read_text().count("\n") < 20):
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "stopped" in err and "Traceback" not in err
    run = load_run(out)
    assert run.status == "stopped" and run.warnings == ()
    assert run.state.tasks_done < run.state.n_tasks


def test_presets_fill_unset_options_and_explicit_options_win():
    from prm.cli import build_parser
    from prm.cli.options import run_config

    args = build_parser().parse_args(["run", "--preset", "paper", "--lr", "0.01", "--data-dir", "/data"])
    cfg = run_config(args, sequence="EMNIST-10T", method="prm", seed=3)
    assert cfg.model.hidden == (2000, 2000) and cfg.optim.batch_size == 64
    assert cfg.optim.lr == 0.01 and cfg.optim.lr_min == 0.001 and cfg.data_dir == "/data"
    default = run_config(build_parser().parse_args(["run", "--width", "64"]), sequence="digits-mixed",
                      method="hat", seed=0)
    assert default.model.hidden == (64, 64) and default.optim.lr == 0.1
