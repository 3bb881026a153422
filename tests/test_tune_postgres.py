"""Two workers on one PostgreSQL study, for real: ``prm tune`` and ``prm compare --study``
started at the same moment as separate processes against a throwaway server
(tests/postgres.py; skipped with the reason where none can start, a failure in CI)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from prm import tune

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--sequence", "digits-mixed", "--n-tasks", "2", "--epochs", "2", "--width", "16", "--dtd-epochs", "1",
        "--head-epochs", "1", "--compile", "off", "--quiet"]


def _two_workers(args: list[str], cwd: Path) -> list[subprocess.CompletedProcess]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "prm", *args], cwd=cwd / f"w{i}", env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in (0, 1) if
             (cwd / f"w{i}").mkdir() is None]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


def test_two_tune_workers_share_one_study(postgres_url, tmp_path):
    workers = _two_workers(["tune", "--method", "hat", "--trials", "6", "--storage", postgres_url, "--study", "pg",
                            *TINY], tmp_path)
    for w in workers:
        assert w.returncode == 0, w.stderr
    study = tune.load_study(postgres_url, "pg")
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))  # no trial number repeats
    assert len(study.complete) == 6  # exactly the trials asked for, however the two raced
    untrained = [t for t in study.trials if t.state != "complete"]
    assert all(t.state == "pruned" and t.note.startswith("not trained") for t in untrained)
    folders = [Path(t.run_dir) for t in study.complete]
    assert len(set(folders)) == 6 and all((f / "summary.json").is_file() for f in folders)
    assert {f.parents[3].name for f in folders} <= {"w0", "w1"}  # w*/runs/tune/pg/trial-N
    params = [tuple(sorted(t.params.items())) for t in study.complete]
    assert len(set(params)) == 6  # the start-up draws differ per trial, not per process


def test_two_compare_workers_train_each_cell_once(postgres_url, tmp_path):
    workers = _two_workers(["compare", "--methods", "ncl,hat", "--seeds", "0,1", "--storage", postgres_url,
                            "--study", "grid", *TINY], tmp_path)
    for w in workers:
        assert w.returncode == 0, w.stderr
    study = tune.load_study(postgres_url, "grid")
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
    cells = Counter((t.params["sequence"], t.params["method"], t.params["seed"]) for t in study.complete)
    expected = {("digits-mixed", m, s) for m in ("ncl", "hat", "stl") for s in (0, 1)}
    assert set(cells) == expected and set(cells.values()) == {1}  # every cell trained exactly once
    assert all(t.state == "pruned" and "same cell" in t.note for t in study.trials if t.state != "complete")
    # the worker that ended last printed the whole table from the storage
    last = max(workers, key=lambda w: len(w.stdout.splitlines()))
    assert [line.split()[1] for line in last.stdout.splitlines()[1:]] == ["ncl", "hat"]
