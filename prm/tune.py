"""Hyper-parameter studies and shared comparisons, kept in an Optuna storage.

The paper tunes dropout and the regulariser with Optuna's TPE over 20 trials and reports PS,
the standard deviation of Acc over those trials: how much a method's result depends on
getting its hyper-parameters right. :func:`tune` runs such a study; :func:`compare_grid`
spreads a comparison (sequence x method x seed) over whoever runs the same command on the
same storage. Both keep each trial's metrics and accuracy matrix in the storage itself, so a
table or the explorer's Tuning view needs no file from another machine; each trial also
names the run folder it recorded.

Storages: ``sqlite:///path.db`` (embedded, the default), a PostgreSQL URL
(``postgresql://user@host/db``, read with psycopg2) for machines that share a server, or
``journal:///path.log``, Optuna's journal file on a folder every machine mounts. Commands that
train open them with :func:`open_storage`, which creates what is missing; everything that
only reads (the explorer's views, ``compare --tuned``) goes through :func:`read_storage`,
which never writes, and reads each trial as untrusted input (a bad one is shown unreadable).

Workers coordinate only through the storage. A trial counts towards ``--trials`` from the
moment it starts, so parallel workers never overshoot; one that started after the study was
already full, or a grid cell another worker also took, is closed as *pruned* with the reason
in its ``note`` attribute, before any training. A worker stopped by Ctrl-C marks its trial
failed; one killed outright leaves it running until its heartbeat goes stale (two minutes;
SQLite and PostgreSQL), after which the next worker marks it failed. Failed trials do not
count: running the same command again trains the trials still missing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import math
import os
import socket
import stat
import time
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.storages.journal import BaseJournalBackend

from prm import metrics
from prm.config import ConfigError, RunConfig, results_relevant
from prm.records import MAX_TASKS

DEFAULT_STORAGE = "sqlite:///runs/optuna.db"
HEARTBEAT_SECONDS = 30
ATTRS_WAIT_SECONDS = 10.0
"""How long a worker waits for the one that created a study to finish writing what the study
was made for (its attributes are written one by one after the study exists)."""
GRACE_SECONDS = 120


class StorageError(ConfigError):
    """A storage URL that cannot be opened, or a study that does not fit the command."""


# ----------------------------------------------------------------------------- search space


@dataclasses.dataclass(frozen=True, kw_only=True)
class Range:
    """One tuned hyper-parameter: where it lives in :class:`RunConfig` and its range."""

    name: str
    section: str | None  # RunConfig section ("model", "optim", "hat"), None for a top-level field
    field: str
    low: float
    high: float
    log: bool = False

    def describe(self) -> str:
        return f"{self.name} in [{self.low:g}, {self.high:g}]" + (" (log scale)" if self.log else "")


INPUT_DROPOUT = Range(name="input_dropout", section="model", field="input_dropout", low=0.0, high=0.5)
HIDDEN_DROPOUT = Range(name="hidden_dropout", section="model", field="hidden_dropout", low=0.0, high=0.7)
LR = Range(name="lr", section="optim", field="lr", low=0.01, high=0.3, log=True)
LAMB = Range(name="lamb", section="hat", field="lamb", low=0.05, high=5.0, log=True)
EWC_LAMBDA = Range(name="ewc_lambda", section=None, field="ewc_lambda", low=10.0, high=1e5, log=True)


def search_space(method: str) -> tuple[Range, ...]:
    """The paper's space: both dropouts and the learning rate for every method, plus the
    method's regulariser strength (HAT's and PRM's mask sparsity ``lamb``, EWC's lambda).
    The ranges hold this project's defaults (dropout 0.2/0.5, lr 0.1, lamb 0.75, EWC 5000)
    well inside them; docs/tuning.md says why each bound is where it is."""
    base = (INPUT_DROPOUT, HIDDEN_DROPOUT, LR)
    if method in ("hat", "cat") or method.startswith("prm"):
        return (*base, LAMB)
    if method == "ewc":
        return (*base, EWC_LAMBDA)
    return base


def apply_params(base: RunConfig, params: dict[str, float]) -> RunConfig:
    """``base`` with tuned values set (validated like any config). The lowest learning rate
    follows a tuned lr down, as the CLI's ``--lr`` does."""
    ranges = {r.name: r for r in search_space(base.method)}
    data = base.to_dict()
    for name, value in params.items():
        if name not in ranges:
            raise StorageError(f"{name} is not tuned for {base.method}; its space is "
                               f"{', '.join(ranges)}")
        r = ranges[name]
        (data[r.section] if r.section else data)[r.field] = float(value)
    data["optim"]["lr_min"] = min(data["optim"]["lr_min"], data["optim"]["lr"])
    return RunConfig.from_dict(data)


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
    with _one_line(url, "open"):
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
    with _one_line(url, "open"):
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
def _one_line(url: str, doing: str) -> Iterator[None]:
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


