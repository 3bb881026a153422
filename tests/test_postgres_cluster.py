"""The throwaway PostgreSQL harness (tests/postgres.py) against a real server, and the reasons
it gives when there is none.

Where no server can be started these tests skip with that reason; CI installs Debian's
postgresql and sets PRM_REQUIRE_POSTGRES=1, which turns the skip into a failure.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

from prm.tune import open_storage
from tests.postgres import PostgresUnavailable, find_server, throwaway_cluster, unavailable

ROOT = Path(__file__).resolve().parents[1]

# One worker: joins the study, waits for the other so that both ask at the same time, then
# runs five ask/tell trials, each tagged with its process id. The wait is shorter than the
# test's, so a worker whose partner died ends on its own.
WORKER = r"""
import os, sys, time
from pathlib import Path

import optuna

from prm.tune import open_storage

url, folder, me, other = sys.argv[1:]
study = optuna.create_study(study_name="two-workers", storage=open_storage(url), load_if_exists=True)
Path(folder, me).touch()
deadline = time.monotonic() + 30
while not Path(folder, other).exists():
    if time.monotonic() > deadline:
        sys.exit("the other worker never joined")
    time.sleep(0.01)
for _ in range(5):
    trial = study.ask()
    trial.set_user_attr("pid", os.getpid())
    x = trial.suggest_float("x", 0.0, 1.0)
    time.sleep(0.05)
    study.tell(trial, x)
"""


def test_two_worker_processes_share_one_study(postgres_url, tmp_path):
    """The workers only join the study: its tables are made here first, as Optuna asks
    (two RDBStorages creating the schema of an empty database at once can collide)."""
    import optuna

    assert postgres_url.startswith("postgresql+psycopg2://")
    optuna.create_study(study_name="two-workers", storage=open_storage(postgres_url))
    workers = [_worker(postgres_url, tmp_path, me, other) for me, other in (("a", "b"), ("b", "a"))]
    deadline = time.monotonic() + 60
    try:  # until both are done, or one has failed (its partner would wait for it in vain)
        while (any(w.poll() is None for w in workers) and not any(w.returncode for w in workers)
               and time.monotonic() < deadline):
            time.sleep(0.05)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    assert [w.returncode for w in workers] == [0, 0], "\n".join(
        (tmp_path / f"{me}.log").read_text() for me in ("a", "b"))
    trials = optuna.load_study(study_name="two-workers", storage=open_storage(postgres_url)).trials
    assert sorted(t.number for t in trials) == list(range(10))  # ten trials, no number twice
    assert {t.state for t in trials} == {optuna.trial.TrialState.COMPLETE}
    assert Counter(t.user_attrs["pid"] for t in trials) == {w.pid: 5 for w in workers}
    # They really ran side by side: each began a trial before the other had finished its last.
    spans = [(min(t.datetime_start for t in trials if t.user_attrs["pid"] == w.pid),
              max(t.datetime_complete for t in trials if t.user_attrs["pid"] == w.pid)) for w in workers]
    (start_a, end_a), (start_b, end_b) = spans
    assert start_a < end_b and start_b < end_a


def test_databases_are_fresh_and_a_second_server_can_run_beside_the_first(postgres_cluster):
    """Each URL is an empty database; a second cluster (same port number, own socket folder)
    starts while the session's runs, and is stopped and deleted when its body fails."""
    import optuna

    first = postgres_cluster.new_database()
    optuna.create_study(study_name="only-here", storage=open_storage(first))
    assert optuna.get_all_study_names(open_storage(postgres_cluster.new_database())) == []
    with pytest.raises(RuntimeError, match="the body failed"):
        with throwaway_cluster() as second:
            assert second.root != postgres_cluster.root
            assert optuna.get_all_study_names(open_storage(second.new_database())) == []
            raise RuntimeError("the body failed")
    assert not second.root.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(second.pid, 0)
    assert optuna.get_all_study_names(open_storage(first)) == ["only-here"]  # the first one is untouched


def test_a_missing_server_is_named(tmp_path):
    with pytest.raises(PostgresUnavailable, match=r"initdb is neither on PATH nor in .*nowhere.*apt-get install"):
        with throwaway_cluster(path="", search=(str(tmp_path / "nowhere" / "*" / "bin"),)):
            pytest.fail("a cluster started without binaries")


def test_initdb_without_its_server_is_named(tmp_path):
    _executables(tmp_path / "bin", "initdb")
    with pytest.raises(PostgresUnavailable, match=r"bin lacks postgres"):
        find_server(path=str(tmp_path / "bin"), search=())


def test_path_wins_then_the_newest_version(tmp_path):
    """PATH's initdb is followed to the folder it links into; the search folders are ranked
    by version as numbers (a string sort would put 9.6 first)."""
    for version in ("9.6", "16", "10"):
        _executables(tmp_path / "lib" / version / "bin", "initdb", "postgres")
    search = (str(tmp_path / "lib" / "*" / "bin"),)
    assert find_server(path="", search=search) == tmp_path / "lib" / "16" / "bin"
    (tmp_path / "path").mkdir()
    (tmp_path / "path" / "initdb").symlink_to(tmp_path / "lib" / "10" / "bin" / "initdb")
    assert find_server(path=str(tmp_path / "path"), search=search) == tmp_path / "lib" / "10" / "bin"


def test_a_failing_initdb_gives_its_own_words():
    # Not tmp_path: as root the fake initdb runs as the server's user, who cannot enter pytest's
    # private temporary folder.
    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o755)
        bindir = Path(folder) / "bin"
        _executables(bindir, "postgres")
        (bindir / "initdb").write_text("#!/bin/sh\necho 'initdb: error: simulated disk trouble' >&2\nexit 3\n")
        (bindir / "initdb").chmod(0o755)
        before = set(Path(tempfile.gettempdir()).glob("prm-pg-*"))
        with pytest.raises(PostgresUnavailable, match=r"initdb failed \(exit 3\): initdb: error: simulated disk"):
            with throwaway_cluster(path=str(bindir), search=()):
                pytest.fail("a cluster started with a failing initdb")
        assert set(Path(tempfile.gettempdir()).glob("prm-pg-*")) <= before  # its folder is gone


@pytest.mark.parametrize("required, outcome", [("1", pytest.fail.Exception), ("", pytest.skip.Exception)])
def test_unavailable_skips_or_fails_in_ci(monkeypatch, required, outcome):
    monkeypatch.setenv("PRM_REQUIRE_POSTGRES", required)
    with pytest.raises(outcome, match="initdb is missing"):
        unavailable("initdb is missing")


def _worker(url: str, folder: Path, me: str, other: str) -> subprocess.Popen:
    with open(folder / f"{me}.log", "w") as log:
        return subprocess.Popen([sys.executable, "-c", WORKER, url, str(folder), me, other], cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT)


def _executables(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_text("#!/bin/sh\nexit 0\n")
        (folder / name).chmod(stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
