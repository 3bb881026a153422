"""Training new runs from the app: the worker is the engine's own CLI in a child process.

The child writes an ordinary run folder, so a live run is read exactly like a recorded one.
It is ``python -m prm run`` (:class:`LiveOptions`, the Train-live form) or ``python -m prm
whatif`` (:class:`WhatIfOptions`, the Clustering view's what-if button), run by a warm
worker that has already imported the engine (``explorer.worker``) or, where none waits, by
a cold ``python -m prm`` child.
It never touches Streamlit; the app only reads the folder. Stop sends SIGINT, which the
engine turns into a clean 'stopped' run end (exit 130). A
reload or a second browser tab finds running runs by listing the runs folder.

Stop never trusts a pid from a run folder alone (run folders can be uploaded or edited):
it signals a child this server started, through the handle it kept, or a process whose
identity :func:`proven_writer` establishes.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from explorer import catalog, worker
from explorer.catalog import ROOT
from prm import safeio
from prm.compare import setup_key
from prm.config import RunConfig
from prm.run import RunFormatError, RunState, list_runs, read_meta, writer_alive

_DEFAULTS = RunConfig()


class _PrmCommand:
    """The ``python -m prm`` command line of an options class that says its ``arguments``."""

    def arguments(self, out: Path) -> list[str]:
        raise NotImplementedError

    def command(self, out: Path) -> list[str]:
        """The cold child's command line (a warm worker runs :meth:`arguments` in-process)."""
        return [sys.executable, "-m", "prm", *self.arguments(out)]


@dataclass(frozen=True, kw_only=True)
class LiveOptions(_PrmCommand):
    """What the Train-live form asks for; defaults are the engine's (``prm.config``). Every
    set-up field the CLI can set is here, so a run of the form can be a sibling of any run the
    CLI or the form made (``explorer.views.live.prefill``)."""

    sequence: str = _DEFAULTS.sequence
    method: str = _DEFAULTS.method
    seed: int = 0
    n_tasks: int | None = None
    shots: int | None = None
    width: int = _DEFAULTS.model.hidden[0]
    layers: int = len(_DEFAULTS.model.hidden)
    dropout: float = _DEFAULTS.model.hidden_dropout
    input_dropout: float = _DEFAULTS.model.input_dropout
    epochs: int = _DEFAULTS.optim.max_epochs
    lr: float = _DEFAULTS.optim.lr
    batch_size: int = _DEFAULTS.optim.batch_size
    patience: int = _DEFAULTS.optim.patience
    lamb: float = _DEFAULTS.hat.lamb
    smax: float = _DEFAULTS.hat.smax
    dtd_epochs: int = _DEFAULTS.prm.dtd_epochs
    umap: bool = True
    data_dir: str | None = None

    def stem(self) -> str:
        """The start of the run folder's name (a time stamp follows)."""
        return f"{self.sequence}-{self.method}-s{self.seed}"

    def arguments(self, out: Path) -> list[str]:
        args = ["run", "--sequence", self.sequence, "--method", self.method, "--seed", str(self.seed), "--out", str(out),
                "--quiet", "--width", str(self.width), "--layers", str(self.layers), "--dropout", str(self.dropout),
                "--input-dropout", str(self.input_dropout), "--epochs", str(self.epochs), "--lr", str(self.lr),
                "--batch-size", str(self.batch_size), "--patience", str(self.patience), "--lamb", str(self.lamb),
                "--smax", str(self.smax), "--dtd-epochs", str(self.dtd_epochs)]
        if self.n_tasks:
            args += ["--n-tasks", str(self.n_tasks)]
        if self.shots:
            args += ["--shots", str(self.shots)]
        if self.data_dir:
            args += ["--data-dir", self.data_dir]
        if not self.umap:
            args.append("--no-umap")
        return args


def options_like(config: dict, *, method: str, seed: int) -> LiveOptions:
    """The form's options for a run like the one ``config`` (a run's recorded config) describes,
    with ``method`` and ``seed`` instead: the same sequence, tasks, network, optimiser, HAT's
    and DTD's settings, so the new run is the recorded one's sibling (``prm.compare.setup_key``).
    Where the data lies (``data_dir``) is the form's own."""
    model, optim = config["model"], config["optim"]
    return LiveOptions(sequence=config["sequence"], method=method, seed=seed, n_tasks=config.get("n_tasks"),
                       shots=config.get("shots"), width=model["hidden"][0], layers=len(model["hidden"]),
                       dropout=model["hidden_dropout"], input_dropout=model["input_dropout"],
                       epochs=optim["max_epochs"], lr=optim["lr"], batch_size=optim["batch_size"],
                       patience=optim["patience"], lamb=config["hat"]["lamb"], smax=config["hat"]["smax"],
                       dtd_epochs=config["prm"]["dtd_epochs"], umap="umap" in config["record"]["projections"])