# ----------------------------------------------------------------------------- reading studies


@dataclasses.dataclass(frozen=True, kw_only=True)
class Trial:
    """One trial as the storage holds it: what the tables and the Tuning view show. A trial
    whose record is not what ``prm tune`` writes has state 'unreadable', ``problem`` says why,
    and every other field is empty: it counts towards nothing."""

    number: int
    state: str  # complete | running | fail | pruned | waiting | unreadable
    params: dict[str, Any]
    val_acc: float | None  # the objective: Acc on the validation sets
    test_acc: float | None
    bwt: float | None
    seconds: float | None
    run_dir: str | None  # the run folder as recorded (absolute, on the machine named by host)
    run_dir_relative: str | None  # the same, relative to the storage file (SQLite or journal only)
    host: str | None
    note: str | None  # why a trial was failed or pruned
    test_matrix: np.ndarray | None
    families: tuple[str, ...]
    problem: str | None = None  # why the trial is unreadable


@dataclasses.dataclass(frozen=True, kw_only=True)
class Study:
    """A study's record: ``kind`` 'tune' (a TPE search) or 'compare' (a shared grid).
    ``problems`` names what could not be read (a study attribute, a trial and its field)."""

    name: str
    kind: str
    attrs: dict[str, Any]
    trials: tuple[Trial, ...]
    problems: tuple[str, ...] = ()

    @property
    def sequence(self) -> str | None:
        return self.attrs.get("sequence")

    @property
    def method(self) -> str | None:
        return self.attrs.get("method")

    @property
    def complete(self) -> tuple[Trial, ...]:
        return tuple(t for t in self.trials if t.state == "complete" and t.val_acc is not None)

    @property
    def best(self) -> Trial | None:
        """The trial with the highest validation Acc (never chosen by test Acc)."""
        done = self.complete
        return max(done, key=lambda t: (t.val_acc, -t.number)) if done else None

    @property
    def ps(self) -> float | None:
        """PS: the standard deviation of test Acc over the complete trials (population std,
        as ``compare``'s ± columns); None below two trials."""
        return parameter_sensitivity([t.test_acc for t in self.complete if t.test_acc is not None])


def parameter_sensitivity(accs: Sequence[float]) -> float | None:
    """PS of the paper: the standard deviation of Acc over a study's trials."""
    values = [float(a) for a in accs if a is not None and math.isfinite(a)]
    return float(np.std(values)) if len(values) >= 2 else None


def study_names(url: str) -> list[str]:
    """The studies in a storage, by name (a look: never writes, never creates anything)."""
    storage = read_storage(url)
    with _one_line(url, "read"):
        return [s.study_name for s in storage.get_all_studies()]


def load_study(url: str, name: str) -> Study:
    """One study with every trial, read from ``url`` (a look: never writes)."""
    storage = read_storage(url)
    with _one_line(url, "read"):
        return _read(storage, name)


def _read(storage: Any, name: str) -> Study:
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        raise StorageError(f"no study named {name!r} in this storage") from None
    attrs, problems = _study_attrs(storage.get_study_user_attrs(study_id))
    kind = attrs.get("kind", "other")
    trials = _trials(storage, study_id, kind=kind)
    problems += [f"trial {t.number}: {t.problem}" for t in trials if t.problem]
    return Study(name=name, kind=kind, attrs=attrs, trials=trials, problems=tuple(problems))


