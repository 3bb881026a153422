"""Optuna storages: opening one to write, and looking at one without ever writing to it.

Storages: ``sqlite:///path.db`` (embedded, the default), a PostgreSQL URL
(``postgresql://user@host/db``, read with the psycopg2 driver the project installs) for
machines that share a server, or ``journal:///path.log``, Optuna's journal file on a folder
every machine mounts. Commands that train open them with :func:`open_storage`, which creates
what is missing. Everything that only reads (the explorer's views, ``compare --tuned``) goes
through :func:`read_storage`, which never writes: a storage URL is typed by a user or found in
a runs folder, so the file it names is untrusted in the same way as a run folder (a regular
file, checked on its open descriptor, bounded, and an Optuna storage at all) and a look at it
must leave its bytes and its folder as they were.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import stat
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.storages.journal import BaseJournalBackend

from prm.config import ConfigError

HEARTBEAT_SECONDS = 30
GRACE_SECONDS = 120
"""A running trial whose heartbeat is older than this is failed by the next worker."""


class StorageError(ConfigError):
    """A storage URL that cannot be opened, or a study that does not fit the command."""


# ----------------------------------------------------------------------------- storages

MiB = 2**20
MAX_JOURNAL_BYTES = 64 * MiB
"""A journal file is read whole into memory (Optuna replays every line of it): a 1000-trial
study of 50-task runs writes about 20 MiB (21 kB a trial, most of it the 50 x 50 accuracy
matrix; tests/test_hostile_storage.py measures it), so three such studies fit. A larger file
is refused before a byte of it is read."""
CONNECT_SECONDS = 10
"""How long a look waits for a PostgreSQL server to answer (libpq waits for ever by default)."""
OPTUNA_TABLES = ("studies", "trials", "version_info", "alembic_version")
"""Tables every Optuna RDB storage holds; a database without them is not one, and Optuna would
create them in it."""
VERSION_TABLES = ("version_info", "alembic_version")
"""Tables Optuna writes a row into when it finds them empty."""
URL_FORMS = "use sqlite:///path.db, journal:///path.log or postgresql://user@host/database"


def open_storage(url: str, *, create: bool = True) -> Any:
    """An Optuna storage to write into (``prm tune``, ``compare --study``), created where it
    does not exist yet; ``create=False`` refuses a file that does not exist (``--fail-running``
    changes an existing study). A file that exists must be a regular file, and a journal no
    larger than MAX_JOURNAL_BYTES, checked on a non-blocking descriptor: Optuna would block on
    a FIFO for ever and read /dev/zero until the memory is gone.

    RDB storages (SQLite, PostgreSQL) keep a heartbeat, so a trial whose worker was killed is
    failed by the next worker instead of counting for ever; Optuna's journal file keeps none
    (``fail_running`` clears such trials by hand). Reading goes through :func:`read_storage`."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = url.strip()
    scheme = _scheme(url)
    heartbeat = {"heartbeat_interval": HEARTBEAT_SECONDS, "grace_period": GRACE_SECONDS}
    with one_line(url, "open"):
        if scheme == "journal":
            path = file_of(url)
            _prepare_file(path, url, create=create, limit=MAX_JOURNAL_BYTES)
            from optuna.storages.journal import JournalFileBackend

            with warnings.catch_warnings():  # the journal backend is marked experimental in some versions
                warnings.simplefilter("ignore")
                return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        if scheme == "sqlite":
            _prepare_file(file_of(url), url, create=create, limit=math.inf)
            return _rdb(url, heartbeat)
        if _is_server(scheme):
            return _rdb(engine_url(url), {**heartbeat, "engine_kwargs": {"pool_pre_ping": True}})
    raise _unknown_kind(url, scheme)


