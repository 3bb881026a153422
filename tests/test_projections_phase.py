"""Issue 10, "UMAP off the critical path": a CLI run is complete (run_end line, summary.json,
the summary printed) before its projections are computed under their own progress line;
Ctrl-C or a failure there keeps the finished run; numba's UMAP compile is kept on disk."""

from __future__ import annotations

import ctypes
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import prm.projection
import prm.run
from prm import caches
from prm.cli import main
from prm.engine import train_sequence
from prm.events import RunEnd
from prm.run import RunWriter, load_run, write_projections, write_summary

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--sequence", "digits-classes", "--n-tasks", "2", "--width", "16", "--epochs", "3",
         "--dtd-epochs", "2", "--head-epochs", "1", "--no-umap"]


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".tmp" in p.name]


# ----------------------------------------------------------------------------- the CLI's order


def test_projections_start_after_the_printed_summary_and_ctrl_c_keeps_the_finished_run(tmp_path, monkeypatch,
                                                                                     capsys):
    out, seen = tmp_path / "run", {}

    def ctrl_c(*args, **kw):  # what the folder and the terminal held when projections began
        seen.update(stdout=capsys.readouterr().out, status=load_run(out).status,
                    summary=json.loads((out / "summary.json").read_text())["status"])
        raise KeyboardInterrupt

    monkeypatch.setattr(prm.projection, "project", ctrl_c)
    assert main(["run", *SMALL, "--quiet", "--out", str(out)]) == 130
    assert seen["status"] == seen["summary"] == "finished"
    assert "status   finished" in seen["stdout"] and "accuracy matrix" in seen["stdout"]
    err = capsys.readouterr().err
    assert "interrupted while computing projections: the run finished (summary written)" in err
    assert "without projections.npz" in err and "stopped" not in err
    assert load_run(out).status == "finished" and not (out / "projections.npz").exists()
    assert leftovers(out) == []


def test_ctrl_c_dropped_inside_a_compiler_callback_still_stops_before_the_file(tmp_path, monkeypatch, capsys):
    def fit_while_compiling(points, *, method, seed=0):
        def ctrl_c():
            raise KeyboardInterrupt

        ctypes.CFUNCTYPE(None)(ctrl_c)()  # as in llvmlite's callbacks: ctypes reports the interrupt and drops it
        return np.zeros((len(points), 2)), method

    monkeypatch.setattr(prm.projection, "project", fit_while_compiling)
    out, hook = tmp_path / "run", sys.unraisablehook
    assert main(["run", *SMALL, "--quiet", "--out", str(out)]) == 130
    assert "interrupted while computing projections" in capsys.readouterr().err
    assert load_run(out).status == "finished" and not (out / "projections.npz").exists()
    assert sys.unraisablehook is hook  # put back