def run_folder(url: str, trial: Trial) -> Path | None:
    """The trial's run folder on this machine, or None: the recorded path where it exists,
    else the path relative to the storage file (a study copied with its folders)."""
    if trial.run_dir and Path(trial.run_dir).is_dir():
        return Path(trial.run_dir)
    home = file_of(url)
    if home is not None and trial.run_dir_relative:
        candidate = (home.parent / trial.run_dir_relative).resolve()
        if candidate.is_dir():
            return candidate
    return None


def importances(url: str, name: str) -> dict[str, float]:
    """Optuna's parameter importances (fANOVA, seeded) for validation Acc; empty below two
    complete trials, where there is nothing to explain."""
    storage = read_storage(url)
    with _one_line(url, "read"):
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            raise StorageError(f"no study named {name!r} in this storage") from None
        done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if len(done) < 2 or not study.best_trial.params:
            return {}
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        return {k: float(v) for k, v in optuna.importance.get_param_importances(study, evaluator=evaluator).items()}


def tuned_studies(url: str) -> dict[tuple[str, str], Study]:
    """Every tune study of a storage, keyed by (sequence, method): where the Compare view and
    ``compare --tuned`` find PS and the best parameters. Of two studies of one pair, the one
    with more complete trials wins."""
    storage = read_storage(url)
    found: dict[tuple[str, str], Study] = {}
    with _one_line(url, "read"):
        for summary in storage.get_all_studies():
            if summary.user_attrs.get("kind") != "tune":
                continue
            study = _read(storage, summary.study_name)
            key = (study.sequence, study.method)
            if study.kind == "tune" and (key not in found or len(study.complete) > len(found[key].complete)):
                found[key] = study
    return found


def default_study(sequence: str, method: str) -> str:
    """The name ``tune`` gives a study unless told otherwise, and where ``compare --tuned`` looks."""
    return f"tune-{sequence}-{method}"


# ----------------------------------------------------------------------------- a study's record, trusting nothing

MAX_NAME = 200
MAX_PATH = 4096
MAX_NOTE = 2000
MAX_PARAMS = 100
MAX_CELLS = 10_000
"""Bounds of what a trial or a study may hold: ``prm tune`` writes names (sequences,
families, hosts) of a few dozen characters, paths, notes of one sentence, a handful of
parameters, grids of a few dozen cells, and one T x T matrix with T at most MAX_TASKS."""


class _Bad(ValueError):
    """A field that is not what ``prm tune`` writes; the message names the field."""


def _show(value: Any) -> str:
    """A bad value as named in a message: a number as it is, anything else by its type (a
    storage's text is never echoed)."""
    return (repr(value) if isinstance(value, (int, float, bool, type(None))) else type(value).__name__)[:40]


