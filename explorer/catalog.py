"""Which runs exist: the rows of the run picker, read cheaply from each run folder.

A finished run's ``summary.json`` has everything the picker shows, so only runs without one
(running, killed, broken), or whose event log does not bear theirs out
(``prm.run.trusted_summary``: a bounded read of the log's last records), are loaded in full.
Nothing here touches Streamlit; the app caches :func:`describe` on :func:`fingerprint`, which
changes whenever a run moves on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from explorer.figures.common import visible
from prm.analysis import BASELINE, Listed
from prm.compare import config_key, setup_key
from prm.metrics import median_seed
from prm.run import UPLOADED, RunFormatError, RunParent, load_run, read_meta, summarise, trusted_summary, writer_alive

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_runs"


@dataclass(frozen=True, kw_only=True)
class RunEntry(Listed):
    """A row of the run picker: what choosing runs needs (``prm.analysis.Listed``: its ``key``
    is what the URL holds, the path relative to the repository or absolute), and the folder,
    the tasks learnt so far, when it started and why it is unreadable."""

    path: Path
    name: str
    tasks_done: int
    started: str | None
    problem: str | None = None

    @property
    def where(self) -> str:
        """The folder the run lives in, as the picker shows it: 'sample' or the runs folder."""
        parent = self.path.parent
        return "sample" if same_folder(parent, SAMPLES) else key_of(parent)

    @property
    def label(self) -> str:
        """Unique across the picker (it ends with the run's key), so two runs with one name,
        a sample and one of yours, can never be mistaken for each other."""
        if self.status == "unreadable":
            return visible(f"unreadable · {self.key}")
        acc = "–" if self.acc is None else f"{self.acc:.3f}"
        return visible(f"{self.sequence} · {self.method} · s{self.seed} · Acc {acc} · {self.status} · {self.key}")


RESOLVE_ERRORS = (OSError, RuntimeError, ValueError)
"""What ``Path.resolve`` raises on a path read from a run file or a URL: OSError (no
permission, a name too long), RuntimeError (a symlink loop) and ValueError (a NUL byte)."""


def resolved(path: str | Path) -> Path | None:
    """``path`` with its links resolved, None when it cannot be: such a path names no run."""
    try:
        return Path(path).resolve()
    except RESOLVE_ERRORS:
        return None


def same_folder(a: str | Path, b: str | Path) -> bool:
    """Do ``a`` and ``b`` name one folder? Never when either cannot be resolved (a what-if
    parent link naming a symlink loop is a parent that is not there)."""
    first = resolved(a)
    return first is not None and first == resolved(b)


def key_of(folder: Path) -> str:
    folder = resolved(folder) or Path(os.path.abspath(folder))
    try:
        return str(folder.relative_to(ROOT))
    except ValueError:
        return str(folder)


def resolve(key: str) -> Path:
    path = Path(key)
    return path if path.is_absolute() else ROOT / path


def runs_folder_problem(root: Path) -> str | None:
    """Why ``root`` cannot hold new runs (a file, or under a file, or not writable), or None.
    A folder that does not exist yet is fine: it is created when the first run needs it."""
    for path in (root, *root.parents):
        if path.exists() or path.is_symlink():
            if not path.is_dir():
                return f"{path} is a file, not a folder: choose another runs folder"
            if path == root and not os.access(path, os.W_OK | os.X_OK):
                return f"{path} is not writable: choose another runs folder"
            return None
    return None


def fingerprint(folder: Path) -> tuple:
    """Changes whenever what the picker shows may change: new events, a summary, a writer
    that died without a closing record."""
    parts: list = [str(folder)]
    for name in ("run.json", "events.jsonl", "summary.json"):
        try:
            st = (folder / name).stat()
            parts.append((st.st_mtime_ns, st.st_size))
        except OSError:
            parts.append(None)
    if parts[-1] is not None:  # a summary is written at the end: no writer left to watch
        return tuple(parts)
    try:
        parts.append(writer_alive(read_meta(folder)))
    except RunFormatError:
        parts.append(False)
    return tuple(parts)


def whatif_tag(parent: RunParent) -> str:
    """How a what-if run differs from its parent's experiment, e.g. 'what-if T6: similar T4'
    (layer 0's set; the CLI forces one set on every layer)."""
    similar = ", ".join(f"T{i + 1}" for i in parent.similar(0)) or "none"
    return f"what-if T{parent.task + 1}: similar {similar}"


def describe(folder: Path) -> RunEntry:
    """The picker's row for one folder. Never raises: a folder that is not a readable run is a
    row with status 'unreadable' and the reason."""
    base = dict(key=key_of(folder), path=folder, name=folder.name)
    try:
        meta = read_meta(folder)
        # a summary is used only when the log's last records bear it out (a cache, not a record);
        # an upload's summary.json is its sender's claim: recompute
        summary = None if meta.get(UPLOADED) is not None else trusted_summary(folder, meta)
        if summary is None:
            summary = summarise(load_run(folder))
    except RunFormatError as exc:
        return RunEntry(**base, sequence=None, method=None, seed=None, n_tasks=None, tasks_done=0, acc=None,
                        status="unreadable", started=None, problem=str(exc))
    cfg = meta["config"]
    parent = RunParent.parse(meta.get("parent"), n_tasks=None, n_layers=len(cfg["model"]["hidden"]))
    config = config_key(cfg) + (f" · {whatif_tag(parent)}" if parent else "")  # a what-if is its own experiment
    return RunEntry(**base, sequence=summary["sequence"] or cfg["sequence"], method=cfg["method"], seed=meta["seed"],
                    n_tasks=summary["n_tasks"], tasks_done=summary["tasks_done"], acc=summary["acc"],
                    status=summary["status"], started=meta["started_at"], config=config, setup=setup_key(cfg),
                    parent=parent)


DEFAULT_STORY = ("digits-writers-binary", "prm", BASELINE)
"""The sequence, method and baseline of the run the app opens on: the paper's PRM where it pays
(one yes/no concept per writer, docs/results.md), judged against HAT (the registry's baseline).
The method is a choice, like the sequence: no role singles PRM out among the methods."""


def representative_key(entries: list[RunEntry], *, sequence: str, method: str, baseline: str) -> str | None:
    """The bundled ``method`` run of ``sequence`` at the median seed of Acc(method) − Acc(baseline)
    over the seeds where both are bundled and finished (``prm.metrics.median_seed``): a typical
    seed, never the best. None when no seed has both."""
    bundled = {(e.method, e.seed): e for e in entries
               if e.status == "finished" and e.parent is None and e.sequence == sequence and e.where == "sample"
               and e.acc is not None and e.seed is not None}
    gains = {seed: bundled[(method, seed)].acc - bundled[(baseline, seed)].acc
             for (m, seed) in bundled if m == method and (baseline, seed) in bundled}
    return bundled[(method, median_seed(gains))].key if gains else None


def default_key(entries: list[RunEntry]) -> str | None:
    """The run the app opens on: :data:`DEFAULT_STORY` at its representative seed, else the
    bundled PRM runs of the full sequences, else the first readable run."""
    sequence, method, baseline = DEFAULT_STORY
    chosen = representative_key(entries, sequence=sequence, method=method, baseline=baseline)
    if chosen is not None:
        return chosen
    preferred = ["sample_runs/digits-mixed-prm-s0", "sample_runs/digits-classes-prm-s0"]
    keys = [e.key for e in entries]
    for key in preferred:
        if key in keys:
            return key
    readable = [e.key for e in entries if e.status != "unreadable"]
    return (readable or keys or [None])[0]
