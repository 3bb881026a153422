"""A warm worker for live runs: a process that has already imported torch and the engine and
waits for one run, so that Start shows the first epoch within a second instead of after the
seconds a new ``python -m prm`` spends importing.

Both ends live here. The server (:func:`hand_off`, called by ``explorer.live.start``) keeps at
most one worker ready per server process (:func:`warm`); a worker is single-use: it reads one
request, runs ``prm.cli.main`` on its argv in-process (the very entry ``python -m prm``
runs, so the run folder, its results and its exit status are a cold child's) and exits with
that status. The server starts the next one :data:`REARM_S` seconds later.

Why a process per run and not a long-lived pool: a run changes process state (torch's RNG,
the SIGINT handler, open files), and Stop signals the whole process. A fresh, single-use
worker keeps every run in a process of its own, exactly as the cold child did.

The request comes over a Unix socket that is the worker's stdin: the argv (JSON) and, as an
``SCM_RIGHTS`` file descriptor, the log file the server created under its own safe rules
(``explorer.live._create_log``: no link followed, a new file), which becomes the worker's
stdout and stderr. The worker never opens a path of the runs folder by name. End of file
on that socket means the server is gone: an idle worker then exits at once, so no worker
outlives the server that made it.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
"""Where the worker runs, as the cold child does: the repository (its ``prm`` package)."""

ENV = "PRM_EXPLORER_WARM"
"""``0`` turns warming off: every live run starts cold (``python -m prm ...``)."""

MODULE = "explorer.worker"
"""How the worker is started (``python -m explorer.worker``): the command line the Stop proof
(``explorer.live.proven_writer``) recognises."""

PRELOAD = ("prm.cli", "prm.engine", "prm.run", "prm.whatif", "sklearn.datasets", "tqdm")
"""What a run imports: torch and the engine, and the data loader's sklearn."""

REARM_S = 2.0
"""Seconds between a hand-off and the next worker's start: a worker spends its first seconds
importing torch on a core that the new run and the page showing its first epoch need (on 2
cores, re-arming at once put about 0.3 s on Start to first epoch)."""

_MAX_REQUEST = 1 << 20

_lock = threading.Lock()
_ready: tuple[subprocess.Popen, socket.socket] | None = None
"""The one worker waiting in this server process and the server's end of its socket."""


def enabled() -> bool:
    return os.environ.get(ENV, "1") != "0"


def warm() -> None:
    """Have one worker waiting (no-op when warming is off or one is already there). Called
    when the app first imports its live view and after each hand-off; one per server process,
    however many sessions it serves."""
    global _ready
    if not enabled():
        return
    with _lock:
        if _ready is not None and _ready[0].poll() is None:
            return
        if _ready is not None:
            _ready[1].close()
        _ready = _spawn()


def warm_later() -> None:
    """:func:`warm` after :data:`REARM_S`, on a daemon timer: a Start in between finds no
    worker and starts cold, exactly as with warming off."""
    timer = threading.Timer(REARM_S, warm)
    timer.daemon = True
    timer.start()


def _spawn() -> tuple[subprocess.Popen, socket.socket]:
    """A new worker with its own session (Stop's SIGINT, or Ctrl-C in the server's terminal,
    must reach only the process it is meant for), threads pinned as the cold child's are."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), PYTHONUNBUFFERED="1")
    try:
        proc = subprocess.Popen([sys.executable, "-m", MODULE], cwd=ROOT, stdin=theirs, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    except OSError:
        ours.close()
        raise
    finally:
        theirs.close()
    return proc, ours


def hand_off(argv: list[str], log_fd: int) -> subprocess.Popen | None:
    """Give the waiting worker this run (``prm`` argv) and its log; its process handle, or
    None when no live worker took it (warming off, none started, it died): start cold then.
    A worker still importing takes the request too: it is read as soon as it is ready."""
    global _ready
    if not enabled():
        return None
    with _lock:
        ready, _ready = _ready, None
    if ready is None:
        return None
    proc, sock = ready
    try:
        if proc.poll() is not None:
            return None
        socket.send_fds(sock, [json.dumps(argv).encode()], [log_fd])
    except OSError:  # it died between poll and send
        proc.kill()
        proc.wait()
        return None
    finally:
        sock.close()
    return proc


def _request() -> tuple[list[str], int] | None:
    """The one request on stdin: the argv and the log's descriptor; None at end of file (the
    server died) or for anything else (a stdin that is no socket: not started by the server)."""
    try:
        with socket.socket(fileno=0) as sock:
            message, fds, _, _ = socket.recv_fds(sock, _MAX_REQUEST, 1)
    except OSError:
        return None
    try:
        argv = json.loads(message) if message and len(fds) == 1 else None
    except ValueError:
        argv = None
    if not (isinstance(argv, list) and all(isinstance(a, str) for a in argv)):
        for fd in fds:
            os.close(fd)
        return None
    return argv, fds[0]


def main() -> int:
    try:
        for name in PRELOAD:
            importlib.import_module(name)
        request = _request()
    except KeyboardInterrupt:  # Stop pressed between the hand-off and the run's start
        return 130
    if request is None:
        return 0
    argv, log = request
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    null = os.open(os.devnull, os.O_RDONLY)  # stdin (the socket, now closed) as the cold child's
    if null != 0:
        os.dup2(null, 0)
        os.close(null)
    from prm.cli import main as prm_main

    return prm_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