def _number(value: Any, what: str, low: float = -math.inf, high: float = math.inf) -> float | None:
    """A finite number in [low, high]; None where there is none (NaN too: a value not measured)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and low <= value <= high):
        raise _Bad(f"{what} must be a finite number in [{low:g}, {high:g}], got {_show(value)}")
    return float(value)


def _integer(value: Any, what: str, low: int = 0, high: int = 2**31) -> int:
    if not (isinstance(value, int) and not isinstance(value, bool) and low <= value <= high):
        raise _Bad(f"{what} must be an integer in [{low}, {high}], got {_show(value)}")
    return value


def _text(value: Any, what: str, limit: int = MAX_NAME, *, none: bool = True) -> str | None:
    """A string of at most ``limit`` characters without NUL (a path with one cannot be
    opened); None where there is none, if ``none``."""
    if value is None and none:
        return None
    if not (isinstance(value, str) and len(value) <= limit and "\0" not in value):
        raise _Bad(f"{what} must be a string of at most {limit} characters without NUL, got {_show(value)}")
    return value


def _items(value: Any, what: str, limit: int) -> list:
    if not (isinstance(value, list) and len(value) <= limit):
        raise _Bad(f"{what} must be a list of at most {limit} items, got {_show(value)}")
    return value


def _names(value: Any, what: str, limit: int) -> list[str]:
    return [_text(v, f"{what}[]", none=False) for v in _items(value, what, limit)]


def _matrix(value: Any) -> np.ndarray | None:
    """The test accuracy matrix: T x T of accuracies in [0, 1] or null, T <= MAX_TASKS."""
    if value is None:
        return None
    rows = _items(value, "test_matrix", MAX_TASKS)
    cells = [[_number(v, "test_matrix[][]", 0.0, 1.0) for v in _items(row, "test_matrix[]", len(rows))]
             for row in rows]
    if any(len(row) != len(rows) for row in cells):
        raise _Bad("test_matrix must be square")
    matrix = np.array([[np.nan if v is None else v for v in row] for row in cells], dtype=float)
    return matrix.reshape(len(rows), len(rows))  # an empty matrix too, (0, 0)


def _cells(value: Any) -> list[list]:
    cells = []
    for cell in _items(value, "cells", MAX_CELLS):
        sequence, method, seed = (_items(cell, "cells[]", 3) + [None] * 3)[:3]
        cells.append([_text(sequence, "cells[] sequence", none=False), _text(method, "cells[] method", none=False),
                      _integer(seed, "cells[] seed")])
    return cells


STUDY_ATTRS: dict[str, Callable[[Any], Any]] = {
    "kind": lambda v: _text(v, "kind"),
    "sequence": lambda v: _text(v, "sequence"),
    "method": lambda v: _text(v, "method"),
    "setup": lambda v: _text(v, "setup"),
    "seed": lambda v: _integer(v, "seed"),
    "tasks": lambda v: _integer(v, "tasks", 1, MAX_TASKS),
    "space": lambda v: _names(v, "space", MAX_PARAMS),
    "cells": _cells,
}
"""The study attributes anything reads, each with its parser; others are not kept."""


def _study_attrs(raw: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The study's attributes that parse, and a line for each that does not (dropped)."""
    attrs, problems = {}, []
    for key, parse in STUDY_ATTRS.items():
        if raw.get(key) is None:
            continue
        try:
            attrs[key] = parse(raw[key])
        except _Bad as exc:
            problems.append(f"study attribute {exc}")
    return attrs, problems


def _trials(storage: Any, study_id: int, *, kind: str) -> tuple[Trial, ...]:
    """Every trial of the study. Optuna builds a study's trials together, so one it cannot
    build (an attribute that is not JSON, an unknown state) fails them all: the trials are
    then read one by one, by number, up to the first number the storage does not hold."""
    try:
        return tuple(_trial(t, kind=kind) for t in storage.get_all_trials(study_id, deepcopy=False))
    except Exception:  # noqa: BLE001 - read again trial by trial, which names the one at fault
        pass
    trials = []
    for number in itertools.count():
        try:
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
        except KeyError:
            break
        try:
            trials.append(_trial(storage.get_trial(trial_id), kind=kind))
        except Exception as exc:  # noqa: BLE001 - any failure of Optuna's reading is this trial's
            trials.append(_unreadable(number, f"Optuna cannot read it ({type(exc).__name__}: "
                                              f"{str(exc).splitlines()[0][:200] if str(exc) else ''})"))
    return tuple(trials)


def _unreadable(number: int, why: str) -> Trial:
    return Trial(number=number, state="unreadable", params={}, val_acc=None, test_acc=None, bwt=None, seconds=None,
                 run_dir=None, run_dir_relative=None, host=None, note=None, test_matrix=None, families=(),
                 problem=why)


def _trial(t: Any, *, kind: str) -> Trial:
    """A trial with every field typed and bounded as ``prm tune`` writes it; one with any
    field that is not is unreadable, and the reason names each such field."""
    number = t.number if isinstance(t.number, int) and not isinstance(t.number, bool) else -1
    bad: list[str] = []

    def field(parse: Callable[..., Any], *args: Any) -> Any:
        try:
            return parse(*args)
        except _Bad as exc:
            bad.append(str(exc))
            return None

    a = t.user_attrs if isinstance(t.user_attrs, dict) else {}
    trial = Trial(
        number=number, state=t.state.name.lower(), params=field(_params, t.params, kind) or {},
        val_acc=field(_objective, t.values, a.get("val_acc")),
        test_acc=field(_number, a.get("test_acc"), "test_acc", 0.0, 1.0),
        bwt=field(_number, a.get("bwt"), "bwt", -1.0, 1.0), seconds=field(_number, a.get("seconds"), "seconds", 0.0),
        run_dir=field(_text, a.get("run_dir"), "run_dir", MAX_PATH),
        run_dir_relative=field(_text, a.get("run_dir_relative"), "run_dir_relative", MAX_PATH),
        host=field(_text, a.get("host"), "host"), note=field(_text, a.get("note"), "note", MAX_NOTE),
        test_matrix=field(_matrix, a.get("test_matrix")),
        families=tuple(field(_names, a.get("families", []), "families", MAX_TASKS) or ()))
    if number < 0:
        bad.insert(0, f"number must be an integer, got {_show(t.number)}")
    return _unreadable(number, "; ".join(bad)) if bad else trial


