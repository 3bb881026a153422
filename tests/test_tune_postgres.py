"""Two workers on one PostgreSQL study, for real: ``prm tune`` and ``prm compare --study``
started at the same moment as separate processes against a throwaway server
(tests/postgres.py; skipped with the reason where none can start, a failure in CI), given the
README's plain ``postgresql://`` URL; and the explorer's looks at a server, which write nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

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


@pytest.fixture
def plain_url(postgres_url) -> str:
    """The fresh database's URL in the README's form, ``postgresql://`` without a driver:
    what users type, which must reach the installed psycopg2."""
    driver = "postgresql+psycopg2://"
    assert postgres_url.startswith(driver)
    return "postgresql://" + postgres_url[len(driver):]


def test_two_tune_workers_share_one_study(plain_url, tmp_path):
    workers = _two_workers(["tune", "--method", "hat", "--trials", "6", "--storage", plain_url, "--study", "pg",
                            *TINY], tmp_path)
    for w in workers:
        assert w.returncode == 0, w.stderr
    study = tune.load_study(plain_url, "pg")
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


def test_two_compare_workers_train_each_cell_once(plain_url, tmp_path):
    workers = _two_workers(["compare", "--methods", "ncl,hat", "--seeds", "0,1", "--storage", plain_url,
                            "--study", "grid", *TINY], tmp_path)
    for w in workers:
        assert w.returncode == 0, w.stderr
    study = tune.load_study(plain_url, "grid")
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
    cells = Counter((t.params["sequence"], t.params["method"], t.params["seed"]) for t in study.complete)
    expected = {("digits-mixed", m, s) for m in ("ncl", "hat", "stl") for s in (0, 1)}
    assert set(cells) == expected and set(cells.values()) == {1}  # every cell trained exactly once
    assert all(t.state == "pruned" and "same cell" in t.note for t in study.trials if t.state != "complete")
    # the worker that ended last printed the whole table from the storage
    last = max(workers, key=lambda w: len(w.stdout.splitlines()))
    assert [line.split()[1] for line in last.stdout.splitlines()[1:]] == ["ncl", "hat"]


def test_a_look_at_an_empty_database_creates_no_table(plain_url, postgres_url):
    """The Tuning view's look at a server database that holds no study: refused, and the
    database stays empty (Optuna would create its tables in it)."""
    import sqlalchemy

    with pytest.raises(tune.StorageError, match="not an Optuna storage"):
        tune.study_names(plain_url)
    engine = sqlalchemy.create_engine(postgres_url)
    try:
        assert sqlalchemy.inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


def test_a_look_at_a_server_storage_reads_it_read_only(plain_url):
    """A study written by ``prm tune``'s storage is read by a look, whose session the server
    keeps read-only (``default_transaction_read_only``): a write through it is refused."""
    import optuna

    study = optuna.create_study(storage=tune.open_storage(plain_url), study_name="s", direction="maximize")
    study.set_user_attr("kind", "tune")
    assert tune.study_names(plain_url) == ["s"]
    storage = tune.read_storage(plain_url)
    with pytest.raises(optuna.exceptions.StorageInternalError) as refused:
        storage.set_study_user_attr(storage.get_study_id_from_name("s"), "kind", "other")
    assert "read-only transaction" in str(refused.value.__cause__)
    assert tune.load_study(plain_url, "s").kind == "tune"
