"""Stop's proof that a process writes a run folder reads its command line as the CLI does.

The proof (``explorer.live``) must name the folder the process really writes: its interpreter
a Python run as ``python -m prm`` and nothing else (``-c`` code, interpreter options and
``-mprm`` are refused), then ``run`` or ``whatif`` with options exactly as ``prm``'s own
parser reads them (``--ou`` is ``--out``, the last ``--out`` wins), the folder resolved
against the process's working folder. Parsing never prints and never exits. Every signal is
recorded instead of sent (``os.kill`` patched, as in tests/test_stop_and_upload.py).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from explorer import live
from prm.run import load_run
from prm.run.meta import _process_start
from tests.test_stop_and_upload import LINUX, _real_kill, claim, fake_writer, kills, unfinished  # noqa: F401 - fixtures

PY = sys.executable
SLEEP = "import time; time.sleep(60)"


def writes(argv: list[str], cwd: Path, folder: Path) -> bool:
    return live._command_writes(argv, cwd, folder)


@pytest.fixture
def where(tmp_path) -> dict[str, Path]:
    runs = tmp_path / "runs"
    return {"cwd": tmp_path / "work", "runs": runs, "A": runs / "A", "B": runs / "B"}


@pytest.mark.parametrize("name, argv, cwd, written", [
    ("-c code before -m", [PY, "-c", SLEEP, "-m", "prm", "run", "--out", "{A}"], "cwd", None),
    ("-c code alone", [PY, "-c", SLEEP, "--out", "{A}"], "cwd", None),
    ("a later --ou", [PY, "-m", "prm", "run", "--out", "{A}", "--ou", "{B}"], "cwd", "B"),
    ("two --out", [PY, "-m", "prm", "run", "--out", "{A}", "--out", "{B}"], "cwd", "B"),
    ("--out=", [PY, "-m", "prm", "run", "--out={A}"], "cwd", "A"),
    ("--ou abbreviated", [PY, "-m", "prm", "run", "--ou", "{A}"], "cwd", "A"),
    ("--ou= abbreviated", [PY, "-m", "prm", "run", "--ou={A}", "--quiet"], "cwd", "A"),
    ("two sub-commands", [PY, "-m", "prm", "run", "whatif", "{B}", "--task", "2", "--similar", "1", "--out", "{A}"],
     "cwd", None),
    ("show is not a writer", [PY, "-m", "prm", "show", "{A}"], "cwd", None),
    ("-m prm.something", [PY, "-m", "prm.whatif", "run", "--out", "{A}"], "cwd", None),
    ("-mprm", [PY, "-mprm", "run", "--out", "{A}"], "cwd", None),
    ("an interpreter option", [PY, "-u", "-m", "prm", "run", "--out", "{A}"], "cwd", None),
    ("not a Python", ["/bin/sh", "-m", "prm", "run", "--out", "{A}"], "cwd", None),
    ("an unknown option", [PY, "-m", "prm", "run", "--out", "{A}", "--bogus"], "cwd", None),
    ("--help", [PY, "-m", "prm", "run", "--out", "{A}", "--help"], "cwd", None),
    ("no --out", [PY, "-m", "prm", "run", "--quiet"], "cwd", None),
    ("relative, from the runs folder", [PY, "-m", "prm", "run", "--out", "A"], "runs", "A"),
    ("relative, from elsewhere", [PY, "-m", "prm", "run", "--out", "A"], "cwd", None),
    ("relative with ..", [PY, "-m", "prm", "run", "--out", "../runs/B"], "cwd", "B"),
    ("absolute, from elsewhere", [PY, "-m", "prm", "run", "--out", "{B}"], "runs", "B"),
    ("whatif", [PY, "-m", "prm", "whatif", "{B}", "--task", "2", "--similar", "", "--out", "{A}", "--quiet"],
     "cwd", "A"),
])
def test_the_folder_a_command_line_writes(where, capsys, name, argv, cwd, written):
    argv = [a.format(**where) for a in argv]
    for folder in ("A", "B"):
        assert writes(argv, where[cwd], where[folder]) is (folder == written), (name, folder)
    assert capsys.readouterr() == ("", ""), "parsing printed something"


def test_parsing_a_command_line_never_exits(where):
    """The server runs the proof: a parser error or --help must not raise SystemExit."""
    for argv in ([PY, "-m", "prm", "--version"], [PY, "-m", "prm", "run", "-h"], [PY, "-m", "prm"],
                 [PY, "-m", "prm", "run", "--seed", "1" * 5000, "--out", "A"]):
        assert writes(argv, where["runs"], where["A"]) is False


def _started(argv: list[str], cwd: Path) -> subprocess.Popen:
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while _process_start(proc.pid) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return proc


@pytest.mark.skipif(not LINUX, reason="the identity proof reads /proc")
def test_stop_does_not_signal_python_c_that_mentions_prm_run(unfinished, kills, tmp_path):  # noqa: F811
    stand_in = _started([PY, "-c", SLEEP, "-m", "prm", "run", "--out", str(unfinished)], tmp_path)
    try:
        claim(unfinished, pid=stand_in.pid, pid_start=_process_start(stand_in.pid))
        assert load_run(unfinished).status == "running"  # its pid and start time match ...
        assert live.proven_writer(unfinished) is None and live.can_stop(unfinished) is False
        assert live.stop(unfinished) is False and kills == []  # ... but it is not a prm process
    finally:
        _real_kill(stand_in.pid, signal.SIGKILL)  # os.kill is patched here
        stand_in.wait()


@pytest.mark.skipif(not LINUX, reason="the identity proof reads /proc")
def test_stop_signals_the_folder_a_writer_really_writes(unfinished, kills, tmp_path):  # noqa: F811
    """``--out A --ou B`` writes B: B's Stop signals it, A's does not."""
    other = Path(shutil.copytree(unfinished, unfinished.parent / "other"))
    stand_in = fake_writer(unfinished.parent, "run", "--out", other.name, "--ou", unfinished.name)
    try:
        for folder in (unfinished, other):
            claim(folder, pid=stand_in.pid, pid_start=_process_start(stand_in.pid))
        assert live.proven_writer(other) is None and live.stop(other) is False and kills == []
        assert live.proven_writer(unfinished) == stand_in.pid
        assert live.stop(unfinished) is True and kills == [(stand_in.pid, signal.SIGINT)]
    finally:
        _real_kill(stand_in.pid, signal.SIGKILL)
        stand_in.wait()
