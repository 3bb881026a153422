"""A throwaway PostgreSQL server for tests that need a real one: Optuna studies that several
worker processes share, which SQLite cannot show (its locking serialises them whole).

:func:`throwaway_cluster` runs Debian's own server binaries (``apt-get install postgresql``)
on a fresh data folder in the temporary directory, reachable only through a Unix socket in
that folder, so it can neither clash with a system server on 5432 nor be reached from
outside. It trusts every local connection (nothing but the test can reach the socket) and
runs without fsync: the data is thrown away. When no server can be started it raises
:class:`PostgresUnavailable` with the reason, which :func:`unavailable` turns into a skip, or
a failure where ``PRM_REQUIRE_POSTGRES=1`` (CI), so a missing server is never a silent pass.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import NoReturn

import pytest

# Debian and Ubuntu keep the server binaries off PATH, one folder per major version.
SEARCH = ("/usr/lib/postgresql/*/bin",)
# initdb and postgres refuse to run as root; as root the server runs as the first of these.
UNPRIVILEGED = ("postgres", "nobody")
SUPERUSER = "prm"
# The port only names the socket file (.s.PGSQL.5432) inside the cluster's own folder: no TCP.
PORT = 5432
START_SECONDS = 30.0
LOG_LINES = 15


class PostgresUnavailable(RuntimeError):
    """Why no throwaway server could be started: the reason a test skips (or fails in CI)."""


def unavailable(reason: str) -> NoReturn:
    """Skip the calling test with ``reason``, or fail it where PRM_REQUIRE_POSTGRES=1: CI
    installs PostgreSQL precisely so that these tests run, and a skip there would hide a
    broken harness behind a green build."""
    if os.environ.get("PRM_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"PostgreSQL is required (PRM_REQUIRE_POSTGRES=1): {reason}", pytrace=False)
    pytest.skip(reason)


def find_server(*, path: str | None = None, search: Sequence[str] = SEARCH) -> Path:
    """The folder holding both ``initdb`` and ``postgres``: the one ``initdb`` on ``path``
    (default: PATH) really lives in, else the newest version matching ``search`` (version
    numbers compared as numbers: 16 after 9.6). Both come from one folder because a data
    folder made by one major version is refused by another's server."""
    tried = []
    on_path = shutil.which("initdb", path=os.environ.get("PATH", "") if path is None else path)
    candidates = [Path(on_path).resolve().parent] if on_path else []
    found = [Path(d) for pattern in search for d in glob.glob(pattern) if os.path.isdir(d)]
    candidates += sorted(found, key=lambda d: [int(n) for n in re.findall(r"\d+", str(d))], reverse=True)
    for folder in candidates:
        missing = [name for name in ("initdb", "postgres") if not os.access(folder / name, os.X_OK)]
        if not missing:
            return folder
        tried.append(f"{folder} lacks {' and '.join(missing)}")
    where = f"initdb is neither on PATH nor in {', '.join(search) or 'any search folder'}"
    raise PostgresUnavailable("; ".join(tried) if tried else f"no PostgreSQL server: {where} "
                              "(apt-get install postgresql)")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Cluster:
    """A running throwaway server: where its socket is, and a way to get fresh databases."""

    root: Path  # the temporary folder: data/, the socket and server.log
    pid: int  # the postmaster's

    def url(self, database: str) -> str:
        """A SQLAlchemy URL (what Optuna takes) for ``database``; the socket folder goes in
        the query because a URL's host part cannot hold a path."""
        return f"postgresql+psycopg2://{SUPERUSER}@/{database}?host={self.root}&port={PORT}"

    def new_database(self) -> str:
        """A fresh, empty database and its URL: tests sharing one server stay independent
        (each gets its own Optuna tables) without paying for another initdb."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        with closing(self._connect("postgres")) as conn, conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def _connect(self, database: str):
        import psycopg2

        conn = psycopg2.connect(host=str(self.root), port=PORT, user=SUPERUSER, dbname=database,
                                connect_timeout=2)
        conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction (nor in `with conn`)
        return conn


@contextmanager
def throwaway_cluster(*, path: str | None = None, search: Sequence[str] = SEARCH) -> Iterator[Cluster]:
    """Start a server on a new data folder, yield it, then stop it (immediate shutdown: there
    is nothing to keep) and delete the folder, also when the body raises or is interrupted.
    The server also gets SIGQUIT if this process dies outright (``setpriv --pdeathsig``), so
    a killed test run leaves no server behind. ``path`` and ``search`` say where to look for
    the binaries (see :func:`find_server`)."""
    bindir = find_server(path=path, search=search)
    try:
        import psycopg2  # noqa: F401  (checked before any work: nothing could connect without it)
    except ImportError:
        raise PostgresUnavailable("psycopg2 is not installed (pip install psycopg2-binary)") from None
    owner = _owner()
    root = Path(tempfile.mkdtemp(prefix="prm-pg-"))
    server = None
    try:
        if owner:
            os.chown(root, owner["user"], owner["group"])
        data = root / "data"
        _run([str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", SUPERUSER, "-E", "UTF8",
              "--locale=C", "--no-sync"], owner=owner)
        log_path = root / "server.log"
        deathsig = ["setpriv", "--pdeathsig", "QUIT", "--"] if shutil.which("setpriv") else []
        with open(log_path, "wb") as log:
            server = subprocess.Popen(
                [*deathsig, str(bindir / "postgres"), "-D", str(data), "-k", str(root), "-p", str(PORT),
                 "-c", "listen_addresses=", "-c", "fsync=off", "-c", "full_page_writes=off",
                 "-c", "synchronous_commit=off"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in the terminal reaches pytest, which stops it
                **owner)
        cluster = Cluster(root=root, pid=server.pid)
        _wait_ready(cluster, server, log_path)
        yield cluster
    finally:
        if server is not None and server.poll() is None:
            server.send_signal(signal.SIGQUIT)  # immediate shutdown; it ends its backends first
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        shutil.rmtree(root, ignore_errors=True)


def _owner() -> dict:
    """subprocess arguments that drop root for initdb and the server; empty when not root."""
    if os.geteuid() != 0:
        return {}
    for name in UNPRIVILEGED:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
    raise PostgresUnavailable(f"running as root, and none of the users {', '.join(UNPRIVILEGED)} exists "
                              "to run the server as (PostgreSQL refuses root)")


def _run(command: list[str], *, owner: dict) -> None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, **owner)
    except OSError as exc:
        raise PostgresUnavailable(f"cannot run {command[0]}: {exc}") from None
    if done.returncode:
        raise PostgresUnavailable(f"{Path(command[0]).name} failed (exit {done.returncode}): "
                                  + _tail(done.stdout + done.stderr))


def _wait_ready(cluster: Cluster, server: subprocess.Popen, log_path: Path) -> None:
    """Poll until the server accepts a connection; its log's last lines if it never does."""
    import psycopg2

    deadline = time.monotonic() + START_SECONDS
    while True:
        if server.poll() is not None:
            raise PostgresUnavailable(f"postgres exited with {server.returncode} while starting: "
                                      + _tail(log_path.read_text(errors="replace")))
        try:
            cluster._connect("postgres").close()
            return
        except psycopg2.OperationalError:
            if time.monotonic() > deadline:
                raise PostgresUnavailable(f"postgres did not accept connections within {START_SECONDS:g} s: "
                                          + _tail(log_path.read_text(errors="replace"))) from None
            time.sleep(0.05)


def _tail(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-LOG_LINES:]) or "(no output)"