def _objective(values: Any, recorded: Any) -> float | None:
    """Validation Acc: the trial's one objective value, else the attribute recorded beside it."""
    if not values:
        return _number(recorded, "val_acc", 0.0, 1.0)
    if len(values) != 1:
        raise _Bad(f"value must be one number (validation Acc), got {len(values)}")
    return _number(values[0], "value", 0.0, 1.0)


def _params(raw: Any, kind: str) -> dict[str, Any]:
    if not (isinstance(raw, dict) and len(raw) <= MAX_PARAMS):
        raise _Bad(f"params must be at most {MAX_PARAMS} named values, got {_show(raw)}")
    return {name: _param(value, _text(name, "parameter name", none=False), kind) for name, value in raw.items()}


def _param(value: Any, name: str, kind: str) -> Any:
    """A drawn value: a number in a tune study; in a compare study's grid, the sequence and
    method by name and the seed an integer; elsewhere a number, a name, true/false or null."""
    if kind == "tune":
        number = _number(value, name)
        if number is None:
            raise _Bad(f"{name} must be a number, got {_show(value)}")
        return number
    if kind == "compare" and name == "seed":
        return _integer(value, name)
    if kind == "compare" and name in ("sequence", "method"):
        return _text(value, name, none=False)
    if isinstance(value, bool) or (isinstance(value, (int, float)) and math.isfinite(value)):
        return value
    return _text(value, name)


# ----------------------------------------------------------------------------- recording a trial


def _outcome(trial: Any, *, config: RunConfig, run_dir: Path, storage_url: str, result: Any,
             families: Sequence[str]) -> float:
    """Keep a finished trial's metrics in the storage; return its objective, validation Acc."""
    if result.status != "finished":
        raise RuntimeError(f"the run ended {result.status}")
    val = metrics.average_accuracy(result.val_acc)
    test = metrics.average_accuracy(result.test_acc)
    home = file_of(storage_url)
    relative = None
    if home is not None:
        try:
            relative = str(run_dir.resolve().relative_to(home.resolve().parent))
        except ValueError:
            relative = None
    for key, value in {
        "val_acc": val, "test_acc": test, "bwt": metrics.backward_transfer(result.test_acc),
        "seconds": round(float(result.seconds), 3),
        "test_matrix": [[None if not math.isfinite(v) else round(float(v), 6) for v in row] for row in result.test_acc],
        "families": list(families), "run_dir_relative": relative,
    }.items():
        trial.set_user_attr(key, value)
    return val


def _start(trial: Any, run_dir: Path) -> None:
    trial.set_user_attr("run_dir", str(run_dir.resolve()))
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")


def setup_key(config: RunConfig) -> str:
    """What a study was made for, without the seed, the tuned values and what is written to
    disk: a second command on the same study, or ``compare --tuned``, must use the same set-up."""
    data = _portable(config)
    for r in search_space(config.method):
        (data[r.section] if r.section else data).pop(r.field)
    data["optim"].pop("lr_min")  # follows lr (apply_params)
    return _digest(data)


def grid_key(config: RunConfig) -> str:
    """What a shared comparison's cell was made with: every training option, tuned ones too,
    so two machines with different ``--lr`` (or one with ``--tuned``) cannot fill one grid."""
    return _digest(_portable(config))


def _portable(config: RunConfig) -> dict[str, Any]:
    """The config as machines that share a study must agree on it: without the seed, what is
    written to disk, the device and the data folder (each machine has its own), and with the
    sequence's default task count and shots filled in (``--n-tasks 10`` is the default's 10)."""
    from prm.data import SPECS

    data = results_relevant(config.to_dict())
    for key in ("seed", "record", "device", "data_dir"):
        data.pop(key)
    spec = SPECS.get(config.sequence)
    if spec is not None:
        data["n_tasks"] = spec.default_n if config.n_tasks is None else config.n_tasks
        data["shots"] = spec.shots if config.shots is None else config.shots
    return data


