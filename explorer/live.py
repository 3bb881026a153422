"""Training new runs from the app: the worker is the engine's own CLI in a child process.

The child writes an ordinary run folder, so a live run is read exactly like a recorded one.
It never touches Streamlit; the app only reads the folder. Stop sends SIGINT to the pid in
the run's run.json, which the engine turns into a clean 'stopped' run end (exit 130). A
reload or a second browser tab finds running runs by listing the runs folder.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from explorer.catalog import ROOT, candidate_folders, writer_alive
from prm.config import RunConfig
from prm.runs import RunState

_DEFAULTS = RunConfig()


@dataclass(frozen=True, kw_only=True)
class LiveOptions:
    """What the Train-live form asks for; defaults are the engine's (``prm.config``)."""

    sequence: str = "digits-mixed"
    method: str = "prm"
    seed: int = 0
    n_tasks: int | None = None
    width: int = _DEFAULTS.model.hidden[0]
    epochs: int = _DEFAULTS.optim.max_epochs
    lr: float = _DEFAULTS.optim.lr
    batch_size: int = _DEFAULTS.optim.batch_size
    lamb: float = _DEFAULTS.hat.lamb
    dtd_epochs: int = _DEFAULTS.prm.dtd_epochs
    umap: bool = True
    data_dir: str | None = None

    def command(self, out: Path) -> list[str]:
        cmd = [sys.executable, "-m", "prm", "run", "--sequence", self.sequence, "--method", self.method,
               "--seed", str(self.seed), "--out", str(out), "--quiet", "--width", str(self.width),
               "--epochs", str(self.epochs), "--lr", str(self.lr), "--batch-size", str(self.batch_size),
               "--lamb", str(self.lamb), "--dtd-epochs", str(self.dtd_epochs)]
        if self.n_tasks:
            cmd += ["--n-tasks", str(self.n_tasks)]
        if self.data_dir:
            cmd += ["--data-dir", self.data_dir]
        if not self.umap:
            cmd.append("--no-umap")
        return cmd


_children: dict[str, subprocess.Popen] = {}
"""Children started by this server process, by folder; a reaper thread waits on each, so a
finished child never lingers as a zombie whose pid would still look alive."""


def start(options: LiveOptions, *, root: Path) -> Path:
    """Launch one training run in the background; return its (future) run folder."""
    root.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = f"{options.sequence}-{options.method}-s{options.seed}-{stamp}"
    folder, n = root / base, 1
    while folder.exists() or log_path(folder).exists():
        n += 1
        folder = root / f"{base}-{n}"
    log = log_path(folder)
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), PYTHONUNBUFFERED="1")
    with open(log, "wb") as out:
        proc = subprocess.Popen(options.command(folder), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    _children[str(folder)] = proc
    threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()
    return folder


def log_path(folder: Path) -> Path:
    """The child's console output, kept beside the run (a run folder must start empty)."""
    return folder.parent / ".logs" / f"{folder.name}.log"


def child_exit(folder: Path) -> int | None:
    """Exit status of a child this process started (None while it runs or if unknown)."""
    proc = _children.get(str(folder))
    return None if proc is None else proc.poll()


def log_tail(folder: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log_path(folder).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def is_running(folder: Path) -> bool:
    """The run's writer is alive (or its child was started and has not written run.json yet)."""
    proc = _children.get(str(folder))
    if proc is not None and proc.poll() is None and not (folder / "run.json").exists():
        return True
    try:
        meta = json.loads((folder / "run.json").read_text())
    except (OSError, ValueError):
        return False
    ended = False
    try:
        with open(folder / "events.jsonl", "rb") as fh:
            fh.seek(max(0, os.path.getsize(folder / "events.jsonl") - 4096))
            ended = b'"run_end"' in fh.read()
    except OSError:
        pass
    return not ended and writer_alive(meta)


def running(root: Path) -> list[Path]:
    return [p for p in candidate_folders(root) if is_running(p)]


def stop(folder: Path) -> bool:
    """Ask a running run to stop cleanly (SIGINT, like Ctrl-C); False if it is not running."""
    try:
        meta = json.loads((folder / "run.json").read_text())
    except (OSError, ValueError):
        return False
    if not writer_alive(meta):
        return False
    os.kill(meta["pid"], signal.SIGINT)
    return True


def progress(state: RunState) -> tuple[float, str]:
    """Fraction done and a line such as 'task 3 of 10 · DTD epoch 12 · val acc 0.93'."""
    total = max(state.n_tasks, 1)
    done = state.tasks_done
    current = state.current()
    if state.end is not None:
        return (done / total, f"{state.end['status']}: {done} of {state.n_tasks} tasks learnt "
                              f"in {state.end.get('seconds') or 0:.1f} s")
    if current is None:
        return 0.0, "starting (loading data, building the model)"
    task = current["task"]
    budget = {"dtd-head": state.config.get("prm", {}).get("head_epochs", 10),
              "dtd": state.config.get("prm", {}).get("dtd_epochs", 40),
              "train": state.config.get("optim", {}).get("max_epochs", 200)}[current["phase"]]
    within = min((current["epoch"] + 1) / max(budget, 1), 1.0) if current["phase"] == "train" else 0.0
    phase = {"dtd-head": "DTD 1st opt.", "dtd": "DTD 2nd opt.", "train": "training"}[current["phase"]]
    return (min((done + within) / total, 1.0),
            f"task {task + 1} of {state.n_tasks} · {phase} epoch {current['epoch'] + 1} · "
            f"val acc {current['val_acc']:.3f}")