def config_of(options: LiveOptions) -> dict:
    """The config a run of ``options`` records, as the CLI builds it from their arguments
    (``prm.cli.options.run_config``); ValueError where the CLI would refuse them."""
    from prm.cli.options import run_config

    args = _parse_prm(options.arguments(Path("unused")))
    if args is None:
        raise ValueError("the engine's command line refuses these options")
    try:
        return run_config(args, sequence=options.sequence, method=options.method, seed=options.seed).to_dict()
    except (SystemExit, ValueError) as exc:
        raise ValueError(f"the engine refuses these options: {exc}") from None


def unmatched(config: dict, options: LiveOptions) -> list[str]:
    """The set-up fields (``prm.compare.setup_key``'s, as ``section.field``) in which a run of
    ``options`` would differ from ``config``: what the form cannot reproduce (the engine's
    command line sets no ``optim.clip``, for one). Empty: the two runs are siblings."""
    ours, theirs = (_flat(json.loads(setup_key(c))) for c in (config_of(options), config))
    return sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))


def _flat(view: dict) -> dict[str, object]:
    """``{"optim": {"lr": 0.1}}`` as ``{"optim.lr": 0.1}``."""
    out: dict[str, object] = {}
    for key, value in view.items():
        out.update({f"{key}.{k}": v for k, v in value.items()} if isinstance(value, dict) else {key: value})
    return out


@dataclass(frozen=True, kw_only=True)
class WhatIfOptions(_PrmCommand):
    """A what-if child of ``parent`` (``prm.whatif``): ``task`` (0-based) re-learnt with
    ``similar`` (0-based earlier tasks) called similar in every layer, the rest dissimilar."""

    parent: Path
    task: int
    similar: tuple[int, ...]

    def stem(self) -> str:
        similar = "-".join(str(i + 1) for i in self.similar) or "none"
        return f"{self.parent.name[:80]}-whatif-T{self.task + 1}-sim-{similar}"

    def arguments(self, out: Path) -> list[str]:
        return ["whatif", str(self.parent), "--task", str(self.task + 1),
                "--similar", ",".join(str(i + 1) for i in self.similar) or "none", "--out", str(out), "--quiet"]


SUBCOMMANDS = ("run", "whatif")
"""The ``python -m prm`` sub-commands that write a run folder given as ``--out``."""

_children: dict[str, subprocess.Popen] = {}
"""Children started by this server process, by folder; a reaper thread waits on each, so a
finished child never lingers as a zombie whose pid would still look alive."""


def start(options: LiveOptions | WhatIfOptions, *, root: Path) -> Path:
    """Launch one training run (or what-if child) in the background; return its (future) run
    folder. The warm worker takes it where one is waiting (``explorer.worker``), else a cold
    ``python -m prm`` child; either way this server holds the process's handle, and the next
    worker is started shortly after (``worker.warm_later``)."""
    root.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = f"{options.stem()}-{stamp}"
    folder, n = root / base, 1
    while os.path.lexists(folder) or os.path.lexists(log_path(folder)):
        n += 1
        folder = root / f"{base}-{n}"
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), PYTHONUNBUFFERED="1")
    with os.fdopen(_create_log(folder), "wb") as out:
        proc = worker.hand_off(options.arguments(folder), out.fileno()) or subprocess.Popen(
            options.command(folder), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, start_new_session=True)
    _children[str(folder)] = proc
    threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()
    worker.warm_later()
    return folder