def _digest(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _claim(trial: Any, *, full: Callable[[int], bool], same: Callable[[Any], bool],
           pending: Callable[[list[Any]], bool] = lambda earlier: False) -> str | None:
    """Why ``trial`` must not train (None: it may). It may not when the trials numbered before
    it that have not failed already fill the study (``full(count)``), or when one of them is
    the same grid cell (``same``). Trial numbers are handed out by the storage, one at a time,
    so of two workers that started at once exactly one trains."""
    alive = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)
    for _ in range(20):  # an earlier trial that has not drawn its cell yet is read again, a moment later
        earlier = [t for t in trial.study.get_trials(deepcopy=False, states=alive) if t.number < trial.number]
        if not pending(earlier):
            break
        time.sleep(0.25)
    if full(len(earlier)):
        return "not trained: the study already had its trials when this one started"
    for t in earlier:
        if same(t):
            return f"not trained: trial {t.number} took the same cell"
    return None


def _open(url: str, name: str, *, sampler: Any, attrs: dict[str, Any]) -> Any:
    """Create the study, or load it and check it was made for the same thing (``attrs``)."""
    storage = open_storage(url)
    try:
        study = optuna.create_study(storage=storage, study_name=name, direction="maximize", load_if_exists=True,
                                    sampler=sampler)
    except Exception as exc:
        raise StorageError(f"cannot open study {name!r} on {safe_url(url)}: {type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:300]}") from None
    held = study.user_attrs
    deadline = time.monotonic() + ATTRS_WAIT_SECONDS
    while held and set(attrs) - set(held) and time.monotonic() < deadline:  # another worker is writing them
        time.sleep(0.05)
        held = study.user_attrs
    if not held:
        for key, value in attrs.items():
            study.set_user_attr(key, value)
        return study
    differs = [key for key, value in attrs.items() if held.get(key) != value]
    if differs:
        def show(d: dict[str, Any]) -> str:
            return ", ".join(f"{k}={d.get(k)}" for k in differs if k != "setup")
        what = show(held) + (" and other training options" if "setup" in differs else "")
        raise StorageError(f"study {name!r} on {safe_url(url)} was made for {what or 'other training options'}; "
                           f"use the same options to resume it, or another --study")
    return study


def _running(study: Any) -> int:
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)))


def fail_running(url: str, name: str) -> int:
    """Mark a study's running trials failed; for a journal storage, whose trials keep no
    heartbeat, after a worker was killed (only when no worker of the study is running)."""
    storage = open_storage(url, create=False)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise StorageError(f"no study named {name!r} in this storage") from None
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for t in running:
        storage.set_trial_user_attr(t._trial_id, "note", "failed by --fail-running: its worker had stopped")
        storage.set_trial_state_values(t._trial_id, state=optuna.trial.TrialState.FAIL)
    count = len(running)
    return count


Train = Callable[[RunConfig, Path, int], Any]
"""How a trial trains: (config, run folder, trial number) -> the engine's RunResult. The CLI
passes one that records the folder and shows progress."""