def read_storage(url: str) -> Any:
    """An Optuna storage to look at, through which nothing can be written: how the Tuning and
    Compare views and ``compare --tuned`` read. Optuna's own opening creates its tables in any
    database it is given (and a ``-journal`` beside the file), so a look never uses it:

    - SQLite: the file must be a regular SQLite file (checked on a non-blocking descriptor)
      holding Optuna's tables; it is then opened read-only (``mode=ro``) and Optuna is told
      to create nothing;
    - journal: read once, whole, from the checked descriptor and at most MAX_JOURNAL_BYTES,
      into a backend that refuses to append;
    - a server: the same table check, then sessions the server keeps read-only."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = url.strip()
    scheme = _scheme(url)
    with one_line(url, "open"):
        if scheme == "journal":
            return _read_journal(file_of(url), url)
        if scheme == "sqlite":
            return _read_sqlite(file_of(url), url)
        if _is_server(scheme):
            return _read_server(url)
    raise _unknown_kind(url, scheme)


def engine_url(url: str) -> str:
    """The URL SQLAlchemy is given. A plain ``postgresql://`` (the README's form) names
    psycopg2, the driver this project installs: SQLAlchemy 2.1 reads the plain form as
    psycopg 3, and would report it missing. An explicit ``+driver`` and every other kind are
    left as they are."""
    scheme, sep, rest = url.strip().partition("://")
    return f"postgresql+psycopg2://{rest}" if sep and scheme == "postgresql" else url.strip()


def _scheme(url: str) -> str:
    scheme, sep, _ = url.partition("://")
    if not sep:
        raise StorageError(f"storage {safe_url(url)!r} is not a URL; {URL_FORMS}")
    return scheme


def _is_server(scheme: str) -> bool:
    return scheme.partition("+")[0] in ("postgresql", "mysql")


def _unknown_kind(url: str, scheme: str) -> StorageError:
    return StorageError(f"storage {safe_url(url)}: unknown kind {scheme!r}; {URL_FORMS}")


@contextlib.contextmanager
def one_line(url: str, doing: str) -> Iterator[None]:
    """Whatever opening or reading a storage raises, as one StorageError line without the
    URL's password: a driver, a server or a damaged file can raise anything."""
    try:
        yield
    except StorageError:
        raise
    except ImportError as exc:
        raise StorageError(f"storage {safe_url(url)}: a driver is missing ({exc}); for PostgreSQL "
                           "pip install psycopg2-binary") from None
    except Exception as exc:  # sqlalchemy's OperationalError and friends
        first = str(exc).splitlines()[0][:300] if str(exc) else ""
        raise StorageError(f"cannot {doing} storage {safe_url(url)}: {type(exc).__name__}: {first}") from None


def _rdb(url: str, kwargs: dict[str, Any]) -> Any:
    """``RDBStorage(url)``, tried again when another worker was creating the same empty
    database's tables at that moment: Optuna creates them without a lock, and the loser gets
    'already exists' or a unique violation (optuna#1092); a moment later the tables are there."""
    import sqlalchemy.exc

    def make() -> Any:
        with warnings.catch_warnings():  # the heartbeat is marked experimental; it fails a killed worker's trial
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, **kwargs)

    for attempt in range(3):
        try:
            return make()
        except sqlalchemy.exc.DBAPIError as exc:
            if not (isinstance(exc, sqlalchemy.exc.IntegrityError) or "already exists" in str(exc)):
                raise
            time.sleep(0.2 * (attempt + 1))
    return make()  # a fourth time; its error is the one reported


