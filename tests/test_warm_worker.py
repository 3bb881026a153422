"""The warm live-run worker (``explorer.worker``): a run it takes is the run a cold
``python -m prm`` child makes, Stop and its proof work on it, a dead worker falls back to a
cold start, one worker per server process, and no worker outlives its server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from explorer import live, worker
from prm.run import load_run

ROOT = Path(__file__).resolve().parents[1]
TINY = live.LiveOptions(sequence="digits-classes", n_tasks=2, width=32, epochs=3, dtd_epochs=3, umap=False)
VOLATILE = {"seconds"}
"""What differs between two runs of one config in their records: times."""
IDENTITY = {"name", "started_at", "pid", "pid_start"}
"""run.json's fields that name the run and its process."""


def wait_for(condition, timeout: float = 180.0, what: str = "the condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what} did not hold within {timeout:.0f} s")


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().removesuffix(b"\0").decode().split("\0")


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for its parent."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def finish(folder: Path) -> int:
    return wait_for(lambda: live.child_exit(folder) is not None and [live.child_exit(folder)], what="the run's end")[0]


def stable(value):
    """A record without what differs between two runs of one config (times, pids, names)."""
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [stable(v) for v in value]
    return value


def recorded(folder: Path) -> tuple[list, dict, dict]:
    events = [stable(json.loads(line)) for line in (folder / "events.jsonl").read_text().splitlines()]
    arrays = {}
    for path in sorted((folder / "arrays").rglob("*.npz")):
        with np.load(path) as npz:
            arrays.update({f"{path.name}:{k}": npz[k] for k in npz.files})
    meta = {k: v for k, v in json.loads((folder / "run.json").read_text()).items() if k not in IDENTITY}
    return events, arrays, meta


@pytest.fixture
def warming(monkeypatch):
    monkeypatch.setenv(worker.ENV, "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    worker.warm()
    yield


def test_a_warm_run_records_what_a_cold_run_records(warming, monkeypatch, tmp_path):
    ready = worker._ready[0].pid
    warm = live.start(TINY, root=tmp_path / "warm")
    assert live._children[str(warm)].pid == ready and cmdline(ready)[1:] == ["-m", worker.MODULE]
    assert finish(warm) == 0
    monkeypatch.setenv(worker.ENV, "0")  # warming off: a cold python -m prm child
    cold = live.start(TINY, root=tmp_path / "cold")
    assert live._children[str(cold)].args[1:4] == ["-m", "prm", "run"]
    assert finish(cold) == 0
    (w_events, w_arrays, w_meta), (c_events, c_arrays, c_meta) = recorded(warm), recorded(cold)
    assert w_meta == c_meta and w_events == c_events
    assert w_arrays.keys() == c_arrays.keys() and w_arrays
    for key in w_arrays:
        np.testing.assert_array_equal(w_arrays[key], c_arrays[key], err_msg=key)
    assert load_run(warm).status == "finished" and "finished" in live.log_tail(warm)


def test_a_dead_worker_falls_back_to_a_cold_start_and_is_replaced(warming, tmp_path):
    dead = worker._ready[0]
    dead.kill()
    dead.wait()
    folder = live.start(TINY, root=tmp_path)
    assert live._children[str(folder)].args[1:4] == ["-m", "prm", "run"]
    deadline = time.monotonic() + 60  # re-armed REARM_S after the hand-off
    while worker._ready is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert worker._ready is not None and worker._ready[0].pid != dead.pid
    assert finish(folder) == 0


def test_one_worker_per_server_process_however_many_sessions(warming, tmp_path):
    from streamlit.testing.v1 import AppTest

    from explorer import state as keys

    first = worker._ready[0].pid
    for _ in range(2):  # two sessions of the app, each opening Train live
        at = AppTest.from_file(str(ROOT / "explorer" / "app.py"), default_timeout=60)
        at.query_params[keys.VIEW] = keys.LIVE
        at.session_state[keys.RUNS_DIR] = str(tmp_path)
        at.run()
        assert not at.exception
        worker.warm()
    mine = [int(p) for p in os.listdir("/proc") if p.isdigit() and alive(int(p)) and _is_child_worker(int(p))]
    assert mine == [first]


def _is_child_worker(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        return f"\nPPid:\t{os.getpid()}\n" in status and cmdline(pid)[1:] == ["-m", worker.MODULE]
    except OSError:
        return False


def test_stop_and_its_proof_on_a_warm_run(warming, tmp_path):
    options = live.LiveOptions(sequence="digits-writers", n_tasks=3, umap=False)  # long enough to stop
    folder = live.start(options, root=tmp_path)
    proc = live._children[str(folder)]
    wait_for(lambda: (folder / "events.jsonl").exists() and b'"epoch"' in (folder / "events.jsonl").read_bytes(),
             what="the first epoch")
    forged = tmp_path / "forged"  # a run.json naming the worker, in a folder it does not write
    forged.mkdir()
    (forged / "run.json").write_bytes((folder / "run.json").read_bytes())
    (forged / "events.jsonl").write_bytes((folder / "events.jsonl").read_bytes().splitlines(True)[0])
    assert live.proven_writer(forged) is None and live.stop(forged) is False
    ours = live._children.pop(str(folder))  # as another server sees it: no handle, only the proof
    try:
        assert live.proven_writer(folder) == proc.pid and live.can_stop(folder)
    finally:
        live._children[str(folder)] = ours
    assert live.is_running(folder) and live.stop(folder) is True
    assert finish(folder) == 130
    assert load_run(folder).status == "stopped" and not live.is_running(folder)


def test_no_worker_outlives_its_server(tmp_path):
    """The server killed outright (SIGKILL: nothing of it runs again): its idle worker, still
    importing or already waiting, reads the end of its socket and exits."""
    script = "from explorer import worker; worker.warm(); print(worker._ready[0].pid, flush=True); input()"
    server = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env={**os.environ, worker.ENV: "1"})
    pid = int(server.stdout.readline())
    assert alive(pid) and cmdline(pid)[1:] == ["-m", worker.MODULE]
    server.send_signal(signal.SIGKILL)
    server.wait()
    server.stdin.close()
    server.stdout.close()
    wait_for(lambda: not alive(pid), what="the orphaned worker's exit")