def tune(*, config: RunConfig, url: str, study_name: str, trials: int, runs_dir: Path, train: Train,
         families: Sequence[str], after: Callable[[Study], None] | None = None) -> Study:
    """Run trials of a TPE study until it holds ``trials`` complete ones (counting those of
    earlier commands and of other workers), then return it.

    The sampler is seeded by ``config.seed``: one worker replays the same study. Its first
    ten trials are drawn at random from a generator seeded by (seed, trial number), so
    parallel workers explore different points; the rest are multivariate TPE with the
    constant liar, which counts other workers' running trials as poor so as not to propose
    them again. The objective is validation Acc; test Acc is kept beside it, never optimised.
    """
    space = search_space(config.method)
    sampler = _StartupBySeed(seed=config.seed, space=space)
    study = _open(url, study_name, sampler=sampler, attrs={
        "kind": "tune", "sequence": config.sequence, "method": config.method, "seed": config.seed,
        "tasks": len(families), "setup": setup_key(config),
        "space": [r.describe() for r in space]})

    def objective(trial: Any) -> float:
        why = _claim(trial, full=lambda n: n >= trials, same=lambda t: False)
        if why:
            trial.set_user_attr("note", why)
            raise optuna.TrialPruned(why)
        params = {r.name: trial.suggest_float(r.name, r.low, r.high, log=r.log) for r in space}
        return _train_trial(trial, apply_params(config, params), runs_dir / f"trial-{trial.number:04d}", url=url,
                            train=train, families=families)

    _check_folders(runs_dir, study, lambda number: f"trial-{number:04d}")
    if after:
        after(_read(study._storage, study_name))
    while True:
        _fail_stale(study)
        if _complete(study) + _running(study) >= trials:
            break  # full, or the rest are running on other workers
        study.optimize(objective, n_trials=1, catch=())
        if after:
            after(_read(study._storage, study_name))
    return _read(study._storage, study_name)


Cell = tuple[str, str, int]  # (sequence, method, seed)


def compare_grid(*, configs: dict[Cell, RunConfig], url: str, study_name: str, out_dir: Path,
                 train: Train, families: Callable[[RunConfig], Sequence[str]],
                 after: Callable[[Study], None] | None = None) -> Study:
    """Train the comparison's cells (``configs``) not yet trained by anyone on this study,
    one per trial, with Optuna's GridSampler handing them out; return the study.

    Each cell is trained once: GridSampler skips cells finished or running, and a worker
    that nevertheless drew a cell another took at the same moment closes its trial untrained.
    """
    cells = sorted(configs)
    grid = {"sequence": sorted({c[0] for c in cells}), "method": sorted({c[1] for c in cells}),
            "seed": sorted({c[2] for c in cells})}
    if len(cells) != math.prod(len(v) for v in grid.values()):
        raise StorageError("a shared comparison must be a full grid of sequences x methods x seeds")
    study = _open(url, study_name, sampler=optuna.samplers.GridSampler(grid, seed=0), attrs={
        "kind": "compare", "cells": [list(c) for c in cells],
        "setup": _digest({"cells": [grid_key(configs[c]) for c in cells]})})

    def objective(trial: Any) -> float:
        cell = (trial.suggest_categorical("sequence", grid["sequence"]),
                trial.suggest_categorical("method", grid["method"]),
                trial.suggest_categorical("seed", grid["seed"]))
        why = _claim(trial, full=lambda n: False, same=lambda t: cell_of(t.params) == cell,
                     pending=lambda earlier: any(t.state == optuna.trial.TrialState.RUNNING and cell_of(t.params) is None
                                                 for t in earlier))
        if why:
            trial.set_user_attr("note", why)
            raise optuna.TrialPruned(why)
        cfg = configs[cell]
        return _train_trial(trial, cfg, out_dir / f"{cell[0]}-{cell[1]}-s{cell[2]}-t{trial.number:04d}", url=url,
                            train=train, families=families(cfg))

    if after:
        after(_read(study._storage, study_name))
    while True:
        _fail_stale(study)
        trials = study.get_trials(deepcopy=False)
        taken = {cell_of(t.params) for t in trials if t.state in (optuna.trial.TrialState.COMPLETE,
                                                                 optuna.trial.TrialState.RUNNING)}
        if all(c in taken for c in cells):
            break
        tried = {cell_of(t.params) for t in trials}
        waiting = {cell_of(t.params) for t in trials if t.state == optuna.trial.TrialState.WAITING}
        for c in cells:  # GridSampler counts a failed cell as visited: queue it again, once
            if c in tried and c not in taken and c not in waiting:
                study.enqueue_trial({"sequence": c[0], "method": c[1], "seed": c[2]})
                break
        study.optimize(objective, n_trials=1, catch=())
        if after:
            after(_read(study._storage, study_name))
    return _read(study._storage, study_name)


def cell_of(params: dict[str, Any]) -> Cell | None:
    """A compare trial's (sequence, method, seed), None before it has drawn them, or where
    they are not two names and an integer seed."""
    sequence, method, seed = (params.get(p) for p in ("sequence", "method", "seed"))
    if isinstance(sequence, str) and isinstance(method, str) and isinstance(seed, int) and not isinstance(seed, bool):
        return (sequence, method, seed)
    return None


