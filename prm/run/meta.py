"""``run.json``: what a run is (its config, schema, seed), who writes it, and the run a
what-if run was resumed from.

It is read before anything else of a folder and decides whether the folder is a run at all
(:func:`read_meta` raises ``RunFormatError`` when it is not); every optional field (the
writer's pid and host, the parent link) is checked and, when refused, reads as absent with
a warning. :func:`writer_alive` tells a running run from one whose process died.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prm import safeio
from prm.config import ConfigError, RunConfig
from prm.records import BadRecord, check_strings, check_text
from prm.run.errors import SCHEMA, RunFormatError
from prm.strictjson import load_json


@dataclass(frozen=True, kw_only=True)
class RunParent:
    """The run a what-if run (``prm.whatif``) was resumed from: its folder (resolved when the
    child was made) and name, the task (0-based) whose DTD decision was replaced, and the
    dissimilar set forced on each masked layer (every other earlier task was called similar)."""

    run: str
    name: str
    task: int
    dissimilar: tuple[tuple[int, ...], ...]

    def similar(self, layer: int) -> list[int]:
        """The earlier tasks the child called similar in ``layer``."""
        return [i for i in range(self.task) if i not in self.dissimilar[layer]]

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run, "name": self.name, "task": self.task,
                "dissimilar": [list(d) for d in self.dissimilar],
                "similar": [self.similar(l) for l in range(len(self.dissimilar))]}

    @classmethod
    def parse(cls, value: Any, *, n_tasks: int | None, n_layers: int) -> "RunParent | None":
        """run.json's ``parent``, checked (None when absent or malformed: the run still loads,
        it just names no parent). ``n_tasks`` None: the sequence length is not known yet."""
        try:
            return cls.read(value, n_tasks=n_tasks, n_layers=n_layers)
        except BadRecord:
            return None

    @classmethod
    def read(cls, value: Any, *, n_tasks: int | None, n_layers: int) -> "RunParent | None":
        """As :meth:`parse`, but a ``parent`` that is there and malformed raises ``BadRecord``
        naming the field (:func:`read_meta` warns with it). The folder must be a path a path
        function can take: a NUL makes ``Path.resolve`` raise ValueError, and a control
        character or a lone surrogate is no name a writer makes."""
        if value is None:
            return None
        if not isinstance(value, dict):
            raise BadRecord("parent must be an object")
        run, name, task, dissimilar = (value.get(k) for k in ("run", "name", "task", "dissimilar"))
        _check_name(run, "parent.run", MAX_PATH)
        _check_name(name, "parent.name", 200)
        high = (n_tasks or 10**6) - 1
        if not (type(task) is int and 1 <= task <= high):
            raise BadRecord(f"parent.task must be an integer in [1, {high}]")
        if not (isinstance(dissimilar, list) and len(dissimilar) == n_layers):
            raise BadRecord(f"parent.dissimilar must hold one set per masked layer ({n_layers})")
        sets = []
        for d in dissimilar:
            if not (isinstance(d, list) and all(type(i) is int and 0 <= i < task for i in d) and len(set(d)) == len(d)):
                raise BadRecord("parent.dissimilar must hold sets of tasks before parent.task")
            sets.append(tuple(sorted(d)))
        return cls(run=run, name=name, task=task, dissimilar=tuple(sets))


MAX_PATH = 4096
"""Linux's PATH_MAX: a longer folder path in a run file cannot name a folder here."""
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def _check_name(value: Any, what: str, limit: int) -> str:
    """A folder path or name read from a run file: non-empty text within ``limit`` characters,
    with no control character (C0, DEL, C1; NUL among them)."""
    if not (isinstance(value, str) and 0 < len(value) <= limit):
        raise BadRecord(f"{what} must be a string of 1 to {limit} characters")
    found = _CONTROL.search(value)
    if found:
        raise BadRecord(f"{what} holds a control character ({found.group()!r})")
    return check_text(value, what)


UPLOADED = "uploaded"
"""run.json key an upload is marked with: its writer ran elsewhere, so it is never running."""


