"""Stop signals only processes whose identity is proven; uploads are marked, checked, refused.

Every Stop case runs with ``os.kill`` patched: no real signal ever goes to pid 0, -1 or a
stranger. The one process that may be signalled is a stand-in started here, whose command
line is ``python -m prm run --out <folder>``: exactly what the proof looks for, run from a
folder whose package ``prm`` only sleeps (:func:`fake_writer`).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
import zipfile
from pathlib import Path

import pytest

from explorer import archive, live
from prm.run import UPLOADED, load_run, read_meta
from prm.run.meta import _process_start

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_runs" / "digits-classes-prm-s0"
pytestmark = pytest.mark.skipif(not SAMPLE.exists(), reason=f"{SAMPLE} is missing")
LINUX = Path("/proc/self/stat").exists()


@pytest.fixture
def unfinished(tmp_path) -> Path:
    """A copy of a sample run without its closing record, as a run still being written."""
    folder = tmp_path / "runs" / "live-run"
    shutil.copytree(SAMPLE, folder)
    lines = (folder / "events.jsonl").read_text().splitlines(keepends=True)
    (folder / "events.jsonl").write_text("".join(lines[:-1]))
    (folder / "summary.json").unlink()
    return folder


_real_kill = os.kill


@pytest.fixture
def kills(monkeypatch):
    """Every signal Stop would send, recorded instead of sent (liveness probes, signal 0, stay real)."""
    sent: list[tuple[int, int]] = []

    def fake_kill(pid: int, sig: int) -> None:
        if sig == 0:
            return _real_kill(pid, 0)
        sent.append((pid, sig))

    monkeypatch.setattr(os, "kill", fake_kill)
    return sent


def fake_writer(root: Path, *args: str) -> subprocess.Popen:
    """``python -m prm ARGS`` started in ``root``, given a package named ``prm`` there whose
    ``__main__`` only sleeps: a real writer's command line that writes nothing. Returns once
    its kernel start time can be read."""
    (root / "prm").mkdir(parents=True, exist_ok=True)
    (root / "prm" / "__init__.py").write_text("")
    (root / "prm" / "__main__.py").write_text("import time; time.sleep(60)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSAFEPATH")}  # -m finds the fake
    proc = subprocess.Popen([sys.executable, "-m", "prm", *args], cwd=root, env=env)
    deadline = time.monotonic() + 30
    while _process_start(proc.pid) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return proc


def claim(folder: Path, *, pid, pid_start, host=None) -> None:
    meta = json.loads((folder / "run.json").read_text())
    meta.update(pid=pid, pid_start=pid_start, host=host or socket.gethostname())
    meta.pop(UPLOADED, None)
    (folder / "run.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("who", ["zero", "minus-one", "init", "parent-shell", "this-server", "no-start-time",
                                 "wrong-start-time", "other-host"])
def test_stop_never_signals_a_process_a_run_folder_merely_names(unfinished, kills, who):
    parent = os.getppid()
    pid, start, host = {
        "zero": (0, None, None), "minus-one": (-1, None, None), "init": (1, _process_start(1), None),
        "parent-shell": (parent, _process_start(parent), None), "this-server": (os.getpid(), _process_start(os.getpid()), None),
        "no-start-time": (parent, None, None), "wrong-start-time": (parent, 12345, None),
        "other-host": (parent, _process_start(parent), "elsewhere.example"),
    }[who]
    claim(unfinished, pid=pid, pid_start=start, host=host)
    assert live.stop(unfinished) is False
    assert live.can_stop(unfinished) is False
    assert kills == []


@pytest.mark.skipif(not LINUX, reason="the identity proof reads /proc")
def test_stop_signals_a_proven_prm_run_writer_and_only_it(unfinished, kills, tmp_path):
    stand_in = fake_writer(tmp_path / "fake", "run", "--out", str(unfinished))
    try:
        claim(unfinished, pid=stand_in.pid, pid_start=_process_start(stand_in.pid))
        assert load_run(unfinished).status == "running"
        assert live.proven_writer(unfinished) == stand_in.pid
        assert live.stop(unfinished) is True
        assert kills == [(stand_in.pid, signal.SIGINT)]
        # the same process claimed by another folder is not that folder's writer
        other = tmp_path / "other"
        shutil.copytree(unfinished, other)
        assert live.proven_writer(other) is None and live.stop(other) is False
        assert kills == [(stand_in.pid, signal.SIGINT)]
    finally:
        _real_kill(stand_in.pid, signal.SIGKILL)  # os.kill is patched here; Popen.kill would only be recorded
        stand_in.wait()


@pytest.mark.skipif(not LINUX, reason="the identity proof reads /proc")
def test_stop_refuses_a_live_process_whose_command_is_not_prm_run(unfinished, kills, tmp_path):
    stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "--out", str(unfinished)])
    try:
        time.sleep(0.2)
        claim(unfinished, pid=stand_in.pid, pid_start=_process_start(stand_in.pid))
        assert load_run(unfinished).status == "running"  # shown as running: the pid and start time match ...
        assert live.stop(unfinished) is False and kills == []  # ... but it is not proven to be a prm run
    finally:
        _real_kill(stand_in.pid, signal.SIGKILL)  # os.kill is patched here; Popen.kill would only be recorded
        stand_in.wait()


def _zip(folder: Path, *, top: str = "run") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, f"{top}/{path.relative_to(folder).as_posix()}")
    return buffer.getvalue()


def test_an_uploaded_run_is_never_running_and_has_nothing_to_stop(unfinished, kills, tmp_path):
    parent = os.getppid()
    claim(unfinished, pid=parent, pid_start=_process_start(parent))  # names a live process of this host
    folder = archive.extract_run_zip(_zip(unfinished), root=tmp_path / "mine", name="evil.zip")
    meta = read_meta(folder)
    assert meta[UPLOADED] and meta["pid"] is None and meta["host"] is None
    run = load_run(folder)
    assert run.status == "failed" and "uploaded" in run.status_note
    assert not live.is_running(folder) and live.stop(folder) is False and kills == []


@pytest.mark.parametrize("damage, message", [
    (lambda f: (f / "run.json").write_text("[" * 100_000), "readable run"),
    (lambda f: (f / "summary.json").write_text(json.dumps({"acc": "x"})), "summary.json: ignored"),
    (lambda f: (f / "events.jsonl").write_text(
        (f / "events.jsonl").read_text().replace('"config": {', '"konfig": {', 1)), "does not load cleanly"),
    (lambda f: (f / "arrays" / "task_001.npz").write_bytes(b"PK\x05\x06" + bytes(18)), "task_001.npz"),
])
def test_an_upload_that_does_not_load_cleanly_is_refused_and_removed(damage, message, tmp_path):
    folder = tmp_path / "src"
    shutil.copytree(SAMPLE, folder)
    damage(folder)
    root = tmp_path / "mine"
    with pytest.raises(archive.UploadError, match=message):
        archive.extract_run_zip(_zip(folder), root=root, name="bad.zip")
    assert not root.exists() or list(root.iterdir()) == []


def test_an_upload_with_tricky_member_names_is_refused(tmp_path):
    def zipped(names: list[str]) -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as zf, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zipfile warns about the duplicates these cases are made of
            for name in names:
                zf.writestr(name, (SAMPLE / "run.json").read_bytes())
        return buffer.getvalue()

    cases = [(["run.json\n"], "control character"), (["run.json", "run.json"], "twice"),
             (["r/run.json", "r//run.json"], "twice"),
             ([f"d{n}/" for n in range(archive.MAX_MEMBERS + 1)] + ["run.json"], "entries")]
    for names, message in cases:
        with pytest.raises(archive.UploadError, match=message):
            archive.extract_run_zip(zipped(names), root=tmp_path / "mine", name="x.zip")
    assert not (tmp_path / "mine").exists() or list((tmp_path / "mine").iterdir()) == []


def test_an_upload_into_a_runs_folder_that_is_a_file_is_a_clear_refusal(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(archive.UploadError, match="cannot create a run folder"):
        archive.extract_run_zip(_zip(SAMPLE), root=tmp_path / "file" / "runs", name="x.zip")