def _fail_stale(study: Any) -> None:
    """Fail trials whose worker's heartbeat went stale (SQLite and PostgreSQL), before counting
    what is running: otherwise a killed worker's trial would hold its place for ever."""
    with warnings.catch_warnings():  # marked experimental; it does nothing where no heartbeat is kept
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _check_folders(folder: Path, study: Any, name: Callable[[int], str]) -> None:
    """Refuse a runs folder holding trial folders this study did not make (another storage's
    study of the same name): each of its coming trials would fail on them."""
    if not folder.is_dir():
        return
    made = {name(t.number) for t in study.get_trials(deepcopy=False)}
    foreign = sorted(p.name for p in folder.iterdir() if p.name.startswith("trial-") and p.name not in made)
    if foreign:
        raise StorageError(f"{folder} holds trial folders this study did not make ({', '.join(foreign[:3])}"
                           f"{' ...' if len(foreign) > 3 else ''}); choose another --runs-dir or --study")


def _complete(study: Any) -> int:
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


def _train_trial(trial: Any, config: RunConfig, run_dir: Path, *, url: str, train: Train,
                 families: Sequence[str]) -> float:
    if run_dir.exists():
        raise StorageError(f"{run_dir} already exists (a study of the same name on another storage?); "
                           "choose another runs folder")
    _start(trial, run_dir)
    try:
        result = train(config, run_dir, trial.number)
    except KeyboardInterrupt:
        trial.set_user_attr("note", "interrupted (Ctrl-C); the same command trains a new trial in its place")
        raise
    except Exception as exc:
        trial.set_user_attr("note", f"failed: {type(exc).__name__}: {str(exc)[:200]}")
        raise
    return _outcome(trial, config=config, run_dir=run_dir, storage_url=url, result=result, families=families)


class _StartupBySeed(optuna.samplers.BaseSampler):
    """Multivariate TPE with the constant liar, whose random start-up trials are drawn from
    generators seeded by (seed, trial number, parameter) rather than one per process: two
    workers started with one seed would otherwise propose the same start-up points."""

    STARTUP = 10

    def __init__(self, *, seed: int, space: Sequence[Range]) -> None:
        self._seed = seed
        # the joint space is fixed, not inferred from past trials: Optuna would intersect it
        # with the (empty) parameters of a trial closed untrained and fall back to univariate TPE
        self._space = {r.name: optuna.distributions.FloatDistribution(r.low, r.high, log=r.log) for r in space}
        self._tpe = optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True,
                                               n_startup_trials=self.STARTUP)

    def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, Any]:
        return dict(self._space)

    def sample_relative(self, study: Any, trial: Any, search_space: dict[str, Any]) -> dict[str, Any]:
        return self._tpe.sample_relative(study, trial, search_space)

    def sample_independent(self, study: Any, trial: Any, param_name: str, param_distribution: Any) -> Any:
        finished = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,
                                                            optuna.trial.TrialState.PRUNED))
        if len(finished) < self.STARTUP:
            # one generator per (seed, trial, parameter), mixed by SeedSequence: generators of
            # nearby integer seeds start with nearly equal draws
            entropy = [self._seed, trial.number, zlib.crc32(param_name.encode())]
            rng = optuna.samplers.RandomSampler(seed=int(np.random.SeedSequence(entropy).generate_state(1)[0]))
            return rng.sample_independent(study, trial, param_name, param_distribution)
        return self._tpe.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Any, trial: Any) -> None:
        self._tpe.before_trial(study, trial)

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        self._tpe.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._tpe.reseed_rng()


__all__ = ["DEFAULT_STORAGE", "MAX_JOURNAL_BYTES", "Cell", "cell_of", "compare_grid", "engine_url", "grid_key",
           "fail_running", "setup_key", "tune", "Range", "Study", "StorageError", "Trial", "apply_params",
           "default_study", "file_of", "importances", "load_study", "open_storage", "parameter_sensitivity",
           "read_storage", "run_folder", "safe_url", "search_space", "study_names", "tuned_studies"]