def read_meta(folder: str | Path, problems: list[str] | None = None) -> dict[str, Any]:
    """``run.json``, checked: schema, a valid config, and the writer's identity if any.
    Raises ``RunFormatError`` (only) when the folder is not a readable run. An optional field
    that is there but refused (a pid beyond pid_t, a host that is not text, a parent link no
    path function takes) reads as absent, and ``problems`` (when given) gets a warning naming
    it: ``load_run`` reports it, and an upload with one is refused."""
    folder = Path(folder)
    meta = _meta_document(folder)
    if meta["schema"] > SCHEMA:
        raise RunFormatError(f"{folder}: written with run schema {meta['schema']}, this version reads 1 to {SCHEMA}; "
                             "upgrade prm-explorer to open it")
    if meta["schema"] < 1:
        raise RunFormatError(f"{folder}: schema {meta['schema']} is not valid")
    try:
        config = RunConfig.from_dict(meta["config"])
        check_strings(config.to_dict(), "config")  # a free-form path (data_dir) is shown too
    except BadRecord as exc:
        raise RunFormatError(f"{folder / 'run.json'}: {exc}") from None
    except (ConfigError, TypeError, ValueError, RecursionError) as exc:
        raise RunFormatError(f"{folder / 'run.json'}: config: {str(exc)[:300]}") from None
    problems = [] if problems is None else problems

    def opt(key: str, kind: type, check=lambda v: True):
        return _optional(meta, key, kind, check, problems)

    return {
        "schema": meta["schema"], "name": opt("name", str, lambda v: len(v) <= 200), "config": config.to_dict(),
        "seed": config.seed, "started_at": opt("started_at", str, lambda v: len(v) <= 64),
        "versions": {k: v for k, v in (opt("versions", dict) or {}).items()
                     if isinstance(k, str) and isinstance(v, str) and len(k) + len(v) <= 100},
        "pid": opt("pid", int, lambda v: abs(v) < 2**31),  # a pid_t: os.kill raises OverflowError beyond it
        "pid_start": opt("pid_start", int), "host": opt("host", str, lambda v: len(v) <= 255),
        UPLOADED: opt(UPLOADED, str, lambda v: len(v) <= 64),
        "parent": _parent_dict(meta.get("parent"), config, problems),
    }


def _meta_document(folder: Path) -> dict[str, Any]:
    """run.json parsed, with an integer schema and a config; else ``RunFormatError``."""
    if not folder.is_dir():
        raise RunFormatError(f"{folder}: no such run folder")
    try:
        meta = load_json(safeio.read_text(folder, "run.json"))
    except FileNotFoundError:
        raise RunFormatError(f"{folder}: not a run folder (no run.json)") from None
    except safeio.UnsafeFile as exc:
        raise RunFormatError(f"{folder}: {exc}") from None
    except BadRecord as exc:  # a number no float can hold
        raise RunFormatError(f"{folder / 'run.json'}: {exc}") from None
    except (ValueError, RecursionError) as exc:
        raise RunFormatError(f"{folder / 'run.json'}: not valid JSON ({str(exc)[:120]})") from None
    if not isinstance(meta, dict) or type(meta.get("schema")) is not int or "config" not in meta:
        raise RunFormatError(f"{folder / 'run.json'}: missing schema or config")
    return meta


def _optional(meta: dict[str, Any], key: str, kind: type, check: Callable[[Any], bool], problems: list[str]) -> Any:
    """``meta[key]`` when it is a ``kind`` that passes ``check`` and holds only text; None when
    it is absent, and None with a warning in ``problems`` when it is there and refused."""
    value = meta.get(key)
    if value is None:
        return None
    try:
        if not (isinstance(value, kind) and not isinstance(value, bool) and check(value)):
            raise BadRecord(f"not a valid {kind.__name__} here")
        check_strings(value, key)
    except BadRecord as exc:
        problems.append(f"run.json: {key} ignored ({exc})")
        return None
    return value


def _parent_dict(value: Any, config: RunConfig, problems: list[str]) -> dict[str, Any] | None:
    try:
        parent = RunParent.read(value, n_tasks=config.n_tasks, n_layers=len(config.model.hidden))
    except BadRecord as exc:
        problems.append(f"run.json: parent ignored ({exc}); the run names no parent")
        return None
    return None if parent is None else parent.to_dict()


def _process_start(pid: int) -> int | None:
    """The kernel's start time of a process (Linux /proc), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def writer_alive(meta: dict[str, Any]) -> bool:
    """Is the process that writes this run still running? Only when run.json names a pid on
    this host whose kernel start time matches the one recorded (a reused pid does not), and
    the run was not uploaded. Where /proc is missing the start time cannot be checked and a
    live pid is taken at its word (status only: Stop asks for more, ``explorer.live``)."""
    pid, started = meta.get("pid"), meta.get("pid_start")
    if meta.get(UPLOADED) or type(pid) is not int or pid <= 1 or meta.get("host") != socket.gethostname():
        return False
    if Path("/proc/self/stat").exists():
        return type(started) is int and _process_start(pid) == started
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True