def _create_log(folder: Path) -> int:
    """A descriptor of the child's new log file in ``<runs folder>/.logs``. Neither that folder
    nor the file may be a link, and the file must not exist yet: the runs folder is shared
    with other users' runs, and a link there would have this server write wherever it points.
    Raises OSError (ELOOP for a link, EEXIST for a file already there) with its reason."""
    logs = log_path(folder).parent
    try:
        logs.mkdir()
    except FileExistsError:
        pass
    try:
        logs_fd = os.open(logs, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        if os.path.islink(logs) or not logs.is_dir():
            raise OSError(exc.errno, f"{logs} is a link or not a folder; live runs write their console output "
                                     "there, so it must be a plain folder") from None
        raise
    try:
        return os.open(log_path(folder).name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644,
                       dir_fd=logs_fd)
    finally:
        os.close(logs_fd)


def log_path(folder: Path) -> Path:
    """The child's console output, kept beside the run (a run folder must start empty)."""
    return folder.parent / ".logs" / f"{folder.name}.log"


def child_exit(folder: Path) -> int | None:
    """Exit status of a child this process started (None while it runs or if unknown)."""
    proc = _children.get(str(folder))
    return None if proc is None else proc.poll()


def log_tail(folder: Path, lines: int = 15) -> str:
    """The child's last console lines, read under the run-folder rules (no link followed, a
    bounded tail), since ``.logs`` lies in a folder others write to."""
    try:
        tail = safeio.read_tail(folder.parent, f".logs/{folder.name}.log", nbytes=64 * 1024)
    except (OSError, safeio.UnsafeFile):
        return ""
    return "\n".join(tail.decode(errors="replace").splitlines()[-lines:])


def is_running(folder: Path) -> bool:
    """The run is still being written: by a child this server started (its handle says), or
    by a process whose run.json identity holds (``prm.run.writer_alive``) and which has not
    written its closing record."""
    proc = _children.get(str(folder))
    if proc is not None and proc.poll() is not None:
        return False
    try:
        meta = read_meta(folder)
        tail = safeio.read_tail(folder, "events.jsonl", nbytes=4096)
    except (RunFormatError, FileNotFoundError, safeio.UnsafeFile):
        return proc is not None  # our child, still starting up: no run.json or log yet
    return b'"run_end"' not in tail and (proc is not None or writer_alive(meta))


def running(root: Path) -> list[Path]:
    return [p for p in list_runs(root) if is_running(p)]


_PYTHON = re.compile(r"python([0-9]+(\.[0-9]+)*)?")
"""How a Python interpreter's program name reads: python, python3, python3.11."""


def _command_writes(args: list[str], cwd: Path, folder: Path) -> bool:
    """Does the process with this command line and working folder write ``folder``?"""
    out = _written_folder(args)
    return out is not None and catalog.same_folder(cwd / out, folder)


def _written_folder(args: list[str]) -> str | None:
    """The ``--out`` of ``python -m prm run|whatif ...`` as that process read it; None for any
    other command line. The options are read by prm's own parser, as the process did: ``--ou``
    is ``--out``, the last of two wins, an unknown option or a second sub-command is no writer.
    The interpreter must be a Python given exactly ``-m prm``. Its options are refused on
    purpose: the app and the docs start writers without any, ``-c`` runs its code and leaves
    ``-m prm`` to that code as mere arguments, and ``-mprm`` is refused with them; such a
    writer is listed as running, but Stop is not offered for it."""
    if len(args) < 3 or not _PYTHON.fullmatch(Path(args[0]).name) or args[1:3] != ["-m", "prm"]:
        return None
    parsed = _parse_prm(args[3:])
    if parsed is None or parsed.command not in SUBCOMMANDS or not parsed.out:
        return None
    return parsed.out


class _Refused(Exception):
    """prm's parser wanted to print (an error, the help) or to exit."""


def _refuse(*args: object, **kwargs: object) -> NoReturn:
    raise _Refused


def _parse_prm(argv: list[str]) -> argparse.Namespace | None:
    """``argv`` read by ``prm.cli.build_parser()``, None where that parser would have
    printed or exited: it runs inside the server, where neither may happen."""
    from prm.cli import build_parser  # here: it imports torch, seconds the app spends only on a proof

    parser = build_parser()
    for each in (parser, *parser.commands.values()):  # the sub-command parsers report their own errors
        each.error = each.exit = each.print_help = each.print_usage = _refuse
    try:
        return parser.parse_args(argv)
    except (_Refused, SystemExit):
        return None


def proven_writer(folder: Path) -> int | None:
    """The pid of the process writing ``folder``, only if its identity is proven: a pid above
    1 on this host, other than this server, whose kernel start time matches run.json's and
    which either has the command line ``python -m prm run|whatif ... --out <that folder>``
    from its working folder, read as prm's own parser reads it (:func:`_written_folder`), or
    is a warm worker (``python -m explorer.worker``, whose command line names no folder) that
    holds ``<that folder>/events.jsonl`` open for writing (:func:`_worker_writes`). run.json is
    untrusted (it may be uploaded or edited): a pid alone would let it aim Stop at any
    process, or with pid 0 or -1 at a whole process group."""
    try:
        meta = read_meta(folder)
    except RunFormatError:
        return None
    pid = meta["pid"]
    if not writer_alive(meta) or pid == os.getpid():  # writer_alive: pid > 1, this host, start time matches
        return None
    try:  # NUL-terminated arguments; an empty one is an argument too (whatif --similar "")
        args = [os.fsdecode(a) for a in Path(f"/proc/{pid}/cmdline").read_bytes().removesuffix(b"\0").split(b"\0")]
        cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return None
    if not (_command_writes(args, cwd, folder) or _worker_writes(args, pid, folder)) or not writer_alive(meta):
        return None  # writer_alive re-checked: the pid was not reused while its command line was read
    return pid


def _worker_writes(args: list[str], pid: int, folder: Path) -> bool:
    """Is process ``pid``, with this command line, a warm worker writing ``folder``? Its
    command line must be exactly a Python's ``-m explorer.worker``, and one of its open files
    (``/proc/<pid>/fd``, as the kernel names it: links resolved, a renamed folder followed)
    must be that folder's event log, which a writer holds open from the run's first record to
    its last. An idle worker holds none, and a finished run is no longer stoppable anyway."""
    if len(args) != 3 or not _PYTHON.fullmatch(Path(args[0]).name) or args[1:] != ["-m", worker.MODULE]:
        return False
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    return any(_writes_log(pid, fd, folder) for fd in fds)


def _writes_log(pid: int, fd: str, folder: Path) -> bool:
    """Is descriptor ``fd`` of ``pid`` ``folder``'s event log, open for writing? (A what-if
    worker also reads its parent's log: reading proves nothing.)"""
    try:
        target = Path(os.readlink(f"/proc/{pid}/fd/{fd}"))
        info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        flags = int(next(line.split()[1] for line in info.splitlines() if line.startswith("flags:")), 8)
    except (OSError, StopIteration, ValueError, IndexError):
        return False
    return (flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR) and target.name == "events.jsonl"
            and catalog.same_folder(target.parent, folder))