def _open_file(path: Path, url: str, *, limit: float) -> tuple[int, int]:
    """A read-only descriptor of the storage file and its size, for a regular file no larger
    than ``limit`` (prm/safeio.py's rule for run files). Opened non-blocking, so a FIFO cannot
    block the open, and checked on the descriptor, so what is read through it is what was
    checked. Raises FileNotFoundError when there is no file."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise StorageError(f"storage {url}: cannot open {path}: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise StorageError(f"storage {url}: {path} is a folder, not a file")
        if not stat.S_ISREG(info.st_mode):
            raise StorageError(f"storage {url}: {path} is not a regular file (a device, FIFO or socket is never "
                               "opened as a storage)")
        if info.st_size > limit:
            raise StorageError(f"storage {url}: {path} holds {info.st_size} bytes, more than the {limit} allowed "
                               f"({limit / MiB:g} MiB, far more than a real study writes)")
    except BaseException:
        os.close(fd)
        raise
    return fd, info.st_size


def _prepare_file(path: Path, url: str, *, create: bool, limit: float) -> None:
    """Check a storage file that exists; for one that does not, make its folder (``create``)
    or refuse."""
    try:
        os.close(_open_file(path, url, limit=limit)[0])
        return
    except FileNotFoundError:
        if not create:
            raise StorageError(f"storage {url}: {path} does not exist") from None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"storage {url}: cannot create {path.parent}: {exc}") from None


def _existing(path: Path, url: str, *, limit: float) -> tuple[int, int]:
    """:func:`_open_file` for a look, where a missing file is an error."""
    try:
        return _open_file(path, url, limit=limit)
    except FileNotFoundError:
        raise StorageError(f"storage {url}: {path} does not exist") from None


def _read_sqlite(path: Path, url: str) -> Any:
    """An SQLite storage opened read-only: SQLite itself refuses every write (``mode=ro``),
    and makes no ``-journal``. A file in WAL mode (not Optuna's default; a copy may be in it)
    whose ``-wal`` and ``-shm`` files are not both there is read as immutable, since
    read-only SQLite would create them: a writer would keep a ``-wal``, so none is writing.
    SQLite opens the path again itself, after the check: the file is checked, not pinned."""
    import sqlite3
    import urllib.parse

    from sqlalchemy.pool import NullPool

    fd, size = _existing(path, url, limit=math.inf)
    try:
        header = os.pread(fd, 100, 0)
    finally:
        os.close(fd)
    if not header.startswith(b"SQLite format 3\0"):
        raise StorageError(f"storage {url}: {path} is not an Optuna storage ("
                           + ("an empty file)" if size == 0 else "not an SQLite database)"))
    wal = header[18:20] == b"\x02\x02"
    immutable = wal and not all(path.with_name(path.name + side).exists() for side in ("-wal", "-shm"))
    uri = f"file:{urllib.parse.quote(str(path.absolute()))}?mode=ro" + ("&immutable=1" if immutable else "")

    def connect() -> Any:
        return sqlite3.connect(uri, uri=True, check_same_thread=False)

    return _read_rdb(url, "sqlite://", {"creator": connect, "poolclass": NullPool})


def _read_server(url: str) -> Any:
    """A server storage whose sessions PostgreSQL keeps read-only, with a bounded wait for
    the server to answer; the table check keeps MySQL's from being created too."""
    target = engine_url(url)
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if target.startswith(("postgresql+psycopg2://", "postgresql+psycopg://")):
        kwargs["connect_args"] = {"options": "-c default_transaction_read_only=on",
                                  "connect_timeout": CONNECT_SECONDS}
    return _read_rdb(url, target, kwargs)


def _read_rdb(url: str, target: str, engine_kwargs: dict[str, Any]) -> Any:
    """An RDB storage that creates nothing: Optuna's tables and version rows are checked on an
    engine of its own first; RDBStorage then skips creating tables and, finding the version
    rows, writes none."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(target, **engine_kwargs)
    try:
        with engine.connect() as conn:
            found = set(sqlalchemy.inspect(conn).get_table_names())
            lacks = [f"a {t} table" for t in OPTUNA_TABLES if t not in found]
            lacks += [f"a row in {t}" for t in VERSION_TABLES
                      if t in found and conn.execute(sqlalchemy.text(f"SELECT COUNT(*) FROM {t}")).scalar() == 0]
    finally:
        engine.dispose()
    if lacks:
        raise StorageError(f"storage {safe_url(url)} is not an Optuna storage: it lacks {', '.join(lacks)}")
    return optuna.storages.RDBStorage(target, engine_kwargs=engine_kwargs, skip_table_creation=True)


def _read_journal(path: Path, url: str) -> Any:
    """A journal storage replayed from the bytes of the checked descriptor: Optuna's file
    backend would open the path again, and append to it, itself."""
    fd, size = _existing(path, url, limit=MAX_JOURNAL_BYTES)
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(size)  # what the file held when checked; lines appended since wait for the next look
    return optuna.storages.JournalStorage(_JournalRecords(data=data, where=f"storage {url}"))


class _JournalRecords(BaseJournalBackend):
    """A journal's records, read once; appending is refused, so nothing is ever written
    through it. A last line without its newline is a record a worker is still writing: it is
    left for the next look, as Optuna's own reader does."""

    def __init__(self, *, data: bytes, where: str) -> None:
        self._records = [_journal_record(line, number, where)
                         for number, line in enumerate(data.split(b"\n")[:-1], start=1)]

    def read_logs(self, log_number_from: int) -> list[dict[str, Any]]:
        return self._records[log_number_from:]

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        raise StorageError("this storage was opened to be read; nothing is written into it")


def _journal_record(line: bytes, number: int, where: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        record = None
    if not isinstance(record, dict):
        raise StorageError(f"{where}: line {number} is not a journal record")
    return record


def safe_url(url: str) -> str:
    """``url`` without its password (in the user part, up to the last '@' before any query,
    as libpq reads it, or in a ``password=`` query), for messages."""
    import re

    scheme, sep, rest = url.partition("://")
    query_at = rest.find("?") if "?" in rest else len(rest)
    at = rest.rfind("@", 0, query_at)
    if sep and at > 0 and ":" in rest[:at]:
        rest = rest[:at].split(":", 1)[0] + ":***" + rest[at:]
    return re.sub(r"(?i)([?&]password=)[^&]*", r"\1***", f"{scheme}{sep}{rest}")


def file_of(url: str) -> Path | None:
    """The file an SQLite or journal storage lives in (None for a server): the folder a
    recorded run path is resolved against when the storage was copied from elsewhere. Both
    read paths as SQLAlchemy does: ``sqlite:///runs/x.db`` is relative, ``sqlite:////x.db``
    absolute."""
    scheme, _, rest = url.strip().partition("://")
    if scheme in ("sqlite", "journal"):
        return Path(rest[1:]) if rest.startswith("/") else Path(rest)
    return None