def test_ctrl_c_while_the_summary_is_written_says_what_is_missing(tmp_path, monkeypatch, capsys):
    def ctrl_c(folder):
        raise KeyboardInterrupt

    monkeypatch.setattr(prm.run, "write_summary", ctrl_c)
    out = tmp_path / "run"
    assert main(["run", *SMALL, "--quiet", "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert "interrupted while writing the summary: the run finished" in err and "stopped" not in err
    assert load_run(out).status == "finished" and not (out / "summary.json").exists()


def test_a_run_stopped_by_ctrl_c_gets_its_summary_and_no_projections(tmp_path, monkeypatch, capsys):
    write = RunWriter.__call__

    def ctrl_c_after_first_task(self, event):
        write(self, event)
        if event.type == "task_end":
            raise KeyboardInterrupt

    monkeypatch.setattr(RunWriter, "__call__", ctrl_c_after_first_task)
    out = tmp_path / "run"
    assert main(["run", *SMALL, "--quiet", "--out", str(out)]) == 130
    assert "stopped: the run so far is saved in" in capsys.readouterr().err
    assert json.loads((out / "summary.json").read_text())["status"] == "stopped"
    assert not (out / "projections.npz").exists()


def test_a_failing_projection_is_a_warning_and_the_run_stays_finished(tmp_path, monkeypatch, capsys):
    def broken(*args, **kw):
        raise RuntimeError("numba says no")

    monkeypatch.setattr(prm.projection, "project", broken)
    out = tmp_path / "run"
    assert main(["run", *SMALL, "--quiet", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.startswith("prm: warning: projections failed (RuntimeError: numba says no)") and err.count("\n") == 1
    assert load_run(out).status == "finished" and (out / "summary.json").is_file()
    assert not (out / "projections.npz").exists() and leftovers(out) == []


def test_projections_have_their_own_line_with_their_seconds_and_quiet_prints_none(tmp_path, capsys):
    out = tmp_path / "loud"
    assert main(["run", *SMALL, "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "status   finished" in captured.out
    last = captured.err.splitlines()[-1]  # after the bar's "\r" that clears it (leave=False)
    assert re.fullmatch(rf"projections: 2 in \d+\.\d s, in {re.escape(str(out / 'projections.npz'))}",
                        last.rpartition("\r")[2]), captured.err
    assert "pca layer 2/2" in captured.err  # the bar named each step
    assert load_run(out).stored_projection("pca", 1) is not None
    quiet = tmp_path / "quiet"
    assert main(["run", *SMALL, "--quiet", "--out", str(quiet)]) == 0
    assert capsys.readouterr().err == "" and (quiet / "projections.npz").is_file()


# ----------------------------------------------------------------------------- the library's split


def test_summary_and_projections_are_written_separately(tiny, tmp_path):
    cfg = tiny()
    folder = tmp_path / "run"
    writer = RunWriter(folder, config=cfg, finalize=False)
    train_sequence(cfg, emit=writer)
    assert writer.ended and not (folder / "summary.json").exists() and not (folder / "projections.npz").exists()
    assert write_summary(folder)["status"] == "finished"
    assert (folder / "summary.json").is_file() and not (folder / "projections.npz").exists()
    steps = []
    assert write_projections(folder, progress=lambda *step: steps.append(step)) == 2
    assert steps == [(0, 2, "pca layer 1/2"), (1, 2, "pca layer 2/2"), (2, 2, "writing projections.npz")]
    tasks, _, coords = load_run(folder).stored_projection("pca", 0)
    assert coords.shape == (len(tasks), 2) and len(tasks) == 3 + 2  # 3 final embeddings, 2 DTD steps


def test_a_run_without_embeddings_has_no_projections_file(tiny, tmp_path):
    cfg = tiny()
    folder = tmp_path / "empty"
    writer = RunWriter(folder, config=cfg, finalize=False)
    writer(RunEnd(status="stopped", seconds=0.0))
    assert write_projections(folder) == 0 and not (folder / "projections.npz").exists()


# ----------------------------------------------------------------------------- cache folders


def test_cache_root_follows_prm_cache_dir_then_xdg_then_home(tmp_path, monkeypatch):
    monkeypatch.setenv("PRM_CACHE_DIR", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert caches.cache_root() == tmp_path / "mine"
    monkeypatch.delenv("PRM_CACHE_DIR")
    assert caches.cache_root() == tmp_path / "xdg" / "prm-explorer"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert caches.cache_root() == tmp_path / "home" / ".cache" / "prm-explorer"


def test_cache_dir_is_made_on_demand_and_refused_when_it_cannot_be(tmp_path, monkeypatch):
    monkeypatch.setenv("PRM_CACHE_DIR", str(tmp_path / "a" / "b"))
    assert caches.cache_dir("numba") == tmp_path / "a" / "b" / "numba" and (tmp_path / "a" / "b" / "numba").is_dir()
    for bad in ("", "..", "x/y"):
        with pytest.raises(ValueError):
            caches.cache_dir(bad)
    (tmp_path / "file").write_text("in the way")
    monkeypatch.setenv("PRM_CACHE_DIR", str(tmp_path / "file"))
    with pytest.raises(OSError):
        caches.cache_dir("numba")
    assert caches.cache_umap_compiles() == 0  # no cache, no failure


def test_a_damaged_numba_cache_is_compiled_around(tmp_path):
    import numba

    def add_one(x):
        return x + 1

    first = numba.njit(add_one)
    assert caches._give_caches([first], tmp_path) == 1
    assert first(1) == 2
    (index,) = tmp_path.rglob("*.nbi")
    index.write_bytes(b"\x80\x04 not a pickle")
    again = numba.njit(add_one)  # a second process, as far as the cache can tell
    assert caches._give_caches([again], tmp_path) == 1 and caches._give_caches([again], tmp_path) == 0
    assert again(41) == 42


FIT = """
import time
import numpy as np
from prm.projection import project
started = time.perf_counter()
coords, used = project(np.random.default_rng(0).normal(size=(20, 16)), method="umap")
print(used, time.perf_counter() - started, *coords[0])
"""


@pytest.mark.slow
def test_a_second_process_loads_umap_from_the_cache(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "PRM_CACHE_DIR": str(tmp_path),
           "NUMBA_DEBUG_CACHE": "1"}
    runs = [subprocess.run([sys.executable, "-c", FIT], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=120) for _ in range(2)]
    for proc in runs:
        assert proc.returncode == 0, proc.stderr
    cold, warm = (proc.stdout.splitlines() for proc in runs)
    assert any("data saved" in line and "smooth_knn_dist" in line for line in cold)
    assert any("data loaded" in line and "smooth_knn_dist" in line for line in warm)
    assert not any("data saved" in line for line in warm)  # nothing left to compile
    cold_result, warm_result = cold[-1].split(), warm[-1].split()
    assert cold_result[0] == warm_result[0] == "umap"
    assert np.allclose([float(v) for v in cold_result[2:]], [float(v) for v in warm_result[2:]])