def can_stop(folder: Path) -> bool:
    proc = _children.get(str(folder))
    return proc.poll() is None if proc is not None else proven_writer(folder) is not None


def stop(folder: Path) -> bool:
    """Ask a running run to stop cleanly (SIGINT, like Ctrl-C); False if it may not be or is
    not running. Only a child this server started, or a proven writer, is ever signalled."""
    proc = _children.get(str(folder))
    if proc is not None:
        if proc.poll() is not None:
            return False
        proc.send_signal(signal.SIGINT)
        return True
    pid = proven_writer(folder)
    if pid is None:
        return False
    os.kill(pid, signal.SIGINT)
    return True


PHASE_NAMES = {"dtd-head": "DTD 1st opt.", "dtd": "DTD 2nd opt.", "train": "training",
               "transfer": "CAT transfer network", "reference": "CAT reference network"}
"""How the progress line names each phase of ``prm.events.PHASES``."""


def progress(state: RunState) -> tuple[float, str]:
    """Fraction done and a line such as 'task 3 of 10 · DTD epoch 12 · val acc 0.93' (CAT:
    'CAT transfer network 2 of 4 epoch 7'). Only the kept training moves the bar within a task:
    the phases before it stop early at no predictable epoch."""
    total = max(state.n_tasks, 1)
    done = state.tasks_done
    current = state.current()
    if state.end is not None:
        return (done / total, f"{state.end.status}: {done} of {state.n_tasks} tasks learnt "
                              f"in {state.end.seconds or 0:.1f} s")
    if current is None:
        return 0.0, "starting (loading data, building the model)"
    within = 0.0
    if current.phase == "train":
        within = min((current.epoch + 1) / max(state.config["optim"]["max_epochs"], 1), 1.0)
    phase = PHASE_NAMES.get(current.phase, current.phase)
    if current.phase == "transfer":  # one transfer network per earlier task, each from epoch 0
        started = sum(1 for e in state.epochs if e.task == current.task and e.phase == "transfer" and e.epoch == 0)
        phase += f" {started} of {current.task}"
    val = "n/a" if current.val_acc is None else f"{current.val_acc:.3f}"
    return (min((done + within) / total, 1.0),
            f"task {current.task + 1} of {state.n_tasks} · {phase} epoch {current.epoch + 1} · val acc {val}")
